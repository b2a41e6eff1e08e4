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
        let answered = self.wanted_streams().iter().all(|sid| {
            self.streams.get(sid).is_some_and(|s| {
                s.types.values().all(|t| !t.requested || t.received)
                    && s.types.values().any(|t| t.requested)
            })
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
mod tests {
    use super::*;
    use crate::config::dynamic_tests::{any, assignment, eds_cluster, listener, router};
    use crate::config::{load, Format};
    use crate::xds::wire::Resource;

    fn client(api: &str) -> Client {
        let yaml = include_str!("../../tests/fixtures/ads.yaml").replace("DELTA_GRPC", api);
        Client::new(load(&yaml, Format::Yaml).unwrap().dynamic.unwrap())
    }

    fn sotw(r: Request) -> DiscoveryRequest {
        match r {
            Request::Sotw(r) => r,
            other => panic!("expected a SotW request, got {other:?}"),
        }
    }

    fn delta(r: Request) -> DeltaDiscoveryRequest {
        match r {
            Request::Delta(r) => r,
            other => panic!("expected a delta request, got {other:?}"),
        }
    }

    fn cds(version: &str, nonce: &str, clusters: Vec<serde_json::Value>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources: clusters.into_iter().map(any).collect(),
            type_url: Kind::Cluster.type_url().into(),
            nonce: nonce.into(),
        }
    }

    #[test]
    fn sotw_ack_nack_subscriptions_and_removal() {
        let mut c = client("GRPC");
        let first: Vec<_> = c.connected(&StreamId::Ads).into_iter().map(sotw).collect();
        assert_eq!(first.len(), 2, "CDS and LDS, wildcard");
        assert_eq!(first[0].type_url, Kind::Cluster.type_url());
        assert_eq!(first[1].type_url, Kind::Listener.type_url());
        assert!(first[0].resource_names.is_empty() && first[0].version_info.is_empty());
        assert!(
            first[0].node.is_some(),
            "the first request carries the node"
        );
        assert!(first[1].node.is_none(), "set_node_on_first_message_only");

        let p = c
            .sotw(&StreamId::Ads, cds("1", "n1", vec![eds_cluster("web")]))
            .unwrap();
        assert_eq!((p.applied, p.errors.len()), (1, 0));
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| sotw(r)).collect();
        assert_eq!(out[0].version_info, "1");
        assert_eq!(out[0].response_nonce, "n1");
        assert!(out[0].error_detail.is_none());
        assert_eq!(out[1].type_url, Kind::Endpoint.type_url());
        assert_eq!(out[1].resource_names, ["web"], "EDS follows the cluster");
        assert!(!c.initialized(), "web warms, LDS has not answered");

        // An invalid cluster: NACK with the last accepted version; the valid one applies.
        let mut bad = eds_cluster("bad");
        bad["lb_policy"] = "CLUSTER_PROVIDED".into();
        let p = c
            .sotw(
                &StreamId::Ads,
                cds("2", "n2", vec![eds_cluster("web"), eds_cluster("api"), bad]),
            )
            .unwrap();
        assert_eq!((p.applied, p.errors.len()), (2, 1));
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| sotw(r)).collect();
        assert_eq!(out[0].version_info, "1");
        assert_eq!(out[0].response_nonce, "n2");
        let detail = &out[0].error_detail.as_ref().unwrap().message;
        assert!(
            detail.starts_with("Cluster \"bad\": Cluster(bad).lb_policy"),
            "{detail}"
        );
        assert_eq!(out[1].resource_names, ["api", "web"]);
        assert_eq!(out[1].response_nonce, "", "no EDS response seen yet");

        // Absent from the next response: removed, and unsubscribed.
        let p = c
            .sotw(&StreamId::Ads, cds("3", "n3", vec![eds_cluster("api")]))
            .unwrap();
        assert_eq!(p.removed, 1);
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| sotw(r)).collect();
        assert_eq!(out[0].version_info, "3");
        assert_eq!(out[1].resource_names, ["api"]);

        // Reconnect: the accepted version, the subscriptions held.
        let again: Vec<_> = c.connected(&StreamId::Ads).into_iter().map(sotw).collect();
        assert_eq!(again[0].version_info, "3");
        assert_eq!(again[1].type_url, Kind::Endpoint.type_url());
        assert_eq!(again[1].resource_names, ["api"]);
    }

    #[test]
    fn delta_versions_removal_and_reconnect() {
        let mut c = client("DELTA_GRPC");
        let first: Vec<_> = c.connected(&StreamId::Ads).into_iter().map(delta).collect();
        assert!(first[0].resource_names_subscribe.is_empty(), "wildcard");
        let resource = |name: &str, version: &str, json| Resource {
            name: name.into(),
            version: version.into(),
            resource: Some(any(json)),
            ..Default::default()
        };
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    resources: vec![resource("web", "a1", eds_cluster("web"))],
                    type_url: Kind::Cluster.type_url().into(),
                    nonce: "n1".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| delta(r)).collect();
        assert_eq!(out[0].response_nonce, "n1");
        assert!(out[0].error_detail.is_none());
        assert_eq!(out[1].resource_names_subscribe, ["web"]);
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    resources: vec![resource("web", "e1", assignment("web", 8080))],
                    type_url: Kind::Endpoint.type_url().into(),
                    nonce: "n2".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        c.settle(p);
        assert_eq!(c.snapshot().clusters.len(), 1, "web is warm");

        // A name that does not match the resource is refused.
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    resources: vec![resource("other", "a2", eds_cluster("web"))],
                    type_url: Kind::Cluster.type_url().into(),
                    nonce: "n3".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| delta(r)).collect();
        assert!(out[0]
            .error_detail
            .as_ref()
            .unwrap()
            .message
            .contains("differs"));

        // Reconnect: what is held, with its versions.
        let again: Vec<_> = c.connected(&StreamId::Ads).into_iter().map(delta).collect();
        assert_eq!(again[0].initial_resource_versions.get("web").unwrap(), "a1");
        assert_eq!(again[1].type_url, Kind::Endpoint.type_url());
        assert_eq!(again[1].resource_names_subscribe, ["web"]);
        assert_eq!(again[1].initial_resource_versions.get("web").unwrap(), "e1");

        // Removal: the cluster goes, its assignment is unsubscribed.
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    removed_resources: vec!["web".into()],
                    type_url: Kind::Cluster.type_url().into(),
                    nonce: "n4".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(p.removed, 1);
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| delta(r)).collect();
        assert_eq!(out[1].resource_names_unsubscribe, ["web"]);
        assert!(c.snapshot().clusters.is_empty());
    }

    /// A listener whose certificate comes over ADS and whose CA comes from an SDS
    /// server (`sds-grpc` on a Unix socket): it warms until both arrive, each on its
    /// stream, and the SDS stream takes secrets only.
    #[test]
    fn secrets_by_ads_and_by_an_sds_server_warm_a_listener() {
        let (cert, key) = crate::config::test_certificate();
        let yaml = format!(
            "{}  - name: sds-grpc\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment: {{ cluster_name: sds-grpc, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ pipe: {{ path: /tmp/sds }} }} }} }} ] }} ] }}\n",
            include_str!("../../tests/fixtures/ads.yaml")
        );
        let mut c = Client::new(load(&yaml, Format::Yaml).unwrap().dynamic.unwrap());
        c.connected(&StreamId::Ads);
        let mut l = listener("in", 15006, serde_json::json!([router()]));
        l["filter_chains"][0]["transport_socket"] = serde_json::json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [{"name": "cert", "sds_config": {"ads": {}}}],
                    "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": {
                        "api_config_source": {"api_type": "GRPC", "grpc_services": [
                            {"envoy_grpc": {"cluster_name": "sds-grpc"}}]}}},
                },
            },
        });
        l["filter_chains"][0]["filters"][0]["typed_config"]
            .as_object_mut()
            .unwrap()
            .remove("rds");
        l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"] =
            serde_json::json!({"name": "r"});
        let lds = |v: &str, n: &str| DeltaDiscoveryResponse {
            resources: vec![Resource {
                name: "in".into(),
                version: v.into(),
                resource: Some(any(l.clone())),
                ..Default::default()
            }],
            type_url: Kind::Listener.type_url().into(),
            nonce: n.into(),
            ..Default::default()
        };
        let p = c.delta(&StreamId::Ads, lds("1", "n1")).unwrap();
        assert_eq!(p.errors, vec![], "checked without its secrets");
        let out = c.settle(p);
        let sds: Vec<_> = out
            .iter()
            .filter(
                |(_, r)| matches!(r, Request::Delta(d) if d.type_url == Kind::Secret.type_url()),
            )
            .collect();
        assert_eq!(sds.len(), 1, "the ADS secret is subscribed to: {out:?}");
        assert!(c.snapshot().listeners.is_empty(), "warming");
        let sid = StreamId::Sds {
            source: crate::config::SecretSource::Grpc {
                cluster: "sds-grpc".into(),
                api: AdsApi::Sotw,
                node_first_only: false,
            },
            name: "ROOTCA".into(),
        };
        assert_eq!(c.wanted_streams(), vec![StreamId::Ads, sid.clone()]);
        let first: Vec<_> = c.connected(&sid).into_iter().map(sotw).collect();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].type_url, Kind::Secret.type_url());
        assert_eq!(first[0].resource_names, ["ROOTCA"]);
        assert!(first[0].node.is_some());
        // Only secrets on an SDS stream.
        let nack = c
            .sotw(&sid, cds("1", "x1", vec![eds_cluster("web")]))
            .unwrap_err();
        assert!(sotw(*nack)
            .error_detail
            .unwrap()
            .message
            .contains("SDS stream"));
        let secret = |name: &str, body: serde_json::Value| {
            let mut s = serde_json::json!({
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": name,
            });
            s.as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            any(s)
        };
        let p = c
            .sotw(
                &sid,
                DiscoveryResponse {
                    version_info: "1".into(),
                    resources: vec![secret(
                        "ROOTCA",
                        serde_json::json!({
                        "validation_context": {"trusted_ca": {"inline_string": cert}}}),
                    )],
                    type_url: Kind::Secret.type_url().into(),
                    nonce: "s1".into(),
                },
            )
            .unwrap();
        c.settle(p);
        assert!(c.snapshot().listeners.is_empty(), "still warming for cert");
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    resources: vec![Resource {
                        name: "cert".into(),
                        version: "c1".into(),
                        resource: Some(secret(
                            "cert",
                            serde_json::json!({"tls_certificate": {
                            "certificate_chain": {"inline_string": cert},
                            "private_key": {"inline_string": key}}}),
                        )),
                        ..Default::default()
                    }],
                    type_url: Kind::Secret.type_url().into(),
                    nonce: "s2".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(p.errors, vec![]);
        c.settle(p);
        let snapshot = c.snapshot();
        let tls = snapshot.listeners[0].filter_chains[0].tls.as_ref().unwrap();
        assert_eq!(tls.common.certificates.len(), 1, "warm: both secrets held");
        assert_eq!(tls.common.validation.as_ref().unwrap().trusted_ca.len(), 1);
    }

    #[test]
    fn an_unknown_type_is_nacked() {
        let mut c = client("GRPC");
        let nack = c
            .sotw(
                &StreamId::Ads,
                DiscoveryResponse {
                    type_url: "type.googleapis.com/envoy.service.runtime.v3.Runtime".into(),
                    nonce: "s1".into(),
                    ..Default::default()
                },
            )
            .unwrap_err();
        let nack = sotw(*nack);
        assert_eq!(nack.response_nonce, "s1");
        assert!(nack.error_detail.unwrap().message.contains("not supported"));
    }
}

/// Writes the xds_response fuzz target's seeds (fuzz/seeds/xds_response):
/// `cargo test -p zerohop-control -- --ignored write_xds_fuzz_seeds`.
#[cfg(test)]
mod seeds {
    use super::*;
    use crate::config::dynamic_tests::{any, assignment, eds_cluster, listener, router, routes};
    use crate::xds::wire::Resource;
    use prost::Message as _;

    fn framed(mode: u8, responses: Vec<Vec<u8>>) -> Vec<u8> {
        let mut out = vec![mode];
        for r in responses {
            out.extend_from_slice(&(r.len() as u16).to_le_bytes());
            out.extend_from_slice(&r);
        }
        out
    }

    #[test]
    #[ignore = "writes fuzz seeds"]
    fn write_xds_fuzz_seeds() {
        let sets = [
            (Kind::Cluster, vec![eds_cluster("web"), eds_cluster("api")]),
            (Kind::Endpoint, vec![assignment("web", 8080)]),
            (
                Kind::Listener,
                vec![listener("in", 15006, serde_json::json!([router()]))],
            ),
            (Kind::Route, vec![routes("web")]),
            (
                Kind::Secret,
                vec![serde_json::json!({
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                    "name": "cert",
                    "tls_certificate": {
                        "certificate_chain": {"inline_string": crate::config::test_certificate().0},
                        "private_key": {"inline_string": crate::config::test_certificate().1},
                    },
                })],
            ),
        ];
        let sotw: Vec<Vec<u8>> = sets
            .iter()
            .enumerate()
            .map(|(i, (kind, res))| {
                DiscoveryResponse {
                    version_info: format!("{i}"),
                    resources: res.iter().cloned().map(any).collect(),
                    type_url: kind.type_url().into(),
                    nonce: format!("n{i}"),
                }
                .encode_to_vec()
            })
            .collect();
        let delta: Vec<Vec<u8>> = sets
            .iter()
            .enumerate()
            .map(|(i, (kind, res))| {
                DeltaDiscoveryResponse {
                    resources: res
                        .iter()
                        .cloned()
                        .map(|r| Resource {
                            resource: Some(any(r)),
                            version: format!("v{i}"),
                            ..Default::default()
                        })
                        .collect(),
                    type_url: kind.type_url().into(),
                    nonce: format!("n{i}"),
                    removed_resources: if i == 3 { vec!["api".into()] } else { vec![] },
                    ..Default::default()
                }
                .encode_to_vec()
            })
            .collect();
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/xds_response");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sotw"), framed(0, sotw)).unwrap();
        std::fs::write(dir.join("delta"), framed(1, delta)).unwrap();
    }
}
