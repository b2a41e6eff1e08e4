//! The ADS client's protocol state, sans I/O: responses in, the store updated, requests out.
//!
//! The caller ([`super::run`]) feeds each response to [`Client::sotw`] or [`Client::delta`],
//! publishes [`Client::snapshot`] when it changed and waits for the shards, and only then
//! sends the requests [`Client::settle`] returns: the ACK or NACK of that response, and any
//! change of the RDS/EDS subscriptions the response caused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use zerohop_proto::Snapshot;

use super::wire::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Status,
    INVALID_ARGUMENT,
};
use crate::config::{AdsApi, Dynamic, Kind, Resources};

/// A request for the stream, of the stream's flavour.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

/// Per type URL.
#[derive(Clone, Debug, Default)]
struct TypeState {
    /// State of the world: the last accepted `version_info` (sent again in NACKs and on
    /// reconnect).
    version: String,
    /// The nonce of the last response.
    nonce: String,
    /// By-name kinds (RDS, EDS): the names the server was last asked for.
    subscribed: BTreeSet<String>,
    /// A request for this type is open on the current stream.
    requested: bool,
    /// Delta: the version of every resource held, for `initial_resource_versions`.
    versions: BTreeMap<String, String>,
    /// A response arrived since start-up (for the initial fetch).
    received: bool,
}

/// What a response did, until its ACK or NACK is sent.
#[derive(Debug)]
pub struct Pending {
    pub kind: Kind,
    nonce: String,
    /// SotW: the response's version, accepted unless there were errors.
    version: String,
    /// `(resource name, error)`, one per refused resource.
    pub errors: Vec<(String, String)>,
    /// When the response arrived.
    pub received: Instant,
    /// Resources added or updated, and removed.
    pub applied: usize,
    pub removed: usize,
}

impl Pending {
    /// The NACK's `error_detail.message`: each refused resource with the field at fault.
    pub fn error_detail(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        let mut text = String::new();
        for (name, error) in &self.errors {
            if !text.is_empty() {
                text.push('\n');
            }
            let _ = write!(text, "{} {name:?}: {error}", self.kind.label());
        }
        Some(text)
    }
}

/// The protocol state of one ADS client, kept across reconnects.
#[derive(Debug)]
pub struct Client {
    pub dynamic: Dynamic,
    pub resources: Resources,
    types: BTreeMap<Kind, TypeState>,
    node_sent: bool,
}

impl Client {
    pub fn new(dynamic: Dynamic) -> Client {
        Client {
            dynamic,
            resources: Resources::default(),
            types: Kind::ALL
                .into_iter()
                .map(|k| (k, TypeState::default()))
                .collect(),
            node_sent: false,
        }
    }

    fn api(&self) -> AdsApi {
        self.dynamic.ads.api
    }

    /// The kinds the bootstrap subscribes to by wildcard.
    fn wildcard(&self, kind: Kind) -> bool {
        match kind {
            Kind::Cluster => self.dynamic.ads.cds,
            Kind::Listener => self.dynamic.ads.lds,
            _ => false,
        }
    }

    fn node(&mut self) -> Option<Vec<u8>> {
        if self.node_sent && self.dynamic.ads.node_first_only {
            return None;
        }
        self.node_sent = true;
        Some(self.dynamic.ads.node.clone())
    }

    /// The first requests of a new stream: CDS, EDS, LDS, RDS, in Envoy's order, each
    /// with what is already held so that the server need not resend it.
    pub fn connected(&mut self) -> Vec<Request> {
        self.node_sent = false;
        for t in self.types.values_mut() {
            t.requested = false;
            t.nonce.clear();
        }
        let mut out = Vec::new();
        for kind in [Kind::Cluster, Kind::Endpoint, Kind::Listener, Kind::Route] {
            let names = match self.wildcard(kind) {
                true => BTreeSet::new(),
                false if kind.by_name() => self.resources.wanted(&self.dynamic, kind),
                false => continue,
            };
            if kind.by_name() && names.is_empty() {
                continue;
            }
            out.push(self.open(kind, names));
        }
        out
    }

    /// The first request for `kind` on this stream.
    fn open(&mut self, kind: Kind, names: BTreeSet<String>) -> Request {
        let node = self.node();
        let api = self.api();
        let t = self.types.get_mut(&kind).expect("every kind has a state");
        t.requested = true;
        t.subscribed = names.clone();
        match api {
            AdsApi::Sotw => Request::Sotw(DiscoveryRequest {
                version_info: t.version.clone(),
                node,
                resource_names: names.into_iter().collect(),
                type_url: kind.type_url().into(),
                ..Default::default()
            }),
            AdsApi::Delta => Request::Delta(DeltaDiscoveryRequest {
                node,
                type_url: kind.type_url().into(),
                resource_names_subscribe: names.into_iter().collect(),
                initial_resource_versions: t.versions.clone(),
                ..Default::default()
            }),
        }
    }

    /// Applies a state-of-the-world response. `None` for a type zerohop does not take
    /// (answered with a NACK by [`Client::unknown_type`]).
    pub fn sotw(&mut self, r: DiscoveryResponse) -> Result<Pending, Request> {
        let received = Instant::now();
        let Some(kind) = Kind::from_type_url(&r.type_url) else {
            return Err(self.unknown_type(&r.type_url, &r.nonce));
        };
        let mut p = Pending {
            kind,
            nonce: r.nonce,
            version: r.version_info,
            errors: Vec::new(),
            received,
            applied: 0,
            removed: 0,
        };
        let mut seen = BTreeSet::new();
        for any in &r.resources {
            match self.resources.check(&self.dynamic, kind, any, "") {
                Ok(c) => {
                    seen.insert(c.name.clone());
                    self.resources.apply(c);
                    p.applied += 1;
                }
                Err((name, e)) => {
                    // An invalid resource keeps its previous version: not a removal.
                    seen.insert(name.clone());
                    p.errors.push((name, e.to_string()));
                }
            }
        }
        if self.wildcard(kind) {
            for gone in self.resources.names(kind).difference(&seen) {
                self.resources.remove(kind, gone);
                p.removed += 1;
            }
        }
        self.after_response(kind);
        Ok(p)
    }

    /// Applies a delta response.
    pub fn delta(&mut self, r: DeltaDiscoveryResponse) -> Result<Pending, Request> {
        let received = Instant::now();
        let Some(kind) = Kind::from_type_url(&r.type_url) else {
            return Err(self.unknown_type(&r.type_url, &r.nonce));
        };
        let mut p = Pending {
            kind,
            nonce: r.nonce,
            version: r.system_version_info,
            errors: Vec::new(),
            received,
            applied: 0,
            removed: 0,
        };
        for res in &r.resources {
            let Some(any) = &res.resource else {
                p.errors
                    .push((res.name.clone(), "a Resource without resource".into()));
                continue;
            };
            match self.resources.check(&self.dynamic, kind, any, &res.name) {
                Ok(c) if !res.name.is_empty() && c.name != res.name => p.errors.push((
                    res.name.clone(),
                    format!(
                        "Resource.name {:?} differs from the resource's own name {:?}",
                        res.name, c.name
                    ),
                )),
                Ok(c) => {
                    let t = self.types.get_mut(&kind).expect("state");
                    t.versions.insert(c.name.clone(), res.version.clone());
                    self.resources.apply(c);
                    p.applied += 1;
                }
                Err((name, e)) => p.errors.push((name, e.to_string())),
            }
        }
        for name in &r.removed_resources {
            self.types
                .get_mut(&kind)
                .expect("state")
                .versions
                .remove(name);
            if self.resources.remove(kind, name) {
                p.removed += 1;
            }
        }
        self.after_response(kind);
        Ok(p)
    }

    fn after_response(&mut self, kind: Kind) {
        self.types.get_mut(&kind).expect("state").received = true;
    }

    /// A NACK for a type zerohop does not implement (SDS, say): the server learns it at
    /// once, and the stream goes on.
    fn unknown_type(&mut self, type_url: &str, nonce: &str) -> Request {
        let error_detail = Some(Status {
            code: INVALID_ARGUMENT,
            message: format!("type {type_url:?} is not supported by zerohop"),
        });
        let node = self.node();
        match self.api() {
            AdsApi::Sotw => Request::Sotw(DiscoveryRequest {
                node,
                type_url: type_url.into(),
                response_nonce: nonce.into(),
                error_detail,
                ..Default::default()
            }),
            AdsApi::Delta => Request::Delta(DeltaDiscoveryRequest {
                node,
                type_url: type_url.into(),
                response_nonce: nonce.into(),
                error_detail,
                ..Default::default()
            }),
        }
    }

    /// The snapshot of what is held now.
    pub fn snapshot(&self) -> Snapshot {
        self.resources.assemble(&self.dynamic)
    }

    /// True once the first configuration is complete: every subscribed type has answered
    /// and nothing is warming.
    pub fn initialized(&self) -> bool {
        let answered = self.types.iter().all(|(_, t)| !t.requested || t.received);
        let wildcards = [Kind::Cluster, Kind::Listener]
            .into_iter()
            .filter(|k| self.wildcard(*k))
            .all(|k| self.types[&k].received);
        answered && wildcards && self.resources.warming() == 0
    }

    /// The requests to send once `p`'s result is applied: its ACK (or NACK), then any
    /// change of the by-name subscriptions.
    pub fn settle(&mut self, p: Pending) -> Vec<Request> {
        let mut out = Vec::new();
        let error_detail = p.error_detail().map(|message| Status {
            code: INVALID_ARGUMENT,
            message,
        });
        let node = self.node();
        let api = self.api();
        let t = self.types.get_mut(&p.kind).expect("state");
        t.nonce = p.nonce.clone();
        if error_detail.is_none() {
            t.version = p.version;
        }
        out.push(match api {
            AdsApi::Sotw => Request::Sotw(DiscoveryRequest {
                version_info: t.version.clone(),
                node,
                resource_names: t.subscribed.iter().cloned().collect(),
                type_url: p.kind.type_url().into(),
                response_nonce: p.nonce,
                error_detail,
            }),
            AdsApi::Delta => Request::Delta(DeltaDiscoveryRequest {
                node,
                type_url: p.kind.type_url().into(),
                response_nonce: p.nonce,
                error_detail,
                ..Default::default()
            }),
        });
        out.extend(self.resubscribe());
        out
    }

    /// Requests that bring the RDS and EDS subscriptions in line with what the listeners
    /// and clusters now refer to; what nothing refers to is dropped.
    pub fn resubscribe(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        for kind in [Kind::Endpoint, Kind::Route] {
            let wanted = self.resources.wanted(&self.dynamic, kind);
            let t = &self.types[&kind];
            if wanted == t.subscribed && (t.requested || wanted.is_empty()) {
                continue;
            }
            if !t.requested {
                out.push(self.open(kind, wanted));
                continue;
            }
            let node = self.node();
            let api = self.api();
            let t = self.types.get_mut(&kind).expect("state");
            out.push(match api {
                AdsApi::Sotw => Request::Sotw(DiscoveryRequest {
                    version_info: t.version.clone(),
                    node,
                    resource_names: wanted.iter().cloned().collect(),
                    type_url: kind.type_url().into(),
                    response_nonce: t.nonce.clone(),
                    error_detail: None,
                }),
                AdsApi::Delta => {
                    for gone in t.subscribed.difference(&wanted) {
                        t.versions.remove(gone);
                    }
                    Request::Delta(DeltaDiscoveryRequest {
                        node,
                        type_url: kind.type_url().into(),
                        resource_names_subscribe: wanted
                            .difference(&t.subscribed)
                            .cloned()
                            .collect(),
                        resource_names_unsubscribe: t
                            .subscribed
                            .difference(&wanted)
                            .cloned()
                            .collect(),
                        ..Default::default()
                    })
                }
            });
            t.subscribed = wanted;
        }
        self.resources.retain_wanted(&self.dynamic);
        out
    }

    /// The version last accepted for each type (SotW), or the number of resources held
    /// (delta), for admin.
    pub fn versions(&self) -> Vec<(Kind, String, usize)> {
        self.types
            .iter()
            .map(|(k, t)| (*k, t.version.clone(), self.resources.names(*k).len()))
            .collect()
    }
}
