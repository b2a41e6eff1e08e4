//! `transport_socket`: `envoy.transport_sockets.tls` (`DownstreamTlsContext` on a filter
//! chain, `UpstreamTlsContext` on a cluster) and `envoy.transport_sockets.raw_buffer`.
//!
//! Certificates, keys, CAs and CRLs are read here (files or inline PEM) and handed to the
//! data plane as DER; each key is loaded by rustls (ring) and checked against its
//! certificate, so a context that would fail on a shard fails here, with its field named.
//! Names of versions, cipher suites and curves are Envoy's (OpenSSL's) and map onto what
//! rustls implements; any other is refused by name.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use zerohop_proto::*;

use super::compile::*;
use super::secret::SecretLookup;
use super::supported::unpack_any;
use super::ConfigError;

const DOWNSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// The typed config of a `transport_socket`, or `None` for raw_buffer.
fn typed(ts: &DynamicMessage, path: &str) -> Result<Option<DynamicMessage>, ConfigError> {
    let tpath = format!("{path}.typed_config");
    let Some(any) = msg(ts, "typed_config") else {
        return match string(ts, "name").as_str() {
            "envoy.transport_sockets.raw_buffer" | "raw_buffer" => Ok(None),
            other => Err(ConfigError::at(
                tpath,
                format!("transport socket {other:?} needs a typed_config"),
            )),
        };
    };
    let m = unpack_any(any).map_err(|e| ConfigError::at(tpath.clone(), e))?;
    match m.descriptor().full_name() {
        RAW_BUFFER => Ok(None),
        _ => Ok(Some(m)),
    }
}

/// A filter chain's `transport_socket`.
pub(crate) fn downstream(
    ts: &DynamicMessage,
    path: &str,
    secrets: &SecretLookup,
) -> Result<Option<DownstreamTls>, ConfigError> {
    let Some(m) = typed(ts, path)? else {
        return Ok(None);
    };
    let tpath = format!("{path}.typed_config");
    if m.descriptor().full_name() != DOWNSTREAM {
        return Err(ConfigError::at(
            tpath,
            format!(
                "transport socket {} is not supported on a filter chain (supported: DownstreamTlsContext, RawBuffer)",
                m.descriptor().full_name()
            ),
        ));
    }
    let cpath = format!("{tpath}.common_tls_context");
    let (common, pending) = match msg(&m, "common_tls_context") {
        Some(c) => common(c, &cpath, secrets)?,
        None => common(&DynamicMessage::new(common_descriptor(&m)), &cpath, secrets)?,
    };
    if common.certificates.is_empty() && !pending {
        return Err(ConfigError::at(
            format!("{cpath}.tls_certificates"),
            "a server TLS context needs a certificate",
        ));
    }
    if common
        .validation
        .as_ref()
        .is_some_and(|v| v.trusted_ca.is_empty())
    {
        return Err(ConfigError::at(
            format!("{cpath}.validation_context.trusted_ca"),
            "client certificates are verified against a trusted_ca: a downstream validation_context needs one",
        ));
    }
    let require = msg(&m, "require_client_certificate").is_some_and(bool_wrapper);
    if require && common.validation.is_none() && !pending {
        return Err(ConfigError::at(
            format!("{tpath}.require_client_certificate"),
            "requiring a client certificate needs a validation_context with trusted_ca",
        ));
    }
    let t = DownstreamTls {
        common,
        require_client_certificate: require,
        disable_stateless_session_resumption: plain_bool(
            &m,
            "disable_stateless_session_resumption",
        ),
        disable_stateful_session_resumption: plain_bool(&m, "disable_stateful_session_resumption"),
    };
    Ok(Some(t))
}

/// A cluster's `transport_socket`.
pub(crate) fn upstream(
    ts: &DynamicMessage,
    path: &str,
    secrets: &SecretLookup,
) -> Result<TransportSocket, ConfigError> {
    let Some(m) = typed(ts, path)? else {
        return Ok(TransportSocket::RawBuffer);
    };
    let tpath = format!("{path}.typed_config");
    if m.descriptor().full_name() != UPSTREAM {
        return Err(ConfigError::at(
            tpath,
            format!(
                "transport socket {} is not supported on a cluster (supported: UpstreamTlsContext, RawBuffer)",
                m.descriptor().full_name()
            ),
        ));
    }
    let cpath = format!("{tpath}.common_tls_context");
    let (common, _) = match msg(&m, "common_tls_context") {
        Some(c) => common(c, &cpath, secrets)?,
        None => common(&DynamicMessage::new(common_descriptor(&m)), &cpath, secrets)?,
    };
    let sni = Some(string(&m, "sni")).filter(|s| !s.is_empty());
    if let Some(s) = &sni {
        if rustls_pki_types::ServerName::try_from(s.as_str()).is_err() {
            return Err(ConfigError::at(
                format!("{tpath}.sni"),
                format!("{s:?} is not a host name"),
            ));
        }
    }
    let max_session_keys = match msg(&m, "max_session_keys") {
        Some(v) => u32_value(v),
        None => 1,
    };
    let pool_id = {
        use prost::Message as _;
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        m.encode_to_vec().hash(&mut h);
        h.finish()
    };
    Ok(TransportSocket::Tls(Box::new(UpstreamTls {
        common,
        sni,
        max_session_keys,
        pool_id,
    })))
}

fn common_descriptor(m: &DynamicMessage) -> prost_reflect::MessageDescriptor {
    match m
        .descriptor()
        .get_field_by_name("common_tls_context")
        .map(|f| f.kind())
    {
        Some(prost_reflect::Kind::Message(d)) => d,
        _ => unreachable!("TLS contexts have a common_tls_context"),
    }
}

fn bool_wrapper(b: &DynamicMessage) -> bool {
    matches!(
        b.get_field_by_name("value").as_deref(),
        Some(Value::Bool(true))
    )
}

/// `CommonTlsContext`, and whether a secret it names has not arrived yet (the resource
/// then warms; see [`SecretLookup`]).
fn common(
    c: &DynamicMessage,
    path: &str,
    secrets: &SecretLookup,
) -> Result<(TlsCommon, bool), ConfigError> {
    let mut certificates = Vec::new();
    for (i, t) in list(c, "tls_certificates").iter().enumerate() {
        certificates.push(certificate(
            as_msg(t),
            &format!("{path}.tls_certificates[{i}]"),
        )?);
    }
    let (from_sds, named) = secrets.certificates(c, path)?;
    let mut pending = from_sds.len() < named;
    certificates.extend(from_sds);
    let (mut min_version, mut max_version) = (TlsVersion::Tls12, TlsVersion::Tls13);
    let (mut cipher_suites, mut ecdh_curves) = (Vec::new(), Vec::new());
    if let Some(p) = msg(c, "tls_params") {
        let ppath = format!("{path}.tls_params");
        if let Some(v) = version(p, "tls_minimum_protocol_version", &ppath)? {
            min_version = v;
        }
        if let Some(v) = version(p, "tls_maximum_protocol_version", &ppath)? {
            max_version = v;
        }
        if min_version > max_version {
            return Err(ConfigError::at(
                ppath,
                "tls_minimum_protocol_version is above tls_maximum_protocol_version",
            ));
        }
        for (i, v) in list(p, "cipher_suites").iter().enumerate() {
            let Value::String(s) = v else { continue };
            // OpenSSL's syntax allows `[A|B]` equal-preference groups, as Envoy's default.
            for name in s.trim_matches(|c| c == '[' || c == ']').split('|') {
                cipher_suites.push(cipher_suite(name).ok_or_else(|| {
                    ConfigError::at(
                        format!("{ppath}.cipher_suites[{i}]"),
                        format!("cipher suite {name:?} is not available in zerohop (TLS 1.2: ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-CHACHA20-POLY1305)"),
                    )
                })?);
            }
        }
        for (i, v) in list(p, "ecdh_curves").iter().enumerate() {
            let Value::String(s) = v else { continue };
            ecdh_curves.push(curve(s).ok_or_else(|| {
                ConfigError::at(
                    format!("{ppath}.ecdh_curves[{i}]"),
                    format!("ECDH curve {s:?} is not available in zerohop (X25519, P-256, P-384)"),
                )
            })?);
        }
    }
    let alpn = list(c, "alpn_protocols")
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let validation = match msg(c, "validation_context") {
        Some(v) => Some(validation(v, &format!("{path}.validation_context"))?),
        None => match secrets.validation(c, path, validation)? {
            Some(Some(v)) => Some(v),
            Some(None) => {
                pending = true;
                None
            }
            None => None,
        },
    };
    let common = TlsCommon {
        certificates,
        min_version,
        max_version,
        cipher_suites,
        ecdh_curves,
        alpn,
        validation,
    };
    Ok((common, pending))
}

fn version(p: &DynamicMessage, field: &str, path: &str) -> Result<Option<TlsVersion>, ConfigError> {
    match enum_name(p, field).as_str() {
        "TLS_AUTO" => Ok(None),
        "TLSv1_2" => Ok(Some(TlsVersion::Tls12)),
        "TLSv1_3" => Ok(Some(TlsVersion::Tls13)),
        other => Err(ConfigError::at(
            format!("{path}.{field}"),
            format!("{other} is not supported by zerohop (TLSv1_2, TLSv1_3; rustls implements no older version)"),
        )),
    }
}

/// OpenSSL's names of the TLS 1.2 suites rustls implements, as IANA numbers. TLS 1.3
/// suites are not configurable (in Envoy neither); naming one is accepted.
fn cipher_suite(name: &str) -> Option<u16> {
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => 0xc02b,
        "ECDHE-RSA-AES128-GCM-SHA256" => 0xc02f,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => 0xc02c,
        "ECDHE-RSA-AES256-GCM-SHA384" => 0xc030,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => 0xcca9,
        "ECDHE-RSA-CHACHA20-POLY1305" => 0xcca8,
        "TLS_AES_128_GCM_SHA256" => 0x1301,
        "TLS_AES_256_GCM_SHA384" => 0x1302,
        "TLS_CHACHA20_POLY1305_SHA256" => 0x1303,
        _ => return None,
    })
}

fn curve(name: &str) -> Option<u16> {
    Some(match name {
        "X25519" => 0x001d,
        "P-256" => 0x0017,
        "P-384" => 0x0018,
        _ => return None,
    })
}

/// A `DataSource`'s bytes: `filename` (read now), `inline_bytes` or `inline_string`.
pub(crate) fn data_source(d: &DynamicMessage, path: &str) -> Result<Vec<u8>, ConfigError> {
    if d.has_field_by_name("filename") {
        let f = string(d, "filename");
        return std::fs::read(&f)
            .map_err(|e| ConfigError::at(format!("{path}.filename"), format!("{f}: {e}")));
    }
    if let Some(Value::Bytes(b)) = d.get_field_by_name("inline_bytes").as_deref() {
        if d.has_field_by_name("inline_bytes") {
            return Ok(b.to_vec());
        }
    }
    Ok(string(d, "inline_string").into_bytes())
}

fn pem_certs(pem: &[u8], path: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::at(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::at(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// `TlsCertificate`: the chain and the key, checked to belong together.
pub(crate) fn certificate(t: &DynamicMessage, path: &str) -> Result<TlsCertificate, ConfigError> {
    let cpath = format!("{path}.certificate_chain");
    let kpath = format!("{path}.private_key");
    let (Some(c), Some(k)) = (msg(t, "certificate_chain"), msg(t, "private_key")) else {
        return Err(ConfigError::at(
            path,
            "a TLS certificate needs certificate_chain and private_key",
        ));
    };
    let chain = pem_certs(&data_source(c, &cpath)?, &cpath)?;
    let key = PrivateKeyDer::from_pem_slice(&data_source(k, &kpath)?)
        .map_err(|e| ConfigError::at(kpath.clone(), format!("not a PEM private key: {e}")))?;
    let key_format = match &key {
        PrivateKeyDer::Pkcs1(_) => KeyFormat::Pkcs1,
        PrivateKeyDer::Pkcs8(_) => KeyFormat::Pkcs8,
        PrivateKeyDer::Sec1(_) => KeyFormat::Sec1,
        _ => return Err(ConfigError::at(kpath, "unknown private key format")),
    };
    #[allow(deprecated)] // Reason: ring is zerohop's one provider (see dataplane's `tls`).
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| ConfigError::at(kpath.clone(), format!("unusable private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(
        chain
            .iter()
            .map(|d| CertificateDer::from(d.clone()))
            .collect(),
        signer,
    );
    // Only a proven mismatch is refused: a certificate webpki cannot parse (a version 1
    // certificate, say) is still served as it is, as Envoy serves it.
    if let Err(e @ rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(ConfigError::at(
            kpath,
            format!("the private key does not belong to the certificate: {e}"),
        ));
    }
    Ok(TlsCertificate {
        chain,
        key: key.secret_der().to_vec(),
        key_format,
    })
}

/// `CertificateValidationContext`.
pub(crate) fn validation(v: &DynamicMessage, path: &str) -> Result<CertValidation, ConfigError> {
    let trusted_ca = match msg(v, "trusted_ca") {
        Some(d) => {
            let p = format!("{path}.trusted_ca");
            let cas = pem_certs(&data_source(d, &p)?, &p)?;
            let mut roots = rustls::RootCertStore::empty();
            for c in &cas {
                roots
                    .add(CertificateDer::from(c.clone()))
                    .map_err(|e| ConfigError::at(p.clone(), format!("unusable CA: {e}")))?;
            }
            cas
        }
        None => Vec::new(),
    };
    let crls = match msg(v, "crl") {
        Some(d) => {
            let p = format!("{path}.crl");
            CertificateRevocationListDer::pem_slice_iter(&data_source(d, &p)?)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::at(p, format!("not a PEM CRL: {e}")))?
        }
        None => Vec::new(),
    };
    let mut san_matchers = Vec::new();
    for (i, m) in list(v, "match_typed_subject_alt_names").iter().enumerate() {
        let m = as_msg(m);
        let mpath = format!("{path}.match_typed_subject_alt_names[{i}]");
        let san_type = match enum_name(m, "san_type").as_str() {
            "EMAIL" => SanType::Email,
            "DNS" => SanType::Dns,
            "URI" => SanType::Uri,
            "IP_ADDRESS" => SanType::IpAddress,
            other => {
                return Err(ConfigError::at(
                    format!("{mpath}.san_type"),
                    format!("san_type {other} is not supported (EMAIL, DNS, URI, IP_ADDRESS)"),
                ))
            }
        };
        let Some(sm) = msg(m, "matcher") else {
            return Err(ConfigError::at(mpath, "a SAN matcher needs a matcher"));
        };
        let rule = super::route::string_matcher(sm, &format!("{mpath}.matcher"))?;
        san_matchers.push(SanMatcher { san_type, rule });
    }
    for (i, m) in list(v, "match_subject_alt_names").iter().enumerate() {
        let rule = super::route::string_matcher(
            as_msg(m),
            &format!("{path}.match_subject_alt_names[{i}]"),
        )?;
        san_matchers.push(SanMatcher {
            san_type: SanType::Any,
            rule,
        });
    }
    if trusted_ca.is_empty() && !crls.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.crl"),
            "a CRL needs a trusted_ca",
        ));
    }
    Ok(CertValidation {
        trusted_ca,
        crls,
        san_matchers,
    })
}
