//! `STRICT_DNS` and `LOGICAL_DNS` clusters: what to resolve, how and how often, compiled
//! from the cluster's fields with Envoy's defaults. Resolution itself is `crate::dns`'s (in
//! control, never on a shard); the snapshot carries such a cluster with the endpoints the
//! latest answers gave.

use std::net::SocketAddr;
use std::time::Duration;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use super::compile::{as_msg, duration, enum_name, list, msg, plain_bool, string, u32_value};
use super::supported::unpack_any;
use super::ConfigError;

/// Envoy's default `dns_refresh_rate`.
pub const DEFAULT_REFRESH: Duration = Duration::from_millis(5000);

/// A cluster whose endpoints come from DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCluster {
    pub cluster: String,
    /// `LOGICAL_DNS`: one logical host, the first address of the latest answer.
    pub logical: bool,
    pub targets: Vec<DnsTarget>,
    pub family: LookupFamily,
    /// `dns_refresh_rate`.
    pub refresh: Duration,
    /// `dns_failure_refresh_rate` (base, max): jittered exponential back-off after a
    /// failure; without it a failure is retried at `refresh`.
    pub failure_refresh: Option<(Duration, Duration)>,
    /// `respect_dns_ttl`: the next resolution when the answer's (smallest) TTL runs out.
    pub respect_ttl: bool,
    /// `dns_jitter`: a random extra delay below this, added to each refresh.
    pub jitter: Option<Duration>,
    pub resolver: ResolverConfig,
    /// `wait_for_warm_on_init` (default true): the first publish waits for the first answer.
    pub wait_for_warm: bool,
}

/// One `lb_endpoint`: a name to resolve and what each address it gives becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsTarget {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

/// `dns_lookup_family`, as Envoy defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupFamily {
    /// AAAA, and A when there is no AAAA (Envoy's default).
    Auto,
    V4Only,
    V6Only,
    /// A, and AAAA when there is no A.
    V4Preferred,
    /// Both.
    All,
}

/// Which resolver answers, from `typed_dns_resolver_config`, `dns_resolution_config` or the
/// deprecated `dns_resolvers` / `use_tcp_for_dns_lookups` (in Envoy's order of precedence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolverConfig {
    /// A DNS client (Envoy's c-ares; hickory-resolver here).
    Dns(DnsClient),
    /// The system's `getaddrinfo`, on a blocking thread; `num_retries` more tries on failure.
    Getaddrinfo { retries: u32 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsClient {
    /// Name servers; empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// `use_resolvers_as_fallback`: use `servers` only when the system names none.
    pub servers_as_fallback: bool,
    pub use_tcp: bool,
    /// `no_default_search_domain`: the system's search domains are not applied.
    pub no_search: bool,
    /// `query_timeout_seconds`.
    pub timeout: Option<Duration>,
    /// `query_tries`.
    pub tries: Option<u32>,
    /// `rotate_nameservers`.
    pub rotate: bool,
}

const CARES: &str = "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig";
const GETADDRINFO: &str =
    "envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig";

/// Compiles the DNS side of cluster `c` (at `path`), of type `STRICT_DNS` (`logical` false)
/// or `LOGICAL_DNS`.
pub(crate) fn dns_cluster(
    c: &DynamicMessage,
    path: &str,
    name: &str,
    logical: bool,
) -> Result<DnsCluster, ConfigError> {
    let targets = targets(c, path, logical)?;
    let family = match enum_name(c, "dns_lookup_family").as_str() {
        "AUTO" => LookupFamily::Auto,
        "V4_ONLY" => LookupFamily::V4Only,
        "V6_ONLY" => LookupFamily::V6Only,
        "V4_PREFERRED" => LookupFamily::V4Preferred,
        "ALL" => LookupFamily::All,
        other => {
            return Err(ConfigError::at(
                format!("{path}.dns_lookup_family"),
                format!("unknown value {other}"),
            ))
        }
    };
    let refresh = match msg(c, "dns_refresh_rate") {
        Some(d) => duration(d, &format!("{path}.dns_refresh_rate"))?,
        None => DEFAULT_REFRESH,
    };
    // Envoy's validation: greater than 1 ms.
    if refresh <= Duration::from_millis(1) {
        return Err(ConfigError::at(
            format!("{path}.dns_refresh_rate"),
            "must be greater than 1ms",
        ));
    }
    let failure_refresh = match msg(c, "dns_failure_refresh_rate") {
        Some(f) => {
            let p = format!("{path}.dns_failure_refresh_rate");
            let base = match msg(f, "base_interval") {
                Some(d) => duration(d, &format!("{p}.base_interval"))?,
                None => return Err(ConfigError::at(format!("{p}.base_interval"), "is required")),
            };
            if base <= Duration::from_millis(1) {
                return Err(ConfigError::at(
                    format!("{p}.base_interval"),
                    "must be greater than 1ms",
                ));
            }
            let max = match msg(f, "max_interval") {
                Some(d) => duration(d, &format!("{p}.max_interval"))?,
                None => base * 10,
            };
            if max < base {
                return Err(ConfigError::at(
                    format!("{p}.max_interval"),
                    "must be at least base_interval",
                ));
            }
            Some((base, max))
        }
        None => None,
    };
    let jitter = match msg(c, "dns_jitter") {
        Some(d) => Some(duration(d, &format!("{path}.dns_jitter"))?).filter(|j| !j.is_zero()),
        None => None,
    };
    let wait_for_warm = match msg(c, "wait_for_warm_on_init") {
        Some(b) => matches!(
            b.get_field_by_name("value").as_deref(),
            Some(Value::Bool(true))
        ),
        None => true,
    };
    Ok(DnsCluster {
        cluster: name.to_owned(),
        logical,
        targets,
        family,
        refresh,
        failure_refresh,
        respect_ttl: plain_bool(c, "respect_dns_ttl"),
        jitter,
        resolver: resolver(c, path)?,
        wait_for_warm,
    })
}

/// The names to resolve: every `lb_endpoint` of `load_assignment`; `LOGICAL_DNS` takes
/// exactly one.
fn targets(c: &DynamicMessage, path: &str, logical: bool) -> Result<Vec<DnsTarget>, ConfigError> {
    let mut out = Vec::new();
    if let Some(la) = msg(c, "load_assignment") {
        for (i, group) in list(la, "endpoints").iter().enumerate() {
            for (j, lbe) in list(as_msg(group), "lb_endpoints").iter().enumerate() {
                let p = format!("{path}.load_assignment.endpoints[{i}].lb_endpoints[{j}]");
                let lbe = as_msg(lbe);
                let Some(address) = msg(lbe, "endpoint").and_then(|e| msg(e, "address")) else {
                    return Err(ConfigError::at(
                        format!("{p}.endpoint.address"),
                        "an endpoint needs an address",
                    ));
                };
                let (host, port) = host_port(address, &format!("{p}.endpoint.address"))?;
                let weight = msg(lbe, "load_balancing_weight").map_or(1, u32_value);
                if weight == 0 {
                    return Err(ConfigError::at(
                        format!("{p}.load_balancing_weight"),
                        "must be at least 1",
                    ));
                }
                out.push(DnsTarget { host, port, weight });
            }
        }
    }
    if logical && out.len() != 1 {
        return Err(ConfigError::at(
            format!("{path}.load_assignment"),
            "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
        ));
    }
    Ok(out)
}

/// A `socket_address` whose `address` is a name (or an IP literal) to resolve.
fn host_port(address: &DynamicMessage, path: &str) -> Result<(String, u16), ConfigError> {
    let Some(sa) = msg(address, "socket_address") else {
        return Err(ConfigError::at(
            path,
            "a DNS cluster's endpoint needs a socket_address",
        ));
    };
    let host = string(sa, "address");
    if host.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.socket_address.address"),
            "a DNS cluster's endpoint needs a name to resolve",
        ));
    }
    Ok((host, super::compile::port_value(sa, path)?))
}

fn resolver(c: &DynamicMessage, path: &str) -> Result<ResolverConfig, ConfigError> {
    if let Some(typed) = msg(c, "typed_dns_resolver_config") {
        let p = format!("{path}.typed_dns_resolver_config.typed_config");
        let Some(any) = msg(typed, "typed_config") else {
            return Err(ConfigError::at(p, "is required"));
        };
        let inner = unpack_any(any).map_err(|e| ConfigError::at(p.clone(), e))?;
        let type_name = inner.descriptor().full_name().to_owned();
        return match type_name.as_str() {
            CARES => {
                let mut client = options(msg(&inner, "dns_resolver_options"));
                client.servers = addresses(list(&inner, "resolvers"), &format!("{p}.resolvers"))?;
                client.servers_as_fallback = plain_bool(&inner, "use_resolvers_as_fallback");
                client.rotate = plain_bool(&inner, "rotate_nameservers");
                if let Some(t) = msg(&inner, "query_timeout_seconds") {
                    let secs = match t.get_field_by_name("value").as_deref() {
                        Some(Value::U64(v)) => *v,
                        _ => 0,
                    };
                    if secs == 0 {
                        return Err(ConfigError::at(
                            format!("{p}.query_timeout_seconds"),
                            "must be at least 1",
                        ));
                    }
                    client.timeout = Some(Duration::from_secs(secs));
                }
                if let Some(t) = msg(&inner, "query_tries") {
                    let tries = u32_value(t);
                    if tries == 0 {
                        return Err(ConfigError::at(
                            format!("{p}.query_tries"),
                            "must be at least 1",
                        ));
                    }
                    client.tries = Some(tries);
                }
                Ok(ResolverConfig::Dns(client))
            }
            GETADDRINFO => Ok(ResolverConfig::Getaddrinfo {
                retries: msg(&inner, "num_retries").map_or(0, u32_value),
            }),
            other => Err(ConfigError::at(
                p,
                format!("DNS resolver extension {other} is not supported by zerohop (supported: envoy.network.dns_resolver.cares, envoy.network.dns_resolver.getaddrinfo)"),
            )),
        };
    }
    if let Some(rc) = msg(c, "dns_resolution_config") {
        let mut client = options(msg(rc, "dns_resolver_options"));
        let p = format!("{path}.dns_resolution_config.resolvers");
        client.servers = addresses(list(rc, "resolvers"), &p)?;
        return Ok(ResolverConfig::Dns(client));
    }
    Ok(ResolverConfig::Dns(DnsClient {
        servers: addresses(list(c, "dns_resolvers"), &format!("{path}.dns_resolvers"))?,
        use_tcp: plain_bool(c, "use_tcp_for_dns_lookups"),
        ..DnsClient::default()
    }))
}

fn options(o: Option<&DynamicMessage>) -> DnsClient {
    DnsClient {
        use_tcp: o.is_some_and(|o| plain_bool(o, "use_tcp_for_dns_lookups")),
        no_search: o.is_some_and(|o| plain_bool(o, "no_default_search_domain")),
        ..DnsClient::default()
    }
}

/// Name server addresses (IP literals; port 53 when none is given, as Envoy's).
fn addresses(list: &[Value], path: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let mut addr = super::compile::socket_address(as_msg(a), &format!("{path}[{i}]"))?;
            if addr.port() == 0 {
                addr.set_port(53);
            }
            Ok(addr)
        })
        .collect()
}
