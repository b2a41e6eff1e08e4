//! Compiles a checked Envoy bootstrap into a [`Snapshot`]: names resolved to [`ClusterId`]s,
//! durations and addresses parsed, Envoy's defaults filled in, value-level limits enforced.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::*;

use super::supported::{element_label, unpack_any};
use super::{Bootstrap, ConfigError};

/// Envoy's default `Cluster.connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's default `TcpProxy.idle_timeout`.
const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Collects resources as the loader streams them and compiles the snapshot. Clusters are
/// compiled as they arrive (their decoded messages are dropped at once); listeners refer to
/// clusters by name, so they are compiled when everything has been read.
#[derive(Debug, Default)]
pub(super) struct Builder {
    clusters: Vec<Cluster>,
    ids: HashMap<String, ClusterId>,
    listeners: Vec<(String, DynamicMessage)>,
}

impl Builder {
    pub(super) fn add_cluster(
        &mut self,
        c: &DynamicMessage,
        path: String,
    ) -> Result<(), ConfigError> {
        let cluster = cluster(c, &path)?;
        let id = ClusterId(self.clusters.len() as u32);
        if self.ids.insert(cluster.name.clone(), id).is_some() {
            return Err(ConfigError::at(
                path,
                format!("duplicate cluster name {:?}", cluster.name),
            ));
        }
        self.clusters.push(cluster);
        Ok(())
    }

    pub(super) fn add_listener(&mut self, l: DynamicMessage, path: String) {
        self.listeners.push((path, l));
    }

    /// Compiles the listeners and the rest of the bootstrap (`node`, `admin`).
    pub(super) fn finish(self, b: &DynamicMessage) -> Result<Bootstrap, ConfigError> {
        let node_id = msg(b, "node").map(|n| string(n, "id")).unwrap_or_default();
        let admin_address = match msg(b, "admin").and_then(|a| msg(a, "address")) {
            Some(a) => Some(socket_address(a, "admin.address")?),
            None => None,
        };
        let mut snapshot = Snapshot {
            clusters: self.clusters,
            listeners: Vec::new(),
        };
        for (i, (path, l)) in self.listeners.iter().enumerate() {
            let listener = listener(l, i, path, &self.ids)?;
            if let Some(other) = snapshot.listeners.iter().find(|o| o.name == listener.name) {
                return Err(ConfigError::at(
                    path.clone(),
                    format!("duplicate listener name {:?}", other.name),
                ));
            }
            let bound =
                |o: &Listener| o.address == listener.address && listener.address.port() != 0;
            if let Some(other) = snapshot.listeners.iter().find(|o| bound(o)) {
                return Err(ConfigError::at(
                    path.clone(),
                    format!(
                        "address {} is already used by listener {:?}",
                        listener.address, other.name
                    ),
                ));
            }
            snapshot.listeners.push(listener);
        }
        Ok(Bootstrap {
            snapshot,
            node_id,
            admin_address,
        })
    }
}

fn cluster(c: &DynamicMessage, path: &str) -> Result<Cluster, ConfigError> {
    let name = string(c, "name");
    if name.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.name"),
            "a cluster needs a name",
        ));
    }
    let kind = enum_name(c, "type");
    if kind != "STATIC" {
        return Err(ConfigError::at(
            format!("{path}.type"),
            format!("cluster type {kind} is not supported by zerohop (supported: STATIC)"),
        ));
    }
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
    let lb_policy = match enum_name(c, "lb_policy").as_str() {
        "ROUND_ROBIN" => LbPolicy::RoundRobin,
        "RANDOM" => LbPolicy::Random,
        other => {
            return Err(ConfigError::at(
                format!("{path}.lb_policy"),
                format!(
                "lb_policy {other} is not supported by zerohop (supported: ROUND_ROBIN, RANDOM)"
            ),
            ))
        }
    };
    let mut endpoints = Vec::new();
    if let Some(la) = msg(c, "load_assignment") {
        for (i, group) in list(la, "endpoints").iter().enumerate() {
            for (j, lbe) in list(as_msg(group), "lb_endpoints").iter().enumerate() {
                let p = format!("{path}.load_assignment.endpoints[{i}].lb_endpoints[{j}]");
                let lbe = as_msg(lbe);
                let address = match msg(lbe, "endpoint").and_then(|e| msg(e, "address")) {
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
                endpoints.push(Endpoint { address, weight });
            }
        }
    }
    Ok(Cluster {
        name,
        connect_timeout,
        lb_policy,
        endpoints,
    })
}

fn listener(
    l: &DynamicMessage,
    index: usize,
    path: &str,
    clusters: &HashMap<String, ClusterId>,
) -> Result<Listener, ConfigError> {
    let mut name = string(l, "name");
    if name.is_empty() {
        name = format!("listener_{index}");
    }
    let address = match msg(l, "address") {
        Some(a) => socket_address(a, &format!("{path}.address"))?,
        None => {
            return Err(ConfigError::at(
                format!("{path}.address"),
                "a listener needs an address",
            ))
        }
    };
    let chains = list(l, "filter_chains");
    if chains.len() != 1 {
        return Err(ConfigError::at(
            format!("{path}.filter_chains"),
            format!(
                "exactly one filter chain is supported (found {})",
                chains.len()
            ),
        ));
    }
    let filters = list(as_msg(&chains[0]), "filters");
    let fpath = format!("{path}.filter_chains[0].filters");
    if filters.len() != 1 {
        return Err(ConfigError::at(
            fpath,
            format!(
                "exactly one network filter (tcp_proxy or http_connection_manager) is supported (found {})",
                filters.len()
            ),
        ));
    }
    let fpath = format!(
        "{fpath}{}.typed_config",
        element_label(0, as_msg(&filters[0]))
    );
    let Some(any) = msg(as_msg(&filters[0]), "typed_config") else {
        return Err(ConfigError::at(fpath, "a filter needs a typed_config"));
    };
    let tp = unpack_any(any).map_err(|e| ConfigError::at(fpath.clone(), e))?;
    let filter = match tp.descriptor().full_name() {
        TCP_PROXY => NetworkFilter::TcpProxy(tcp_proxy(&tp, &fpath, clusters)?),
        HCM => NetworkFilter::Http(super::http::http_manager(&tp, &fpath, clusters)?),
        other => {
            return Err(ConfigError::at(
                fpath,
                format!("network filter {other} is not supported here"),
            ))
        }
    };
    Ok(Listener {
        name,
        address,
        filter,
    })
}

fn tcp_proxy(
    tp: &DynamicMessage,
    path: &str,
    clusters: &HashMap<String, ClusterId>,
) -> Result<TcpProxy, ConfigError> {
    let stat_prefix = string(tp, "stat_prefix");
    if stat_prefix.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.stat_prefix"),
            "tcp_proxy needs a stat_prefix",
        ));
    }
    let targets = cluster_targets(tp, path, clusters, "tcp_proxy")?;
    let idle_timeout = match msg(tp, "idle_timeout") {
        Some(d) => Some(duration(d, &format!("{path}.idle_timeout"))?).filter(|d| !d.is_zero()),
        None => Some(DEFAULT_TCP_IDLE_TIMEOUT),
    };
    Ok(TcpProxy {
        stat_prefix,
        targets,
        idle_timeout,
    })
}

/// The `cluster` or `weighted_clusters.clusters` of a tcp_proxy or a route action (`what`
/// names it in errors), resolved to cluster ids. A weight is a plain `uint32` in tcp_proxy
/// and a `UInt32Value` in routes; both must be at least 1.
pub(super) fn cluster_targets(
    m: &DynamicMessage,
    path: &str,
    clusters: &HashMap<String, ClusterId>,
    what: &str,
) -> Result<Vec<WeightedCluster>, ConfigError> {
    let resolve = |name: &str, p: String| {
        clusters
            .get(name)
            .copied()
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

pub(super) fn msg<'a>(m: &'a DynamicMessage, field: &str) -> Option<&'a DynamicMessage> {
    if !m.has_field_by_name(field) {
        return None;
    }
    match m.get_field_by_name(field)? {
        Cow::Borrowed(Value::Message(v)) => Some(v),
        _ => None,
    }
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

fn socket_address(address: &DynamicMessage, path: &str) -> Result<SocketAddr, ConfigError> {
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
    let port = match sa.get_field_by_name("port_value").as_deref() {
        Some(Value::U32(p)) => *p,
        _ => 0,
    };
    let port = u16::try_from(port).map_err(|_| {
        ConfigError::at(
            format!("{path}.socket_address.port_value"),
            format!("port {port} is out of range"),
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}
