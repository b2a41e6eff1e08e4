//! Peer certificate checks beyond the chain: Envoy's `match_typed_subject_alt_names`.
//!
//! rustls' WebPKI verifiers check the chain, expiry and revocation; these wrappers then
//! require a subject alternative name that one of the context's matchers accepts (SPIFFE
//! URI SANs among them). Upstream, the server's names are not checked against the SNI
//! (Envoy checks them only through SAN matchers), so the WebPKI name check is skipped and
//! an empty `trusted_ca` verifies no chain, as in Envoy.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use zerohop_proto::{SanMatcher, SanType};

use crate::route::Rule;

/// The error a SAN mismatch fails the handshake with (counted as `fail_verify_san`).
pub fn san_mismatch() -> Error {
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Compiled `match_typed_subject_alt_names`.
#[derive(Debug)]
pub struct SanRules(Vec<(SanType, Rule)>);

impl SanRules {
    pub fn compile(m: &[SanMatcher]) -> Result<SanRules, String> {
        m.iter()
            .map(|m| {
                Rule::compile(&m.rule)
                    .map(|r| (m.san_type, r))
                    .map_err(|e| format!("match_typed_subject_alt_names: {e}"))
            })
            .collect::<Result<_, _>>()
            .map(SanRules)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the certificate (DER) has a SAN that some matcher accepts.
    pub fn accepts(&self, der: &[u8]) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return false;
        };
        let Ok(Some(ext)) = cert.subject_alternative_name() else {
            return false;
        };
        ext.value.general_names.iter().any(|name| {
            use x509_parser::extensions::GeneralName as G;
            let (kind, value) = match name {
                G::DNSName(s) => (SanType::Dns, (*s).to_owned()),
                G::URI(s) => (SanType::Uri, (*s).to_owned()),
                G::RFC822Name(s) => (SanType::Email, (*s).to_owned()),
                G::IPAddress(b) => match ip_text(b) {
                    Some(t) => (SanType::IpAddress, t),
                    None => return false,
                },
                _ => return false,
            };
            self.0
                .iter()
                .any(|(t, rule)| (*t == kind || *t == SanType::Any) && rule.matches(Some(&value)))
        })
    }

    fn check(&self, der: &[u8]) -> Result<(), Error> {
        match self.is_empty() || self.accepts(der) {
            true => Ok(()),
            false => Err(san_mismatch()),
        }
    }
}

fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        _ => None,
    }
}

/// Client certificates: the WebPKI chain check, then the SAN matchers.
#[derive(Debug)]
pub struct ClientVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub sans: SanRules,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.sans.check(end_entity)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server certificates: the chain against `trusted_ca` when there is one (its name check
/// skipped), then the SAN matchers; handshake signatures always verified.
#[derive(Debug)]
pub struct ServerVerifier {
    pub chain: Option<Arc<dyn ServerCertVerifier>>,
    pub sans: SanRules,
    pub provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if let Some(chain) = &self.chain {
            // rustls checks the chain before the name: a name mismatch means the chain held.
            match chain.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(_)
                | Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => {}
                Err(e) => return Err(e),
            }
        }
        self.sans.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
