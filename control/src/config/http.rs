//! Compiles `envoy.filters.network.http_connection_manager` into [`HttpManager`] (its route
//! configuration by `super::route`): Envoy's defaults filled in, names lower-cased where HTTP is
//! case-insensitive, regexes checked (the data plane compiles them again when it builds its
//! tables; a pattern that reaches it is known to be valid).

use std::time::Duration;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::*;

use super::compile::{
    as_msg, duration, enum_name, list, msg, plain_bool, string, u32_value, Names, Routes,
};
use super::filters;
use super::route::route_config;
use super::runtime::Runtime;
use super::supported::{element_label, unpack_any};
use super::ConfigError;

/// Envoy's default route `timeout`.
pub(super) const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// zerohop's default `request_headers_timeout` (Envoy leaves it disabled).
const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn bool_value(m: &DynamicMessage, field: &str, default: bool) -> bool {
    match msg(m, field)
        .and_then(|w| w.get_field_by_name("value"))
        .as_deref()
    {
        Some(Value::Bool(b)) => *b,
        _ if m.has_field_by_name(field) => false,
        _ => default,
    }
}

/// A duration field: `default` when unset, `None` when set to 0 (disabled).
pub(super) fn timeout(
    m: &DynamicMessage,
    field: &str,
    path: &str,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match msg(m, field) {
        Some(d) => Ok(Some(duration(d, &format!("{path}.{field}"))?).filter(|d| !d.is_zero())),
        None => Ok(default),
    }
}

fn check_regex(pattern: &str, path: String) -> Result<(), ConfigError> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| ConfigError::at(path, format!("invalid regex {pattern:?}: {e}")))
}

/// `RegexMatcher.regex`, checked.
pub(super) fn regex_of(m: &DynamicMessage, path: &str) -> Result<String, ConfigError> {
    let pattern = string(m, "regex");
    check_regex(&pattern, format!("{path}.regex"))?;
    Ok(pattern)
}

/// The Istio filters that arrive wrapped in a `TypedStruct` and have no effect on traffic
/// zerohop serves (peer metadata exchange, ALPN override, Istio's own stats): accepted as
/// no-ops so that Istio's listeners load. Listed in the docs and in config_dump.
pub const ISTIO_NO_OPS: &[&str] = &["istio.metadata_exchange", "istio.alpn", "istio.stats"];

const TYPED_STRUCTS: &[&str] = &[
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// True for a network or HTTP filter that is one of [`ISTIO_NO_OPS`] carried as a TypedStruct.
pub(crate) fn istio_no_op(filter: &DynamicMessage) -> bool {
    let type_url = msg(filter, "typed_config").map(|a| string(a, "type_url"));
    ISTIO_NO_OPS.contains(&string(filter, "name").as_str())
        && type_url.is_some_and(|u| TYPED_STRUCTS.contains(&u.as_str()))
}

/// The type a filter's `typed_config` carries (inside a TypedStruct, the type it names).
fn filter_type(filter: &DynamicMessage) -> String {
    let Some(any) = msg(filter, "typed_config") else {
        return "(no typed_config)".into();
    };
    let mut url = string(any, "type_url");
    if TYPED_STRUCTS.contains(&url.as_str()) {
        if let Ok(ts) = unpack_any(any) {
            url = string(&ts, "type_url");
        }
    }
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

/// An HTTP filter marked `is_optional` whose type zerohop does not implement is skipped, as
/// Envoy does; any other unknown filter is refused.
pub(crate) fn optional_unknown(filter: &DynamicMessage) -> bool {
    plain_bool(filter, "is_optional") && filters::by_type(&filter_type(filter)).is_none()
}

pub(super) fn http_manager(
    hcm: &DynamicMessage,
    path: &str,
    clusters: &Names,
    routes: Routes,
) -> Result<HttpManager, ConfigError> {
    let stat_prefix = string(hcm, "stat_prefix");
    if stat_prefix.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.stat_prefix"),
            "http_connection_manager needs a stat_prefix",
        ));
    }
    let codec = match enum_name(hcm, "codec_type").as_str() {
        "AUTO" => CodecType::Auto,
        "HTTP1" => CodecType::Http1,
        "HTTP2" => CodecType::Http2,
        other => {
            return Err(ConfigError::at(
                format!("{path}.codec_type"),
                format!(
                "codec_type {other} is not supported by zerohop (supported: AUTO, HTTP1, HTTP2)"
            ),
            ))
        }
    };
    let http_filters = http_filters(hcm, &format!("{path}.http_filters"), &clusters.runtime)?;
    let max_kb = msg(hcm, "max_request_headers_kb").map_or(60, u32_value);
    if !(1..=8192).contains(&max_kb) {
        return Err(ConfigError::at(
            format!("{path}.max_request_headers_kb"),
            "must be between 1 and 8192",
        ));
    }
    let common = msg(hcm, "common_http_protocol_options");
    if common.is_some_and(|c| c.has_field_by_name("max_requests_per_connection")) {
        return Err(ConfigError::at(
            format!("{path}.common_http_protocol_options.max_requests_per_connection"),
            "not supported by zerohop on the connection manager (only on a cluster's HttpProtocolOptions)",
        ));
    }
    let max_headers_count = common
        .and_then(|c| msg(c, "max_headers_count"))
        .map_or(100, u32_value);
    if max_headers_count == 0 {
        return Err(ConfigError::at(
            format!("{path}.common_http_protocol_options.max_headers_count"),
            "must be at least 1",
        ));
    }
    let max_stream_duration = match common.and_then(|c| msg(c, "max_stream_duration")) {
        Some(d) => {
            let d = super::compile::duration(
                d,
                &format!("{path}.common_http_protocol_options.max_stream_duration"),
            )?;
            (!d.is_zero()).then_some(d)
        }
        None => None,
    };
    let idle_timeout = match common {
        Some(c) => timeout(
            c,
            "idle_timeout",
            &format!("{path}.common_http_protocol_options"),
            Some(DEFAULT_IDLE_TIMEOUT),
        )?,
        None => Some(DEFAULT_IDLE_TIMEOUT),
    };
    let route_config = match (msg(hcm, "route_config"), msg(hcm, "rds")) {
        (Some(rc), _) => route_config(rc, &format!("{path}.route_config"), clusters)?,
        (None, Some(rds)) => {
            let name = string(rds, "route_config_name");
            let rpath = format!("{path}.rds");
            super::compile::ads_source(
                msg(rds, "config_source"),
                &format!("{rpath}.config_source"),
                "RDS",
            )?;
            match routes {
                Routes::Static => {
                    return Err(ConfigError::at(
                        rpath,
                        "rds needs dynamic_resources.ads_config in the bootstrap",
                    ))
                }
                Routes::Rds(by_name) => match by_name.get(&name) {
                    Some(rc) => route_config(rc, &format!("RouteConfiguration({name})"), clusters)?,
                    None => RouteConfig {
                        name,
                        ..Default::default()
                    },
                },
            }
        }
        (None, None) => {
            return Err(ConfigError::at(
                path,
                "http_connection_manager needs route_config or rds",
            ))
        }
    };
    let upgrades = super::hcm_options::upgrade_configs(hcm, path)?;
    let (server_name, server_header) = super::hcm_options::server(hcm, path)?;
    let path_normalization = super::hcm_options::path_normalization(hcm, path)?;
    let mut logs = super::accesslog::logger_set(hcm, path, &clusters.runtime)?;
    let tracing = super::tracing::tracing(hcm, path, clusters, &mut logs)?;
    let access_log = logs.register();
    Ok(HttpManager {
        tracing,
        stats: Default::default(),
        access_log,
        upgrades,
        server_name,
        server_header,
        path: path_normalization,
        suppress_envoy_headers: super::filters::router::suppress_envoy_headers(hcm),
        user_agent: bool_value(hcm, "add_user_agent", false).then(|| clusters.node.clone()),
        max_stream_duration,
        skip_xff_append: plain_bool(hcm, "skip_xff_append"),
        xff_num_trusted_hops: match hcm.get_field_by_name("xff_num_trusted_hops").as_deref() {
            Some(prost_reflect::Value::U32(n)) => *n,
            _ => 0,
        },
        preserve_external_request_id: plain_bool(hcm, "preserve_external_request_id"),
        stat_prefix,
        codec,
        max_request_headers_bytes: max_kb * 1024,
        max_headers_count,
        request_headers_timeout: timeout(
            hcm,
            "request_headers_timeout",
            path,
            Some(DEFAULT_REQUEST_HEADERS_TIMEOUT),
        )?,
        idle_timeout,
        stream_idle_timeout: timeout(
            hcm,
            "stream_idle_timeout",
            path,
            Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        )?,
        request_timeout: timeout(hcm, "request_timeout", path, None)?,
        generate_request_id: bool_value(hcm, "generate_request_id", true),
        use_remote_address: bool_value(hcm, "use_remote_address", false),
        http1: http1_options(hcm, path)?,
        http2: super::hcm_options::http2_options(hcm, path)?,
        http_filters,
        route_config,
    })
}

/// `http_protocol_options`: HTTP/1.0 acceptance, as Envoy's codec takes it (426 Upgrade
/// Required without `accept_http_10`).
fn http1_options(hcm: &DynamicMessage, path: &str) -> Result<Http1Options, ConfigError> {
    let Some(o) = msg(hcm, "http_protocol_options") else {
        return Ok(Http1Options::default());
    };
    let accept_http_10 = plain_bool(o, "accept_http_10");
    let default_host = Some(string(o, "default_host_for_http_10")).filter(|h| !h.is_empty());
    if default_host.is_some() && !accept_http_10 {
        return Err(ConfigError::at(
            format!("{path}.http_protocol_options.default_host_for_http_10"),
            "needs accept_http_10: true",
        ));
    }
    if let Some(h) = &default_host {
        if h.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError::at(
                format!("{path}.http_protocol_options.default_host_for_http_10"),
                format!("{h:?} is not a host"),
            ));
        }
    }
    Ok(Http1Options {
        accept_http_10,
        default_host_for_http_10: default_host,
    })
}

/// `http_filters`, compiled in order by the registry: Istio's no-ops and optional filters
/// zerohop lacks skipped, any other unknown filter refused, the router last and only last.
fn http_filters(
    hcm: &DynamicMessage,
    fpath: &str,
    rt: &super::runtime::Runtime,
) -> Result<Vec<HttpFilter>, ConfigError> {
    let mut out: Vec<HttpFilter> = Vec::new();
    let mut terminal_at: Option<(String, &str)> = None;
    for (i, f) in list(hcm, "http_filters").iter().enumerate() {
        let f = as_msg(f);
        if istio_no_op(f) || optional_unknown(f) {
            continue;
        }
        let at = format!("{fpath}{}", element_label(i, f));
        let name = string(f, "name");
        let ty = filter_type(f);
        let Some(kind) = filters::by_type(&ty) else {
            return Err(ConfigError::at(
                format!("{at}.typed_config"),
                format!("HTTP filter {name:?} of type {ty} is not supported by zerohop (supported: {}; a filter marked is_optional is skipped)", filters::names()),
            ));
        };
        if let Some((terminal, kind)) = &terminal_at {
            return Err(ConfigError::at(
                terminal.clone(),
                format!("{kind} must be the last HTTP filter"),
            ));
        }
        let any = msg(f, "typed_config").ok_or_else(|| {
            ConfigError::at(at.clone(), format!("{} needs a typed_config", kind.name))
        })?;
        let tpath = format!("{at}.typed_config");
        let config = unpack_any(any).map_err(|e| ConfigError::at(tpath.clone(), e))?;
        out.push(HttpFilter {
            name,
            config: (kind.compile)(&config, &tpath, rt)?,
        });
        if kind.terminal {
            terminal_at = Some((at, kind.name));
        }
    }
    if terminal_at.is_none() {
        return Err(ConfigError::at(
            fpath,
            "envoy.filters.http.router must be the last HTTP filter",
        ));
    }
    Ok(out)
}

const FILTER_CONFIG: &str = "envoy.config.route.v3.FilterConfig";

/// `typed_per_filter_config`: each entry's type names the filter kind (as in Envoy), its key
/// the `HttpFilter.name` it configures. `FilterConfig` wraps one, or disables the filter; an
/// entry marked `is_optional` whose type zerohop lacks is skipped.
pub(super) fn per_filter(
    m: &DynamicMessage,
    path: &str,
    rt: &Runtime,
) -> Result<Vec<PerFilterConfig>, ConfigError> {
    let field = "typed_per_filter_config";
    let Some(value) = m.get_field_by_name(field) else {
        return Ok(Vec::new());
    };
    let Value::Map(map) = value.as_ref() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (key, v) in map {
        let (prost_reflect::MapKey::String(name), Value::Message(any)) = (key, v) else {
            continue;
        };
        let at = format!("{path}.{field}[{name:?}]");
        let inner = unpack_any(any).map_err(|e| ConfigError::at(at.clone(), e))?;
        let config = if inner.descriptor().full_name() == FILTER_CONFIG {
            if plain_bool(&inner, "disabled") {
                Some(FilterOverride::Disabled)
            } else {
                match msg(&inner, "config") {
                    Some(_) if per_filter_optional_unknown(&inner) => None,
                    Some(c) => {
                        let cpath = format!("{at}.config");
                        let c = unpack_any(c).map_err(|e| ConfigError::at(cpath.clone(), e))?;
                        Some(compile_override(&c, &cpath, rt)?)
                    }
                    None => {
                        return Err(ConfigError::at(
                            at,
                            "FilterConfig needs a config or disabled: true",
                        ))
                    }
                }
            }
        } else {
            Some(compile_override(&inner, &at, rt)?)
        };
        if let Some(config) = config {
            out.push(PerFilterConfig {
                filter: name.clone(),
                config,
            });
        }
    }
    // The map has no order; the snapshot does (so that equal configs compare equal).
    out.sort_by(|a, b| a.filter.cmp(&b.filter));
    Ok(out)
}

fn compile_override(
    c: &DynamicMessage,
    path: &str,
    rt: &Runtime,
) -> Result<FilterOverride, ConfigError> {
    let ty = c.descriptor().full_name().to_owned();
    match filters::by_per_route_type(&ty).and_then(|k| k.per_route.as_ref()) {
        Some(p) => (p.compile)(c, path, rt),
        None => Err(ConfigError::at(
            path,
            format!("per-route configuration of type {ty} is not supported by zerohop"),
        )),
    }
}

/// A `FilterConfig` marked `is_optional` whose config zerohop cannot compile: skipped, as
/// Envoy skips it.
pub(crate) fn per_filter_optional_unknown(filter_config: &DynamicMessage) -> bool {
    if !plain_bool(filter_config, "is_optional") {
        return false;
    }
    let Some(any) = msg(filter_config, "config") else {
        return false;
    };
    let url = string(any, "type_url");
    let ty = url.rsplit('/').next().unwrap_or_default();
    filters::by_per_route_type(ty).is_none()
}
