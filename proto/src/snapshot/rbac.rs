//! `envoy.filters.http.rbac` and `envoy.filters.network.rbac`: policies of principals (who)
//! and permissions (what), compiled by control into these trees. String matching here is
//! exact, prefix, suffix or contains (regular expressions are refused by control), so the
//! data plane matches them as they are.

use serde::{Deserialize, Serialize};

use super::{CidrRange, HeaderMatcher, StringRule};

/// `envoy.config.rbac.v3.RBAC`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbacRules {
    pub action: RbacAction,
    /// `policies`, by name in name order (Envoy reports the first matching one by name).
    pub policies: Vec<(String, RbacPolicy)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RbacAction {
    /// Allowed when some policy matches, else denied.
    Allow,
    /// Denied when some policy matches.
    Deny,
    /// Always allowed; a match is only recorded.
    Log,
}

/// A policy matches when one of its permissions and one of its principals do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbacPolicy {
    pub permissions: Vec<Permission>,
    pub principals: Vec<Principal>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permission {
    Any,
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    /// A request header (never matches on a network filter).
    Header(HeaderMatcher),
    /// The request's path without the query (never matches on a network filter).
    UrlPath(StringRule),
    DestinationIp(CidrRange),
    DestinationPort(u16),
    /// `[start, end)`.
    DestinationPortRange(u16, u16),
    /// The TLS SNI (empty without one).
    RequestedServerName(StringRule),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principal {
    Any,
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    /// `authenticated`: a TLS peer certificate, its URI SANs, else DNS SANs, else subject
    /// matched by the rule (`None`: any authenticated peer).
    Authenticated(Option<StringRule>),
    /// The connection's peer address.
    DirectRemoteIp(CidrRange),
    /// The client's address as the connection manager trusts it (`x-forwarded-for` under
    /// `xff_num_trusted_hops`); the peer address on a network filter.
    RemoteIp(CidrRange),
    Header(HeaderMatcher),
    UrlPath(StringRule),
}

/// The HTTP filter's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbacConfig {
    /// `rules`: enforced (`None`: every request allowed).
    pub rules: Option<RbacRules>,
    /// `shadow_rules`: evaluated and counted only.
    pub shadow: Option<RbacRules>,
}

/// `envoy.filters.network.rbac`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRbac {
    pub stat_prefix: String,
    pub rules: Option<RbacRules>,
    pub shadow: Option<RbacRules>,
}
