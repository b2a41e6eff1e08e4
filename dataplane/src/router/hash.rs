//! The request's hash for a hashing load balancer, from the route's `hash_policy` as
//! Envoy's `HashPolicyImpl` computes it: each policy that yields a value is XXH64-hashed
//! and folded in (the hash so far rotated left by one, then xor-ed), stopping at a
//! `terminal` policy that yielded one. No value at all: no hash (the balancer draws one).

use std::net::IpAddr;

use zerohop_proto::{HashOn, HashPolicy};

use crate::http::message::Request;
use crate::upstream::lb::hash::hash_key;

pub fn request_hash(policies: &[HashPolicy], req: &Request, peer: Option<IpAddr>) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for p in policies {
        let new = match &p.on {
            HashOn::Header(name) => header_hash(req, name),
            HashOn::Cookie(name) => cookie(req, name).map(|v| hash_key(&[v.as_bytes()])),
            HashOn::SourceIp => peer.map(|ip| hash_key(&[ip.to_string().as_bytes()])),
            HashOn::QueryParameter(name) => {
                query_value(req.query(), name).map(|v| hash_key(&[v.as_bytes()]))
            }
        };
        if let Some(n) = new {
            hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ n);
        }
        if p.terminal && hash.is_some() {
            break;
        }
    }
    hash
}

/// Every value of the header, sorted (the same hash whatever their order), hashed as one.
fn header_hash(req: &Request, name: &str) -> Option<u64> {
    let mut values: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| &req.raw[h.name.clone()] == name.as_bytes())
        .map(|h| &req.raw[h.value.clone()])
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(hash_key(&values))
}

/// A cookie's value (quotes removed), from the request's `cookie` headers.
fn cookie<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers
        .iter()
        .filter(|h| &req.raw[h.name.clone()] == b"cookie")
        .filter_map(|h| std::str::from_utf8(&req.raw[h.value.clone()]).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}

fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if kv == name => Some(""),
        _ => None,
    })
}
