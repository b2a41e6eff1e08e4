//! Envoy v3 configuration in, [`Snapshot`] out.
//!
//! One path serves every source: text is decoded against the Envoy API descriptors
//! ([`envoy`]), checked field by field against what zerohop implements ([`supported`]), and
//! compiled ([`compile`]). xDS resources will enter at the second step as decoded messages.

mod accesslog;
mod builder;
mod compile;
mod dns;
pub mod dump;
mod dynamic;
mod envoy;
mod filters;
mod hcm_options;
mod health;
mod http;
mod lb;
mod lenient;
mod listener;
mod outlier;
pub mod overlay;
mod rbac;
mod retry;
mod route;
pub mod runtime;
mod secret;
mod supported;
mod tls;
mod tracing;

use std::fmt;

use prost_reflect::DynamicMessage;
use zerohop_proto::Snapshot;

pub use dns::{DnsClient, DnsCluster, DnsTarget, LookupFamily, ResolverConfig};
pub use dynamic::{Ads, AdsApi, AdsTarget, Checked, Dynamic, Kind, Resources};
pub use envoy::{descriptor_pool, Format};
pub use http::ISTIO_NO_OPS;
pub use secret::{SecretRef, SecretSource};

/// The embedded default configuration that `zerohop` runs with no `-c`: a TCP listener on
/// 127.0.0.1:10000 in front of a demo upstream on 127.0.0.1:10001.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// A configuration that zerohop refuses. Always the config author's fault; nothing is
/// published and the previous configuration stays in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where, as a path from the document root, e.g.
    /// `static_resources.clusters[1](backend).lb_policy`. Empty for whole-document errors.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// What control knows about a loaded bootstrap beyond the snapshot it compiles to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bootstrap {
    pub snapshot: Snapshot,
    /// `node.id`, for logs and (later) xDS.
    pub node_id: String,
    /// `admin.address`, served by zerohop-control (not by the data plane).
    pub admin_address: Option<std::net::SocketAddr>,
    /// `dynamic_resources`: the ADS server, and the static resources every xDS update is
    /// compiled with. `snapshot` is then the static part alone.
    pub dynamic: Option<Dynamic>,
    /// The clusters whose endpoints control resolves by DNS (static ones).
    pub dns: Vec<DnsCluster>,
    /// The text it was loaded from, for `/config_dump` (decoded again there, resource by
    /// resource, rather than held decoded: 10,000 clusters decoded take ~650 MB).
    pub source: Option<Source>,
    /// `layered_runtime`.
    pub runtime: runtime::Runtime,
    /// `node` in proto JSON, for admin's `/server_info`.
    pub node: serde_json::Value,
}

/// A bootstrap's text as loaded (after `--config-yaml` overlays).
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub text: std::sync::Arc<str>,
    pub format: Format,
}

/// Decodes, checks and compiles an Envoy v3 bootstrap, one resource at a time.
pub fn load(text: &str, format: Format) -> Result<Bootstrap, ConfigError> {
    if format == Format::Yaml {
        check_nesting(text)?;
    }
    if is_blank(text) {
        // Envoy refuses it too ("Unable to convert YAML as JSON"); applying it would
        // remove every listener, which is what a file caught mid-write looks like.
        return Err(ConfigError::at(
            "",
            "the config is empty (no document, only white space or comments): refused",
        ));
    }
    let mut builder = Collect(builder::Builder::default());
    let rest = envoy::decode_bootstrap(text, format, &mut builder)?;
    supported::check(&rest, "")?;
    let mut boot = builder.0.finish(&rest)?;
    boot.source = Some(Source {
        text: text.into(),
        format,
    });
    Ok(boot)
}

/// How deep a YAML document may nest (flow collections, or block indentation and compact
/// `- - -` sequences, in columns). Envoy's deepest messages sit about 20 levels down;
/// libyaml's scanner takes time that grows faster than the input with nesting (100,000
/// levels of `[` took 33 s), so anything deeper is refused before it is parsed.
const MAX_FLOW_DEPTH: usize = 128;
const MAX_INDENT: usize = 1024;

/// Refuses a YAML text nested deeper than [`MAX_FLOW_DEPTH`] / [`MAX_INDENT`], naming the
/// line, in one pass over the bytes. Quoted scalars and comments are skipped; brackets in
/// plain and block scalars count, which only matters past 128 unbalanced ones.
fn check_nesting(text: &str) -> Result<(), ConfigError> {
    let refuse = |line: usize, what: String| {
        Err(ConfigError::at(
            "",
            format!("line {line}: {what}: refused before parsing"),
        ))
    };
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let indent = line
            .bytes()
            .take_while(|&b| b == b' ' || b == b'-' || b == b'\t')
            .count();
        if indent > MAX_INDENT {
            return refuse(n + 1, format!("indented deeper than {MAX_INDENT} columns"));
        }
        let mut quote: Option<u8> = None;
        let mut prev = b' ';
        let mut escaped = false;
        for b in line.bytes() {
            match quote {
                Some(b'"') if escaped => escaped = false,
                Some(b'"') if b == b'\\' => escaped = true,
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None => match b {
                    b'#' if prev == b' ' || prev == b'\t' => break,
                    b'\'' | b'"' if b" \t[{,:-".contains(&prev) => quote = Some(b),
                    b'[' | b'{' => {
                        depth += 1;
                        if depth > MAX_FLOW_DEPTH {
                            return refuse(
                                n + 1,
                                format!("collections nested deeper than {MAX_FLOW_DEPTH} levels"),
                            );
                        }
                    }
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            prev = b;
        }
    }
    Ok(())
}

/// Whether `text` holds no document: nothing but white space, YAML comments and document
/// markers.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

/// Checks each resource as it is decoded; compiles clusters at once.
struct Collect(builder::Builder);

impl envoy::Sink for Collect {
    fn resource(
        &mut self,
        kind: envoy::Resource,
        msg: DynamicMessage,
        path: String,
    ) -> Result<(), ConfigError> {
        supported::check(&msg, &path)?;
        match kind {
            envoy::Resource::Cluster => self.0.add_cluster(&msg, path),
            envoy::Resource::Secret => self.0.add_secret(&msg, path),
            envoy::Resource::Listener => {
                self.0.add_listener(msg, path);
                Ok(())
            }
        }
    }
}

/// Loads a bootstrap from raw bytes of unknown format (used by the fuzz target and for
/// files without a telling extension).
pub fn load_bytes(bytes: &[u8]) -> Result<Bootstrap, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ConfigError::at("", format!("config is not UTF-8: {e}")))?;
    load(text, Format::sniff(text))
}

#[cfg(test)]
mod dns_tests;
#[cfg(test)]
pub(crate) mod dynamic_tests;
#[cfg(test)]
mod http2_tests;
#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod rbac_tests;
/// A server certificate and its key (PEM), made by openssl for tests.
#[cfg(test)]
pub(crate) fn test_certificate() -> (String, String) {
    let d = tls_tests::pki();
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    (read("srv.pem"), read("srv.key"))
}

#[cfg(test)]
mod secret_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
#[cfg(test)]
mod tracing_tests;
