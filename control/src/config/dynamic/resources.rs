//! The resources an xDS server sent and zerohop accepted: checked one by one as they
//! arrive, kept with Envoy's warming, and joined with the static ones into a snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use prost_reflect::DynamicMessage;
use zerohop_proto::{Cluster, ClusterId, Endpoint, Snapshot};

use super::super::compile::{
    self, add_listener, add_missing, as_msg, list, msg, string, Discovery, Names, Routes,
};
use super::super::secret::{self, Secret, SecretLookup, SecretRef, SecretSource, Secrets};
use super::super::{descriptor_pool, supported, ConfigError};
use super::{Dynamic, Kind};

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
    Cluster(Box<DynCluster>),
    Endpoints(Vec<Endpoint>),
    /// With its message when it is read from files (watched for rotation).
    Secret(SecretRef, Secret, Option<FileSecret>),
}

/// An SDS secret read from files: what it is compiled from again when they change.
#[derive(Clone, Debug)]
struct FileSecret {
    msg: DynamicMessage,
    path: String,
    watched: Vec<std::path::PathBuf>,
    /// The watched paths' stamps when it was last read.
    stamps: Vec<Option<crate::source::Stamp>>,
}

impl FileSecret {
    fn stamps(watched: &[std::path::PathBuf]) -> Vec<Option<crate::source::Stamp>> {
        watched.iter().map(|p| crate::source::stamp(p)).collect()
    }
}

#[derive(Clone, Debug)]
struct DynListener {
    msg: DynamicMessage,
    address: SocketAddr,
    /// The route configuration it takes by RDS.
    rds: Option<String>,
    /// The secrets its TLS contexts name (none static).
    secrets: BTreeSet<SecretRef>,
}

#[derive(Clone, Debug)]
struct DynCluster {
    cluster: Cluster,
    discovery: Discovery,
    /// A cluster whose TLS context names secrets: its message (compiled again with the
    /// secrets held when a snapshot is made) and the secrets.
    sds: Option<(DynamicMessage, BTreeSet<SecretRef>)>,
}

impl DynCluster {
    fn secrets(&self) -> impl Iterator<Item = &SecretRef> {
        self.sds.iter().flat_map(|(_, s)| s)
    }
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
    clusters: BTreeMap<String, Slot<DynCluster>>,
    endpoints: HashMap<String, Vec<Endpoint>>,
    /// The bootstrap's static secrets and those SDS delivered, by source and name.
    secrets: Arc<Secrets>,
    /// The SDS secrets read from files.
    secret_files: BTreeMap<SecretRef, FileSecret>,
    /// EDS service name -> clusters that may be warming for it; route configuration name
    /// -> listeners that may be warming for it. Checked against the slot when used, so an
    /// entry left by a replaced or removed resource is harmless; an assignment or route
    /// configuration costs its own waiters, not a scan of every cluster or listener.
    cluster_waiters: HashMap<String, Vec<String>>,
    listener_waiters: HashMap<String, Vec<String>>,
}

impl Resources {
    /// Empty, with the bootstrap's static secrets.
    pub fn new(d: &Dynamic) -> Resources {
        Resources {
            secrets: d.secrets(),
            ..Default::default()
        }
    }

    /// A lookup of the secrets held; `strict` when a snapshot is made (a secret not
    /// held is then an error), else a resource being checked records what it names.
    fn lookup(&self, d: &Dynamic, strict: bool) -> SecretLookup {
        SecretLookup::new(
            self.secrets.clone(),
            d.grpc.clone(),
            d.ads.is_some(),
            strict,
        )
    }

    /// Decodes and checks one resource that came over the stream of `source` (ADS, or
    /// an SDS server's). `hint` names it in errors when it cannot be decoded (the delta
    /// `Resource.name`, else empty).
    pub fn check(
        &self,
        d: &Dynamic,
        kind: Kind,
        any: &prost_types::Any,
        hint: &str,
        source: &SecretSource,
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
            .compile(d, kind, &name, &path, m, source)
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
        source: &SecretSource,
    ) -> Result<Body, ConfigError> {
        let names = Names::lenient(HashMap::new())
            .with_runtime(&d.runtime, &d.local)
            .with_secrets(self.lookup(d, false));
        match kind {
            Kind::Cluster => {
                let ads_cluster = d.ads.as_ref().is_some_and(|a| a.cluster_name == name);
                if d.static_clusters.iter().any(|c| c.name == name) || ads_cluster {
                    return Err(ConfigError::at(
                        format!("{path}.name"),
                        format!("cluster {name:?} is defined statically in the bootstrap and cannot be changed by CDS"),
                    ));
                }
                let (cluster, discovery) = compile::cluster(&m, path, true, &names.secrets)?;
                let asked = names.secrets.asked();
                Ok(Body::Cluster(Box::new(DynCluster {
                    cluster,
                    discovery,
                    sds: (!asked.is_empty()).then_some((m, asked)),
                })))
            }
            Kind::Secret => {
                // Stamped before the files are read: a change made meanwhile is seen.
                let watched = secret::watched_paths(&m);
                let stamps = FileSecret::stamps(&watched);
                let (name, s) = secret::compile(&m, path)?;
                let key = SecretRef {
                    source: source.clone(),
                    name,
                };
                let files = (!watched.is_empty()).then(|| FileSecret {
                    msg: m,
                    path: path.to_owned(),
                    watched,
                    stamps,
                });
                Ok(Body::Secret(key, s, files))
            }
            Kind::Endpoint => Ok(Body::Endpoints(compile::endpoints(&m, path)?)),
            Kind::Route => {
                super::super::route::route_config(&m, path, &names)?;
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
                    secrets: names.secrets.asked(),
                }))
            }
        }
    }

    /// True when every secret in `refs` is held.
    fn held(&self, mut refs: impl Iterator<Item = impl std::borrow::Borrow<SecretRef>>) -> bool {
        refs.all(|r| self.secrets.contains_key(r.borrow()))
    }

    fn listener_ready(&self, l: &DynListener) -> bool {
        l.rds.as_ref().is_none_or(|r| self.routes.contains_key(r)) && self.held(l.secrets.iter())
    }

    fn cluster_ready(&self, c: &DynCluster) -> bool {
        let endpoints = match &c.discovery {
            Discovery::Static | Discovery::Dns(_) => true,
            Discovery::Eds(service) => self.endpoints.contains_key(service),
        };
        endpoints && self.held(c.secrets())
    }

    /// Applies a checked resource. A cluster or listener that must warm (its endpoints,
    /// routes or secrets have not arrived) waits beside the version that is serving.
    pub fn apply(&mut self, c: Checked) {
        match c.body {
            Body::Cluster(compiled) => {
                let ready = self.cluster_ready(&compiled);
                if let (false, Discovery::Eds(service)) = (ready, &compiled.discovery) {
                    let waiters = self.cluster_waiters.entry(service.clone()).or_default();
                    waiters.push(c.name.clone());
                }
                let slot = self.clusters.entry(c.name).or_insert(Slot {
                    active: None,
                    warming: None,
                });
                match ready {
                    true => (slot.active, slot.warming) = (Some(*compiled), None),
                    false => slot.warming = Some(*compiled),
                }
            }
            Body::Endpoints(endpoints) => {
                self.endpoints.insert(c.name.clone(), endpoints);
                for name in self.cluster_waiters.remove(&c.name).unwrap_or_default() {
                    let waits =
                        |w: &DynCluster| matches!(&w.discovery, Discovery::Eds(s) if *s == c.name);
                    let ready = match self.clusters.get(&name).and_then(|s| s.warming.as_ref()) {
                        Some(w) => waits(w) && self.cluster_ready(w),
                        None => false,
                    };
                    if let (true, Some(slot)) = (ready, self.clusters.get_mut(&name)) {
                        slot.active = slot.warming.take();
                    }
                }
            }
            Body::Route(m) => {
                self.routes.insert(c.name.clone(), m);
                for name in self.listener_waiters.remove(&c.name).unwrap_or_default() {
                    let waits = |w: &DynListener| w.rds.as_deref() == Some(c.name.as_str());
                    let ready = match self.listeners.get(&name).and_then(|s| s.warming.as_ref()) {
                        Some(w) => waits(w) && self.listener_ready(w),
                        None => false,
                    };
                    if let (true, Some(slot)) = (ready, self.listeners.get_mut(&name)) {
                        slot.active = slot.warming.take();
                    }
                }
            }
            Body::Listener(l) => {
                let ready = self.listener_ready(&l);
                if let (false, Some(route)) = (ready, &l.rds) {
                    let waiters = self.listener_waiters.entry(route.clone()).or_default();
                    waiters.push(c.name.clone());
                }
                let slot = self.listeners.entry(c.name).or_insert(Slot {
                    active: None,
                    warming: None,
                });
                match ready {
                    true => (slot.active, slot.warming) = (Some(l), None),
                    false => slot.warming = Some(l),
                }
            }
            Body::Secret(key, secret, files) => {
                match files {
                    Some(f) => self.secret_files.insert(key.clone(), f),
                    None => self.secret_files.remove(&key),
                };
                Arc::make_mut(&mut self.secrets).insert(key, secret);
                self.promote_secret_waiters();
            }
        }
    }

    /// A secret arrived: what warmed only for secrets starts serving. Secrets are few
    /// and rarely change, so the warming resources are looked through rather than indexed.
    fn promote_secret_waiters(&mut self) {
        let listeners = ready(&self.listeners, |l| self.listener_ready(l));
        activate(&mut self.listeners, listeners);
        let clusters = ready(&self.clusters, |c| self.cluster_ready(c));
        activate(&mut self.clusters, clusters);
    }

    /// Removes a resource (SotW absence for LDS/CDS, delta `removed_resources`). A secret
    /// is kept, as Envoy keeps the last one an SDS subscription delivered; it goes when
    /// nothing names it any more.
    pub fn remove(&mut self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Cluster => self.clusters.remove(name).is_some(),
            Kind::Endpoint => self.endpoints.remove(name).is_some(),
            Kind::Listener => self.listeners.remove(name).is_some(),
            Kind::Route => self.routes.remove(name).is_some(),
            Kind::Secret => false,
        }
    }

    /// The names of the resources of `kind` held (active or warming); secrets: those an
    /// xDS server sent.
    pub fn names(&self, kind: Kind) -> BTreeSet<String> {
        match kind {
            Kind::Cluster => self.clusters.keys().cloned().collect(),
            Kind::Endpoint => self.endpoints.keys().cloned().collect(),
            Kind::Listener => self.listeners.keys().cloned().collect(),
            Kind::Route => self.routes.keys().cloned().collect(),
            Kind::Secret => self
                .secrets
                .keys()
                .filter(|k| k.source != SecretSource::Static)
                .map(|k| k.name.clone())
                .collect(),
        }
    }

    /// How many resources of `kind` are held (secrets: from any xDS server).
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Cluster => self.clusters.len(),
            Kind::Endpoint => self.endpoints.len(),
            Kind::Listener => self.listeners.len(),
            Kind::Route => self.routes.len(),
            Kind::Secret => self
                .secrets
                .keys()
                .filter(|k| k.source != SecretSource::Static)
                .count(),
        }
    }

    /// The route configurations (RDS) or load assignments (EDS) that something refers to:
    /// what the client subscribes to by name. Secrets: see [`Resources::wanted_secrets`].
    pub fn wanted(&self, d: &Dynamic, kind: Kind) -> BTreeSet<String> {
        match kind {
            Kind::Endpoint => self
                .clusters
                .values()
                .flat_map(Slot::each)
                .filter_map(|c| match &c.discovery {
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
            Kind::Secret => self
                .wanted_secrets(d)
                .remove(&SecretSource::Ads)
                .unwrap_or_default(),
            Kind::Cluster | Kind::Listener => BTreeSet::new(),
        }
    }

    /// The secrets the static and dynamic resources name, by the xDS server they come
    /// from (the ADS stream, or an SDS server's stream).
    pub fn wanted_secrets(&self, d: &Dynamic) -> BTreeMap<SecretSource, BTreeSet<String>> {
        let listeners = self
            .listeners
            .values()
            .flat_map(Slot::each)
            .flat_map(|l| &l.secrets);
        let clusters = self
            .clusters
            .values()
            .flat_map(Slot::each)
            .flat_map(DynCluster::secrets);
        let mut out: BTreeMap<SecretSource, BTreeSet<String>> = BTreeMap::new();
        for r in listeners.chain(clusters).chain(&d.static_secret_refs) {
            if r.source != SecretSource::Static {
                out.entry(r.source.clone())
                    .or_default()
                    .insert(r.name.clone());
            }
        }
        out
    }

    /// Drops route configurations, load assignments and secrets nothing refers to any more.
    pub fn retain_wanted(&mut self, d: &Dynamic) {
        let (routes, endpoints) = (self.wanted(d, Kind::Route), self.wanted(d, Kind::Endpoint));
        self.routes.retain(|n, _| routes.contains(n));
        self.endpoints.retain(|n, _| endpoints.contains(n));
        let secrets = self.wanted_secrets(d);
        let wanted = |k: &SecretRef| {
            k.source == SecretSource::Static
                || secrets.get(&k.source).is_some_and(|n| n.contains(&k.name))
        };
        if !self.secrets.keys().all(wanted) {
            Arc::make_mut(&mut self.secrets).retain(|k, _| wanted(k));
            self.secret_files.retain(|k, _| wanted(k));
        }
    }

    /// True when some SDS secret is read from files (see [`Resources::reread_files`]).
    pub fn watches_files(&self) -> bool {
        !self.secret_files.is_empty()
    }

    /// Reads again the SDS secrets whose files changed (a certificate rotated on disk, as
    /// cert-manager or a Kubernetes secret volume rotates it). True when a secret's
    /// content changed. Files caught mid-rotation (a key that is not the certificate's, a
    /// file half written) are tried again at the next look; the secret in force stays.
    pub fn reread_files(&mut self) -> bool {
        let mut changed = false;
        for (key, f) in &mut self.secret_files {
            let now = FileSecret::stamps(&f.watched);
            if now == f.stamps {
                continue;
            }
            match secret::compile(&f.msg, &f.path) {
                Ok((_, s)) => {
                    f.stamps = now;
                    if self.secrets.get(key) != Some(&s) {
                        log::info!("secret {:?}: its files changed; read again", key.name);
                        Arc::make_mut(&mut self.secrets).insert(key.clone(), s);
                        changed = true;
                    }
                }
                Err(e) => log::warn!(
                    "secret {:?}: its files changed but cannot be used yet ({e}); the one in force stays",
                    key.name
                ),
            }
        }
        changed
    }

    /// How many clusters and listeners are waiting for their endpoints, routes or secrets.
    pub fn warming(&self) -> usize {
        let c = self.clusters.values().filter(|s| s.warming.is_some());
        let l = self.listeners.values().filter(|s| s.warming.is_some());
        c.count() + l.count()
    }

    /// Ends warming (the initial fetch timed out): what waits is activated as it is, an
    /// EDS cluster with no endpoints and a listener with an empty route configuration. One
    /// whose secret has not arrived stays out of the snapshot until it does (see
    /// [`Resources::assemble`]).
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
    pub fn dns_clusters(&self) -> Vec<super::super::DnsCluster> {
        self.clusters
            .values()
            .filter_map(|slot| match &slot.active {
                Some(DynCluster {
                    discovery: Discovery::Dns(spec),
                    ..
                }) => Some((**spec).clone()),
                _ => None,
            })
            .collect()
    }

    /// The snapshot of the static resources and the active dynamic ones. A cluster or
    /// listener whose TLS context names a secret is compiled with the secrets held now
    /// (a rotated certificate is in the next generation); one whose secret is not held (the
    /// initial fetch timed out) is left out, so nothing serves without its certificate or
    /// its CA.
    pub fn assemble(&self, d: &Dynamic) -> Snapshot {
        let mut clusters = d.static_clusters.clone();
        let mut left_out = Vec::new();
        for (i, path, m) in &d.static_sds_clusters {
            match compile::cluster(m, path, false, &self.lookup(d, true)) {
                Ok((c, _)) => clusters[*i] = c,
                Err(e) => left_out.push((*i, e)),
            }
        }
        for (i, e) in left_out.iter().rev() {
            log::error!("cluster left out of this generation: {e}");
            clusters.remove(*i);
        }
        for (name, slot) in &self.clusters {
            let Some(dc) = &slot.active else { continue };
            let mut c = match &dc.sds {
                None => dc.cluster.clone(),
                Some((m, _)) => {
                    let path = format!("Cluster({name})");
                    match compile::cluster(m, &path, true, &self.lookup(d, true)) {
                        Ok((c, _)) => c,
                        Err(e) => {
                            log::error!("cluster left out of this generation: {e}");
                            continue;
                        }
                    }
                }
            };
            if let Discovery::Eds(service) = &dc.discovery {
                c.endpoints = self.endpoints.get(service).cloned().unwrap_or_default();
            }
            clusters.push(c);
        }
        let ids = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), ClusterId(i as u32)))
            .collect();
        let names = Names::lenient(ids)
            .with_runtime(&d.runtime, &d.local)
            .with_endpoints(&clusters)
            .with_secrets(self.lookup(d, true));
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
            // is a conflict between them, or a secret that has not arrived, which keeps
            // the listener out of this generation.
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

/// The resources of `slots` whose warming version is now `ready`.
fn ready<T>(slots: &BTreeMap<String, Slot<T>>, ready: impl Fn(&T) -> bool) -> Vec<String> {
    slots
        .iter()
        .filter(|(_, s)| s.warming.as_ref().is_some_and(&ready))
        .map(|(n, _)| n.clone())
        .collect()
}

/// Their warming versions replace what serves.
fn activate<T>(slots: &mut BTreeMap<String, Slot<T>>, names: Vec<String>) {
    for name in names {
        if let Some(slot) = slots.get_mut(&name) {
            slot.active = slot.warming.take();
        }
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
