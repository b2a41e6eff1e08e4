//! The static bootstrap's [`Builder`]: resources as the loader streams them, compiled into
//! the snapshot (and, with `dynamic_resources` or an SDS server, the static part the xDS
//! client compiles every update with).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use prost_reflect::DynamicMessage;
use zerohop_proto::*;

use super::compile::{
    add_listener, add_missing, cluster, listener, msg, pipe_endpoint, socket_address, string,
    Discovery, Names, Routes,
};
use super::secret::{GrpcClusters, SecretLookup, SecretRef, SecretSource, Secrets};
use super::{Bootstrap, ConfigError};

/// Collects resources as the loader streams them and compiles the snapshot. Clusters are
/// compiled as they arrive (their decoded messages are dropped at once); listeners refer to
/// clusters by name, so they are compiled when everything has been read.
#[derive(Debug, Default)]
pub(super) struct Builder {
    clusters: Vec<Cluster>,
    ids: HashMap<String, ClusterId>,
    listeners: Vec<(String, DynamicMessage)>,
    /// Static clusters whose endpoint is a Unix socket (`pipe`), with their config path and
    /// socket: only an ADS or SDS server's cluster may be one. Control dials it; the data
    /// plane never sees it.
    pipes: Vec<(String, String, std::path::PathBuf)>,
    /// The `STRICT_DNS` and `LOGICAL_DNS` clusters, for control's resolver.
    dns: Vec<super::dns::DnsCluster>,
    /// `static_resources.secrets`.
    secrets: Secrets,
    /// Clusters whose TLS context names a secret: compiled again once the whole bootstrap
    /// is read (a secret or the SDS server's cluster may come later in the file).
    sds_clusters: Vec<(usize, String, DynamicMessage)>,
}

impl Builder {
    pub(super) fn add_cluster(
        &mut self,
        c: &DynamicMessage,
        path: String,
    ) -> Result<(), ConfigError> {
        if let Some(socket) = pipe_endpoint(c) {
            self.pipes.push((string(c, "name"), path, socket));
            return Ok(());
        }
        let lookup = SecretLookup::deferring();
        let (cluster, discovery) = cluster(c, &path, false, &lookup)?;
        if let Discovery::Dns(dns) = discovery {
            self.dns.push(*dns);
        }
        let id = ClusterId(self.clusters.len() as u32);
        if !lookup.asked().is_empty() {
            self.sds_clusters
                .push((self.clusters.len(), path.clone(), c.clone()));
        }
        if self.ids.insert(cluster.name.clone(), id).is_some() {
            return Err(ConfigError::at(
                path,
                format!("duplicate cluster name {:?}", cluster.name),
            ));
        }
        self.clusters.push(cluster);
        Ok(())
    }

    pub(super) fn add_listener(&mut self, l: DynamicMessage, path: String) {
        self.listeners.push((path, l));
    }

    pub(super) fn add_secret(
        &mut self,
        m: &DynamicMessage,
        path: String,
    ) -> Result<(), ConfigError> {
        let (name, secret) = super::secret::compile(m, &path)?;
        let key = SecretRef {
            source: SecretSource::Static,
            name,
        };
        if self.secrets.contains_key(&key) {
            return Err(ConfigError::at(
                format!("{path}.name"),
                format!("duplicate secret name {:?}", key.name),
            ));
        }
        self.secrets.insert(key, secret);
        Ok(())
    }

    /// Compiles the listeners and the rest of the bootstrap (`node`, `admin`,
    /// `dynamic_resources`).
    pub(super) fn finish(mut self, b: &DynamicMessage) -> Result<Bootstrap, ConfigError> {
        let node_id = msg(b, "node").map(|n| string(n, "id")).unwrap_or_default();
        if let Some(cm) = msg(b, "cluster_manager") {
            let local = string(cm, "local_cluster_name");
            if !local.is_empty() && !self.ids.contains_key(&local) {
                return Err(ConfigError::at(
                    "cluster_manager.local_cluster_name",
                    format!("local cluster {local:?} must be defined"),
                ));
            }
        }
        if let Some(log) = msg(b, "admin").map(|a| string(a, "access_log_path")) {
            if !log.is_empty() && log != "/dev/null" {
                return Err(ConfigError::at(
                    "admin.access_log_path",
                    format!("{log:?}: admin access logs are not supported by zerohop (accepted: /dev/null)"),
                ));
            }
        }
        let admin_address = match msg(b, "admin").and_then(|a| msg(a, "address")) {
            Some(a) => Some(socket_address(a, "admin.address")?),
            None => None,
        };
        let ads = match msg(b, "dynamic_resources") {
            Some(d) => Some(super::dynamic::ads(d, &self.clusters, &self.pipes)?),
            None => None,
        };
        let grpc_targets = super::dynamic::grpc_targets(&self.clusters, &self.pipes);
        let grpc: GrpcClusters = Arc::new(grpc_targets.keys().cloned().collect());
        let secrets = Arc::new(std::mem::take(&mut self.secrets));
        let lookup = || SecretLookup::new(secrets.clone(), grpc.clone(), ads.is_some(), false);
        // The secrets the static resources name; any from an SDS server make the bootstrap
        // dynamic (the xDS client fetches them and publishes once they are held).
        let mut asked = BTreeSet::new();
        for (i, path, c) in &self.sds_clusters {
            let l = lookup();
            self.clusters[*i] = cluster(c, path, false, &l)?.0;
            asked.extend(l.asked());
        }
        let runtime = super::runtime::Runtime::parse(b)?;
        let empty = HashMap::new();
        let (names, routes) = match ads {
            Some(_) => (Names::lenient(self.ids.clone()), Routes::Rds(&empty)),
            None => (Names::strict(self.ids.clone()), Routes::Static),
        };
        let names = names.with_secrets(lookup());
        let local = zerohop_proto::LocalNode {
            cluster: msg(b, "node")
                .map(|n| string(n, "cluster"))
                .unwrap_or_default(),
            id: node_id.clone(),
        };
        let names = names
            .with_runtime(&runtime, &local)
            .with_endpoints(&self.clusters);
        let mut snapshot = Snapshot {
            clusters: self.clusters.clone(),
            listeners: Vec::new(),
        };
        for (i, (path, l)) in self.listeners.iter().enumerate() {
            let listener = listener(l, i, path, &names, routes)?;
            add_listener(&mut snapshot.listeners, listener, path)?;
        }
        asked.extend(names.secrets.asked());
        asked.retain(|r| r.source != SecretSource::Static);
        // A Unix-socket cluster is dialled by control (ADS, SDS) and never by the data
        // plane; without ADS, something static must name it as its SDS server.
        let dialled = |name: &str| {
            ads.is_some()
                || asked.iter().any(
                    |r| matches!(&r.source, SecretSource::Grpc { cluster, .. } if cluster == name),
                )
        };
        if let Some((name, path, _)) = self.pipes.iter().find(|(name, ..)| !dialled(name)) {
            return Err(ConfigError::at(
                path.clone(),
                format!("cluster {name:?}: a pipe (Unix socket) address is supported only for the gRPC server of ADS or SDS (dynamic_resources.ads_config, or an sds_config.api_config_source)"),
            ));
        }
        add_missing(&mut snapshot, names);
        let dynamic = (ads.is_some() || !asked.is_empty()).then(|| super::dynamic::Dynamic {
            ads,
            grpc_targets,
            grpc,
            static_secrets: secrets,
            static_sds_clusters: self.sds_clusters,
            static_secret_refs: asked,
            node: super::dynamic::node(b),
            runtime: runtime.clone(),
            local: local.clone(),
            static_clusters: self.clusters,
            static_listeners: self.listeners,
            static_bound: snapshot
                .listeners
                .iter()
                .map(|l| (l.name.clone(), l.address))
                .collect(),
        });
        Ok(Bootstrap {
            snapshot,
            node_id,
            admin_address,
            dynamic,
            dns: self.dns,
            source: None,
            runtime,
            node: msg(b, "node").map(super::dump::to_json).unwrap_or_default(),
        })
    }
}
