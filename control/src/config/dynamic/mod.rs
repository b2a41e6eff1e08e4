//! `dynamic_resources`: the ADS server a bootstrap names, the SDS servers its TLS contexts
//! name, and the resources they send.
//!
//! Each xDS resource is decoded and checked alone as it arrives ([`Resources::check`]), by
//! the same code that compiles a static bootstrap, so a bad one is refused with its name and
//! field while the rest of the response is applied. [`Resources`] keeps what was accepted,
//! with Envoy's warming: a cluster waits for its endpoints and a listener for its routes,
//! and either for the secrets its TLS contexts name, before it replaces what is serving. [`Resources::assemble`] joins the static part of
//! the bootstrap and the active dynamic part into the next snapshot.

mod resources;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::Cluster;

use super::compile::{self, as_msg, duration, enum_name, list, msg, string};
use super::secret::{GrpcClusters, SecretRef, SecretSource, Secrets};
use super::{descriptor_pool, ConfigError};
pub use resources::{Checked, Resources};

/// Envoy's default `initial_fetch_timeout`.
const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Which xDS stream: state of the world or delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// `set_node_on_first_message_only`.
    pub node_first_only: bool,
}

/// A bootstrap with `dynamic_resources`, or whose TLS contexts take secrets from an SDS
/// server: the xDS servers and the static resources.
#[derive(Clone, Debug, PartialEq)]
pub struct Dynamic {
    /// `dynamic_resources.ads_config` (`None`: only SDS servers).
    pub ads: Option<Ads>,
    /// The static clusters an SDS `api_config_source` may name, and where they are.
    pub grpc_targets: BTreeMap<String, AdsTarget>,
    pub(super) grpc: GrpcClusters,
    /// `static_resources.secrets`.
    pub(super) static_secrets: Arc<Secrets>,
    /// Static clusters whose TLS context names an SDS secret: (index in `static_clusters`,
    /// path, message), compiled again with the secrets held whenever a snapshot is made.
    pub(super) static_sds_clusters: Vec<(usize, String, DynamicMessage)>,
    /// The SDS secrets the static resources name.
    pub(super) static_secret_refs: BTreeSet<SecretRef>,
    /// The bootstrap's `node`, encoded, with zerohop's user agent.
    pub node: Vec<u8>,
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

/// The static clusters a gRPC service (ADS, SDS) may be dialled at: the first endpoint of
/// each static cluster that has one, or its Unix socket (`pipe`).
pub(super) fn grpc_targets(
    clusters: &[Cluster],
    pipes: &[(String, String, PathBuf)],
) -> BTreeMap<String, AdsTarget> {
    let tcp = clusters
        .iter()
        .filter_map(|c| Some((c.name.clone(), AdsTarget::Tcp(c.endpoints.first()?.address))));
    let unix = pipes
        .iter()
        .map(|(n, _, socket)| (n.clone(), AdsTarget::Unix(socket.clone())));
    tcp.chain(unix).collect()
}

/// The bootstrap's `node`, encoded, with zerohop's user agent: what every xDS stream
/// presents.
pub(super) fn node(bootstrap: &DynamicMessage) -> Vec<u8> {
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
    node.encode_to_vec()
}

/// An `ApiConfigSource` (`ads_config`, or an SDS `api_config_source`) at `path`: its stream
/// flavour (`GRPC`, `DELTA_GRPC`) and the one `envoy_grpc.cluster_name` it names.
pub(super) fn api_config_source(
    ac: &DynamicMessage,
    path: &str,
) -> Result<(AdsApi, String), ConfigError> {
    let api = match enum_name(ac, "api_type").as_str() {
        "GRPC" => AdsApi::Sotw,
        "DELTA_GRPC" => AdsApi::Delta,
        other => {
            return Err(ConfigError::at(
                format!("{path}.api_type"),
                format!(
                    "api_type {other} is not supported by zerohop (supported: GRPC, DELTA_GRPC)"
                ),
            ))
        }
    };
    compile::api_version(ac, "transport_api_version", path)?;
    let services = list(ac, "grpc_services");
    let cluster_name = match services {
        [one] => msg(as_msg(one), "envoy_grpc")
            .map(|e| string(e, "cluster_name"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    if let Some(Value::Message(g)) = services.first() {
        if g.has_field_by_name("timeout") {
            return Err(ConfigError::at(
                format!("{path}.grpc_services[0].timeout"),
                "a timeout on an xDS stream is not supported by zerohop (streams do not end)",
            ));
        }
    }
    if services.len() != 1 || cluster_name.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.grpc_services[0].envoy_grpc.cluster_name"),
            "exactly one grpc_services entry with envoy_grpc.cluster_name is required",
        ));
    }
    Ok((api, cluster_name))
}

pub(super) fn ads(
    d: &DynamicMessage,
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
    let (api, cluster_name) = api_config_source(ac, &apath)?;
    let cpath = format!("{apath}.grpc_services[0].envoy_grpc.cluster_name");
    let target = if let Some(t) = grpc_targets(clusters, pipes).remove(&cluster_name) {
        t
    } else {
        match clusters.iter().find(|c| c.name == cluster_name) {
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
        node_first_only,
    })
}

impl Dynamic {
    /// The secrets the bootstrap defines, as a compile looks them up.
    pub(super) fn secrets(&self) -> Arc<Secrets> {
        self.static_secrets.clone()
    }

    /// Where the xDS stream of `source` goes (`None` for static secrets, or an ADS
    /// stream the bootstrap does not configure).
    pub fn target(&self, source: &SecretSource) -> Option<&AdsTarget> {
        match source {
            SecretSource::Static => None,
            SecretSource::Ads => self.ads.as_ref().map(|a| &a.target),
            SecretSource::Grpc { cluster, .. } => self.grpc_targets.get(cluster),
        }
    }
}

/// The resource types zerohop takes over xDS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cluster,
    Endpoint,
    Listener,
    Route,
    Secret,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Cluster,
        Kind::Endpoint,
        Kind::Listener,
        Kind::Route,
        Kind::Secret,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Kind::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
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
        matches!(self, Kind::Endpoint | Kind::Route | Kind::Secret)
    }
}
