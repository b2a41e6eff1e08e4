//! DNS discovery for `STRICT_DNS` and `LOGICAL_DNS` clusters, as Envoy's: resolution runs
//! here in control (never on a shard), each target on its own timer, and an answer that
//! changes a cluster's endpoints becomes the next generation (the data plane's builder keeps
//! every unchanged listener, route table and cluster: only that cluster's endpoint table is
//! new).
//!
//! Envoy's rules, kept: a target is resolved again after `dns_refresh_rate`, or the answer's
//! smallest TTL with `respect_dns_ttl` (a TTL of 0 keeps the refresh rate); a failure keeps
//! the last good endpoints, counts `update_failure` and retries after
//! `dns_failure_refresh_rate` (jittered exponential back-off) or the refresh rate; an answer
//! with no records (NXDOMAIN, NODATA) is a success with no hosts for `STRICT_DNS`, and leaves
//! a `LOGICAL_DNS` cluster's host as it was. A `STRICT_DNS` cluster's endpoints are every
//! address of every target (deduplicated per target), each with its target's weight; a
//! `LOGICAL_DNS` cluster's one endpoint is the first address of the latest answer (the data
//! plane's open connections to an older address stay until they close).
//!
//! The resolvers are maintained crates: hickory-resolver for Envoy's c-ares settings, the
//! system's getaddrinfo (dns-lookup, on a blocking thread) for
//! `envoy.network.dns_resolver.getaddrinfo`. Nothing is cached between resolutions (Envoy's
//! c-ares keeps no cache by default), so every refresh asks the server.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig,
    ServerOrderingStrategy,
};
use hickory_resolver::TokioResolver;
use zerohop_proto::{Endpoint, Snapshot};

use crate::config::{DnsClient, DnsCluster, LookupFamily, ResolverConfig};

/// One resolution's outcome.
#[derive(Debug)]
enum Answer {
    /// Addresses in the resolver's order (possibly none), and the smallest TTL among them
    /// (`None`: the resolver gives none, as getaddrinfo).
    Ok(Vec<IpAddr>, Option<Duration>),
    Failed(String),
}

/// Envoy's per-cluster update counters (`cluster.<name>.update_*`) and host count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub update_attempt: u64,
    pub update_success: u64,
    pub update_failure: u64,
    pub update_no_rebuild: u64,
    pub membership_total: u64,
}

/// What the tasks share with control's main thread.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a cluster completes its first resolution.
    warmed: Condvar,
    /// Called when some cluster's endpoints changed (control then publishes).
    changed: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct State {
    clusters: HashMap<String, ClusterState>,
}

struct ClusterState {
    spec: DnsCluster,
    /// Per target: its hosts from the latest good answer.
    hosts: Vec<Vec<Endpoint>>,
    endpoints: Vec<Endpoint>,
    warm: bool,
    stats: ClusterStats,
    tasks: Vec<tokio::task::AbortHandle>,
}

/// The DNS clusters in force and their resolver tasks.
pub struct Discovery {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("clusters", &self.stats().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Discovery {
    /// A discovery with no clusters; `changed` is called (from a resolver thread) whenever a
    /// cluster's endpoints change (also a first answer that came after the publish that
    /// stopped waiting for it).
    pub fn new(changed: impl Fn() + Send + Sync + 'static) -> std::io::Result<Discovery> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("dns")
            .enable_all()
            .build()?;
        Ok(Discovery {
            runtime,
            shared: Arc::new(Shared {
                state: Mutex::default(),
                warmed: Condvar::new(),
                changed: Box::new(changed),
            }),
        })
    }

    /// Makes `specs` the clusters in force: a cluster whose spec is unchanged keeps its tasks
    /// and endpoints; a new or changed one starts resolving; one no longer listed stops.
    /// Then waits (up to `warm_limit`) for each new cluster that waits for warm to complete
    /// its first resolution, as Envoy's cluster warming does before the cluster is used.
    pub fn set(&self, specs: &[DnsCluster], warm_limit: Duration) {
        let mut waiting = Vec::new();
        {
            let mut st = self.shared.state.lock().expect("dns state");
            st.clusters.retain(|name, c| {
                let keep = specs.iter().any(|s| s.cluster == *name && *s == c.spec);
                if !keep {
                    c.tasks.iter().for_each(|t| t.abort());
                }
                keep
            });
            for spec in specs {
                if st.clusters.contains_key(&spec.cluster) {
                    continue;
                }
                let resolver = match Resolver::new(&spec.resolver, spec.family) {
                    Ok(r) => Arc::new(r),
                    Err(e) => {
                        log::error!(
                            "cluster {:?}: DNS resolver unusable ({e}); it has no endpoints",
                            spec.cluster
                        );
                        continue;
                    }
                };
                let tasks = (0..spec.targets.len())
                    .map(|i| {
                        let target = Target {
                            shared: self.shared.clone(),
                            cluster: spec.cluster.clone(),
                            index: i,
                            resolver: resolver.clone(),
                            spec: spec.clone(),
                        };
                        self.runtime.spawn(target.run()).abort_handle()
                    })
                    .collect();
                if spec.wait_for_warm && !spec.targets.is_empty() {
                    waiting.push(spec.cluster.clone());
                }
                st.clusters.insert(
                    spec.cluster.clone(),
                    ClusterState {
                        spec: spec.clone(),
                        hosts: vec![Vec::new(); spec.targets.len()],
                        endpoints: Vec::new(),
                        warm: !spec.wait_for_warm || spec.targets.is_empty(),
                        stats: ClusterStats::default(),
                        tasks,
                    },
                );
            }
        }
        let deadline = Instant::now() + warm_limit;
        let mut st = self.shared.state.lock().expect("dns state");
        loop {
            let cold: Vec<&String> = waiting
                .iter()
                .filter(|n| st.clusters.get(*n).is_some_and(|c| !c.warm))
                .collect();
            let now = Instant::now();
            if cold.is_empty() {
                return;
            }
            if now >= deadline {
                log::warn!(
                    "DNS clusters {cold:?} have no answer after {warm_limit:?}; published without endpoints until one arrives"
                );
                return;
            }
            st = self
                .shared
                .warmed
                .wait_timeout(st, deadline - now)
                .expect("dns state")
                .0;
        }
    }

    /// Gives every DNS cluster in `snapshot` the endpoints of its latest answers. True when
    /// that changed the snapshot.
    pub fn fill(&self, snapshot: &mut Snapshot) -> bool {
        let st = self.shared.state.lock().expect("dns state");
        let mut changed = false;
        for c in &mut snapshot.clusters {
            if let Some(d) = st.clusters.get(&c.name) {
                if c.endpoints != d.endpoints {
                    c.endpoints = d.endpoints.clone();
                    changed = true;
                }
            }
        }
        changed
    }

    /// Each DNS cluster's counters, by name.
    pub fn stats(&self) -> BTreeMap<String, ClusterStats> {
        let st = self.shared.state.lock().expect("dns state");
        st.clusters
            .iter()
            .map(|(n, c)| (n.clone(), c.stats))
            .collect()
    }
}

/// `cluster.<name>.update_*` lines for admin's `/stats`.
pub fn stat_lines(stats: &BTreeMap<String, ClusterStats>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (name, s) in stats {
        for (stat, v) in [
            ("membership_total", s.membership_total),
            ("update_attempt", s.update_attempt),
            ("update_failure", s.update_failure),
            ("update_no_rebuild", s.update_no_rebuild),
            ("update_success", s.update_success),
        ] {
            out.push((format!("cluster.{name}.{stat}"), v));
        }
    }
    out
}

/// One target of one cluster, resolved on its own timer.
struct Target {
    shared: Arc<Shared>,
    cluster: String,
    index: usize,
    resolver: Arc<Resolver>,
    spec: DnsCluster,
}

impl Target {
    async fn run(self) {
        let target = &self.spec.targets[self.index];
        let mut failures = 0u32;
        loop {
            self.update(|s| s.update_attempt += 1);
            let answer = self.resolver.resolve(&target.host).await;
            let wait = match answer {
                Answer::Ok(ips, ttl) => {
                    if failures > 0 {
                        log::info!(
                            "cluster {:?}: {:?} answers again after {failures} failed resolutions",
                            self.cluster,
                            target.host
                        );
                    }
                    failures = 0;
                    let refresh = match ttl {
                        Some(t) if self.spec.respect_ttl && !t.is_zero() && !ips.is_empty() => t,
                        _ => self.spec.refresh,
                    };
                    self.apply(ips);
                    refresh
                }
                Answer::Failed(e) => {
                    failures = failures.saturating_add(1);
                    // Once per outage at warn, each retry at debug.
                    let level = match failures {
                        1 => log::Level::Warn,
                        _ => log::Level::Debug,
                    };
                    log::log!(
                        level,
                        "cluster {:?}: resolving {:?} failed ({e}); keeping its last endpoints (cluster.{}.update_failure)",
                        self.cluster,
                        target.host,
                        self.cluster
                    );
                    self.update(|s| s.update_failure += 1);
                    self.warm();
                    match self.spec.failure_refresh {
                        Some((base, max)) => backoff(base, max, failures),
                        None => self.spec.refresh,
                    }
                }
            };
            let jitter = self
                .spec
                .jitter
                .map_or(Duration::ZERO, crate::random::below);
            tokio::time::sleep(wait + jitter).await;
        }
    }

    /// A successful answer: the target's hosts become `ips` (LOGICAL_DNS: the first of a
    /// non-empty answer), and a changed endpoint list is announced.
    fn apply(&self, ips: Vec<IpAddr>) {
        let target = &self.spec.targets[self.index];
        let logical = self.spec.logical;
        let mut hosts: Vec<Endpoint> = Vec::with_capacity(ips.len());
        for ip in ips {
            let address = SocketAddr::new(ip, target.port);
            if !hosts.iter().any(|h| h.address == address) {
                hosts.push(Endpoint::new(address, target.weight));
            }
        }
        let announce = {
            let mut st = self.shared.state.lock().expect("dns state");
            let Some(c) = st.clusters.get_mut(&self.cluster) else {
                return;
            };
            if logical && hosts.is_empty() {
                // Envoy: an empty answer does not take a logical host away; it counts as a
                // failure there.
                c.stats.update_failure += 1;
                false
            } else {
                c.stats.update_success += 1;
                hosts.truncate(if logical { 1 } else { usize::MAX });
                if c.hosts[self.index] == hosts {
                    c.stats.update_no_rebuild += 1;
                    false
                } else {
                    c.hosts[self.index] = hosts;
                    c.endpoints = c.hosts.concat();
                    c.stats.membership_total = c.endpoints.len() as u64;
                    log::info!(
                        "cluster {:?}: {:?} resolved; endpoints now {:?}",
                        self.cluster,
                        target.host,
                        c.endpoints.iter().map(|e| e.address).collect::<Vec<_>>()
                    );
                    true
                }
            }
        };
        self.warm();
        if announce {
            (self.shared.changed)();
        }
    }

    /// The cluster completed a resolution (Envoy: the first completion of any target
    /// initializes the cluster).
    fn warm(&self) {
        let mut st = self.shared.state.lock().expect("dns state");
        if let Some(c) = st.clusters.get_mut(&self.cluster) {
            if !c.warm {
                c.warm = true;
                self.shared.warmed.notify_all();
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut ClusterStats)) {
        let mut st = self.shared.state.lock().expect("dns state");
        if let Some(c) = st.clusters.get_mut(&self.cluster) {
            f(&mut c.stats);
        }
    }
}

/// Envoy's jittered exponential back-off after the `failures`-th failure in a row: uniform
/// in `[0, min(base * 2^(failures-1), max))`, never below 1 ms.
fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let ceiling = base
        .checked_mul(1u32 << failures.saturating_sub(1).min(30))
        .unwrap_or(max)
        .min(max);
    crate::random::below(ceiling).max(Duration::from_millis(1))
}

/// A cluster's resolver.
enum Resolver {
    Dns(Box<TokioResolver>),
    Getaddrinfo { family: LookupFamily, retries: u32 },
}

impl Resolver {
    fn new(config: &ResolverConfig, family: LookupFamily) -> Result<Resolver, String> {
        match config {
            ResolverConfig::Getaddrinfo { retries } => Ok(Resolver::Getaddrinfo {
                family,
                retries: *retries,
            }),
            ResolverConfig::Dns(client) => {
                hickory(client, family).map(|r| Resolver::Dns(Box::new(r)))
            }
        }
    }

    async fn resolve(&self, host: &str) -> Answer {
        match self {
            Resolver::Dns(r) => match r.lookup_ip(host).await {
                Ok(lookup) => {
                    let ttl = lookup
                        .as_lookup()
                        .answers()
                        .iter()
                        .filter(|r| r.data.ip_addr().is_some())
                        .map(|r| Duration::from_secs(r.ttl.into()))
                        .min();
                    Answer::Ok(lookup.iter().collect(), ttl)
                }
                Err(e) if e.is_no_records_found() => Answer::Ok(Vec::new(), None),
                Err(e) => Answer::Failed(e.to_string()),
            },
            Resolver::Getaddrinfo { family, retries } => {
                let (host, family) = (host.to_owned(), *family);
                let mut tries = 0;
                loop {
                    let host = host.clone();
                    let answer = tokio::task::spawn_blocking(move || getaddrinfo(&host, family))
                        .await
                        .unwrap_or_else(|e| Answer::Failed(e.to_string()));
                    if matches!(answer, Answer::Ok(..)) || tries >= *retries {
                        return answer;
                    }
                    tries += 1;
                }
            }
        }
    }
}

/// A hickory resolver with Envoy's c-ares settings: the given name servers (or the
/// system's), no cache, the lookup family's query order.
fn hickory(c: &DnsClient, family: LookupFamily) -> Result<TokioResolver, String> {
    let system = hickory_resolver::system_conf::read_system_conf();
    let use_system = c.servers.is_empty()
        || (c.servers_as_fallback
            && system
                .as_ref()
                .is_ok_and(|(conf, _)| !conf.name_servers().is_empty()));
    let (config, mut opts) = match use_system {
        true => {
            let (conf, opts) = system.map_err(|e| format!("system resolver configuration: {e}"))?;
            let conf = match c.no_search {
                true => HickoryConfig::from_parts(None, Vec::new(), conf.name_servers().to_vec()),
                false => conf,
            };
            (conf, opts)
        }
        false => {
            let servers = c
                .servers
                .iter()
                .map(|a| {
                    let mut conn = match c.use_tcp {
                        true => ConnectionConfig::tcp(),
                        false => ConnectionConfig::udp(),
                    };
                    conn.port = a.port();
                    let mut conns = vec![conn];
                    if !c.use_tcp {
                        // A truncated UDP answer is asked again over TCP, as c-ares does.
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = a.port();
                        conns.push(tcp);
                    }
                    NameServerConfig::new(a.ip(), true, conns)
                })
                .collect();
            let opts = system.map(|(_, o)| o).unwrap_or_default();
            (HickoryConfig::from_parts(None, Vec::new(), servers), opts)
        }
    };
    opts.ip_strategy = match family {
        LookupFamily::Auto => LookupIpStrategy::Ipv6thenIpv4,
        LookupFamily::V4Only => LookupIpStrategy::Ipv4Only,
        LookupFamily::V6Only => LookupIpStrategy::Ipv6Only,
        LookupFamily::V4Preferred => LookupIpStrategy::Ipv4thenIpv6,
        LookupFamily::All => LookupIpStrategy::Ipv4AndIpv6,
    };
    opts.cache_size = 0;
    if let Some(t) = c.timeout {
        opts.timeout = t;
    }
    if let Some(n) = c.tries {
        opts.attempts = n as usize;
    }
    if c.rotate {
        opts.server_ordering_strategy = ServerOrderingStrategy::RoundRobin;
    }
    let mut builder = TokioResolver::builder_with_config(
        config,
        hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
    );
    *builder.options_mut() = opts;
    builder.build().map_err(|e| e.to_string())
}

/// The system's getaddrinfo for `host`, filtered and ordered by `family` as Envoy's
/// getaddrinfo resolver does; "no such name" and "no address" are an empty answer.
fn getaddrinfo(host: &str, family: LookupFamily) -> Answer {
    use dns_lookup::{AddrInfoHints, LookupErrorKind};
    let hints = AddrInfoHints {
        socktype: libc::SOCK_STREAM,
        address: match family {
            LookupFamily::V4Only => libc::AF_INET,
            LookupFamily::V6Only => libc::AF_INET6,
            _ => libc::AF_UNSPEC,
        },
        ..AddrInfoHints::default()
    };
    let found = match dns_lookup::getaddrinfo(Some(host), None, Some(hints)) {
        Ok(iter) => iter
            .filter_map(Result::ok)
            .map(|a| a.sockaddr.ip())
            .collect::<Vec<_>>(),
        Err(e) if matches!(e.kind(), LookupErrorKind::NoName | LookupErrorKind::NoData) => {
            Vec::new()
        }
        Err(e) => return Answer::Failed(format!("getaddrinfo: {:?}", e.kind())),
    };
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = found.into_iter().partition(IpAddr::is_ipv4);
    let ips = match family {
        LookupFamily::V4Only => v4,
        LookupFamily::V6Only => v6,
        LookupFamily::Auto if !v6.is_empty() => v6,
        LookupFamily::Auto => v4,
        LookupFamily::V4Preferred if !v4.is_empty() => v4,
        LookupFamily::V4Preferred => v6,
        LookupFamily::All => v4.into_iter().chain(v6).collect(),
    };
    Answer::Ok(ips, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_ceiling_and_grows_with_failures() {
        let (base, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        for n in 1..=10u32 {
            let ceiling = (base * 2u32.pow(n - 1)).min(max);
            for _ in 0..50 {
                let d = backoff(base, max, n);
                assert!(d < ceiling.max(Duration::from_millis(2)), "{n}: {d:?}");
            }
        }
        // After enough failures the delays reach past the base.
        assert!((0..200).any(|_| backoff(base, max, 5) > base));
    }

    #[test]
    fn getaddrinfo_families_filter_and_order() {
        // localhost resolves through /etc/hosts, no server needed.
        match getaddrinfo("localhost", LookupFamily::V4Only) {
            Answer::Ok(ips, None) => {
                assert!(!ips.is_empty());
                assert!(ips.iter().all(IpAddr::is_ipv4), "{ips:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
