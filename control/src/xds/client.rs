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
    fn new(kind: Kind, nonce: String, version: String, received: Instant) -> Pending {
        Pending {
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

/// The protocol state of one ADS client, kept across reconnects.
#[derive(Debug)]
pub struct Client {
    pub dynamic: Dynamic,
    pub resources: Resources,
    /// Every resource held, as the server sent it, for admin's `/config_dump`.
    pub held: super::HeldResources,
    types: BTreeMap<Kind, TypeState>,
    node_sent: bool,
}

impl Client {
    pub fn new(dynamic: Dynamic) -> Client {
        Client {
            dynamic,
            resources: Resources::default(),
            held: Default::default(),
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

    /// Applies a state-of-the-world response. For a type zerohop does not take, the NACK
    /// to send at once.
    pub fn sotw(&mut self, r: DiscoveryResponse) -> Result<Pending, Box<Request>> {
        let received = Instant::now();
        let Some(kind) = Kind::from_type_url(&r.type_url) else {
            return Err(Box::new(self.unknown_type(&r.type_url, &r.nonce)));
        };
        let mut p = Pending::new(kind, r.nonce, r.version_info, received);
        let mut seen = BTreeSet::new();
        for any in &r.resources {
            match self.resources.check(&self.dynamic, kind, any, "") {
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
    pub fn delta(&mut self, r: DeltaDiscoveryResponse) -> Result<Pending, Box<Request>> {
        let received = Instant::now();
        let Some(kind) = Kind::from_type_url(&r.type_url) else {
            return Err(Box::new(self.unknown_type(&r.type_url, &r.nonce)));
        };
        let mut p = Pending::new(kind, r.nonce, r.system_version_info, received);
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
                    self.hold(kind, &c.name, &res.version, any);
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
        self.prune_held();
        out
    }

    /// The version last accepted for each type (SotW), or the number of resources held
    /// (delta), for admin.
    pub fn versions(&self) -> Vec<(Kind, String, usize)> {
        self.types
            .iter()
            .map(|(k, t)| (*k, t.version.clone(), self.resources.count(*k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dynamic_tests::{any, assignment, eds_cluster};
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
        let first: Vec<_> = c.connected().into_iter().map(sotw).collect();
        assert_eq!(first.len(), 2, "CDS and LDS, wildcard");
        assert_eq!(first[0].type_url, Kind::Cluster.type_url());
        assert_eq!(first[1].type_url, Kind::Listener.type_url());
        assert!(first[0].resource_names.is_empty() && first[0].version_info.is_empty());
        assert!(
            first[0].node.is_some(),
            "the first request carries the node"
        );
        assert!(first[1].node.is_none(), "set_node_on_first_message_only");

        let p = c.sotw(cds("1", "n1", vec![eds_cluster("web")])).unwrap();
        assert_eq!((p.applied, p.errors.len()), (1, 0));
        let out: Vec<_> = c.settle(p).into_iter().map(sotw).collect();
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
            .sotw(cds(
                "2",
                "n2",
                vec![eds_cluster("web"), eds_cluster("api"), bad],
            ))
            .unwrap();
        assert_eq!((p.applied, p.errors.len()), (2, 1));
        let out: Vec<_> = c.settle(p).into_iter().map(sotw).collect();
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
        let p = c.sotw(cds("3", "n3", vec![eds_cluster("api")])).unwrap();
        assert_eq!(p.removed, 1);
        let out: Vec<_> = c.settle(p).into_iter().map(sotw).collect();
        assert_eq!(out[0].version_info, "3");
        assert_eq!(out[1].resource_names, ["api"]);

        // Reconnect: the accepted version, the subscriptions held.
        let again: Vec<_> = c.connected().into_iter().map(sotw).collect();
        assert_eq!(again[0].version_info, "3");
        assert_eq!(again[1].type_url, Kind::Endpoint.type_url());
        assert_eq!(again[1].resource_names, ["api"]);
    }

    #[test]
    fn delta_versions_removal_and_reconnect() {
        let mut c = client("DELTA_GRPC");
        let first: Vec<_> = c.connected().into_iter().map(delta).collect();
        assert!(first[0].resource_names_subscribe.is_empty(), "wildcard");
        let resource = |name: &str, version: &str, json| Resource {
            name: name.into(),
            version: version.into(),
            resource: Some(any(json)),
            ..Default::default()
        };
        let p = c
            .delta(DeltaDiscoveryResponse {
                resources: vec![resource("web", "a1", eds_cluster("web"))],
                type_url: Kind::Cluster.type_url().into(),
                nonce: "n1".into(),
                ..Default::default()
            })
            .unwrap();
        let out: Vec<_> = c.settle(p).into_iter().map(delta).collect();
        assert_eq!(out[0].response_nonce, "n1");
        assert!(out[0].error_detail.is_none());
        assert_eq!(out[1].resource_names_subscribe, ["web"]);
        let p = c
            .delta(DeltaDiscoveryResponse {
                resources: vec![resource("web", "e1", assignment("web", 8080))],
                type_url: Kind::Endpoint.type_url().into(),
                nonce: "n2".into(),
                ..Default::default()
            })
            .unwrap();
        c.settle(p);
        assert_eq!(c.snapshot().clusters.len(), 1, "web is warm");

        // A name that does not match the resource is refused.
        let p = c
            .delta(DeltaDiscoveryResponse {
                resources: vec![resource("other", "a2", eds_cluster("web"))],
                type_url: Kind::Cluster.type_url().into(),
                nonce: "n3".into(),
                ..Default::default()
            })
            .unwrap();
        let out: Vec<_> = c.settle(p).into_iter().map(delta).collect();
        assert!(out[0]
            .error_detail
            .as_ref()
            .unwrap()
            .message
            .contains("differs"));

        // Reconnect: what is held, with its versions.
        let again: Vec<_> = c.connected().into_iter().map(delta).collect();
        assert_eq!(again[0].initial_resource_versions.get("web").unwrap(), "a1");
        assert_eq!(again[1].type_url, Kind::Endpoint.type_url());
        assert_eq!(again[1].resource_names_subscribe, ["web"]);
        assert_eq!(again[1].initial_resource_versions.get("web").unwrap(), "e1");

        // Removal: the cluster goes, its assignment is unsubscribed.
        let p = c
            .delta(DeltaDiscoveryResponse {
                removed_resources: vec!["web".into()],
                type_url: Kind::Cluster.type_url().into(),
                nonce: "n4".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(p.removed, 1);
        let out: Vec<_> = c.settle(p).into_iter().map(delta).collect();
        assert_eq!(out[1].resource_names_unsubscribe, ["web"]);
        assert!(c.snapshot().clusters.is_empty());
    }

    #[test]
    fn an_unknown_type_is_nacked() {
        let mut c = client("GRPC");
        let nack = c
            .sotw(DiscoveryResponse {
                type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
                    .into(),
                nonce: "s1".into(),
                ..Default::default()
            })
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
