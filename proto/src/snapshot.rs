//! The compiled configuration that control hands the data plane.
//!
//! Everything here is already validated and resolved: listeners refer to clusters by
//! [`ClusterId`] (an index into [`Snapshot::clusters`]), durations are [`Duration`]s and
//! addresses are [`SocketAddr`]s. Names survive for logs, stats and the per-filter config
//! keys Envoy defines by name. The shapes follow Envoy's: a listener has listener filters,
//! several filter chains chosen by `filter_chain_match` and a default chain; a filter chain
//! is an ordered list of network filters; the HTTP connection manager an ordered list of
//! HTTP filters, the router last, whose per-route overrides hang off the route table.
//!
//! The types derive serde so that their binary encoding ([`crate::codec`]) is written once,
//! by the derive; [`Snapshot::validate`] holds the invariants the types cannot.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::stats::StatScope;

mod cluster;
mod filters;
mod health;
mod rbac;
mod retry;
mod route;
mod tls;
pub use cluster::*;
pub use filters::*;
pub use health::*;
pub use rbac::*;
pub use retry::*;
pub use route::*;
pub use tls::*;

/// Index of a cluster in [`Snapshot::clusters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterId(pub u32);

impl ClusterId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One immutable configuration generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

// === listeners ===

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Envoy `Listener.name`; unique within a snapshot.
    pub name: String,
    #[serde(with = "addr")]
    pub address: SocketAddr,
    /// `listener_filters`, run in order on each accepted connection before a filter chain
    /// is chosen.
    pub listener_filters: Vec<ListenerFilter>,
    /// `listener_filters_timeout` (Envoy's default 15 s; `None`: `0s`, no limit): how long
    /// the listener filters may wait for the first bytes.
    pub listener_filters_timeout: Option<Duration>,
    /// `continue_on_listener_filters_timeout`: at the timeout, choose a filter chain with
    /// what was detected so far (true) or close the connection (false, Envoy's default).
    pub continue_on_listener_filters_timeout: bool,
    /// `filter_chains`: a connection is served by the one whose `filter_chain_match` fits it
    /// most specifically (Envoy's order of criteria), else by `default_filter_chain`, else
    /// it is closed.
    pub filter_chains: Vec<FilterChain>,
    pub default_filter_chain: Option<FilterChain>,
    /// Where `listener.<address>.*` lives in the shards' stat space (control assigns it by
    /// the stat name when it publishes).
    pub stats: StatScope,
}

impl Listener {
    /// A listener with one filter chain, matching every connection, of one network filter.
    pub fn simple(name: impl Into<String>, address: SocketAddr, filter: NetworkFilter) -> Listener {
        Listener {
            name: name.into(),
            address,
            listener_filters: Vec::new(),
            listener_filters_timeout: Some(Duration::from_secs(15)),
            continue_on_listener_filters_timeout: false,
            filter_chains: vec![FilterChain {
                filters: vec![filter],
                ..FilterChain::default()
            }],
            default_filter_chain: None,
            stats: StatScope::NONE,
        }
    }

    /// Every filter chain, the default one last.
    pub fn chains(&self) -> impl Iterator<Item = &FilterChain> {
        self.filter_chains.iter().chain(&self.default_filter_chain)
    }
}

impl FilterChain {
    /// The terminal network filter (`validate` guarantees there is one, last).
    pub fn terminal(&self) -> &NetworkFilter {
        self.filters
            .last()
            .expect("a validated chain has a terminal filter")
    }
}

/// A listener filter: inspects a new connection before a filter chain is chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenerFilter {
    /// `envoy.filters.listener.http_inspector`: detects HTTP/1.x or HTTP/2 (h2c prior
    /// knowledge) from the first bytes, as the application protocol the chain match sees.
    HttpInspector,
    /// `envoy.filters.listener.tls_inspector`: reads a TLS ClientHello without consuming
    /// it, for the chain match's transport protocol (`tls`), server name (SNI) and
    /// application protocols (ALPN).
    TlsInspector,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterChain {
    pub name: String,
    pub matcher: FilterChainMatch,
    /// The network filters in order; the last is terminal (tcp_proxy or the HTTP
    /// connection manager) and the only one today.
    pub filters: Vec<NetworkFilter>,
    /// `transport_socket`: `None` is raw_buffer; TLS terminated with this context.
    pub tls: Option<DownstreamTls>,
}

/// `FilterChainMatch`: every field set must hold for the chain to be a candidate; among
/// candidates the most specific wins criterion by criterion, in Envoy's order (destination
/// port, destination IP, server name, transport protocol, application protocols, direct
/// source IP, source type, source IP, source port).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterChainMatch {
    pub destination_port: Option<u16>,
    /// `prefix_ranges`: the connection's destination (local) address.
    pub prefix_ranges: Vec<CidrRange>,
    /// Lower-case; exact or `*.suffix`. Needs a detected server name (TLS SNI).
    pub server_names: Vec<String>,
    /// `raw_buffer`, `tls`, ... (Envoy sets `raw_buffer` when no listener filter detects one).
    pub transport_protocol: Option<String>,
    /// Needs a detected application protocol (ALPN, or `http_inspector`).
    pub application_protocols: Vec<String>,
    pub direct_source_prefix_ranges: Vec<CidrRange>,
    pub source_type: SourceType,
    pub source_prefix_ranges: Vec<CidrRange>,
    pub source_ports: Vec<u16>,
}

impl FilterChainMatch {
    /// True when the chain matches every connection (no criterion set).
    pub fn is_empty(&self) -> bool {
        *self == FilterChainMatch::default()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceType {
    #[default]
    Any,
    /// The source is a local address (loopback, or the connection's own destination IP).
    SameIpOrLoopback,
    External,
}

/// An address prefix, `address_prefix`/`prefix_len`. The address is stored masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CidrRange {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl CidrRange {
    /// Whether `ip` is inside the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix_len.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A network filter of a filter chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // Reason: config data, a few per listener, built once per generation.
pub enum NetworkFilter {
    TcpProxy(TcpProxy),
    /// `envoy.filters.network.http_connection_manager`, serving HTTP/1.1.
    Http(HttpManager),
    /// `envoy.filters.network.local_ratelimit`: each connection takes a token from the
    /// bucket or is closed (not terminal).
    LocalRateLimit(NetworkRateLimit),
    /// `envoy.filters.network.rbac`: a connection the policies deny is closed (not
    /// terminal).
    Rbac(NetworkRbac),
}

impl NetworkFilter {
    /// Whether the filter ends a chain (it owns the connection from there on).
    pub fn is_terminal(&self) -> bool {
        matches!(self, NetworkFilter::TcpProxy(_) | NetworkFilter::Http(_))
    }
}

/// `envoy.filters.network.tcp_proxy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// At least one; a single `cluster` compiles to one target of weight 1.
    pub targets: Vec<WeightedCluster>,
    /// `None` disables the idle timeout (Envoy: an explicit `0s`). Envoy's default is 1 h.
    pub idle_timeout: Option<Duration>,
    /// Where `tcp.<stat_prefix>.*` lives in the shards' stat space.
    pub stats: StatScope,
    /// `access_log`: what each connection's record carries (disabled: none).
    pub access_log: crate::accesslog::AccessLogSpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedCluster {
    pub cluster: ClusterId,
    /// Always >= 1.
    pub weight: u32,
}

// === clusters ===

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Envoy `Cluster.name`; unique within a snapshot.
    pub name: String,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    /// May be empty: connections then fail with "no healthy upstream".
    pub endpoints: Vec<Endpoint>,
    /// The protocol HTTP requests speak to this cluster's endpoints, and its options.
    pub protocol: UpstreamProtocol,
    /// `transport_socket`: what carries the bytes to an endpoint.
    pub transport: TransportSocket,
    /// `circuit_breakers.thresholds` of priority DEFAULT (Envoy's defaults when absent).
    pub circuit_breakers: CircuitBreakers,
    /// `outlier_detection`: hosts ejected after consecutive failures.
    pub outlier_detection: Option<OutlierDetection>,
    /// `common_lb_config.healthy_panic_threshold` (default 50%, the bits of an `f64`): below
    /// that share of hosts available (not ejected, not failing health checks, not unhealthy
    /// by EDS), the balancer uses every host (Envoy's panic mode); at 0 it never does, and a
    /// cluster with every host out has none.
    pub healthy_panic_threshold: u64,
    /// `health_checks`: run by control, their verdicts reach the data plane through the
    /// segment's health table ([`Endpoint::health_slot`]).
    pub health_checks: Vec<HealthCheck>,
    /// Where `cluster.<name>.*` lives in the shards' stat space.
    pub stats: StatScope,
}

/// `Cluster.transport_socket`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransportSocket {
    /// `envoy.transport_sockets.raw_buffer`, Envoy's default: plain TCP.
    #[default]
    RawBuffer,
    /// `envoy.transport_sockets.tls` with an `UpstreamTlsContext`.
    Tls(Box<UpstreamTls>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(with = "addr")]
    pub address: SocketAddr,
    /// `load_balancing_weight`, always >= 1 (Envoy's default is 1).
    pub weight: u32,
    /// The host's place in the segment's health table (below
    /// [`crate::shm::HEALTH_SLOTS`]) when its cluster has active `health_checks`: control
    /// writes there whether the host failed them, the data plane reads it.
    pub health_slot: Option<u32>,
    /// EDS `health_status` UNHEALTHY, DRAINING or TIMEOUT: the host is out of load
    /// balancing, as Envoy's `FAILED_EDS_HEALTH` (except in panic mode).
    pub eds_unhealthy: bool,
    /// `endpoint.health_check_config` (`address`, `port_value`): where health checks go
    /// instead of `address`. Control's alone.
    #[serde(with = "opt_addr")]
    pub health_check_address: Option<SocketAddr>,
}

impl Endpoint {
    /// A healthy endpoint at `address` with no health checking of its own.
    pub fn new(address: SocketAddr, weight: u32) -> Endpoint {
        Endpoint {
            address,
            weight,
            health_slot: None,
            eds_unhealthy: false,
            health_check_address: None,
        }
    }
}

// === the HTTP connection manager ===

/// `envoy.filters.network.http_connection_manager`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpManager {
    pub stat_prefix: String,
    /// `codec_type`.
    pub codec: CodecType,
    /// `max_request_headers_kb` (Envoy's default 60), in bytes.
    pub max_request_headers_bytes: u32,
    /// `common_http_protocol_options.max_headers_count` (default 100).
    pub max_headers_count: u32,
    /// `request_headers_timeout`. zerohop defaults it to 10 s (Envoy: disabled) against
    /// slowloris; `0s` disables it.
    pub request_headers_timeout: Option<Duration>,
    /// `common_http_protocol_options.idle_timeout`: a downstream connection with no request
    /// in flight is closed after this (default 1 h; `0s` disables).
    pub idle_timeout: Option<Duration>,
    /// `stream_idle_timeout`: no bytes either way on a request for this long (default 5 min).
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout`: the whole request must arrive within this (default disabled).
    pub request_timeout: Option<Duration>,
    /// `generate_request_id` (default true): `x-request-id` added when absent.
    pub generate_request_id: bool,
    /// `use_remote_address` (default false). When true the downstream peer's address is
    /// appended to `x-forwarded-for` and `x-forwarded-proto` is set to the downstream scheme;
    /// when false both are passed through (`x-forwarded-proto` is added only if absent), as
    /// Envoy does.
    pub use_remote_address: bool,
    /// `http_protocol_options`: what the HTTP/1.1 codec accepts.
    pub http1: Http1Options,
    /// `http2_protocol_options`: the HTTP/2 codec's settings.
    pub http2: Http2Options,
    /// `http_filters`, in order; the router is always the last.
    pub http_filters: Vec<HttpFilter>,
    pub route_config: RouteConfig,
    /// `upgrade_configs`: the `Upgrade` types forwarded. Any other upgrade request is
    /// answered 403, as Envoy does (unless its route enables the type).
    pub upgrades: Vec<UpgradeConfig>,
    /// `server_name` (Envoy's default `envoy`) and `server_header_transformation`.
    pub server_name: String,
    pub server_header: ServerHeader,
    /// `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`.
    pub path: PathNormalization,
    /// `skip_xff_append`: with `use_remote_address`, the peer is not appended to
    /// `x-forwarded-for`.
    pub skip_xff_append: bool,
    /// `xff_num_trusted_hops`: with `use_remote_address`, the client address
    /// (`x-envoy-external-address`) is that many entries from the right of the client's
    /// `x-forwarded-for` instead of the peer.
    pub xff_num_trusted_hops: u32,
    /// `preserve_external_request_id`: with `use_remote_address`, a client's `x-request-id`
    /// is kept (else replaced, every request being external as in Envoy's default).
    pub preserve_external_request_id: bool,
    /// The router's `suppress_envoy_headers`: no `x-envoy-upstream-service-time`,
    /// `x-envoy-expected-rq-timeout-ms`, `x-envoy-original-path` / `-host`.
    pub suppress_envoy_headers: bool,
    /// `common_http_protocol_options.max_stream_duration`: a stream's whole life, from its
    /// request head; past it the client gets 408 (or a reset once the response started).
    pub max_stream_duration: Option<Duration>,
    /// `add_user_agent`: the node's cluster and name, for
    /// `x-envoy-downstream-service-cluster` / `-node` and a missing `user-agent`.
    pub user_agent: Option<LocalNode>,
    /// Where `http.<stat_prefix>.*` lives in the shards' stat space.
    pub stats: StatScope,
    /// `access_log`: what each stream's record carries (disabled: none).
    pub access_log: crate::accesslog::AccessLogSpec,
    /// `tracing`: how streams are sampled and their context propagated (`None`: no
    /// tracing). A sampled stream's record goes to `access_log`'s set, which holds the
    /// tracer.
    pub tracing: Option<crate::tracing::TracingSpec>,
}

/// The bootstrap's `node.cluster` and `node.id` (`--service-cluster`, `--service-node`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalNode {
    pub cluster: String,
    pub id: String,
}

/// What the connection manager does to a request's path before anything reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathNormalization {
    /// `normalize_path` (RFC 3986; Envoy's default false).
    pub normalize: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

/// `path_with_escaped_slashes_action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EscapedSlashes {
    /// Also `IMPLEMENTATION_SPECIFIC_DEFAULT`.
    #[default]
    KeepUnchanged,
    /// 400.
    Reject,
    /// 307 to the path with `%2F` and `%5C` unescaped.
    UnescapeAndRedirect,
    UnescapeAndForward,
}

/// `server_header_transformation`: what becomes of the `server` header of responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerHeader {
    /// Set to `server_name`, the upstream's replaced (Envoy's default).
    #[default]
    Overwrite,
    /// The upstream's kept; `server_name` when it sent none.
    AppendIfAbsent,
    /// The upstream's kept; none added (local replies carry none).
    PassThrough,
}

/// An `upgrade_configs` entry, on the connection manager or on a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeConfig {
    /// Lower-case (`websocket`); matched without regard to case.
    pub upgrade_type: String,
    /// `enabled` (default true).
    pub enabled: bool,
}

/// `HttpConnectionManager.http_protocol_options` (`Http1ProtocolOptions`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http1Options {
    /// `accept_http_10`: serve HTTP/1.0 requests (one per connection). Envoy's default is
    /// false: they are answered 426 Upgrade Required.
    pub accept_http_10: bool,
    /// `default_host_for_http_10`: the host an HTTP/1.0 request without one is routed (and
    /// forwarded) with.
    pub default_host_for_http_10: Option<String>,
}

/// `HttpConnectionManager.codec_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodecType {
    /// `AUTO`: the codec is chosen per connection: HTTP/2 when the client opens with the
    /// HTTP/2 connection preface (prior knowledge), else HTTP/1.1.
    Auto,
    Http1,
    /// `HTTP2`: every connection speaks HTTP/2 (prior knowledge).
    Http2,
}

/// `HttpConnectionManager.http2_protocol_options` (`Http2ProtocolOptions`), as the HTTP/2
/// codec applies them. zerohop's defaults follow Envoy's edge guidance rather than its
/// unbounded ones: 100 concurrent streams, a 64 KiB stream window and a 1 MiB connection
/// window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http2Options {
    /// `max_concurrent_streams` (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// `initial_stream_window_size` (SETTINGS_INITIAL_WINDOW_SIZE).
    pub initial_stream_window_size: u32,
    /// `initial_connection_window_size`.
    pub initial_connection_window_size: u32,
    /// `hpack_table_size` (SETTINGS_HEADER_TABLE_SIZE: the decoder's dynamic table).
    pub hpack_table_size: u32,
    /// `connection_keepalive`: a PING every `interval`; no answer within `timeout` closes
    /// the connection.
    pub keepalive: Option<Http2Keepalive>,
}

impl Default for Http2Options {
    fn default() -> Self {
        Http2Options {
            max_concurrent_streams: 100,
            initial_stream_window_size: 64 * 1024,
            initial_connection_window_size: 1024 * 1024,
            hpack_table_size: 4096,
            keepalive: None,
        }
    }
}

/// `Http2ProtocolOptions.connection_keepalive` (`KeepaliveSettings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http2Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// One entry of `http_filters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpFilter {
    /// `HttpFilter.name`: what `typed_per_filter_config` keys refer to.
    pub name: String,
    pub config: HttpFilterConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpFilterConfig {
    /// `envoy.filters.http.buffer`.
    Buffer(BufferConfig),
    /// `envoy.filters.http.compressor` (response direction).
    Compressor(CompressorConfig),
    /// `envoy.filters.http.fault`: delays and aborts.
    Fault(FaultConfig),
    /// `envoy.filters.http.local_ratelimit`: a token bucket shared by every shard.
    LocalRateLimit(LocalRateLimitConfig),
    /// `envoy.filters.http.rbac`: 403 for a request the policies deny.
    Rbac(RbacConfig),
    /// `envoy.filters.http.csrf`: 403 for a mutating request from another origin.
    Csrf(CsrfConfig),
    /// `envoy.filters.http.cors`: preflights answered, responses to allowed origins
    /// marked. The filter's own config has no policy; routes bring them.
    Cors(CorsPolicy),
    /// `envoy.filters.http.router`.
    Router,
}

/// A `typed_per_filter_config` entry, at route configuration, virtual host or route level:
/// the most specific level that names a filter wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerFilterConfig {
    /// The `HttpFilter.name` it configures.
    pub filter: String,
    pub config: FilterOverride,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterOverride {
    /// `envoy.config.route.v3.FilterConfig` with `disabled: true`, or a filter's own
    /// "disabled" form (`BufferPerRoute.disabled`): the filter does nothing on this route.
    Disabled,
    /// The filter runs with this configuration on this route instead of its own
    /// (`BufferPerRoute.buffer`: a `Buffer`).
    Config(HttpFilterConfig),
    /// `CompressorPerRoute`: `disabled` turns compression off on this route (the filter
    /// still takes part in choosing the encoding, as Envoy's), `overrides` with a
    /// `response_direction_config` turns it on and may set `remove_accept_encoding_header`;
    /// the filter's other settings stay its own.
    Compressor {
        enabled: Option<bool>,
        remove_accept_encoding_header: Option<bool>,
    },
}

/// A socket address in the binary encoding as one byte string (family, address, port):
/// serde's own form visits an IPv6 address byte by byte, which made it the costliest part of
/// decoding 100,000 endpoints. Human-readable encodings (JSON for `/config_dump`) keep the
/// text form.
mod opt_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Addr(#[serde(with = "super::addr")] SocketAddr);

    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        a.map(Addr).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        Ok(Option::<Addr>::deserialize(d)?.map(|a| a.0))
    }
}

mod addr {
    use std::net::{IpAddr, SocketAddr};

    use serde::de::{Error, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return a.serialize(s);
        }
        let mut b = [0u8; 19];
        let n = match a.ip() {
            IpAddr::V4(ip) => {
                b[0] = 4;
                b[1..5].copy_from_slice(&ip.octets());
                5
            }
            IpAddr::V6(ip) => {
                b[0] = 6;
                b[1..17].copy_from_slice(&ip.octets());
                17
            }
        };
        b[n..n + 2].copy_from_slice(&a.port().to_le_bytes());
        s.serialize_bytes(&b[..n + 2])
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        if d.is_human_readable() {
            return SocketAddr::deserialize(d);
        }
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = SocketAddr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a socket address as bytes")
            }
            fn visit_bytes<E: Error>(self, b: &[u8]) -> Result<SocketAddr, E> {
                let ip = match b {
                    [4, ip @ .., _, _] if ip.len() == 4 => {
                        IpAddr::from(<[u8; 4]>::try_from(ip).expect("4 bytes"))
                    }
                    [6, ip @ .., _, _] if ip.len() == 16 => {
                        IpAddr::from(<[u8; 16]>::try_from(ip).expect("16 bytes"))
                    }
                    _ => return Err(E::custom("not a socket address")),
                };
                let port = u16::from_le_bytes([b[b.len() - 2], b[b.len() - 1]]);
                Ok(SocketAddr::new(ip, port))
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

// === invariants ===

/// A snapshot that decodes but breaks an invariant control guarantees: a dangling
/// [`ClusterId`], a zero weight, a filter chain without a terminal filter, ... Always the
/// writer's (or the memory's) fault; the reader keeps its previous configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Where, e.g. `listeners[1].filter_chains[0].filters`.
    pub path: String,
    pub what: &'static str,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

impl Snapshot {
    /// Checks what the types cannot express. Run on every decoded snapshot.
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |path: String, what| Err(Invalid { path, what });
        let n = self.clusters.len();
        for (i, c) in self.clusters.iter().enumerate() {
            if c.endpoints.iter().any(|e| e.weight == 0) {
                return bad(format!("clusters[{i}].endpoints"), "zero weight");
            }
            let slots = crate::shm::HEALTH_SLOTS as u32;
            if c.endpoints
                .iter()
                .any(|e| e.health_slot.is_some_and(|s| s >= slots))
            {
                return bad(
                    format!("clusters[{i}].endpoints"),
                    "health slot out of range",
                );
            }
            if c.protocol.common().max_headers_count == 0 {
                return bad(format!("clusters[{i}].protocol"), "max_headers_count of 0");
            }
            if let TransportSocket::Tls(t) = &c.transport {
                tls_common(&t.common, format!("clusters[{i}].transport"))?;
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.filter_chains.is_empty() && l.default_filter_chain.is_none() {
                return bad(format!("listeners[{i}]"), "no filter chain");
            }
            let chains = l
                .filter_chains
                .iter()
                .enumerate()
                .map(|(j, c)| (format!("listeners[{i}].filter_chains[{j}]"), c));
            let default = l
                .default_filter_chain
                .iter()
                .map(|c| (format!("listeners[{i}].default_filter_chain"), c));
            for (path, chain) in chains.chain(default) {
                if let Some(t) = &chain.tls {
                    if t.common.certificates.is_empty() {
                        return bad(
                            format!("{path}.tls"),
                            "a server context without a certificate",
                        );
                    }
                    tls_common(&t.common, format!("{path}.tls"))?;
                }
                match chain.filters.split_last() {
                    Some((last, rest))
                        if last.is_terminal() && !rest.iter().any(NetworkFilter::is_terminal) => {}
                    _ => {
                        return bad(
                            format!("{path}.filters"),
                            "the last filter, and only it, must be terminal",
                        )
                    }
                }
                for (k, f) in chain.filters.iter().enumerate() {
                    let path = format!("{path}.filters[{k}]");
                    match f {
                        NetworkFilter::TcpProxy(tp) => targets(&tp.targets, n, path)?,
                        NetworkFilter::Http(h) => validate_http(h, &path, n)?,
                        NetworkFilter::LocalRateLimit(_) | NetworkFilter::Rbac(_) => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// What rustls cannot be asked to build: empty chains or keys, a version range upside down.
fn tls_common(t: &TlsCommon, path: String) -> Result<(), Invalid> {
    let what = if t.min_version > t.max_version {
        "minimum TLS version above the maximum"
    } else if t
        .certificates
        .iter()
        .any(|c| c.chain.is_empty() || c.key.is_empty())
    {
        "a certificate without a chain or key"
    } else {
        return Ok(());
    };
    Err(Invalid { path, what })
}

/// A route's or tcp_proxy's targets: at least one, weights above 0, ids among `n` clusters.
fn targets(t: &[WeightedCluster], n: usize, path: String) -> Result<(), Invalid> {
    let what = if t.is_empty() {
        "no target cluster"
    } else if t.iter().any(|w| w.weight == 0) {
        "zero weight"
    } else if t.iter().any(|w| w.cluster.index() >= n) {
        "cluster id out of range"
    } else {
        return Ok(());
    };
    Err(Invalid { path, what })
}

fn validate_http(h: &HttpManager, path: &str, n: usize) -> Result<(), Invalid> {
    let bad = |path: String, what| Err(Invalid { path, what });
    match h.http_filters.split_last() {
        Some((last, rest))
            if last.config == HttpFilterConfig::Router
                && !rest.iter().any(|f| f.config == HttpFilterConfig::Router) => {}
        _ => {
            return bad(
                format!("{path}.http_filters"),
                "the router must be last, and only last",
            )
        }
    }
    if h.max_headers_count == 0 || h.max_request_headers_bytes == 0 {
        return bad(path.to_owned(), "a header limit of 0");
    }
    for (v, vh) in h.route_config.virtual_hosts.iter().enumerate() {
        for (r, route) in vh.routes.iter().enumerate() {
            if let RouteAction::Forward(f) = &route.action {
                targets(
                    &f.targets,
                    n,
                    format!("{path}.route_config.virtual_hosts[{v}].routes[{r}]"),
                )?;
            }
        }
    }
    Ok(())
}
