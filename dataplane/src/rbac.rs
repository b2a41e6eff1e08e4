//! Role-based access control, Envoy's `envoy.config.rbac.v3`: which policies a request or a
//! connection matches, for the HTTP filter (`http::filter::rbac`) and the network filter
//! (`conn`). Evaluated from the snapshot's trees as they are: control refused regular
//! expressions, so nothing here compiles or allocates.

use std::net::{IpAddr, SocketAddr};

use zerohop_proto::{Permission, Principal, RbacAction, RbacRules};

use crate::http::message::Request;
use crate::route::{header_matches, string_matches};

/// What the policies look at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Subject<'a> {
    /// The connection's peer (`direct_remote_ip`).
    pub peer: Option<IpAddr>,
    /// On the HTTP filter, the connection manager's `use_remote_address` and
    /// `xff_num_trusted_hops`, from which `remote_ip` is worked out when a policy asks
    /// ([`Subject::remote`]); `None` (the network filter): `remote_ip` is the peer.
    pub xff: Option<(bool, u32)>,
    /// Where the client connected to (`destination_ip`, `destination_port`).
    pub local: Option<SocketAddr>,
    /// The TLS SNI (`requested_server_name`).
    pub sni: Option<&'a str>,
    /// The TLS peer certificate's names (URI SANs, else DNS SANs, else the subject), when
    /// the peer presented one (`authenticated`).
    pub peer_names: Option<&'a [String]>,
    /// The request, on the HTTP filter.
    pub request: Option<&'a Request>,
}

impl Subject<'_> {
    /// The client's address as the connection manager trusts it (Envoy's downstream remote
    /// address): with `use_remote_address`, the peer, or the `x-forwarded-for` entry
    /// `xff_num_trusted_hops` from the right; without, the rightmost entry past the trusted
    /// hops, else the peer.
    pub fn remote(&self) -> Option<IpAddr> {
        let (Some((use_remote_address, hops)), Some(req)) = (self.xff, self.request) else {
            return self.peer;
        };
        let skip = match use_remote_address {
            true if hops == 0 => return self.peer,
            true => hops as usize,
            false => hops as usize + 1,
        };
        let from_xff = req.header("x-forwarded-for").and_then(|xff| {
            let n = xff.split(',').count();
            let i = n.checked_sub(skip)?;
            xff.split(',').nth(i)?.trim().parse().ok()
        });
        from_xff.or(self.peer)
    }
}

/// The outcome of one set of rules: allowed or not, and the policy that decided (by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict<'r> {
    pub allowed: bool,
    pub policy: Option<&'r str>,
}

/// Evaluates `rules` for `s`, as Envoy's RoleBasedAccessControlEngine: ALLOW allows when a
/// policy matches, DENY denies when one does, LOG allows either way.
pub fn evaluate<'r>(rules: &'r RbacRules, s: &Subject<'_>) -> Verdict<'r> {
    let matched = rules
        .policies
        .iter()
        .find(|(_, p)| {
            p.permissions.iter().any(|m| permission(m, s))
                && p.principals.iter().any(|m| principal(m, s))
        })
        .map(|(name, _)| name.as_str());
    let allowed = match rules.action {
        RbacAction::Allow => matched.is_some(),
        RbacAction::Deny => matched.is_none(),
        RbacAction::Log => true,
    };
    Verdict {
        allowed,
        policy: matched,
    }
}

fn header(s: &Subject<'_>, m: &zerohop_proto::HeaderMatcher) -> bool {
    match s.request {
        Some(r) => header_matches(m, |n| pseudo(r, n).or_else(|| r.header(n))),
        None => false,
    }
}

/// The pseudo-headers Envoy's header matchers see on any request.
fn pseudo<'r>(r: &'r Request, name: &str) -> Option<&'r str> {
    match name {
        ":path" => Some(r.path_and_query()),
        ":method" => std::str::from_utf8(r.method()).ok(),
        ":authority" => Some(r.host()),
        _ => None,
    }
}

fn permission(p: &Permission, s: &Subject<'_>) -> bool {
    match p {
        Permission::Any => true,
        Permission::And(v) => v.iter().all(|p| permission(p, s)),
        Permission::Or(v) => v.iter().any(|p| permission(p, s)),
        Permission::Not(p) => !permission(p, s),
        Permission::Header(m) => header(s, m),
        Permission::UrlPath(rule) => s
            .request
            .is_some_and(|r| string_matches(rule, Some(r.path()))),
        Permission::DestinationIp(c) => s.local.is_some_and(|a| c.contains(a.ip())),
        Permission::DestinationPort(port) => s.local.is_some_and(|a| a.port() == *port),
        Permission::DestinationPortRange(from, to) => {
            s.local.is_some_and(|a| (*from..*to).contains(&a.port()))
        }
        Permission::RequestedServerName(rule) => string_matches(rule, Some(s.sni.unwrap_or(""))),
    }
}

fn principal(p: &Principal, s: &Subject<'_>) -> bool {
    match p {
        Principal::Any => true,
        Principal::And(v) => v.iter().all(|p| principal(p, s)),
        Principal::Or(v) => v.iter().any(|p| principal(p, s)),
        Principal::Not(p) => !principal(p, s),
        Principal::Authenticated(rule) => match (s.peer_names, rule) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(names), Some(rule)) => names.iter().any(|n| string_matches(rule, Some(n))),
        },
        Principal::DirectRemoteIp(c) => s.peer.is_some_and(|ip| c.contains(ip)),
        Principal::RemoteIp(c) => s.remote().is_some_and(|ip| c.contains(ip)),
        Principal::Header(m) => header(s, m),
        Principal::UrlPath(rule) => s
            .request
            .is_some_and(|r| string_matches(rule, Some(r.path()))),
    }
}

/// The names `authenticated.principal_name` is matched against, from a peer certificate
/// (DER): its URI SANs, else its DNS SANs, else its subject (Envoy's order).
pub fn peer_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::URI(u) => uris.push((*u).to_owned()),
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    match (uris.is_empty(), dns.is_empty()) {
        (false, _) => uris,
        (true, false) => dns,
        (true, true) => vec![cert.subject().to_string()],
    }
}
