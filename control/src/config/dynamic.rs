//! `dynamic_resources`: the ADS server a bootstrap names, and the resources it sends.
//!
//! Each xDS resource is decoded and checked alone as it arrives ([`Resources::check`]), by
//! the same code that compiles a static bootstrap, so a bad one is refused with its name and
//! field while the rest of the response is applied. [`Resources`] keeps what was accepted,
//! with Envoy's warming: a cluster waits for its endpoints and a listener for its routes
//! before either replaces what is serving. [`Resources::assemble`] joins the static part of
//! the bootstrap and the active dynamic part into the next snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::{Cluster, ClusterId, Endpoint, Snapshot};

use super::compile::{
    self, add_listener, add_missing, as_msg, duration, enum_name, list, msg, string, Discovery,
    Names, Routes,
};
use super::{descriptor_pool, supported, ConfigError};

/// Envoy's default `initial_fetch_timeout`.
const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Which ADS stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdsApi {
    /// `GRPC`: state of the world.
    Sotw,
    /// `DELTA_GRPC`: incremental.
    Delta,
}

/// Where the ADS server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdsTarget {
    Tcp(SocketAddr),
    /// A Unix socket, as Istio's pilot-agent serves xDS (`pipe.path` in the cluster).
    Unix(PathBuf),
}

/// `dynamic_resources.ads_config` and what goes with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ads {
    pub api: AdsApi,
    pub target: AdsTarget,
    /// The static cluster `envoy_grpc.cluster_name` names.
    pub cluster_name: String,
    /// `lds_config: { ads: {} }` / `cds_config: { ads: {} }`: subscribe to every listener /
    /// cluster (wildcard).
    pub lds: bool,
    pub cds: bool,
    /// `initial_fetch_timeout` of `cds_config` (else `lds_config`): how long the first
    /// configuration (and its warming) is waited for before serving what has arrived.
    /// `None` waits for ever (0 in the config).
    pub initial_fetch_timeout: Option<Duration>,
    /// The bootstrap's `node`, encoded, with zerohop's user agent.
    pub node: Vec<u8>,
    /// `set_node_on_first_message_only`.
    pub node_first_only: bool,
}

/// A bootstrap with `dynamic_resources`: the ADS server and the static resources.
#[derive(Clone, Debug, PartialEq)]
pub struct Dynamic {
    pub ads: Ads,
    /// `layered_runtime`, read when routes compile.
    pub runtime: super::runtime::Runtime,
    /// The bootstrap's node, for `add_user_agent`.
    pub local: zerohop_proto::LocalNode,
    pub(super) static_clusters: Vec<Cluster>,
    pub(super) static_listeners: Vec<(String, DynamicMessage)>,
    /// The static listeners' names and addresses, as compiled from the bootstrap (what an
    /// LDS listener must not collide with).
    pub(super) static_bound: Vec<(String, SocketAddr)>,
}

pub(super) fn ads(
    d: &DynamicMessage,
    bootstrap: &DynamicMessage,
    clusters: &[Cluster],
    pipes: &[(String, String, PathBuf)],
) -> Result<Ads, ConfigError> {
    let path = "dynamic_resources";
    let Some(ac) = msg(d, "ads_config") else {
        return Err(ConfigError::at(
            format!("{path}.ads_config"),
            "zerohop takes dynamic resources over ADS only: ads_config is required",
        ));
    };
    let apath = format!("{path}.ads_config");
    let api = match enum_name(ac, "api_type").as_str() {
        "GRPC" => AdsApi::Sotw,
        "DELTA_GRPC" => AdsApi::Delta,
        other => {
            return Err(ConfigError::at(
                format!("{apath}.api_type"),
                format!(
                    "api_type {other} is not supported by zerohop (supported: GRPC, DELTA_GRPC)"
                ),
            ))
        }
    };
    compile::api_version(ac, "transport_api_version", &apath)?;
    let services = list(ac, "grpc_services");
    let cluster_name = match services {
        [one] => msg(as_msg(one), "envoy_grpc")
            .map(|e| string(e, "cluster_name"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let cpath = format!("{apath}.grpc_services[0].envoy_grpc.cluster_name");
    if services.len() != 1 || cluster_name.is_empty() {
        return Err(ConfigError::at(
            cpath,
            "exactly one grpc_services entry with envoy_grpc.cluster_name is required",
        ));
    }
    let target = if let Some((_, _, socket)) = pipes.iter().find(|(n, ..)| *n == cluster_name) {
        AdsTarget::Unix(socket.clone())
    } else {
        match clusters.iter().find(|c| c.name == cluster_name) {
            Some(c) if !c.endpoints.is_empty() => AdsTarget::Tcp(c.endpoints[0].address),
            Some(_) => {
                return Err(ConfigError::at(
                    cpath,
                    format!("cluster {cluster_name:?} has no endpoint"),
                ))
            }
            None => {
                return Err(ConfigError::at(
                    cpath,
                    format!("cluster {cluster_name:?} is not a static cluster"),
                ))
            }
        }
    };
    let mut initial_fetch_timeout = Some(DEFAULT_INITIAL_FETCH_TIMEOUT);
    let mut subscribe = |field: &str| -> Result<bool, ConfigError> {
        let Some(cs) = msg(d, field) else {
            return Ok(false);
        };
        if !cs.has_field_by_name("ads") {
            return Err(ConfigError::at(
                format!("{path}.{field}"),
                "only { ads: {} } is supported",
            ));
        }
        compile::api_version(cs, "resource_api_version", &format!("{path}.{field}"))?;
        if let Some(t) = msg(cs, "initial_fetch_timeout") {
            let t = duration(t, &format!("{path}.{field}.initial_fetch_timeout"))?;
            initial_fetch_timeout = Some(t).filter(|t| !t.is_zero());
        }
        Ok(true)
    };
    let lds = subscribe("lds_config")?;
    let cds = subscribe("cds_config")?;
    let mut node = msg(bootstrap, "node").cloned().unwrap_or_else(|| {
        DynamicMessage::new(
            descriptor_pool()
                .get_message_by_name("envoy.config.core.v3.Node")
                .expect("Node is in the descriptors"),
        )
    });
    node.set_field_by_name("user_agent_name", Value::String("zerohop".into()));
    node.set_field_by_name(
        "user_agent_version",
        Value::String(env!("CARGO_PKG_VERSION").into()),
    );
    let node_first_only = matches!(
        ac.get_field_by_name("set_node_on_first_message_only")
            .as_deref(),
        Some(Value::Bool(true))
    );
    Ok(Ads {
        api,
        target,
        cluster_name,
        lds,
        cds,
        initial_fetch_timeout,
        node: node.encode_to_vec(),
        node_first_only,
    })
}

/// The four resource types zerohop takes over ADS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cluster, Kind::Endpoint, Kind::Listener, Kind::Route];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// `Cluster`, as error paths name a resource: `Cluster(backend).lb_policy`.
    pub fn label(self) -> &'static str {
        let url = self.type_url();
        &url[url.rfind('.').map_or(0, |i| i + 1)..]
    }

    /// Resources of this kind are named by the client (RDS, EDS) rather than all sent
    /// (LDS, CDS: wildcard).
    pub fn by_name(self) -> bool {
        matches!(self, Kind::Endpoint | Kind::Route)
    }
}

/// A resource that passed its checks, ready to apply.
#[derive(Debug)]
pub struct Checked {
    pub kind: Kind,
    pub name: String,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    Listener(DynListener),
    Route(DynamicMessage),
    /// Boxed: a compiled cluster is several times the size of the other bodies.
    Cluster(Box<(Cluster, Discovery)>),
    Endpoints(Vec<Endpoint>),
}

#[derive(Clone, Debug)]
struct DynListener {
    msg: DynamicMessage,
    address: SocketAddr,
    /// The route configuration it takes by RDS.
    rds: Option<String>,
}

/// The active version of a resource and, while it warms, the one that will replace it.
#[derive(Clone, Debug)]
struct Slot<T> {
    active: Option<T>,
    warming: Option<T>,
}

impl<T> Slot<T> {
    fn each(&self) -> impl Iterator<Item = &T> {
        self.active.iter().chain(self.warming.iter())
    }
}

/// The accepted dynamic resources.
#[derive(Debug, Default)]
pub struct Resources {
    listeners: BTreeMap<String, Slot<DynListener>>,
    routes: HashMap<String, DynamicMessage>,
    clusters: BTreeMap<String, Slot<(Cluster, Discovery)>>,
    endpoints: HashMap<String, Vec<Endpoint>>,
    /// EDS service name -> clusters that may be warming for it; route configuration name
    /// -> listeners that may be warming for it. Checked against the slot when used, so an
    /// entry left by a replaced or removed resource is harmless; an assignment or route
    /// configuration costs its own waiters, not a scan of every cluster or listener.
    cluster_waiters: HashMap<String, Vec<String>>,
    listener_waiters: HashMap<String, Vec<String>>,
}

impl Resources {
    /// Decodes and checks one resource. `hint` names it in errors when it cannot be decoded
    /// (the delta `Resource.name`, else empty).
    pub fn check(
        &self,
        d: &Dynamic,
        kind: Kind,
        any: &prost_types::Any,
        hint: &str,
    ) -> Result<Checked, (String, ConfigError)> {
        let fail = |name: &str, e: ConfigError| (name.to_owned(), e);
        if any.type_url != kind.type_url() {
            return Err(fail(
                hint,
                ConfigError::at(
                    format!("{}({hint})", kind.label()),
                    format!(
                        "resource of type {:?} in a {} response",
                        any.type_url,
                        kind.label()
                    ),
                ),
            ));
        }
        let type_name = &kind.type_url()["type.googleapis.com/".len()..];
        let desc = descriptor_pool()
            .get_message_by_name(type_name)
            .expect("xDS resource types are in the descriptors");
        let m = DynamicMessage::decode(desc, any.value.as_slice()).map_err(|e| {
            fail(
                hint,
                ConfigError::at(
                    format!("{}({hint})", kind.label()),
                    format!("cannot decode: {e}"),
                ),
            )
        })?;
        let name = string(
            &m,
            if kind == Kind::Endpoint {
                "cluster_name"
            } else {
                "name"
            },
        );
        let path = format!("{}({name})", kind.label());
        if name.is_empty() {
            return Err(fail(hint, ConfigError::at(path, "a resource needs a name")));
        }
        supported::check(&m, &path).map_err(|e| fail(&name, e))?;
        let body = self
            .compile(d, kind, &name, &path, m)
            .map_err(|e| fail(&name, e))?;
        Ok(Checked { kind, name, body })
    }

    fn compile(
        &self,
        d: &Dynamic,
        kind: Kind,
        name: &str,
        path: &str,
        m: DynamicMessage,
    ) -> Result<Body, ConfigError> {
        let names = Names::lenient(HashMap::new()).with_runtime(&d.runtime, &d.local);
        match kind {
            Kind::Cluster => {
                if d.static_clusters.iter().any(|c| c.name == name) || d.ads.cluster_name == name {
                    return Err(ConfigError::at(
                        format!("{path}.name"),
                        format!("cluster {name:?} is defined statically in the bootstrap and cannot be changed by CDS"),
                    ));
                }
                let (cluster, discovery) = compile::cluster(&m, path, true)?;
                Ok(Body::Cluster(Box::new((cluster, discovery))))
            }
            Kind::Endpoint => Ok(Body::Endpoints(compile::endpoints(&m, path)?)),
            Kind::Route => {
                super::route::route_config(&m, path, &names)?;
                Ok(Body::Route(m))
            }
            Kind::Listener => {
                let empty = HashMap::new();
                let l = compile::listener(&m, 0, path, &names, Routes::Rds(&empty))?;
                let conflict = |other: &str| {
                    ConfigError::at(
                        format!("{path}.address"),
                        format!(
                            "address {} is already used by listener {other:?}",
                            l.address
                        ),
                    )
                };
                for (sname, address) in &d.static_bound {
                    if sname == name {
                        return Err(ConfigError::at(
                            format!("{path}.name"),
                            format!("listener {name:?} is defined statically in the bootstrap and cannot be changed by LDS"),
                        ));
                    }
                    if *address == l.address && l.address.port() != 0 {
                        return Err(conflict(sname));
                    }
                }
                for (other, slot) in &self.listeners {
                    if other != name
                        && slot
                            .each()
                            .any(|o| o.address == l.address && l.address.port() != 0)
                    {
                        return Err(conflict(other));
                    }
                }
                Ok(Body::Listener(DynListener {
                    rds: rds_name(&m),
                    msg: m,
                    address: l.address,
                }))
            }
        }
    }

    /// Applies a checked resource. A cluster or listener that must warm (its endpoints or
    /// routes have not arrived) waits beside the version that is serving.
    pub fn apply(&mut self, c: Checked) {
        match c.body {
            Body::Cluster(compiled) => {
                let (cluster, discovery) = *compiled;
                let warm = match &discovery {
                    Discovery::Static | Discovery::Dns(_) => true,
                    Discovery::Eds(service) => self.endpoints.contains_key(service),
                };
                let slot = self.clusters.entry(c.name.clone()).or_insert(Slot {
                    active: None,
                    warming: None,
                });
                match (warm, &discovery) {
                    (true, _) => (slot.active, slot.warming) = (Some((cluster, discovery)), None),
                    (false, Discovery::Eds(service)) => {
                        let waiters = self.cluster_waiters.entry(service.clone()).or_default();
                        waiters.push(c.name.clone());
                        slot.warming = Some((cluster, discovery));
                    }
                    (false, Discovery::Static | Discovery::Dns(_)) => {
                        unreachable!("only an EDS cluster warms")
                    }
                }
            }
            Body::Endpoints(endpoints) => {
                for name in self.cluster_waiters.remove(&c.name).unwrap_or_default() {
                    let Some(slot) = self.clusters.get_mut(&name) else {
                        continue;
                    };
                    let waits = |w: &(Cluster, Discovery)| matches!(&w.1, Discovery::Eds(s) if *s == c.name);
                    if slot.warming.as_ref().is_some_and(waits) {
                        slot.active = slot.warming.take();
                    }
                }
                self.endpoints.insert(c.name, endpoints);
            }
            Body::Route(m) => {
                for name in self.listener_waiters.remove(&c.name).unwrap_or_default() {
                    let Some(slot) = self.listeners.get_mut(&name) else {
                        continue;
                    };
                    let waits = |w: &DynListener| w.rds.as_deref() == Some(c.name.as_str());
                    if slot.warming.as_ref().is_some_and(waits) {
                        slot.active = slot.warming.take();
                    }
                }
                self.routes.insert(c.name, m);
            }
            Body::Listener(l) => {
                let warm = l.rds.as_ref().is_none_or(|r| self.routes.contains_key(r));
                let slot = self.listeners.entry(c.name.clone()).or_insert(Slot {
                    active: None,
                    warming: None,
                });
                match (warm, &l.rds) {
                    (false, Some(route)) => {
                        let waiters = self.listener_waiters.entry(route.clone()).or_default();
                        waiters.push(c.name.clone());
                        slot.warming = Some(l);
                    }
                    _ => (slot.active, slot.warming) = (Some(l), None),
                }
            }
        }
    }

    /// Removes a resource (SotW absence for LDS/CDS, delta `removed_resources`).
    pub fn remove(&mut self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Cluster => self.clusters.remove(name).is_some(),
            Kind::Endpoint => self.endpoints.remove(name).is_some(),
            Kind::Listener => self.listeners.remove(name).is_some(),
            Kind::Route => self.routes.remove(name).is_some(),
        }
    }

    /// The names of the resources of `kind` held (active or warming).
    pub fn names(&self, kind: Kind) -> BTreeSet<String> {
        match kind {
            Kind::Cluster => self.clusters.keys().cloned().collect(),
            Kind::Endpoint => self.endpoints.keys().cloned().collect(),
            Kind::Listener => self.listeners.keys().cloned().collect(),
            Kind::Route => self.routes.keys().cloned().collect(),
        }
    }

    /// How many resources of `kind` are held.
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Cluster => self.clusters.len(),
            Kind::Endpoint => self.endpoints.len(),
            Kind::Listener => self.listeners.len(),
            Kind::Route => self.routes.len(),
        }
    }

    /// The route configurations (RDS) or load assignments (EDS) that something refers to:
    /// what the client subscribes to by name.
    pub fn wanted(&self, d: &Dynamic, kind: Kind) -> BTreeSet<String> {
        match kind {
            Kind::Endpoint => self
                .clusters
                .values()
                .flat_map(Slot::each)
                .filter_map(|(_, disc)| match disc {
                    Discovery::Eds(s) => Some(s.clone()),
                    Discovery::Static | Discovery::Dns(_) => None,
                })
                .collect(),
            Kind::Route => {
                let dynamic = self.listeners.values().flat_map(Slot::each);
                let statics = d.static_listeners.iter().filter_map(|(_, l)| rds_name(l));
                dynamic
                    .filter_map(|l| l.rds.clone())
                    .chain(statics)
                    .collect()
            }
            Kind::Cluster | Kind::Listener => BTreeSet::new(),
        }
    }

    /// Drops route configurations and load assignments nothing refers to any more.
    pub fn retain_wanted(&mut self, d: &Dynamic) {
        let (routes, endpoints) = (self.wanted(d, Kind::Route), self.wanted(d, Kind::Endpoint));
        self.routes.retain(|n, _| routes.contains(n));
        self.endpoints.retain(|n, _| endpoints.contains(n));
    }

    /// How many clusters and listeners are waiting for their endpoints or routes.
    pub fn warming(&self) -> usize {
        let c = self.clusters.values().filter(|s| s.warming.is_some());
        let l = self.listeners.values().filter(|s| s.warming.is_some());
        c.count() + l.count()
    }

    /// Ends warming (the initial fetch timed out): what waits is activated as it is, an
    /// EDS cluster with no endpoints and a listener with an empty route configuration.
    pub fn finish_warming(&mut self) {
        self.cluster_waiters.clear();
        self.listener_waiters.clear();
        for slot in self.clusters.values_mut() {
            if slot.warming.is_some() {
                slot.active = slot.warming.take();
            }
        }
        for slot in self.listeners.values_mut() {
            if slot.warming.is_some() {
                slot.active = slot.warming.take();
            }
        }
    }

    /// The active clusters from CDS whose endpoints come from DNS (control resolves them
    /// beside the bootstrap's).
    pub fn dns_clusters(&self) -> Vec<super::DnsCluster> {
        self.clusters
            .values()
            .filter_map(|slot| match &slot.active {
                Some((_, Discovery::Dns(spec))) => Some((**spec).clone()),
                _ => None,
            })
            .collect()
    }

    /// The snapshot of the static resources and the active dynamic ones.
    pub fn assemble(&self, d: &Dynamic) -> Snapshot {
        let mut clusters = d.static_clusters.clone();
        for slot in self.clusters.values() {
            if let Some((c, discovery)) = &slot.active {
                let mut c = c.clone();
                if let Discovery::Eds(service) = discovery {
                    c.endpoints = self.endpoints.get(service).cloned().unwrap_or_default();
                }
                clusters.push(c);
            }
        }
        let ids = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), ClusterId(i as u32)))
            .collect();
        let names = Names::lenient(ids).with_runtime(&d.runtime, &d.local);
        let routes = Routes::Rds(&self.routes);
        let mut snapshot = Snapshot {
            clusters,
            listeners: Vec::new(),
        };
        let dynamic = self.listeners.iter().filter_map(|(name, slot)| {
            let l = slot.active.as_ref()?;
            Some((format!("Listener({name})"), &l.msg))
        });
        let statics = d.static_listeners.iter().map(|(p, l)| (p.clone(), l));
        for (i, (path, l)) in statics.chain(dynamic).enumerate() {
            // Each resource was checked alone when it arrived; what can still fail here
            // is a conflict between them, which keeps the listener out of this generation.
            let added = compile::listener(l, i, &path, &names, routes)
                .and_then(|l| add_listener(&mut snapshot.listeners, l, &path));
            if let Err(e) = added {
                log::error!("listener left out of this generation: {e}");
            }
        }
        add_missing(&mut snapshot, names);
        snapshot
    }
}

/// The RDS route configuration name of a listener's http_connection_manager, if any.
fn rds_name(listener: &DynamicMessage) -> Option<String> {
    for chain in list(listener, "filter_chains") {
        for f in list(as_msg(chain), "filters") {
            let Some(any) = msg(as_msg(f), "typed_config") else {
                continue;
            };
            let Ok(inner) = supported::unpack_any(any) else {
                continue;
            };
            if let Some(rds) = msg(&inner, "rds") {
                return Some(string(rds, "route_config_name"));
            }
        }
    }
    None
}
