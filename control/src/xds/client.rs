//! The xDS client's protocol state, sans I/O: responses in, the store updated, requests out.
//!
//! One client drives every stream a bootstrap needs: the ADS stream (clusters, endpoints,
//! listeners, routes and secrets) and, as Envoy, one stream of `SecretDiscoveryService` per
//! secret the TLS contexts take from an SDS server (Istio's `sds-grpc`). All feed one store, so a secret
//! that arrives on its own stream lets a listener that came by ADS stop warming.
//!
//! The caller ([`super::run`]) feeds each response to [`Client::sotw`] or [`Client::delta`],
//! publishes [`Client::snapshot`] when it changed and waits for the shards, and only then
//! sends the requests [`Client::settle`] returns: the ACK or NACK of that response, and any
//! change of the by-name subscriptions (RDS, EDS, SDS) the response caused, on whichever
//! stream they belong to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use zerohop_proto::Snapshot;

use super::wire::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Status,
    INVALID_ARGUMENT,
};
use crate::config::{AdsApi, Dynamic, Kind, Resources, SecretSource};

/// An xDS stream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamId {
    Ads,
    /// One secret from an SDS server ([`SecretSource::Grpc`]): Envoy opens a stream per
    /// secret, and SDS servers written against it may expect one name per stream.
    Sds {
        source: SecretSource,
        name: String,
    },
}

impl StreamId {
    /// Where the secrets this stream brings are filed.
    pub fn source(&self) -> SecretSource {
        match self {
            StreamId::Ads => SecretSource::Ads,
            StreamId::Sds { source, .. } => source.clone(),
        }
    }

    /// The stream's flavour: `ads` is the bootstrap's `ads_config`.
    pub fn api(&self, ads: Option<&crate::config::Ads>) -> AdsApi {
        match self {
            StreamId::Sds {
                source: SecretSource::Grpc { api, .. },
                ..
            } => *api,
            _ => ads.map_or(AdsApi::Sotw, |a| a.api),
        }
    }
}

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
    /// By-name kinds (RDS, EDS, SDS): the names the server was last asked for.
    subscribed: BTreeSet<String>,
    /// A request for this type is open on the current stream.
    requested: bool,
    /// Delta: the version of every resource held, for `initial_resource_versions`.
    versions: BTreeMap<String, String>,
    /// A response arrived since start-up (for the initial fetch).
    received: bool,
}

/// One stream's protocol state, kept across reconnects.
#[derive(Clone, Debug, Default)]
struct Stream {
    types: BTreeMap<Kind, TypeState>,
    node_sent: bool,
}

/// What a response did, until its ACK or NACK is sent.
#[derive(Debug)]
pub struct Pending {
    pub stream: StreamId,
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
    fn new(
        stream: StreamId,
        kind: Kind,
        nonce: String,
        version: String,
        received: Instant,
    ) -> Pending {
        Pending {
            stream,
            kind,
            nonce,
            version,
            errors: Vec::new(),
            received,
            applied: 0,
            removed: 0,
        }
    }

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

/// The protocol state of the xDS client, kept across reconnects.
#[derive(Debug)]
pub struct Client {
    pub dynamic: Dynamic,
    pub resources: Resources,
    /// Every resource held, as the server sent it, for admin's `/config_dump`.
    pub held: super::HeldResources,
    streams: BTreeMap<StreamId, Stream>,
}

/// The kinds the ADS stream carries, in Envoy's order of subscription.
const ADS_KINDS: [Kind; 5] = [
    Kind::Cluster,
    Kind::Endpoint,
    Kind::Listener,
    Kind::Route,
    Kind::Secret,
];

impl Client {
    pub fn new(dynamic: Dynamic) -> Client {
        Client {
            resources: Resources::new(&dynamic),
            dynamic,
            held: Default::default(),
            streams: BTreeMap::new(),
        }
    }

    /// The streams the configuration needs now: ADS when the bootstrap has it, and one per
    /// SDS server that something names.
    pub fn wanted_streams(&self) -> Vec<StreamId> {
        let ads = self.dynamic.ads.is_some().then_some(StreamId::Ads);
        let sds = self
            .resources
            .wanted_secrets(&self.dynamic)
            .into_iter()
            .filter(|(s, _)| matches!(s, SecretSource::Grpc { .. }))
            .flat_map(|(source, names)| {
                names.into_iter().map(move |name| StreamId::Sds {
                    source: source.clone(),
                    name,
                })
            });
        ads.into_iter().chain(sds).collect()
    }

    fn api(&self, sid: &StreamId) -> AdsApi {
        sid.api(self.dynamic.ads.as_ref())
    }

    fn kinds(sid: &StreamId) -> &'static [Kind] {
        match sid {
            StreamId::Sds { .. } => &[Kind::Secret],
            StreamId::Ads => &ADS_KINDS,
        }
    }

    /// The kinds the bootstrap subscribes to by wildcard (on the ADS stream).
    fn wildcard(&self, sid: &StreamId, kind: Kind) -> bool {
        let Some(ads) = self.dynamic.ads.as_ref().filter(|_| *sid == StreamId::Ads) else {
            return false;
        };
        match kind {
            Kind::Cluster => ads.cds,
            Kind::Listener => ads.lds,
            _ => false,
        }
    }

    /// The names a by-name kind is subscribed to on `sid`.
    fn wanted(&self, sid: &StreamId, kind: Kind) -> BTreeSet<String> {
        let mut names = match kind {
            Kind::Secret => self
                .resources
                .wanted_secrets(&self.dynamic)
                .remove(&sid.source())
                .unwrap_or_default(),
            _ => self.resources.wanted(&self.dynamic, kind),
        };
        if let StreamId::Sds { name, .. } = sid {
            names.retain(|n| n == name);
        }
        names
    }

    fn node(&mut self, sid: &StreamId) -> Option<Vec<u8>> {
        let first_only = match sid {
            StreamId::Sds {
                source:
                    SecretSource::Grpc {
                        node_first_only, ..
                    },
                ..
            } => *node_first_only,
            _ => self.dynamic.ads.as_ref().is_some_and(|a| a.node_first_only),
        };
        let stream = self.streams.entry(sid.clone()).or_default();
        if stream.node_sent && first_only {
            return None;
        }
        stream.node_sent = true;
        Some(self.dynamic.node.clone())
    }

    fn state(&mut self, sid: &StreamId, kind: Kind) -> &mut TypeState {
        let stream = self.streams.entry(sid.clone()).or_default();
        stream.types.entry(kind).or_default()
    }

    /// The first requests of a new stream: on ADS CDS, EDS, LDS, RDS, SDS in Envoy's
    /// order, each with what is already held so that the server need not resend it.
    pub fn connected(&mut self, sid: &StreamId) -> Vec<Request> {
        let stream = self.streams.entry(sid.clone()).or_default();
        stream.node_sent = false;
        for t in stream.types.values_mut() {
            t.requested = false;
            t.nonce.clear();
        }
        let mut out = Vec::new();
        for &kind in Self::kinds(sid) {
            let names = match self.wildcard(sid, kind) {
                true => BTreeSet::new(),
                false if kind.by_name() => self.wanted(sid, kind),
                false => continue,
            };
            if kind.by_name() && names.is_empty() {
                continue;
            }
            out.push(self.open(sid, kind, names));
        }
        out
    }

    /// The first request for `kind` on this stream.
    fn open(&mut self, sid: &StreamId, kind: Kind, names: BTreeSet<String>) -> Request {
        let node = self.node(sid);
        let api = self.api(sid);
        let t = self.state(sid, kind);
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

    /// The kind of a response's type URL, if `sid` carries it.
    fn kind_of(sid: &StreamId, type_url: &str) -> Option<Kind> {
        Kind::from_type_url(type_url).filter(|k| Self::kinds(sid).contains(k))
    }

    /// Applies a state-of-the-world response on stream `sid`. For a type zerohop does
    /// not take (there), the NACK to send at once.
    pub fn sotw(&mut self, sid: &StreamId, r: DiscoveryResponse) -> Result<Pending, Box<Request>> {
        let received = Instant::now();
        let Some(kind) = Self::kind_of(sid, &r.type_url) else {
            return Err(Box::new(self.unknown_type(sid, &r.type_url, &r.nonce)));
        };
        let mut p = Pending::new(sid.clone(), kind, r.nonce, r.version_info, received);
        let mut seen = BTreeSet::new();
        for any in &r.resources {
            match self
                .resources
                .check(&self.dynamic, kind, any, "", &sid.source())
            {
                Ok(c) => {
                    seen.insert(c.name.clone());
                    self.hold(kind, &c.name, &p.version, any);
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
        if self.wildcard(sid, kind) {
            for gone in self.resources.names(kind).difference(&seen) {
                self.resources.remove(kind, gone);
                p.removed += 1;
            }
        }
        self.state(sid, kind).received = true;
        Ok(p)
    }

    /// Applies a delta response on stream `sid`.
    pub fn delta(
        &mut self,
        sid: &StreamId,
        r: DeltaDiscoveryResponse,
    ) -> Result<Pending, Box<Request>> {
        let received = Instant::now();
        let Some(kind) = Self::kind_of(sid, &r.type_url) else {
            return Err(Box::new(self.unknown_type(sid, &r.type_url, &r.nonce)));
        };
        let mut p = Pending::new(sid.clone(), kind, r.nonce, r.system_version_info, received);
        for res in &r.resources {
            let Some(any) = &res.resource else {
                p.errors
                    .push((res.name.clone(), "a Resource without resource".into()));
                continue;
            };
            match self
                .resources
                .check(&self.dynamic, kind, any, &res.name, &sid.source())
            {
                Ok(c) if !res.name.is_empty() && c.name != res.name => p.errors.push((
                    res.name.clone(),
                    format!(
                        "Resource.name {:?} differs from the resource's own name {:?}",
                        res.name, c.name
                    ),
                )),
                Ok(c) => {
                    let t = self.state(sid, kind);
                    t.versions.insert(c.name.clone(), res.version.clone());
                    self.hold(kind, &c.name, &res.version, any);
                    self.resources.apply(c);
                    p.applied += 1;
                }
                Err((name, e)) => p.errors.push((name, e.to_string())),
            }
        }
        for name in &r.removed_resources {
            self.state(sid, kind).versions.remove(name);
            if self.resources.remove(kind, name) {
                p.removed += 1;
            }
        }
        self.state(sid, kind).received = true;
        Ok(p)
    }

    /// Keeps what the server sent for an accepted resource. A cluster, listener or route
    /// configuration sent again unchanged keeps the version it arrived with, as Envoy's
    /// (it skips a resource whose hash is the same).
    fn hold(&self, kind: Kind, name: &str, version: &str, any: &prost_types::Any) {
        let mut held = self.held.lock().expect("held resources");
        let key = (kind, name.to_owned());
        if let Some(h) = held.get(&key) {
            if kind != Kind::Endpoint && h.resource == *any {
                return;
            }
        }
        let entry = super::Held {
            version: version.to_owned(),
            resource: any.clone(),
            last_updated: std::time::SystemTime::now(),
        };
        held.insert(key, entry);
    }

    /// Drops what is no longer held (removed, or no longer subscribed to).
    fn prune_held(&self) {
        let names: BTreeMap<Kind, BTreeSet<String>> = Kind::ALL
            .into_iter()
            .map(|k| (k, self.resources.names(k)))
            .collect();
        self.held
            .lock()
            .expect("held resources")
            .retain(|(k, n), _| names[k].contains(n));
    }

    /// A NACK for a type zerohop does not take on this stream: the server learns it at
    /// once, and the stream goes on.
    fn unknown_type(&mut self, sid: &StreamId, type_url: &str, nonce: &str) -> Request {
        let message = match Kind::from_type_url(type_url) {
            Some(_) => format!("type {type_url:?} is not served on an SDS stream"),
            None => format!("type {type_url:?} is not supported by zerohop"),
        };
        let error_detail = Some(Status {
            code: INVALID_ARGUMENT,
            message,
        });
        let node = self.node(sid);
        match self.api(sid) {
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

    /// True once the first configuration is complete: every stream the configuration needs
    /// has answered every type it asked for, and nothing is warming.
    pub fn initialized(&self) -> bool {
        // An SDS stream must have connected and answered its secret; the ADS stream each
        // type it asked for (it may ask for none: secrets only, none named yet).
        let answered = self.wanted_streams().iter().all(|sid| {
            let Some(s) = self.streams.get(sid) else {
                return *sid == StreamId::Ads;
            };
            let asked = *sid == StreamId::Ads || s.types.values().any(|t| t.requested);
            asked && s.types.values().all(|t| !t.requested || t.received)
        });
        let wildcards = [Kind::Cluster, Kind::Listener]
            .into_iter()
            .filter(|k| self.wildcard(&StreamId::Ads, *k))
            .all(|k| {
                self.streams
                    .get(&StreamId::Ads)
                    .and_then(|s| s.types.get(&k))
                    .is_some_and(|t| t.received)
            });
        answered && wildcards && self.resources.warming() == 0
    }

    /// The requests to send once `p`'s result is applied: its ACK (or NACK), then any
    /// change of the by-name subscriptions, each with the stream it goes on.
    pub fn settle(&mut self, p: Pending) -> Vec<(StreamId, Request)> {
        let error_detail = p.error_detail().map(|message| Status {
            code: INVALID_ARGUMENT,
            message,
        });
        let sid = p.stream.clone();
        let node = self.node(&sid);
        let api = self.api(&sid);
        let t = self.state(&sid, p.kind);
        t.nonce = p.nonce.clone();
        if error_detail.is_none() {
            t.version = p.version;
        }
        let ack = match api {
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
        };
        let mut out = vec![(sid, ack)];
        out.extend(self.resubscribe());
        out
    }

    /// Requests that bring the by-name subscriptions (EDS, RDS, SDS) of every open stream
    /// in line with what the listeners and clusters now refer to; what nothing refers to
    /// is dropped. A stream not connected yet subscribes when it connects.
    pub fn resubscribe(&mut self) -> Vec<(StreamId, Request)> {
        let mut out = Vec::new();
        let open: Vec<StreamId> = self.streams.keys().cloned().collect();
        for sid in open {
            for &kind in Self::kinds(&sid) {
                if !kind.by_name() {
                    continue;
                }
                if let Some(r) = self.resubscribe_one(&sid, kind) {
                    out.push((sid.clone(), r));
                }
            }
        }
        self.resources.retain_wanted(&self.dynamic);
        self.prune_held();
        out
    }

    fn resubscribe_one(&mut self, sid: &StreamId, kind: Kind) -> Option<Request> {
        let wanted = self.wanted(sid, kind);
        let t = self.state(sid, kind);
        if wanted == t.subscribed && (t.requested || wanted.is_empty()) {
            return None;
        }
        if !t.requested {
            return Some(self.open(sid, kind, wanted));
        }
        let node = self.node(sid);
        let api = self.api(sid);
        let t = self.state(sid, kind);
        let r = match api {
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
                    resource_names_subscribe: wanted.difference(&t.subscribed).cloned().collect(),
                    resource_names_unsubscribe: t.subscribed.difference(&wanted).cloned().collect(),
                    ..Default::default()
                })
            }
        };
        t.subscribed = wanted;
        Some(r)
    }

    /// The version last accepted for each type on the ADS stream (SotW), or the number of
    /// resources held (delta), for admin; secrets count those of every stream.
    pub fn versions(&self) -> Vec<(Kind, String, usize)> {
        let ads = self.streams.get(&StreamId::Ads);
        Kind::ALL
            .into_iter()
            .filter(|k| ads.is_some_and(|s| s.types.contains_key(k)) || *k == Kind::Secret)
            .map(|k| {
                let version = ads
                    .and_then(|s| s.types.get(&k))
                    .map(|t| t.version.clone())
                    .unwrap_or_default();
                (k, version, self.resources.count(k))
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod client_tests;
