//! The compiled configuration that control hands the data plane.
//!
//! Everything here is already validated and resolved: listeners refer to clusters by
//! [`ClusterId`] (an index into [`Snapshot::clusters`]), durations are [`Duration`]s and
//! addresses are [`SocketAddr`]s. Names survive only for logs and stats.

use std::net::SocketAddr;
use std::time::Duration;

/// Index of a cluster in [`Snapshot::clusters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub u32);

impl ClusterId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One immutable configuration generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Envoy `Listener.name`; unique within a snapshot.
    pub name: String,
    pub address: SocketAddr,
    pub filter: NetworkFilter,
}

/// The terminal network filter of a listener's (single) filter chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkFilter {
    TcpProxy(TcpProxy),
    /// `envoy.filters.network.http_connection_manager` with the router as its only HTTP
    /// filter, serving HTTP/1.1.
    Http(HttpManager),
}

/// `envoy.filters.network.tcp_proxy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// At least one; a single `cluster` compiles to one target of weight 1.
    pub targets: Vec<WeightedCluster>,
    /// `None` disables the idle timeout (Envoy: an explicit `0s`). Envoy's default is 1 h.
    pub idle_timeout: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightedCluster {
    pub cluster: ClusterId,
    /// Always >= 1.
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Envoy `Cluster.name`; unique within a snapshot.
    pub name: String,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    /// May be empty: connections then fail with "no healthy upstream".
    pub endpoints: Vec<Endpoint>,
    /// How HTTP requests use this cluster's connections.
    pub http: UpstreamHttp,
}

/// `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`
/// `.common_http_protocol_options`, for HTTP/1.1 upstream connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamHttp {
    /// `idle_timeout`: a pooled connection idle this long is closed instead of reused
    /// (Envoy's default 1 h; `None` when set to 0, never).
    pub idle_timeout: Option<Duration>,
    /// `max_requests_per_connection`: a connection that served this many requests is closed
    /// (`None`: unlimited, Envoy's default).
    pub max_requests_per_connection: Option<u32>,
    /// `max_headers_count`: a response with more header fields is refused (502; default 100).
    pub max_headers_count: u32,
}

impl Default for UpstreamHttp {
    fn default() -> UpstreamHttp {
        UpstreamHttp {
            idle_timeout: Some(Duration::from_secs(3600)),
            max_requests_per_connection: None,
            max_headers_count: 100,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// `load_balancing_weight`, always >= 1 (Envoy's default is 1).
    pub weight: u32,
}

/// `envoy.filters.network.http_connection_manager` (HTTP/1.1 downstream and upstream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpManager {
    pub stat_prefix: String,
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
    /// `envoy.filters.http.buffer`'s `max_request_bytes`: each request body is read whole
    /// (up to this many bytes, else 413) before the request goes upstream, with a
    /// `content-length` in place of chunked framing. `None` without the filter: bodies stream.
    pub max_request_bytes: Option<u32>,
    pub route_config: RouteConfig,
}

/// `envoy.config.route.v3.RouteConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub headers: HeaderEdits,
}

/// Header additions and removals, at one level (route configuration, virtual host, route).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub request_add: Vec<HeaderAdd>,
    /// Lower-case names.
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderAdd>,
    pub response_remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderAdd {
    /// Lower-case.
    pub name: String,
    pub value: String,
    pub append: AppendAction,
}

/// `HeaderValueOption.append_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualHost {
    pub name: String,
    /// Lower-case; exact, `*.suffix`, `prefix.*` or `*`.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    pub headers: HeaderEdits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub headers: HeaderEdits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// Applies to `prefix` and `path` (Envoy's default true).
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryMatcher>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Path(String),
    /// `safe_regex` (RE2 syntax), matched against the whole path without the query. Checked
    /// by control; compiled by each shard when it builds its tables.
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatcher {
    /// Lower-case.
    pub name: String,
    pub rule: StringRule,
    pub invert: bool,
}

/// A value test, Envoy's `StringMatcher` plus `present_match`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringRule {
    Exact { value: String, ignore_case: bool },
    Prefix { value: String, ignore_case: bool },
    Suffix { value: String, ignore_case: bool },
    Contains { value: String, ignore_case: bool },
    Regex(String),
    Present(bool),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryMatcher {
    pub name: String,
    /// `None`: `present_match: true`.
    pub rule: Option<StringRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAction {
    Forward(Forward),
    Direct { status: u16, body: String },
    Redirect(Redirect),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// At least one; `cluster` compiles to one target of weight 1.
    pub targets: Vec<WeightedCluster>,
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`: (pattern, substitution), every match in the path replaced.
    pub regex_rewrite: Option<(String, String)>,
    pub host_rewrite: Option<String>,
    /// `timeout` (Envoy's default 15 s; `0s` disables).
    pub timeout: Option<Duration>,
}

/// `RedirectAction`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `https_redirect: true` or `scheme_redirect`.
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    /// 301 (Envoy's default), 302, 303, 307 or 308.
    pub status: u16,
    pub strip_query: bool,
}
