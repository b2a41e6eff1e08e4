//! Compiles a checked Envoy bootstrap into a [`Snapshot`]: names resolved to [`ClusterId`]s,
//! durations and addresses parsed, Envoy's defaults filled in, value-level limits enforced.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::*;

pub(crate) use super::listener::{listener, Routes};
use super::secret::SecretLookup;
use super::supported::{element_label, unpack_any};
use super::ConfigError;

/// Envoy's default `Cluster.connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Cluster names resolved to ids while listeners and routes compile.
///
/// From a static bootstrap a name that is not defined is an error. Under xDS it is not (a
/// route may name a cluster that has not arrived yet, as in Envoy): such a name gets an id
/// past the known clusters and becomes an empty cluster, so traffic to it is answered as
/// having no endpoint (503), until the cluster arrives and the next generation resolves it.
///
/// It also carries the runtime that `runtime_key`s are read from while routes compile.
#[derive(Debug, Default)]
pub(crate) struct Names {
    pub(crate) ids: HashMap<String, ClusterId>,
    /// `Some` under xDS: the names that were missing, in id order.
    missing: Option<RefCell<Vec<String>>>,
    pub(crate) runtime: super::runtime::Runtime,
    /// The bootstrap's node (`add_user_agent` names it).
    pub(crate) node: zerohop_proto::LocalNode,
    /// The secrets TLS contexts may name.
    pub(crate) secrets: SecretLookup,
    /// Each cluster's first endpoint, where control itself sends (a tracer's collector).
    pub(crate) first_endpoints: HashMap<String, std::net::SocketAddr>,
}

impl Names {
    pub(crate) fn strict(ids: HashMap<String, ClusterId>) -> Names {
        Names {
            ids,
            missing: None,
            runtime: Default::default(),
            node: Default::default(),
            secrets: Default::default(),
            first_endpoints: HashMap::new(),
        }
    }

    pub(crate) fn lenient(ids: HashMap<String, ClusterId>) -> Names {
        Names {
            ids,
            missing: Some(RefCell::new(Vec::new())),
            runtime: Default::default(),
            node: Default::default(),
            secrets: Default::default(),
            first_endpoints: HashMap::new(),
        }
    }

    /// With the layers `runtime_key`s are read from, and the local node.
    pub(crate) fn with_runtime(
        mut self,
        runtime: &super::runtime::Runtime,
        node: &zerohop_proto::LocalNode,
    ) -> Names {
        self.runtime = runtime.clone();
        self.node = node.clone();
        self
    }

    /// With the clusters control itself may send to (their first endpoints).
    pub(crate) fn with_endpoints(mut self, clusters: &[Cluster]) -> Names {
        self.first_endpoints = clusters
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.endpoints.first()?.address)))
            .collect();
        self
    }

    /// With the secrets TLS contexts may name.
    pub(crate) fn with_secrets(mut self, secrets: SecretLookup) -> Names {
        self.secrets = secrets;
        self
    }

    pub(crate) fn resolve(&self, name: &str) -> Option<ClusterId> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let mut missing = self.missing.as_ref()?.borrow_mut();
        let at = match missing.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                missing.push(name.to_owned());
                missing.len() - 1
            }
        };
        Some(ClusterId((self.ids.len() + at) as u32))
    }

    /// Names may be defined later (xDS).
    pub(crate) fn is_lenient(&self) -> bool {
        self.missing.is_some()
    }

    /// The names that were referenced but not defined, in id order.
    pub(crate) fn into_missing(self) -> Vec<String> {
        self.missing.map(RefCell::into_inner).unwrap_or_default()
    }
}

const PROTOCOL_OPTIONS: &str = "typed_extension_protocol_options";

/// Adds `listener` unless its name or (non-zero) address is already taken.
pub(crate) fn add_listener(
    listeners: &mut Vec<Listener>,
    listener: Listener,
    path: &str,
) -> Result<(), ConfigError> {
    if let Some(other) = listeners.iter().find(|o| o.name == listener.name) {
        return Err(ConfigError::at(
            path,
            format!("duplicate listener name {:?}", other.name),
        ));
    }
    let bound = |o: &Listener| o.address == listener.address && listener.address.port() != 0;
    if let Some(other) = listeners.iter().find(|o| bound(o)) {
        return Err(ConfigError::at(
            path,
            format!(
                "address {} is already used by listener {:?}",
                listener.address, other.name
            ),
        ));
    }
    listeners.push(listener);
    Ok(())
}

/// Appends an empty cluster for each name that routes referred to but no cluster defines
/// (under xDS only; see [`Names`]).
pub(crate) fn add_missing(snapshot: &mut Snapshot, names: Names) {
    for name in names.into_missing() {
        snapshot.clusters.push(Cluster {
            stats: Default::default(),
            name,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            lb_policy: LbPolicy::RoundRobin,
            endpoints: Vec::new(),
            protocol: UpstreamProtocol::default(),
            transport: TransportSocket::default(),
            circuit_breakers: CircuitBreakers::default(),
            outlier_detection: None,
            healthy_panic_threshold: 50.0f64.to_bits(),
            health_checks: Vec::new(),
        });
    }
}

/// The Unix socket path of a cluster whose single endpoint is a `pipe` address.
pub(super) fn pipe_endpoint(c: &DynamicMessage) -> Option<std::path::PathBuf> {
    let la = msg(c, "load_assignment")?;
    let group = list(la, "endpoints").first()?;
    let lbe = list(as_msg(group), "lb_endpoints").first()?;
    let address = msg(as_msg(lbe), "endpoint").and_then(|e| msg(e, "address"))?;
    let pipe = msg(address, "pipe")?;
    Some(string(pipe, "path").into())
}

/// How a cluster gets its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Discovery {
    /// `STATIC`: `load_assignment`, in the cluster itself.
    Static,
    /// `EDS` over ADS: the `ClusterLoadAssignment` of this service name.
    Eds(String),
    /// `STRICT_DNS` or `LOGICAL_DNS`: resolved by control (`crate::dns`).
    Dns(Box<super::dns::DnsCluster>),
}

/// A cluster; an EDS cluster's endpoints are empty until its assignment is applied.
pub(crate) fn cluster(
    c: &DynamicMessage,
    path: &str,
    eds_allowed: bool,
    secrets: &SecretLookup,
) -> Result<(Cluster, Discovery), ConfigError> {
    let name = string(c, "name");
    if name.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.name"),
            "a cluster needs a name",
        ));
    }
    let protocol = protocol_options(c, path)?;
    let discovery = match (enum_name(c, "type").as_str(), eds_allowed) {
        ("STATIC", _) => Discovery::Static,
        ("EDS", true) => {
            let eds = msg(c, "eds_cluster_config");
            let source = eds.and_then(|e| msg(e, "eds_config"));
            ads_source(
                source,
                &format!("{path}.eds_cluster_config.eds_config"),
                "EDS",
            )?;
            let service = eds.map(|e| string(e, "service_name")).unwrap_or_default();
            Discovery::Eds(if service.is_empty() {
                name.clone()
            } else {
                service
            })
        }
        (kind @ ("STRICT_DNS" | "LOGICAL_DNS"), _) => Discovery::Dns(Box::new(
            super::dns::dns_cluster(c, path, &name, kind == "LOGICAL_DNS")?,
        )),
        (kind, _) => {
            let supported = match eds_allowed {
                true => "STATIC, EDS, STRICT_DNS, LOGICAL_DNS",
                false => {
                    "STATIC, STRICT_DNS, LOGICAL_DNS here; EDS for clusters that arrive by CDS"
                }
            };
            return Err(ConfigError::at(
                format!("{path}.type"),
                format!("cluster type {kind} is not supported by zerohop (supported: {supported})"),
            ));
        }
    };
    let connect_timeout = match msg(c, "connect_timeout") {
        Some(d) => duration(d, &format!("{path}.connect_timeout"))?,
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    if connect_timeout.is_zero() {
        return Err(ConfigError::at(
            format!("{path}.connect_timeout"),
            "must be greater than 0",
        ));
    }
    let lb_policy = super::lb::lb_policy(c, path)?;
    let endpoints = match (msg(c, "load_assignment"), &discovery) {
        (Some(la), Discovery::Static) => endpoints(la, &format!("{path}.load_assignment"))?,
        // Filled by resolution (`crate::dns`), before the cluster is published.
        (_, Discovery::Dns(_)) => Vec::new(),
        (Some(_), Discovery::Eds(_)) => {
            return Err(ConfigError::at(
                format!("{path}.load_assignment"),
                "an EDS cluster takes its endpoints from EDS, not load_assignment",
            ))
        }
        (None, _) => Vec::new(),
    };
    let http2 = matches!(protocol, UpstreamProtocol::Http2(..));
    let health_checks = super::health::health_checks(c, &name, http2, path)?;
    let cluster = Cluster {
        stats: Default::default(),
        name,
        connect_timeout,
        lb_policy,
        endpoints,
        protocol,
        transport: match msg(c, "transport_socket") {
            Some(ts) => super::tls::upstream(ts, &format!("{path}.transport_socket"), secrets)?,
            None => TransportSocket::RawBuffer,
        },
        circuit_breakers: circuit_breakers(c),
        outlier_detection: super::outlier::outlier_detection(c, path)?,
        healthy_panic_threshold: super::outlier::panic_threshold(c).to_bits(),
        health_checks,
    };
    Ok((cluster, discovery))
}

/// `circuit_breakers.thresholds`: the first entry of priority DEFAULT, each threshold left
/// out keeping Envoy's default. Entries of priority HIGH are accepted: they apply to routes
/// of high priority, which zerohop's routes never are (`RouteAction.priority` is refused).
fn circuit_breakers(c: &DynamicMessage) -> CircuitBreakers {
    let mut out = CircuitBreakers::default();
    let Some(cb) = msg(c, "circuit_breakers") else {
        return out;
    };
    let default = list(cb, "thresholds")
        .iter()
        .map(as_msg)
        .find(|t| enum_name(t, "priority") == "DEFAULT");
    let Some(t) = default else {
        return out;
    };
    for (field, slot) in [
        ("max_connections", &mut out.max_connections),
        ("max_pending_requests", &mut out.max_pending_requests),
        ("max_requests", &mut out.max_requests),
        ("max_retries", &mut out.max_retries),
    ] {
        if let Some(w) = msg(t, field) {
            *slot = u32_value(w);
        }
    }
    if let Some(b) = msg(t, "retry_budget") {
        let percent = msg(b, "budget_percent")
            .and_then(|p| match p.get_field_by_name("value").as_deref() {
                Some(Value::F64(v)) => Some(*v),
                _ => None,
            })
            .unwrap_or(20.0);
        out.retry_budget = Some(RetryBudget {
            budget_percent: percent.clamp(0.0, 100.0).to_bits(),
            min_retry_concurrency: msg(b, "min_retry_concurrency").map_or(3, u32_value),
        });
    }
    out
}

/// The one key `typed_extension_protocol_options` may have.
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A cluster's `HttpProtocolOptions` (and the deprecated `Cluster.http2_protocol_options`):
/// the protocol its requests are sent in, and how they use its connections. HTTP/2's
/// defaults upstream are Envoy's for streams (the peer's limit governs) and zerohop's for the
/// windows (64 KiB a stream, 1 MiB a connection).
fn protocol_options(c: &DynamicMessage, path: &str) -> Result<UpstreamProtocol, ConfigError> {
    let mut http = UpstreamHttp::default();
    let upstream_h2 = Http2Options {
        max_concurrent_streams: 2_147_483_647,
        ..Http2Options::default()
    };
    // The deprecated field on the cluster itself.
    let mut http2 = match msg(c, "http2_protocol_options") {
        Some(h2) => Some(super::hcm_options::http2_protocol_options(
            Some(h2),
            &format!("{path}.http2_protocol_options"),
            upstream_h2,
        )?),
        None => None,
    };
    let done = |http, http2: Option<Http2Options>| match http2 {
        Some(o) => UpstreamProtocol::Http2(http, o),
        None => UpstreamProtocol::Http1(http),
    };
    let Some(field) = c.get_field_by_name(PROTOCOL_OPTIONS) else {
        return Ok(done(http, http2));
    };
    let Value::Map(map) = field.as_ref() else {
        return Ok(done(http, http2));
    };
    for (key, value) in map {
        let prost_reflect::MapKey::String(key) = key else {
            continue;
        };
        let at = format!("{path}.{PROTOCOL_OPTIONS}[{key:?}]");
        if key != HTTP_OPTIONS {
            return Err(ConfigError::at(
                at,
                format!("only {HTTP_OPTIONS} is supported here"),
            ));
        }
        let Value::Message(any) = value else {
            continue;
        };
        let options = unpack_any(any).map_err(|e| ConfigError::at(at.clone(), e))?;
        let explicit = msg(&options, "explicit_http_config");
        if let Some(h2) = explicit.and_then(|e| msg(e, "http2_protocol_options")) {
            http2 = Some(super::hcm_options::http2_protocol_options(
                Some(h2),
                &format!("{at}.explicit_http_config.http2_protocol_options"),
                upstream_h2,
            )?);
        }
        if let Some(h1) = explicit.and_then(|e| msg(e, "http_protocol_options")) {
            if let Some((field, _)) = h1.fields().next() {
                return Err(ConfigError::at(
                    format!(
                        "{at}.explicit_http_config.http_protocol_options.{}",
                        field.name()
                    ),
                    "not supported by zerohop on an upstream (HTTP/1.1 is spoken to it as is)",
                ));
            }
        }
        if let Some(u) = msg(&options, "upstream_http_protocol_options") {
            let header = string(u, "override_auto_sni_header");
            http.auto_sni = Some(AutoSni {
                sni: plain_bool(u, "auto_sni"),
                san_validation: plain_bool(u, "auto_san_validation"),
                header: (!header.is_empty()).then(|| header.to_ascii_lowercase()),
            });
        }
        let Some(common) = msg(&options, "common_http_protocol_options") else {
            continue;
        };
        let at = format!("{at}.common_http_protocol_options");
        if common.has_field_by_name("max_stream_duration") {
            return Err(ConfigError::at(
                format!("{at}.max_stream_duration"),
                "not supported by zerohop on an upstream (only on the connection manager)",
            ));
        }
        if let Some(d) = msg(common, "idle_timeout") {
            let d = duration(d, &format!("{at}.idle_timeout"))?;
            http.idle_timeout = (!d.is_zero()).then_some(d);
        }
        // 0, like unset, is no limit (as Envoy treats it).
        http.max_requests_per_connection = msg(common, "max_requests_per_connection")
            .map(u32_value)
            .filter(|&n| n > 0);
        if let Some(n) = msg(common, "max_headers_count").map(u32_value) {
            if n == 0 {
                return Err(ConfigError::at(
                    format!("{at}.max_headers_count"),
                    "must be at least 1",
                ));
            }
            http.max_headers_count = n;
        }
    }
    Ok(done(http, http2))
}

/// Checks the `ConfigSource` of an EDS cluster or an RDS route configuration: over ADS, and
/// without an `initial_fetch_timeout` of its own (zerohop has one for the whole first
/// configuration, `cds_config`'s or `lds_config`'s; a per-resource one would be ignored).
pub(crate) fn ads_source(
    source: Option<&DynamicMessage>,
    path: &str,
    what: &str,
) -> Result<(), ConfigError> {
    let Some(source) = source.filter(|s| s.has_field_by_name("ads")) else {
        return Err(ConfigError::at(
            path,
            format!("{what} is supported over ADS only ({{ ads: {{}} }})"),
        ));
    };
    api_version(source, "resource_api_version", path)?;
    if source.has_field_by_name("initial_fetch_timeout") {
        return Err(ConfigError::at(
            format!("{path}.initial_fetch_timeout"),
            "initial_fetch_timeout is supported on dynamic_resources.cds_config and lds_config only (one timeout for the whole first configuration)",
        ));
    }
    Ok(())
}

/// `resource_api_version` / `transport_api_version`: xDS v3 is the only one (`AUTO`, the
/// default, means v3 too); v2 is refused, as Envoy refuses it.
pub(crate) fn api_version(m: &DynamicMessage, field: &str, path: &str) -> Result<(), ConfigError> {
    match enum_name(m, field).as_str() {
        "AUTO" | "V3" => Ok(()),
        other => Err(ConfigError::at(
            format!("{path}.{field}"),
            format!("{other} is not supported (xDS v3 only)"),
        )),
    }
}

/// The endpoints of a `ClusterLoadAssignment` (inline, or from EDS).
pub(crate) fn endpoints(la: &DynamicMessage, path: &str) -> Result<Vec<Endpoint>, ConfigError> {
    let mut endpoints = Vec::new();
    for (i, group) in list(la, "endpoints").iter().enumerate() {
        for (j, lbe) in list(as_msg(group), "lb_endpoints").iter().enumerate() {
            let p = format!("{path}.endpoints[{i}].lb_endpoints[{j}]");
            let lbe = as_msg(lbe);
            let endpoint = msg(lbe, "endpoint");
            let address = match endpoint.and_then(|e| msg(e, "address")) {
                Some(a) => socket_address(a, &format!("{p}.endpoint.address"))?,
                None => {
                    return Err(ConfigError::at(
                        format!("{p}.endpoint.address"),
                        "an endpoint needs an address",
                    ))
                }
            };
            let weight = match msg(lbe, "load_balancing_weight") {
                Some(w) => u32_value(w),
                None => 1,
            };
            if weight == 0 {
                return Err(ConfigError::at(
                    format!("{p}.load_balancing_weight"),
                    "must be at least 1",
                ));
            }
            let mut e = Endpoint::new(address, weight);
            if let Some(ep) = endpoint {
                let at = format!("{p}.endpoint");
                e.health_check_address = super::health::check_address(ep, address, &at)?;
            }
            e.eds_unhealthy = super::health::eds_unhealthy(lbe, &p)?;
            endpoints.push(e);
        }
    }
    Ok(endpoints)
}

/// The `cluster` or `weighted_clusters.clusters` of a tcp_proxy or a route action (`what`
/// names it in errors), resolved to cluster ids. A weight is a plain `uint32` in tcp_proxy
/// and a `UInt32Value` in routes; both must be at least 1.
pub(super) fn cluster_targets(
    m: &DynamicMessage,
    path: &str,
    clusters: &Names,
    what: &str,
) -> Result<Vec<WeightedCluster>, ConfigError> {
    let resolve = |name: &str, p: String| {
        clusters
            .resolve(name)
            .ok_or_else(|| ConfigError::at(p, format!("cluster {name:?} is not defined")))
    };
    let mut targets = Vec::new();
    let Some(wc) = msg(m, "weighted_clusters") else {
        let name = string(m, "cluster");
        if name.is_empty() {
            return Err(ConfigError::at(
                path,
                format!("{what} needs cluster or weighted_clusters"),
            ));
        }
        targets.push(WeightedCluster {
            cluster: resolve(&name, format!("{path}.cluster"))?,
            weight: 1,
        });
        return Ok(targets);
    };
    for (i, cw) in list(wc, "clusters").iter().enumerate() {
        let cw = as_msg(cw);
        let p = format!("{path}.weighted_clusters.clusters{}", element_label(i, cw));
        let weight = match cw.get_field_by_name("weight").as_deref() {
            Some(Value::U32(w)) => *w,
            Some(Value::Message(wrapper)) => u32_value(wrapper),
            _ => 0,
        };
        if weight == 0 {
            return Err(ConfigError::at(format!("{p}.weight"), "must be at least 1"));
        }
        targets.push(WeightedCluster {
            cluster: resolve(&string(cw, "name"), format!("{p}.name"))?,
            weight,
        });
    }
    if targets.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.weighted_clusters.clusters"),
            "needs at least one cluster",
        ));
    }
    Ok(targets)
}

// === reflective accessors (config time only; they borrow, never copy a subtree) ===

pub(super) fn plain_bool(m: &DynamicMessage, field: &str) -> bool {
    matches!(
        m.get_field_by_name(field).as_deref(),
        Some(Value::Bool(true))
    )
}

pub(super) fn msg<'a>(m: &'a DynamicMessage, field: &str) -> Option<&'a DynamicMessage> {
    if !m.has_field_by_name(field) {
        return None;
    }
    match m.get_field_by_name(field)? {
        Cow::Borrowed(Value::Message(v)) => Some(v),
        _ => None,
    }
}

/// `m.typed_config` unpacked (`path` names it; `missing` says what lacks one).
pub(super) fn typed_config(
    m: &DynamicMessage,
    path: &str,
    missing: &str,
) -> Result<DynamicMessage, ConfigError> {
    let Some(any) = msg(m, "typed_config") else {
        return Err(ConfigError::at(path, missing));
    };
    unpack_any(any).map_err(|e| ConfigError::at(path, e))
}

pub(super) fn as_msg(v: &Value) -> &DynamicMessage {
    match v {
        Value::Message(m) => m,
        other => panic!("descriptor says message, found {other:?}"),
    }
}

pub(super) fn list<'a>(m: &'a DynamicMessage, field: &str) -> &'a [Value] {
    match m.get_field_by_name(field) {
        Some(Cow::Borrowed(Value::List(v))) => v,
        _ => &[],
    }
}

pub(super) fn string(m: &DynamicMessage, field: &str) -> String {
    match m.get_field_by_name(field).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

pub(super) fn enum_name(m: &DynamicMessage, field: &str) -> String {
    let fd = m
        .descriptor()
        .get_field_by_name(field)
        .expect("field exists");
    let n = match m.get_field_by_name(field).as_deref() {
        Some(Value::EnumNumber(n)) => *n,
        _ => 0,
    };
    match fd.kind().as_enum().and_then(|e| e.get_value(n)) {
        Some(v) => v.name().to_owned(),
        None => format!("#{n}"),
    }
}

pub(super) fn u32_value(wrapper: &DynamicMessage) -> u32 {
    match wrapper.get_field_by_name("value").as_deref() {
        Some(Value::U32(v)) => *v,
        _ => 0,
    }
}

pub(super) fn duration(d: &DynamicMessage, path: &str) -> Result<Duration, ConfigError> {
    let secs = match d.get_field_by_name("seconds").as_deref() {
        Some(Value::I64(s)) => *s,
        _ => 0,
    };
    let nanos = match d.get_field_by_name("nanos").as_deref() {
        Some(Value::I32(n)) => *n,
        _ => 0,
    };
    if secs < 0 || nanos < 0 {
        return Err(ConfigError::at(path, "must not be negative"));
    }
    Ok(Duration::new(secs as u64, nanos as u32))
}

pub(crate) fn socket_address(
    address: &DynamicMessage,
    path: &str,
) -> Result<SocketAddr, ConfigError> {
    let Some(sa) = msg(address, "socket_address") else {
        return Err(ConfigError::at(path, "only socket_address is supported"));
    };
    let host = string(sa, "address");
    let ip: IpAddr = host.parse().map_err(|_| {
        ConfigError::at(
            format!("{path}.socket_address.address"),
            format!(
                "{host:?} is not an IP address (STATIC clusters and listeners take IP literals)"
            ),
        )
    })?;
    Ok(SocketAddr::new(ip, port_value(sa, path)?))
}

/// A `SocketAddress`'s `port_value` (0 when unset), within range (`path`: the `Address`).
pub(super) fn port_value(sa: &DynamicMessage, path: &str) -> Result<u16, ConfigError> {
    let port = match sa.get_field_by_name("port_value").as_deref() {
        Some(Value::U32(p)) => *p,
        _ => 0,
    };
    u16::try_from(port).map_err(|_| {
        ConfigError::at(
            format!("{path}.socket_address.port_value"),
            format!("port {port} is out of range"),
        )
    })
}
