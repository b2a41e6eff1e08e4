//! Compiles an Envoy `Listener`: its listener filters, its filter chains with their
//! `filter_chain_match` (overlaps refused as Envoy refuses them), and each chain's terminal
//! network filter (`tcp_proxy` here, the HTTP connection manager in `http`). Cluster names
//! resolve through the [`Names`] of the compile in progress.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::*;

use super::compile::*;
use super::supported::{element_label, unpack_any};
use super::ConfigError;

/// Envoy's default `TcpProxy.idle_timeout`.
const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's default `Listener.listener_filters_timeout`.
const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Where an `http_connection_manager` with `rds` finds its route configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Routes<'a> {
    /// A bootstrap without `dynamic_resources`: `rds` is an error.
    Static,
    /// Route configurations that arrived by RDS, by name. One that has not arrived (a
    /// listener checked as it arrives, before its routes) or was removed compiles as an
    /// empty route configuration, which answers 404, as Envoy's does.
    Rds(&'a HashMap<String, DynamicMessage>),
}

pub(crate) fn listener(
    l: &DynamicMessage,
    index: usize,
    path: &str,
    clusters: &Names,
    routes: Routes,
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
    let mut listener_filters = Vec::new();
    for (i, f) in list(l, "listener_filters").iter().enumerate() {
        let f = as_msg(f);
        let at = format!("{path}.listener_filters{}", element_label(i, f));
        listener_filters.push(listener_filter(f, &at)?);
    }
    let listener_filters_timeout = match msg(l, "listener_filters_timeout") {
        Some(d) => {
            Some(duration(d, &format!("{path}.listener_filters_timeout"))?).filter(|d| !d.is_zero())
        }
        None => Some(DEFAULT_LISTENER_FILTERS_TIMEOUT),
    };
    let mut filter_chains = Vec::new();
    for (i, c) in list(l, "filter_chains").iter().enumerate() {
        let c = as_msg(c);
        let cpath = format!("{path}.filter_chains{}", element_label(i, c));
        let chain = filter_chain(c, &cpath, clusters, routes)?;
        if let Some(j) = filter_chains
            .iter()
            .position(|o: &FilterChain| overlap(&o.matcher, &chain.matcher))
        {
            return Err(ConfigError::at(
                format!("{cpath}.filter_chain_match"),
                format!("multiple filter chains with overlapping matching rules are defined (filter_chains[{j}] takes the same connections by the same criteria)"),
            ));
        }
        filter_chains.push(chain);
    }
    let mut default_filter_chain = match msg(l, "default_filter_chain") {
        Some(c) => {
            let cpath = format!("{path}.default_filter_chain");
            if c.has_field_by_name("filter_chain_match") {
                return Err(ConfigError::at(
                    format!("{cpath}.filter_chain_match"),
                    "the default filter chain takes no filter_chain_match",
                ));
            }
            Some(filter_chain(c, &cpath, clusters, routes)?)
        }
        None => None,
    };
    if filter_chains.is_empty() && default_filter_chain.is_none() {
        return Err(ConfigError::at(
            format!("{path}.filter_chains"),
            "a listener needs a filter chain or a default_filter_chain",
        ));
    }
    // `traffic_direction` OUTBOUND makes a connection manager's spans egress ones.
    if super::compile::enum_name(l, "traffic_direction") == "OUTBOUND" {
        let chains = filter_chains
            .iter_mut()
            .chain(default_filter_chain.as_mut());
        for f in chains.flat_map(|c| c.filters.iter_mut()) {
            if let NetworkFilter::Http(m) = f {
                if let Some(t) = &mut m.tracing {
                    t.egress = true;
                }
            }
        }
    }
    Ok(Listener {
        stats: Default::default(),
        name,
        address,
        listener_filters,
        listener_filters_timeout,
        continue_on_listener_filters_timeout: plain_bool(l, "continue_on_listener_filters_timeout"),
        filter_chains,
        default_filter_chain,
    })
}

/// Whether two matches share a combination of criteria, as Envoy checks it: each list
/// criterion stands for each of its values (an empty one for "any"), and two chains that
/// name the same value at every criterion would both take the same connections.
fn overlap(a: &FilterChainMatch, b: &FilterChainMatch) -> bool {
    fn common<T: PartialEq>(x: &[T], y: &[T]) -> bool {
        (x.is_empty() && y.is_empty()) || x.iter().any(|v| y.contains(v))
    }
    a.destination_port == b.destination_port
        && common(&a.prefix_ranges, &b.prefix_ranges)
        && common(&a.server_names, &b.server_names)
        && a.transport_protocol == b.transport_protocol
        && common(&a.application_protocols, &b.application_protocols)
        && common(
            &a.direct_source_prefix_ranges,
            &b.direct_source_prefix_ranges,
        )
        && a.source_type == b.source_type
        && common(&a.source_prefix_ranges, &b.source_prefix_ranges)
        && common(&a.source_ports, &b.source_ports)
}

const HTTP_INSPECTOR: &str = "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

fn listener_filter(f: &DynamicMessage, path: &str) -> Result<ListenerFilter, ConfigError> {
    let Some(any) = msg(f, "typed_config") else {
        return Err(ConfigError::at(
            path,
            "a listener filter needs a typed_config",
        ));
    };
    let tpath = format!("{path}.typed_config");
    let config = unpack_any(any).map_err(|e| ConfigError::at(tpath.clone(), e))?;
    match config.descriptor().full_name() {
        HTTP_INSPECTOR => Ok(ListenerFilter::HttpInspector),
        TLS_INSPECTOR => Ok(ListenerFilter::TlsInspector),
        other => Err(ConfigError::at(
            tpath,
            format!("listener filter {other} is not supported by zerohop (supported: envoy.filters.listener.http_inspector, envoy.filters.listener.tls_inspector)"),
        )),
    }
}

/// A filter chain: its match and its network filters (Istio's no-op ones dropped), of which
/// the one zerohop implements, tcp_proxy or the HTTP connection manager, is terminal.
fn filter_chain(
    c: &DynamicMessage,
    path: &str,
    clusters: &Names,
    routes: Routes,
) -> Result<FilterChain, ConfigError> {
    let matcher = match msg(c, "filter_chain_match") {
        Some(m) => filter_chain_match(m, &format!("{path}.filter_chain_match"))?,
        None => FilterChainMatch::default(),
    };
    let fpath = format!("{path}.filters");
    // Istio's own network filters (stats, metadata exchange) come before the terminal one.
    let filters: Vec<_> = list(c, "filters")
        .iter()
        .enumerate()
        .filter(|(_, f)| !super::http::istio_no_op(as_msg(f)))
        .collect();
    // Local rate limits first, then the one terminal filter.
    let Some(((i, f), limits)) = filters.split_last() else {
        return Err(ConfigError::at(
            fpath,
            "a filter chain needs a network filter (tcp_proxy or http_connection_manager)",
        ));
    };
    let mut out = Vec::with_capacity(filters.len());
    for &(k, l) in limits {
        let l = as_msg(l);
        let lpath = format!("{fpath}{}.typed_config", element_label(k, l));
        let m = typed_config(l, &lpath)?;
        match m.descriptor().full_name() {
            NETWORK_LIMIT => out.push(NetworkFilter::LocalRateLimit(network_rate_limit(
                &m,
                &lpath,
                &clusters.runtime,
            )?)),
            NETWORK_RBAC => out.push(NetworkFilter::Rbac(network_rbac(&m, &lpath)?)),
            other => {
                return Err(ConfigError::at(
                    lpath,
                    format!(
                        "network filter {other} is not supported here (before the terminal filter: envoy.filters.network.local_ratelimit, envoy.filters.network.rbac)"
                    ),
                ))
            }
        }
    }
    let f = as_msg(f);
    let fpath = format!("{fpath}{}.typed_config", element_label(*i, f));
    let tp = typed_config(f, &fpath)?;
    out.push(match tp.descriptor().full_name() {
        TCP_PROXY => NetworkFilter::TcpProxy(tcp_proxy(&tp, &fpath, clusters)?),
        HCM => NetworkFilter::Http(super::http::http_manager(&tp, &fpath, clusters, routes)?),
        other => {
            return Err(ConfigError::at(
                fpath,
                format!("network filter {other} is not supported here (the last filter: tcp_proxy or http_connection_manager)"),
            ))
        }
    });
    let tls = match msg(c, "transport_socket") {
        Some(ts) => {
            super::tls::downstream(ts, &format!("{path}.transport_socket"), &clusters.secrets)?
        }
        None => None,
    };
    Ok(FilterChain {
        name: string(c, "name"),
        matcher,
        filters: out,
        tls,
    })
}

/// A network filter's `typed_config`, decoded.
fn typed_config(f: &DynamicMessage, path: &str) -> Result<DynamicMessage, ConfigError> {
    super::compile::typed_config(f, path, "a filter needs a typed_config")
}

const NETWORK_LIMIT: &str = "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit";
const NETWORK_RBAC: &str = "envoy.extensions.filters.network.rbac.v3.RBAC";

/// `envoy.filters.network.rbac`: checked once per connection, before its first byte is
/// served (`enforcement_type: ONE_TIME_ON_FIRST_BYTE`, Envoy's default; `CONTINUOUS` is
/// refused).
fn network_rbac(m: &DynamicMessage, path: &str) -> Result<NetworkRbac, ConfigError> {
    let stat_prefix = string(m, "stat_prefix");
    if stat_prefix.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.stat_prefix"),
            "a network RBAC filter needs a stat_prefix",
        ));
    }
    if enum_name(m, "enforcement_type") != "ONE_TIME_ON_FIRST_BYTE" {
        return Err(ConfigError::at(
            format!("{path}.enforcement_type"),
            "only ONE_TIME_ON_FIRST_BYTE is supported",
        ));
    }
    let rules = match msg(m, "rules") {
        Some(r) => Some(super::rbac::rules(r, &format!("{path}.rules"))?),
        None => None,
    };
    let shadow = match msg(m, "shadow_rules") {
        Some(r) => Some(super::rbac::rules(r, &format!("{path}.shadow_rules"))?),
        None => None,
    };
    Ok(NetworkRbac {
        stat_prefix,
        rules,
        shadow,
    })
}

/// `envoy.filters.network.local_ratelimit`: a bucket per filter (Envoy's "each filter and
/// filter chain has an independent rate limit"), `runtime_enabled` read now.
fn network_rate_limit(
    m: &DynamicMessage,
    path: &str,
    rt: &super::runtime::Runtime,
) -> Result<NetworkRateLimit, ConfigError> {
    let stat_prefix = string(m, "stat_prefix");
    if stat_prefix.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.stat_prefix"),
            "is required (Envoy's validation)",
        ));
    }
    let Some(tb) = msg(m, "token_bucket") else {
        return Err(ConfigError::at(
            format!("{path}.token_bucket"),
            "is required (Envoy's validation)",
        ));
    };
    let bucket = super::filters::token_bucket(tb, &format!("{path}.token_bucket"), path)?;
    let enabled = match msg(m, "runtime_enabled") {
        Some(flag) => {
            let default = match msg(flag, "default_value") {
                Some(b) => matches!(
                    b.get_field_by_name("value").as_deref(),
                    Some(Value::Bool(true))
                ),
                None => {
                    return Err(ConfigError::at(
                        format!("{path}.runtime_enabled.default_value"),
                        "is required (Envoy's validation)",
                    ))
                }
            };
            rt.boolean(&string(flag, "runtime_key"), default)
        }
        None => true,
    };
    Ok(NetworkRateLimit {
        stat_prefix,
        bucket,
        enabled,
    })
}

fn filter_chain_match(m: &DynamicMessage, path: &str) -> Result<FilterChainMatch, ConfigError> {
    let destination_port = match msg(m, "destination_port").map(u32_value) {
        Some(p) => Some(u16::try_from(p).ok().filter(|&p| p > 0).ok_or_else(|| {
            ConfigError::at(
                format!("{path}.destination_port"),
                format!("port {p} is out of range 1..=65535"),
            )
        })?),
        None => None,
    };
    let strings = |field: &str, lower: bool| -> Vec<String> {
        list(m, field)
            .iter()
            .filter_map(|v| match v {
                Value::String(s) if lower => Some(s.to_ascii_lowercase()),
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    };
    let server_names = strings("server_names", true);
    for (i, n) in server_names.iter().enumerate() {
        let wildcard_ok = !n.contains('*') || (n.starts_with("*.") && n.matches('*').count() == 1);
        if n.is_empty() || !wildcard_ok {
            return Err(ConfigError::at(
                format!("{path}.server_names[{i}]"),
                format!("{n:?}: a server name is a host name, or *. followed by a domain"),
            ));
        }
    }
    let source_type = match enum_name(m, "source_type").as_str() {
        "ANY" => SourceType::Any,
        "SAME_IP_OR_LOOPBACK" => SourceType::SameIpOrLoopback,
        "EXTERNAL" => SourceType::External,
        other => {
            return Err(ConfigError::at(
                format!("{path}.source_type"),
                format!("unknown source_type {other}"),
            ))
        }
    };
    let mut source_ports = Vec::new();
    for (i, p) in list(m, "source_ports").iter().enumerate() {
        let p = match p {
            Value::U32(p) => *p,
            _ => 0,
        };
        source_ports.push(u16::try_from(p).ok().filter(|&p| p > 0).ok_or_else(|| {
            ConfigError::at(
                format!("{path}.source_ports[{i}]"),
                format!("port {p} is out of range 1..=65535"),
            )
        })?);
    }
    let transport_protocol = Some(string(m, "transport_protocol")).filter(|t| !t.is_empty());
    Ok(FilterChainMatch {
        destination_port,
        prefix_ranges: cidr_ranges(m, "prefix_ranges", path)?,
        server_names,
        transport_protocol,
        application_protocols: strings("application_protocols", false),
        direct_source_prefix_ranges: cidr_ranges(m, "direct_source_prefix_ranges", path)?,
        source_type,
        source_prefix_ranges: cidr_ranges(m, "source_prefix_ranges", path)?,
        source_ports,
    })
}

/// A list of `CidrRange`s: the address an IP literal, the prefix length within it, the
/// address stored masked (as Envoy stores it).
fn cidr_ranges(m: &DynamicMessage, field: &str, path: &str) -> Result<Vec<CidrRange>, ConfigError> {
    list(m, field)
        .iter()
        .enumerate()
        .map(|(i, r)| cidr(as_msg(r), &format!("{path}.{field}[{i}]")))
        .collect()
}

/// A `CidrRange`: the address an IP literal, the prefix length within it, the address
/// stored masked (as Envoy stores it).
pub(crate) fn cidr(r: &DynamicMessage, p: &str) -> Result<CidrRange, ConfigError> {
    let text = string(r, "address_prefix");
    let address: IpAddr = text.parse().map_err(|_| {
        ConfigError::at(
            format!("{p}.address_prefix"),
            format!("{text:?} is not an IP address"),
        )
    })?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let len = msg(r, "prefix_len").map_or(0, u32_value);
    if len > max {
        return Err(ConfigError::at(
            format!("{p}.prefix_len"),
            format!("{len} is longer than the address ({max} bits)"),
        ));
    }
    let masked = match address {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    Ok(CidrRange {
        address: masked,
        prefix_len: len as u8,
    })
}

fn tcp_proxy(tp: &DynamicMessage, path: &str, clusters: &Names) -> Result<TcpProxy, ConfigError> {
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
    let access_log = super::accesslog::access_logs(tp, path, &clusters.runtime)?;
    Ok(TcpProxy {
        stats: Default::default(),
        access_log,
        stat_prefix,
        targets,
        idle_timeout,
    })
}
