//! A route configuration: virtual hosts, routes and their matchers, actions (forward with
//! its policies, direct responses, redirects) and header edits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ClusterId, PerFilterConfig, RetryPolicy, UpgradeConfig, WeightedCluster};

/// `envoy.config.route.v3.RouteConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub headers: HeaderEdits,
    pub per_filter: Vec<PerFilterConfig>,
}

/// Header additions and removals, at one level (route configuration, virtual host, route).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderEdits {
    pub request_add: Vec<HeaderAdd>,
    /// Lower-case names.
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderAdd>,
    pub response_remove: Vec<String>,
}

impl HeaderEdits {
    pub fn edits_requests(&self) -> bool {
        !self.request_add.is_empty() || !self.request_remove.is_empty()
    }
    pub fn edits_responses(&self) -> bool {
        !self.response_add.is_empty() || !self.response_remove.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderAdd {
    /// Lower-case.
    pub name: String,
    pub value: String,
    pub append: AppendAction,
}

/// `HeaderValueOption.append_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualHost {
    pub name: String,
    /// Lower-case; exact, `*.suffix`, `prefix.*` or `*`.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    pub headers: HeaderEdits,
    pub per_filter: Vec<PerFilterConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub headers: HeaderEdits,
    pub per_filter: Vec<PerFilterConfig>,
    /// `decorator`: the span's name on this route (with tracing).
    pub decorator: Option<crate::tracing::Decorator>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// Applies to `prefix` and `path` (Envoy's default true).
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryMatcher>,
    /// `runtime_fraction`, with the runtime's value already read by control: the route
    /// matches a request only for that fraction of requests (drawn per request).
    pub runtime_fraction: Option<Fraction>,
    /// `grpc`: only gRPC requests (`content-type: application/grpc...`) match.
    pub grpc: bool,
}

/// Envoy's `FractionalPercent`: `numerator` out of `denominator` (100, 10,000 or 1,000,000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatch {
    Prefix(String),
    Path(String),
    /// `safe_regex` (RE2 syntax), matched against the whole path without the query. Checked
    /// by control; compiled by the data plane when it builds a generation's tables.
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatcher {
    /// Lower-case.
    pub name: String,
    pub rule: StringRule,
    pub invert: bool,
}

/// A value test, Envoy's `StringMatcher` plus `present_match`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StringRule {
    Exact { value: String, ignore_case: bool },
    Prefix { value: String, ignore_case: bool },
    Suffix { value: String, ignore_case: bool },
    Contains { value: String, ignore_case: bool },
    Regex(String),
    Present(bool),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMatcher {
    pub name: String,
    /// `None`: `present_match: true`.
    pub rule: Option<StringRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteAction {
    Forward(Forward),
    Direct { status: u16, body: String },
    Redirect(Redirect),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// At least one; `cluster` compiles to one target of weight 1.
    pub targets: Vec<WeightedCluster>,
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`: (pattern, substitution), every match in the path replaced.
    pub regex_rewrite: Option<(String, String)>,
    pub host_rewrite: Option<String>,
    /// `timeout` (Envoy's default 15 s; `0s` disables).
    pub timeout: Option<Duration>,
    /// `upgrade_configs` of the route: enables or disables a type over the connection
    /// manager's.
    pub upgrades: Vec<UpgradeConfig>,
    /// `request_mirror_policies`: each request (whose body is in hand) also goes, fire and
    /// forget, to these clusters.
    pub mirrors: Vec<Mirror>,
    /// The route's `retry_policy`, else its virtual host's.
    pub retry: Option<Box<RetryPolicy>>,
    /// `hash_policy`: what a hashing load balancer (ring hash, Maglev) hashes.
    pub hash_policy: Vec<HashPolicy>,
    /// `per_request_buffer_limit_bytes` (route's, else virtual host's; default 1 MiB as
    /// Envoy's listener buffer limit): a request body up to this size is held for retries.
    pub buffer_limit: u32,
    /// The virtual host's `include_request_attempt_count` (`x-envoy-attempt-count` on each
    /// upstream request) and `include_attempt_count_in_response` (on the response).
    pub attempt_count_upstream: bool,
    pub attempt_count_downstream: bool,
}

/// One `RouteAction.HashPolicy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashPolicy {
    pub on: HashOn,
    /// Stop at this policy when it gave a hash.
    pub terminal: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashOn {
    /// A request header's value(s), by lower-case name.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// `connection_properties.source_ip`.
    SourceIp,
    /// A query parameter's value.
    QueryParameter(String),
}

/// One `RequestMirrorPolicy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    pub cluster: ClusterId,
    /// `runtime_fraction`, the runtime already read (`None`: every request).
    pub fraction: Option<Fraction>,
    /// `-shadow` is appended to the host (before any port), unless
    /// `disable_shadow_host_suffix_append`.
    pub shadow_suffix: bool,
}

/// `RedirectAction`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
