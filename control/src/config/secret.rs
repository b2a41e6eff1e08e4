//! Secrets: `static_resources.secrets` and SDS (`tls_certificate_sds_secret_configs`,
//! `validation_context_sds_secret_config`, `combined_validation_context`).
//!
//! A TLS context that names a secret is compiled against a [`SecretLookup`]: the secrets
//! held now (static ones, and those SDS delivered) and a record of every secret the
//! compile asked for. A listener or cluster whose secrets have not all arrived warms, as
//! Envoy's does (its port is not opened, the cluster is not used); the records are what
//! the xDS client subscribes to, per source. A secret that changes makes the next
//! snapshot carry the new certificate: the data plane builds a new rustls configuration
//! for the new handshakes while connections already open keep theirs.
//!
//! A secret that SDS delivers with file paths is read from them, and read again when they
//! change ([`watched_paths`]: its `watched_directory`, else the files), as Envoy does;
//! `watched_directory` elsewhere (a context's own `tls_certificates`, a static secret) has
//! no effect, in Envoy as here: those files are read once.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prost_reflect::DynamicMessage;
use zerohop_proto::{CertValidation, TlsCertificate};

use super::compile::{api_version, list, msg, string};
use super::dynamic::AdsApi;
use super::ConfigError;

/// Where a named secret comes from (`SdsSecretConfig.sds_config`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretSource {
    /// No `sds_config`: `static_resources.secrets`.
    Static,
    /// `sds_config: { ads: {} }`: the ADS stream.
    Ads,
    /// `sds_config.api_config_source` with one `envoy_grpc.cluster_name`: a stream of
    /// Envoy's `SecretDiscoveryService` to that static cluster (Istio's `sds-grpc`, a Unix
    /// socket of pilot-agent).
    Grpc {
        cluster: String,
        api: AdsApi,
        /// `set_node_on_first_message_only`.
        node_first_only: bool,
    },
}

/// A secret as a TLS context names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    pub source: SecretSource,
    pub name: String,
}

/// A secret's content, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// `tls_certificate`.
    Certificate(TlsCertificate),
    /// `validation_context`.
    Validation(CertValidation),
}

/// The secrets held, by source and name.
pub type Secrets = BTreeMap<SecretRef, Secret>;

/// Static clusters an `api_config_source` may name (the gRPC services control dials).
pub type GrpcClusters = Arc<BTreeSet<String>>;

/// The secrets a compile may use, and the ones it asked for.
#[derive(Debug, Default)]
pub(crate) struct SecretLookup {
    held: Arc<Secrets>,
    /// Clusters that `api_config_source.grpc_services` may name.
    grpc: GrpcClusters,
    /// True when `sds_config: { ads: {} }` is usable (the bootstrap has ads_config).
    ads: bool,
    /// A secret not held: with `strict`, an error; else the TLS context compiles without
    /// it (a resource checked as it arrives, which then warms).
    strict: bool,
    /// Nothing is known yet (a static cluster read before the rest of the bootstrap): every
    /// secret is only recorded, and the resource compiled again once all is read.
    defer: bool,
    asked: RefCell<BTreeSet<SecretRef>>,
}

impl SecretLookup {
    pub(crate) fn new(held: Arc<Secrets>, grpc: GrpcClusters, ads: bool, strict: bool) -> Self {
        SecretLookup {
            held,
            grpc,
            ads,
            strict,
            defer: false,
            asked: RefCell::default(),
        }
    }

    /// See `defer`.
    pub(crate) fn deferring() -> Self {
        SecretLookup {
            defer: true,
            ..Default::default()
        }
    }

    /// Every secret asked for, held or not.
    pub(crate) fn asked(&self) -> BTreeSet<SecretRef> {
        self.asked.borrow().clone()
    }

    /// `SdsSecretConfig` at `path`: the secret it names, `None` when not held (and not
    /// strict).
    fn get(&self, sds: &DynamicMessage, path: &str) -> Result<Option<&Secret>, ConfigError> {
        let r = self.reference(sds, path)?;
        let found = self.held.get(&r);
        self.asked.borrow_mut().insert(r.clone());
        match found {
            Some(s) => Ok(Some(s)),
            None if self.defer => Ok(None),
            None if r.source == SecretSource::Static => Err(ConfigError::at(
                format!("{path}.name"),
                format!(
                    "unknown static secret {:?} (static_resources.secrets)",
                    r.name
                ),
            )),
            None if self.strict => Err(ConfigError::at(
                format!("{path}.name"),
                format!("secret {:?} has not arrived by SDS", r.name),
            )),
            None => Ok(None),
        }
    }

    fn reference(&self, sds: &DynamicMessage, path: &str) -> Result<SecretRef, ConfigError> {
        let name = string(sds, "name");
        if name.is_empty() {
            return Err(ConfigError::at(
                format!("{path}.name"),
                "an SDS secret config needs a name",
            ));
        }
        let Some(cs) = msg(sds, "sds_config") else {
            return Ok(SecretRef {
                source: SecretSource::Static,
                name,
            });
        };
        let spath = format!("{path}.sds_config");
        api_version(cs, "resource_api_version", &spath)?;
        if let Some(t) = msg(cs, "initial_fetch_timeout") {
            let tpath = format!("{spath}.initial_fetch_timeout");
            if !super::compile::duration(t, &tpath)?.is_zero() {
                return Err(ConfigError::at(
                    tpath,
                    "zerohop warms a listener or cluster until its secrets arrive: 0s (as Istio's sds-grpc configs) or unset",
                ));
            }
        }
        if cs.has_field_by_name("ads") {
            if !self.ads && !self.defer {
                return Err(ConfigError::at(
                    format!("{spath}.ads"),
                    "SDS over ADS needs dynamic_resources.ads_config",
                ));
            }
            return Ok(SecretRef {
                source: SecretSource::Ads,
                name,
            });
        }
        let Some(api) = msg(cs, "api_config_source") else {
            return Err(ConfigError::at(
                spath,
                "sds_config takes ads or api_config_source (gRPC)",
            ));
        };
        let apath = format!("{spath}.api_config_source");
        let (api_type, cluster) = super::dynamic::api_config_source(api, &apath)?;
        let cpath = format!("{apath}.grpc_services[0].envoy_grpc.cluster_name");
        if !self.grpc.contains(&cluster) && !self.defer {
            return Err(ConfigError::at(
                cpath,
                format!("cluster {cluster:?} is not a static cluster with an endpoint"),
            ));
        }
        let node_first_only = matches!(
            api.get_field_by_name("set_node_on_first_message_only")
                .as_deref(),
            Some(prost_reflect::Value::Bool(true))
        );
        Ok(SecretRef {
            source: SecretSource::Grpc {
                cluster,
                api: api_type,
                node_first_only,
            },
            name,
        })
    }

    /// `tls_certificate_sds_secret_configs`: the certificates held.
    pub(crate) fn certificates(
        &self,
        common: &DynamicMessage,
        path: &str,
    ) -> Result<(Vec<TlsCertificate>, usize), ConfigError> {
        let configs = list(common, "tls_certificate_sds_secret_configs");
        let mut out = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let p = format!("{path}.tls_certificate_sds_secret_configs[{i}]");
            match self.get(super::compile::as_msg(c), &p)? {
                Some(Secret::Certificate(t)) => out.push(t.clone()),
                Some(Secret::Validation(_)) => {
                    return Err(ConfigError::at(
                        p,
                        "the secret is a validation_context, not a tls_certificate",
                    ))
                }
                None => {}
            }
        }
        Ok((out, configs.len()))
    }

    /// `validation_context_sds_secret_config` or `combined_validation_context` (the
    /// default context with the SDS one merged over it, as Envoy merges them). `Ok(None)`
    /// when neither is set; `Ok(Some(None))` while the SDS one has not arrived.
    pub(crate) fn validation(
        &self,
        common: &DynamicMessage,
        path: &str,
        parse: impl Fn(&DynamicMessage, &str) -> Result<CertValidation, ConfigError>,
    ) -> Result<Option<Option<CertValidation>>, ConfigError> {
        let sds_one = |sds: &DynamicMessage, p: &str| match self.get(sds, p)? {
            Some(Secret::Validation(v)) => Ok(Some(v.clone())),
            Some(Secret::Certificate(_)) => Err(ConfigError::at(
                p,
                "the secret is a tls_certificate, not a validation_context",
            )),
            None => Ok(None),
        };
        if let Some(sds) = msg(common, "validation_context_sds_secret_config") {
            let p = format!("{path}.validation_context_sds_secret_config");
            return Ok(Some(sds_one(sds, &p)?));
        }
        let Some(combined) = msg(common, "combined_validation_context") else {
            return Ok(None);
        };
        let cpath = format!("{path}.combined_validation_context");
        let default = match msg(combined, "default_validation_context") {
            Some(d) => Some(parse(d, &format!("{cpath}.default_validation_context"))?),
            None => None,
        };
        let Some(sds) = msg(combined, "validation_context_sds_secret_config") else {
            return Err(ConfigError::at(
                format!("{cpath}.validation_context_sds_secret_config"),
                "a combined_validation_context needs validation_context_sds_secret_config",
            ));
        };
        let p = format!("{cpath}.validation_context_sds_secret_config");
        let Some(dynamic) = sds_one(sds, &p)? else {
            return Ok(Some(None));
        };
        Ok(Some(Some(merge(default, dynamic))))
    }
}

/// Envoy's merge of a combined validation context: the SDS context over the default one
/// (protobuf `MergeFrom`: a field the SDS context sets replaces the default's, lists
/// append).
fn merge(default: Option<CertValidation>, dynamic: CertValidation) -> CertValidation {
    let Some(mut v) = default else {
        return dynamic;
    };
    if !dynamic.trusted_ca.is_empty() {
        v.trusted_ca = dynamic.trusted_ca;
    }
    if !dynamic.crls.is_empty() {
        v.crls = dynamic.crls;
    }
    v.san_matchers.extend(dynamic.san_matchers);
    v
}

/// The files an SDS secret is read from, watched for rotation as Envoy watches them: the
/// `watched_directory` of its certificate or validation context when it names one (a
/// Kubernetes secret volume swaps a symlink there), else each file itself. Empty for a
/// secret written inline.
pub(crate) fn watched_paths(m: &DynamicMessage) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for (field, sources) in [
        ("tls_certificate", &["certificate_chain", "private_key"][..]),
        ("validation_context", &["trusted_ca", "crl"][..]),
    ] {
        let Some(part) = msg(m, field) else { continue };
        let files: Vec<std::path::PathBuf> = sources
            .iter()
            .filter_map(|f| msg(part, f))
            .filter(|d| d.has_field_by_name("filename"))
            .map(|d| string(d, "filename").into())
            .collect();
        if files.is_empty() {
            continue;
        }
        match msg(part, "watched_directory").map(|w| string(w, "path")) {
            Some(dir) if !dir.is_empty() => out.push(dir.into()),
            _ => out.extend(files),
        }
    }
    out
}

/// A `Secret` resource (static, or from SDS): its name and content.
pub(crate) fn compile(m: &DynamicMessage, path: &str) -> Result<(String, Secret), ConfigError> {
    let name = string(m, "name");
    if name.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.name"),
            "a secret needs a name",
        ));
    }
    let secret = if let Some(t) = msg(m, "tls_certificate") {
        Secret::Certificate(super::tls::certificate(
            t,
            &format!("{path}.tls_certificate"),
        )?)
    } else if let Some(v) = msg(m, "validation_context") {
        Secret::Validation(super::tls::validation(
            v,
            &format!("{path}.validation_context"),
        )?)
    } else {
        return Err(ConfigError::at(
            path,
            "a secret needs tls_certificate or validation_context (the kinds zerohop takes)",
        ));
    };
    Ok((name, secret))
}
