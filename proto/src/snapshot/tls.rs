//! `envoy.transport_sockets.tls`: what a filter chain terminates and a cluster originates.
//!
//! Control reads the PEM (files or inline), checks that each key belongs to its certificate
//! and that every name is one rustls implements, and hands the data plane DER: the shards
//! build the rustls configurations from these without touching a file.

use serde::{Deserialize, Serialize};

use super::StringRule;

/// A certificate chain (leaf first, DER) and its private key (DER, in the encoding named).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TlsCertificate {
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
    pub key_format: KeyFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyFormat {
    /// `BEGIN RSA PRIVATE KEY`.
    Pkcs1,
    /// `BEGIN PRIVATE KEY`.
    Pkcs8,
    /// `BEGIN EC PRIVATE KEY`.
    Sec1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `CommonTlsContext`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TlsCommon {
    /// `tls_certificates`: the first whose key type the peer supports is offered (rustls
    /// picks by signature scheme; Envoy by key type the same way).
    pub certificates: Vec<TlsCertificate>,
    /// `tls_params.tls_minimum_protocol_version` / `tls_maximum_protocol_version`.
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// `tls_params.cipher_suites` as IANA numbers, in preference order; empty: the
    /// provider's defaults. TLS 1.3 suites are not configurable (as in Envoy).
    pub cipher_suites: Vec<u16>,
    /// `tls_params.ecdh_curves` as IANA named-group numbers; empty: the defaults.
    pub ecdh_curves: Vec<u16>,
    /// `alpn_protocols`, in preference order.
    pub alpn: Vec<String>,
    /// `validation_context`: how the peer's certificate is checked.
    pub validation: Option<CertValidation>,
}

/// `CertificateValidationContext`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CertValidation {
    /// `trusted_ca` (DER). Empty: the chain is not verified (Envoy's behaviour without a
    /// `trusted_ca`), though the SAN and hash checks below still apply.
    pub trusted_ca: Vec<Vec<u8>>,
    /// `crl` (DER): revoked certificates are refused.
    pub crls: Vec<Vec<u8>>,
    /// `match_typed_subject_alt_names` (and the deprecated `match_subject_alt_names`, as
    /// `SanType::Any`): the peer certificate must carry a SAN that one of these matches.
    pub san_matchers: Vec<SanMatcher>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SanMatcher {
    pub san_type: SanType,
    pub rule: StringRule,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SanType {
    Email,
    Dns,
    Uri,
    /// IP addresses, compared in their text form (Envoy's).
    IpAddress,
    /// The deprecated untyped matcher: any of the above.
    Any,
}

/// `DownstreamTlsContext` on a filter chain's `transport_socket`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DownstreamTls {
    pub common: TlsCommon,
    /// `require_client_certificate`: a client without a certificate fails the handshake.
    /// Without it a certificate is asked for only when a `validation_context` is set, and
    /// checked when one is sent.
    pub require_client_certificate: bool,
    /// `disable_stateless_session_resumption`: no session tickets.
    pub disable_stateless_session_resumption: bool,
    /// `disable_stateful_session_resumption`: no session-id cache.
    pub disable_stateful_session_resumption: bool,
}

/// `UpstreamTlsContext` on a cluster's `transport_socket`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpstreamTls {
    pub common: TlsCommon,
    /// `sni`: the server name sent. Without it none is sent (and the certificate's names are
    /// checked only by `match_typed_subject_alt_names`), as Envoy.
    pub sni: Option<String>,
    /// `max_session_keys` (Envoy's default 1; 0 disables resumption).
    pub max_session_keys: u32,
    /// Which pooled connections this context may reuse: a hash of the context as
    /// configured, secrets by name. A certificate or CA rotated by SDS keeps it, so
    /// connections already open stay in use while new ones take the new secrets, as
    /// Envoy's; any other change of the context starts a fresh pool.
    pub pool_id: u64,
}
