//! `HttpConnectionManager.tracing` and a route's `decorator`: the sampling the shards apply
//! ([`TracingSpec`], in the snapshot) and the tracer control builds spans with
//! ([`Tracer`], kept in the connection manager's logger set). The providers are
//! `envoy.tracers.opentelemetry` (OTLP over gRPC or HTTP) and `envoy.tracers.zipkin` (JSON
//! v2 over HTTP); anything else is refused by name.

use std::net::SocketAddr;
use std::time::Duration;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::tracing::{Decorator, Propagation, TracingSpec, FULL};
use zerohop_proto::Fraction;

use super::compile::{
    as_msg, duration, list, msg, plain_bool, string, typed_config, u32_value, Names,
};
use super::ConfigError;
use crate::accesslog::format::Which;
use crate::accesslog::LoggerSet;
use crate::tracing::{Collector, CustomTag, TagValue, Tracer, Transport, Zipkin};

/// The fields zerohop implements of tracing's messages.
pub(super) const FIELDS: &[(&str, &[&str])] = &[
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing",
        &[
            "client_sampling",
            "random_sampling",
            "overall_sampling",
            "verbose",
            "max_path_tag_length",
            "custom_tags",
            "provider",
            "spawn_upstream_span",
        ],
    ),
    ("envoy.type.v3.Percent", &["value"]),
    (
        "envoy.config.trace.v3.Tracing.Http",
        &["name", "typed_config"],
    ),
    (
        "envoy.config.trace.v3.OpenTelemetryConfig",
        &["grpc_service", "http_service", "service_name"],
    ),
    (
        "envoy.config.trace.v3.ZipkinConfig",
        &[
            "collector_cluster",
            "collector_endpoint",
            "collector_endpoint_version",
            "collector_hostname",
            "trace_id_128bit",
            "shared_span_context",
        ],
    ),
    (
        "envoy.config.core.v3.HttpService",
        &["http_uri", "request_headers_to_add"],
    ),
    (
        "envoy.config.core.v3.HttpUri",
        &["uri", "cluster", "timeout"],
    ),
    (
        "envoy.type.tracing.v3.CustomTag",
        &["tag", "literal", "environment", "request_header"],
    ),
    ("envoy.type.tracing.v3.CustomTag.Literal", &["value"]),
    (
        "envoy.type.tracing.v3.CustomTag.Environment",
        &["name", "default_value"],
    ),
    (
        "envoy.type.tracing.v3.CustomTag.Header",
        &["name", "default_value"],
    ),
    (
        "envoy.config.route.v3.Decorator",
        &["operation", "propagate"],
    ),
];

const OTEL: &str = "envoy.config.trace.v3.OpenTelemetryConfig";
const ZIPKIN: &str = "envoy.config.trace.v3.ZipkinConfig";
/// Envoy's default `max_path_tag_length`.
const MAX_PATH_TAG: usize = 256;
/// A collector's request timeout when the config gives none.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// `hcm.tracing`, compiled: the shards' spec, and the tracer put into `set`.
pub(super) fn tracing(
    hcm: &DynamicMessage,
    path: &str,
    names: &Names,
    set: &mut LoggerSet,
) -> Result<Option<TracingSpec>, ConfigError> {
    let Some(t) = msg(hcm, "tracing") else {
        return Ok(None);
    };
    let path = format!("{path}.tracing");
    if plain_bool(t, "verbose") {
        return Err(ConfigError::at(
            format!("{path}.verbose"),
            "verbose span annotations are not supported by zerohop",
        ));
    }
    if let Some(v) = msg(t, "spawn_upstream_span") {
        if plain_bool(v, "value") {
            return Err(ConfigError::at(
                format!("{path}.spawn_upstream_span"),
                "upstream spans are not supported by zerohop (the downstream span's context is propagated)",
            ));
        }
    }
    let Some(provider) = msg(t, "provider") else {
        return Err(ConfigError::at(
            format!("{path}.provider"),
            "zerohop needs a tracing provider (envoy.tracers.opentelemetry or envoy.tracers.zipkin)",
        ));
    };
    let ppath = format!("{path}.provider.typed_config");
    let cfg = typed_config(provider, &ppath, "a tracing provider needs typed_config")?;
    let (collector, zipkin, propagation) = match cfg.descriptor().full_name() {
        OTEL => (collector(&cfg, &ppath, names)?, None, Propagation::W3c),
        ZIPKIN => {
            let (c, z, p) = zipkin(&cfg, &ppath, names)?;
            (c, Some(z), p)
        }
        other => {
            return Err(ConfigError::at(
                ppath,
                format!("tracer {other} is not supported by zerohop (envoy.tracers.opentelemetry, envoy.tracers.zipkin)"),
            ))
        }
    };
    // The batching runtime keys are the tracer's own.
    let prefix = match zipkin {
        Some(_) => "tracing.zipkin",
        None => "tracing.opentelemetry",
    };
    let captures = &mut set.captures;
    let mut slot = |name: &str| {
        captures
            .slot(Which::Request, name)
            .map_err(|e| ConfigError::at(&path, e))
    };
    let mut custom_tags = Vec::new();
    for (i, v) in list(t, "custom_tags").iter().enumerate() {
        let c = as_msg(v);
        let at = format!("{path}.custom_tags[{i}]");
        let tag = string(c, "tag");
        if tag.is_empty() {
            return Err(ConfigError::at(format!("{at}.tag"), "must not be empty"));
        }
        let value = if let Some(l) = msg(c, "literal") {
            TagValue::Literal(string(l, "value"))
        } else if let Some(e) = msg(c, "environment") {
            // Read once, as Envoy reads it when the config loads.
            let v = std::env::var(string(e, "name")).ok();
            TagValue::Literal(v.unwrap_or_else(|| string(e, "default_value")))
        } else if let Some(h) = msg(c, "request_header") {
            let name = string(h, "name");
            if name.is_empty() {
                return Err(ConfigError::at(
                    format!("{at}.request_header.name"),
                    "must not be empty",
                ));
            }
            TagValue::Header {
                slot: slot(&name)?,
                default: Some(string(h, "default_value")).filter(|d| !d.is_empty()),
            }
        } else {
            return Err(ConfigError::at(
                at,
                "a custom tag needs literal, environment or request_header (metadata is not supported)",
            ));
        };
        custom_tags.push(CustomTag { tag, value });
    }
    let max_path = match msg(t, "max_path_tag_length") {
        Some(v) => u32_value(v) as usize,
        None => MAX_PATH_TAG,
    };
    let service_name = Some(string(&cfg, "service_name"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service:envoy".into());
    let mut tracer = Tracer {
        service_name,
        zipkin,
        collector,
        custom_tags,
        max_path,
        node_id: names.node.id.clone(),
        slots: crate::tracing::Slots {
            request_id: slot("x-request-id")?,
            path: slot(":path")?,
            authority: slot(":authority")?,
            method: slot(":method")?,
            user_agent: slot("user-agent")?,
            downstream_cluster: slot("x-envoy-downstream-service-cluster")?,
            client_trace_id: slot("x-client-trace-id")?,
            tracestate: slot("tracestate")?,
            decorator: slot("x-envoy-decorator-operation")?,
            forwarded_proto: slot("x-forwarded-proto")?,
            original_path: slot("x-envoy-original-path")?,
        },
        min_flush_spans: names
            .runtime
            .integer(&format!("{prefix}.min_flush_spans"), 5)
            .max(1) as usize,
        flush_interval: Duration::from_millis(
            names
                .runtime
                .integer(&format!("{prefix}.flush_interval_ms"), 5000)
                .max(1),
        ),
        exporter: 0,
    };
    tracer.exporter = crate::tracing::export::exporter_id(&tracer);
    set.tracer = Some(std::sync::Arc::new(tracer));
    let percent = |field: &str, key: &str| -> Result<u32, ConfigError> {
        let value = match msg(t, field) {
            Some(p) => match p.get_field_by_name("value").as_deref() {
                Some(Value::F64(v)) if (0.0..=100.0).contains(v) => *v,
                Some(Value::F64(v)) => {
                    return Err(ConfigError::at(
                        format!("{path}.{field}.value"),
                        format!("{v} is not between 0 and 100"),
                    ))
                }
                _ => 0.0,
            },
            None => 100.0,
        };
        // Envoy keeps a Percent at 0.01% and lets the runtime key override it.
        let default = Fraction {
            numerator: (value * 100.0).round() as u32,
            denominator: FULL,
        };
        let f = names.runtime.fraction(key, default);
        Ok((u64::from(f.numerator) * u64::from(FULL) / u64::from(f.denominator.max(1))) as u32)
    };
    Ok(Some(TracingSpec {
        client_sampling: percent("client_sampling", "tracing.client_enabled")?,
        random_sampling: percent("random_sampling", "tracing.random_sampling")?,
        overall_sampling: percent("overall_sampling", "tracing.global_enabled")?,
        egress: false,
        propagation,
    }))
}

/// The endpoint of a collector's cluster.
fn endpoint(names: &Names, cluster: &str, at: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match names.first_endpoints.get(cluster) {
        Some(a) => Ok(Some(*a)),
        // Under xDS the cluster may come later: spans wait for it (counted as dropped).
        None if names.is_lenient() => Ok(None),
        None => Err(ConfigError::at(
            at,
            format!("cluster {cluster:?} is not defined with an endpoint"),
        )),
    }
}

/// `ZipkinConfig`: the collector (JSON v2 over HTTP), the spans' local endpoint, B3.
fn zipkin(
    cfg: &DynamicMessage,
    path: &str,
    names: &Names,
) -> Result<(Collector, Zipkin, Propagation), ConfigError> {
    let cluster = string(cfg, "collector_cluster");
    if cluster.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.collector_cluster"),
            "must name the collector's cluster",
        ));
    }
    let endpoint_path = string(cfg, "collector_endpoint");
    if endpoint_path.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.collector_endpoint"),
            "must be set with collector_cluster (e.g. /api/v2/spans)",
        ));
    }
    let version = super::compile::enum_name(cfg, "collector_endpoint_version");
    if version != "HTTP_JSON" {
        return Err(ConfigError::at(
            format!("{path}.collector_endpoint_version"),
            format!("{version} is not supported by zerohop (HTTP_JSON)"),
        ));
    }
    let address = endpoint(names, &cluster, &format!("{path}.collector_cluster"))?;
    let host = Some(string(cfg, "collector_hostname"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| cluster.clone());
    let shared = match msg(cfg, "shared_span_context") {
        Some(v) => plain_bool(v, "value"),
        None => true,
    };
    let collector = Collector {
        cluster,
        address,
        timeout: Duration::from_millis(
            names
                .runtime
                .integer("tracing.zipkin.request_timeout", 5000)
                .max(1),
        ),
        transport: Transport::Zipkin {
            host,
            path: endpoint_path,
        },
    };
    let zipkin = Zipkin {
        service: names.node.cluster.clone(),
        local_ip: crate::tracing::local_ipv4(),
    };
    let propagation = Propagation::B3 {
        trace_id_128: plain_bool(cfg, "trace_id_128bit"),
        shared,
    };
    Ok((collector, zipkin, propagation))
}

/// Where spans go: `grpc_service` (`envoy_grpc`) or `http_service`, on a cluster with an
/// endpoint.
fn collector(cfg: &DynamicMessage, path: &str, names: &Names) -> Result<Collector, ConfigError> {
    let endpoint = |cluster: &str, at: &str| endpoint(names, cluster, at);
    match (msg(cfg, "grpc_service"), msg(cfg, "http_service")) {
        (Some(g), None) => {
            let gpath = format!("{path}.grpc_service");
            let Some(e) = msg(g, "envoy_grpc") else {
                return Err(ConfigError::at(
                    gpath,
                    "zerohop takes envoy_grpc (a cluster) for the collector",
                ));
            };
            let cluster = string(e, "cluster_name");
            let address = endpoint(&cluster, &format!("{gpath}.envoy_grpc.cluster_name"))?;
            let timeout = match msg(g, "timeout") {
                Some(d) => duration(d, &format!("{gpath}.timeout"))?,
                None => DEFAULT_EXPORT_TIMEOUT,
            };
            // `:authority` is the cluster's name, as Envoy's without `envoy_grpc.authority`
            // (which zerohop refuses).
            Ok(Collector {
                transport: Transport::Grpc {
                    authority: cluster.clone(),
                },
                cluster,
                address,
                timeout,
            })
        }
        (None, Some(h)) => {
            let hpath = format!("{path}.http_service");
            if !list(h, "request_headers_to_add").is_empty() {
                return Err(ConfigError::at(
                    format!("{hpath}.request_headers_to_add"),
                    "headers added to the collector's requests are not supported by zerohop",
                ));
            }
            let Some(u) = msg(h, "http_uri") else {
                return Err(ConfigError::at(hpath, "http_service needs http_uri"));
            };
            let upath = format!("{hpath}.http_uri");
            let uri = string(u, "uri");
            let parsed: hyper::Uri = uri
                .parse()
                .map_err(|e| ConfigError::at(format!("{upath}.uri"), format!("{uri:?}: {e}")))?;
            let cluster = string(u, "cluster");
            let address = endpoint(&cluster, &format!("{upath}.cluster"))?;
            let timeout = match msg(u, "timeout") {
                Some(d) => duration(d, &format!("{upath}.timeout"))?,
                None => DEFAULT_EXPORT_TIMEOUT,
            };
            Ok(Collector {
                cluster,
                address,
                timeout,
                transport: Transport::Http {
                    host: parsed
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    path: parsed
                        .path_and_query()
                        .map_or_else(|| "/".to_string(), |p| p.to_string()),
                },
            })
        }
        _ => Err(ConfigError::at(
            path,
            "an OpenTelemetry tracer needs one of grpc_service or http_service",
        )),
    }
}

/// A route's `decorator`.
pub(super) fn decorator(r: &DynamicMessage, path: &str) -> Result<Option<Decorator>, ConfigError> {
    let Some(d) = msg(r, "decorator") else {
        return Ok(None);
    };
    let operation = string(d, "operation");
    if operation.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.decorator.operation"),
            "must not be empty",
        ));
    }
    let propagate = match msg(d, "propagate") {
        Some(v) => plain_bool(v, "value"),
        None => true,
    };
    Ok(Some(Decorator {
        operation,
        propagate,
    }))
}
