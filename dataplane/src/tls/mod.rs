//! TLS, Envoy's `envoy.transport_sockets.tls`: rustls configurations built from a
//! snapshot's contexts ([`server_config`], [`client_config`], on the config thread, once per
//! generation and shared by the shards), the I/O shells that drive a rustls connection over
//! a shard's socket ([`TlsStream`] for the byte-moving code, [`TlsIo`] for `h2`), and the
//! peer checks (`verify`).
//!
//! Every handshake's outcome is counted as Envoy's `ssl.*` are ([`count_handshake`]).

mod poll;
mod stream;
mod verify;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, Error, RootCertStore, ServerConfig};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs1KeyDer,
    PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use zerohop_proto::stats::{Counter, ListenerStat};
use zerohop_proto::{DownstreamTls, KeyFormat, TlsCertificate, TlsCommon, TlsVersion, UpstreamTls};

pub use poll::TlsIo;
pub use stream::{HandshakeError, TlsStream};
use verify::{ClientVerifier, SanRules, ServerVerifier};

/// ring, with the context's cipher suites and curves (in its order) when it names them,
/// else Envoy's defaults: curves X25519 then P-256 (ring's own list starts with P-384,
/// which it computes without assembly, at ten times the cost), AES-128-GCM before
/// AES-256-GCM before ChaCha20-Poly1305 (BoringSSL's order on hardware with AES).
fn provider(c: &TlsCommon) -> Result<Arc<CryptoProvider>, String> {
    // Reason: ring is the one provider (aws-lc-rs would add a C and CMake build); its lack
    // of post-quantum key exchange is what the deprecation notes.
    #[allow(deprecated)]
    let mut p = rustls::crypto::ring::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| -> u8 {
        let name = format!("{:?}", s.suite());
        match () {
            _ if name.contains("AES_128") => 0,
            _ if name.contains("AES_256") => 1,
            _ => 2,
        }
    };
    p.cipher_suites
        .sort_by_key(|s| (s.version() != &rustls::version::TLS13, rank(s)));
    if !c.cipher_suites.is_empty() {
        // TLS 1.3's suites stay (Envoy does not configure them either).
        let all = std::mem::take(&mut p.cipher_suites);
        let mut chosen: Vec<_> = all
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for want in &c.cipher_suites {
            match all.iter().find(|s| u16::from(s.suite()) == *want) {
                Some(s) if !chosen.contains(s) => chosen.push(*s),
                Some(_) => {}
                None => return Err(format!("cipher suite 0x{want:04x} is not available")),
            }
        }
        p.cipher_suites = chosen;
    }
    let curves: &[u16] = match c.ecdh_curves.is_empty() {
        true => &[0x001d, 0x0017],
        false => &c.ecdh_curves,
    };
    let all = std::mem::take(&mut p.kx_groups);
    for want in curves {
        match all.iter().find(|g| u16::from(g.name()) == *want) {
            Some(g) => p.kx_groups.push(*g),
            None => return Err(format!("ECDH curve 0x{want:04x} is not available")),
        }
    }
    Ok(Arc::new(p))
}

fn versions(c: &TlsCommon) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if c.min_version <= TlsVersion::Tls12 && c.max_version >= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    if c.max_version >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    v
}

fn certified(p: &CryptoProvider, c: &TlsCertificate) -> Result<Arc<CertifiedKey>, String> {
    let key: PrivateKeyDer<'static> = match c.key_format {
        KeyFormat::Pkcs1 => PrivatePkcs1KeyDer::from(c.key.clone()).into(),
        KeyFormat::Pkcs8 => PrivatePkcs8KeyDer::from(c.key.clone()).into(),
        KeyFormat::Sec1 => PrivateSec1KeyDer::from(c.key.clone()).into(),
    };
    let key = p
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private_key: {e}"))?;
    let chain = c
        .chain
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

fn roots(ders: &[Vec<u8>]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for d in ders {
        roots
            .add(CertificateDer::from(d.clone()))
            .map_err(|e| format!("trusted_ca: {e}"))?;
    }
    Ok(Arc::new(roots))
}

fn crls(ders: &[Vec<u8>]) -> Vec<CertificateRevocationListDer<'static>> {
    ders.iter()
        .map(|d| CertificateRevocationListDer::from(d.clone()))
        .collect()
}

/// The certificates of a context: the first the client's signature schemes allow is
/// offered (an ECDSA and an RSA certificate side by side, as Envoy allows).
#[derive(Debug)]
struct Certificates(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|c| c.key.choose_scheme(schemes).is_some())
            .cloned()
    }
}

/// The certificate a client presents when the server asks for one.
#[derive(Debug)]
struct ClientCertificate(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.key.choose_scheme(sigschemes).map(|_| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The rustls server configuration of a `DownstreamTlsContext`.
pub fn server_config(t: &DownstreamTls) -> Result<Arc<ServerConfig>, String> {
    let c = &t.common;
    let p = provider(c)?;
    let builder = ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&versions(c))
        .map_err(|e| format!("tls_params: {e}"))?;
    let builder = match &c.validation {
        None => builder.with_no_client_auth(),
        Some(v) => {
            let mut b =
                WebPkiClientVerifier::builder_with_provider(roots(&v.trusted_ca)?, p.clone())
                    .with_crls(crls(&v.crls));
            if !t.require_client_certificate {
                b = b.allow_unauthenticated();
            }
            let inner = b.build().map_err(|e| format!("validation_context: {e}"))?;
            builder.with_client_cert_verifier(Arc::new(ClientVerifier {
                inner,
                sans: SanRules::compile(&v.san_matchers)?,
            }))
        }
    };
    let certs = c
        .certificates
        .iter()
        .map(|k| certified(&p, k))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = builder.with_cert_resolver(Arc::new(Certificates(certs)));
    // The server's order of suites, as Envoy's (BoringSSL's) servers choose.
    config.ignore_client_order = true;
    config.alpn_protocols = c.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    if !t.disable_stateless_session_resumption {
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    }
    if t.disable_stateful_session_resumption {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    Ok(Arc::new(config))
}

/// The rustls client configuration of an `UpstreamTlsContext`.
pub fn client_config(t: &UpstreamTls) -> Result<Arc<ClientConfig>, String> {
    let c = &t.common;
    let p = provider(c)?;
    let builder = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&versions(c))
        .map_err(|e| format!("tls_params: {e}"))?;
    let (chain, sans) = match &c.validation {
        Some(v) if !v.trusted_ca.is_empty() => {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots(&v.trusted_ca)?,
                p.clone(),
            )
            .with_crls(crls(&v.crls))
            .build()
            .map_err(|e| format!("validation_context: {e}"))?;
            let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = verifier;
            (Some(verifier), SanRules::compile(&v.san_matchers)?)
        }
        Some(v) => (None, SanRules::compile(&v.san_matchers)?),
        None => (None, SanRules::compile(&[])?),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier {
            chain,
            sans,
            provider: p.clone(),
        }));
    let mut config = match c.certificates.first() {
        Some(k) => {
            let key = certified(&p, k)?;
            builder.with_client_cert_resolver(Arc::new(ClientCertificate(key)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = c.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    config.enable_sni = t.sni.is_some();
    config.resumption = match t.max_session_keys {
        0 => rustls::client::Resumption::disabled(),
        n => rustls::client::Resumption::in_memory_sessions(n as usize),
    };
    Ok(Arc::new(config))
}

/// Counts a handshake's outcome as Envoy does: `handshake` (with `session_reused`, and
/// downstream `no_certificate` when the client sent none) for one that completed; for one
/// that failed, the verification counter its reason names, else `connection_error`.
/// Downstream, the listener's `listener.<address>.ssl.*` (`listener`) count too.
pub fn count_handshake(
    stats: crate::stats::ShardStats,
    upstream: bool,
    listener: zerohop_proto::StatScope,
    outcome: Result<&TlsStream, &HandshakeError>,
) {
    let inc = |c: Counter| {
        stats.inc(c);
        let scoped = match c {
            Counter::SslHandshake => ListenerStat::SslHandshake,
            Counter::SslSessionReused => ListenerStat::SslSessionReused,
            Counter::SslConnectionError => ListenerStat::SslConnectionError,
            Counter::SslFailVerifySan => ListenerStat::SslFailVerifySan,
            Counter::SslFailVerifyError => ListenerStat::SslFailVerifyError,
            Counter::SslNoCertificate => ListenerStat::SslNoCertificate,
            Counter::SslFailVerifyNoCert => ListenerStat::SslFailVerifyNoCert,
            _ => return,
        };
        stats.count(listener, scoped);
    };
    let (ok, reused, err, san, verify) = match upstream {
        false => (
            Counter::SslHandshake,
            Counter::SslSessionReused,
            Counter::SslConnectionError,
            Counter::SslFailVerifySan,
            Counter::SslFailVerifyError,
        ),
        true => (
            Counter::UpstreamSslHandshake,
            Counter::UpstreamSslSessionReused,
            Counter::UpstreamSslConnectionError,
            Counter::UpstreamSslFailVerifySan,
            Counter::UpstreamSslFailVerifyError,
        ),
    };
    match outcome {
        Ok(s) => {
            inc(ok);
            if s.resumed() {
                inc(reused);
            }
            if !upstream && !s.has_peer_certificate() {
                inc(Counter::SslNoCertificate);
            }
        }
        Err(HandshakeError::Tls(Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))) => inc(san),
        Err(HandshakeError::Tls(Error::InvalidCertificate(_))) => inc(verify),
        Err(HandshakeError::Tls(Error::NoCertificatesPresented)) if !upstream => {
            inc(Counter::SslFailVerifyNoCert)
        }
        Err(_) => inc(err),
    }
}
