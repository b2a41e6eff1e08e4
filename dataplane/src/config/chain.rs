//! Choosing a listener's filter chain for a connection, as Envoy does.
//!
//! The criteria are taken in Envoy's order: destination port, destination IP, server name,
//! transport protocol, application protocols, direct source IP, source type, source IP,
//! source port. At each one the candidates narrow to the chains that name the connection's
//! value most specifically (the longest matching prefix, the exact server name before the
//! longest wildcard, ...), or, when none names it, to the chains that do not use the
//! criterion at all; an empty candidate set falls to the default chain, if there is one.
//! Control refuses chains whose criteria overlap, so at most one chain is left at the end.
//!
//! A listener whose only chain matches everything (the usual case) is decided without
//! looking at the connection: no `getsockname`/`getpeername` on accept.

use std::net::{IpAddr, SocketAddr};

use zerohop_proto::{CidrRange, FilterChainMatch, SourceType};

/// What a connection offers the chain match.
#[derive(Clone, Debug)]
pub struct ConnFacts<'a> {
    /// The destination the client connected to (the listener's local address).
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The TLS server name, when a listener filter detected one.
    pub server_name: Option<&'a str>,
    /// `raw_buffer` unless a listener filter detected another.
    pub transport_protocol: &'a str,
    /// Detected application protocols, in preference order (ALPN, or `http_inspector`).
    pub application_protocols: &'a [String],
}

#[derive(Debug)]
pub struct ChainSelector {
    matchers: Vec<FilterChainMatch>,
    /// The index of the default chain (after the others), if there is one.
    default: Option<usize>,
    /// Set when the answer does not depend on the connection.
    fixed: Option<Option<usize>>,
}

impl ChainSelector {
    pub fn new<'m>(
        matchers: impl IntoIterator<Item = &'m FilterChainMatch>,
        has_default: bool,
    ) -> ChainSelector {
        let matchers: Vec<FilterChainMatch> = matchers.into_iter().cloned().collect();
        let default = has_default.then_some(matchers.len());
        let fixed = match &matchers[..] {
            [] => Some(default),
            [only] if only.is_empty() => Some(Some(0)),
            _ => None,
        };
        ChainSelector {
            matchers,
            default,
            fixed,
        }
    }

    /// Whether [`select`](Self::select) needs the connection's facts.
    pub fn needs_facts(&self) -> bool {
        self.fixed.is_none()
    }

    /// The chain for a connection, or `None` (no chain matches and there is no default:
    /// Envoy closes the connection).
    pub fn select(&self, facts: &ConnFacts<'_>) -> Option<usize> {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        let mut c: Vec<usize> = (0..self.matchers.len()).collect();
        let m = &self.matchers;
        let (local_ip, peer_ip) = (
            facts.local.ip().to_canonical(),
            facts.peer.ip().to_canonical(),
        );
        // 1. destination port.
        narrow(&mut c, |i| match m[i].destination_port {
            Some(p) if p == facts.local.port() => Some(1),
            Some(_) => None,
            None => Some(0),
        });
        // 2. destination IP: the longest prefix containing it.
        narrow(&mut c, |i| prefix_score(&m[i].prefix_ranges, local_ip));
        // 3. server name: exact, then the longest wildcard suffix.
        narrow(&mut c, |i| {
            server_name_score(&m[i].server_names, facts.server_name)
        });
        // 4. transport protocol.
        narrow(&mut c, |i| match &m[i].transport_protocol {
            Some(t) if t == facts.transport_protocol => Some(1),
            Some(_) => None,
            None => Some(0),
        });
        // 5. application protocols: the first detected one that a candidate names.
        let named = facts.application_protocols.iter().find(|p| {
            c.iter()
                .any(|&i| m[i].application_protocols.iter().any(|a| a == *p))
        });
        narrow(&mut c, |i| {
            let list = &m[i].application_protocols;
            match named {
                _ if list.is_empty() => Some(0),
                Some(p) if list.iter().any(|a| a == p) => Some(1),
                _ => None,
            }
        });
        // 6. direct source IP.
        narrow(&mut c, |i| {
            prefix_score(&m[i].direct_source_prefix_ranges, peer_ip)
        });
        // 7. source type: as Envoy's, "loopback" is 127.0.0.1 or ::1 exactly, not all of
        // 127/8.
        let loopback = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
            IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
        };
        let local_source = loopback(peer_ip) || peer_ip == local_ip;
        narrow(&mut c, |i| match m[i].source_type {
            SourceType::Any => Some(0),
            SourceType::SameIpOrLoopback if local_source => Some(1),
            SourceType::External if !local_source => Some(1),
            _ => None,
        });
        // 8. source IP.
        narrow(&mut c, |i| {
            prefix_score(&m[i].source_prefix_ranges, peer_ip)
        });
        // 9. source port.
        narrow(&mut c, |i| {
            let ports = &m[i].source_ports;
            match ports.is_empty() {
                true => Some(0),
                false if ports.contains(&facts.peer.port()) => Some(1),
                false => None,
            }
        });
        c.first().copied().or(self.default)
    }
}

/// Keeps the candidates with the highest score; `None` drops a candidate.
fn narrow(candidates: &mut Vec<usize>, score: impl Fn(usize) -> Option<u32>) {
    let best = candidates.iter().filter_map(|&i| score(i)).max();
    candidates.retain(|&i| best.is_some() && score(i) == best);
}

/// 0 for no ranges (the criterion unused), 1 + the longest containing prefix's length, or
/// `None` when ranges are given and none contains `ip`.
fn prefix_score(ranges: &[CidrRange], ip: IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges
        .iter()
        .filter(|r| r.contains(ip))
        .map(|r| 1 + u32::from(r.prefix_len))
        .max()
}

/// 0 for no names, u32::MAX for an exact match, 1 + the suffix length for a `*.suffix`
/// match (longer is more specific), `None` otherwise (or without a detected name).
fn server_name_score(names: &[String], detected: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sn = detected?.to_ascii_lowercase();
    names
        .iter()
        .filter_map(|n| match n.strip_prefix('*') {
            None if *n == sn => Some(u32::MAX),
            Some(suffix) if sn.len() > suffix.len() && sn.ends_with(suffix) => {
                Some(1 + suffix.len() as u32)
            }
            _ => None,
        })
        .max()
}

#[cfg(test)]
mod tests;
