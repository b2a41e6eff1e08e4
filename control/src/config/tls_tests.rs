//! Config tests of `transport_socket` TLS: contexts compile to DER with their options, and
//! what zerohop cannot honour is refused with the field named.

use super::*;
use zerohop_proto::{SanType, TlsVersion, TransportSocket};

const HTTP: &str = include_str!("../../tests/fixtures/http.yaml");
const CHAIN: &str = "    - filters:\n      - name: envoy.filters.network.http_connection_manager\n";
const CLUSTER: &str = "  - name: a\n    connect_timeout: 1s\n";

/// A CA, and a server certificate and key it signed, as PEM files (made by openssl).
pub(super) fn pki() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(make_pki).clone()
}

fn make_pki() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zerohop-control-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = format!(
        "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ca && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr -subj /CN=srv && \
         echo subjectAltName=DNS:srv > ext && \
         openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.csr -subj /CN=other",
        d = dir.display()
    );
    let ok = std::process::Command::new("sh")
        .args(["-c", &sh])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl made the test certificates");
    dir
}

pub(super) fn downstream(common: &str, extra: &str) -> String {
    let d = pki();
    let ts = format!(
        "    - transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n{extra}          common_tls_context:\n            tls_certificates: [ {{ certificate_chain: {{ filename: {d}/srv.pem }}, private_key: {{ filename: {d}/srv.key }} }} ]\n{common}      filters:\n      - name: envoy.filters.network.http_connection_manager\n",
        d = d.display()
    );
    assert!(HTTP.contains(CHAIN), "fixture lacks its chain");
    HTTP.replacen(CHAIN, &ts, 1)
}

#[test]
fn tls_contexts_compile() {
    let d = pki();
    let yaml = downstream(
        &format!("            alpn_protocols: [h2, http/1.1]\n            tls_params: {{ tls_minimum_protocol_version: TLSv1_3, cipher_suites: [\"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-RSA-AES128-GCM-SHA256]\"], ecdh_curves: [X25519] }}\n            validation_context:\n              trusted_ca: {{ filename: {}/ca.pem }}\n              match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ prefix: \"spiffe://cluster.local/\" }} }} ]\n", d.display()),
        "          require_client_certificate: true\n",
    );
    let b = load(&yaml, Format::Yaml).unwrap();
    let t = b.snapshot.listeners[0].filter_chains[0]
        .tls
        .as_ref()
        .unwrap();
    assert!(t.require_client_certificate);
    assert_eq!(t.common.min_version, TlsVersion::Tls13);
    assert_eq!(t.common.cipher_suites, [0xc02b, 0xc02f]);
    assert_eq!(t.common.ecdh_curves, [0x001d]);
    assert_eq!(t.common.alpn, ["h2", "http/1.1"]);
    assert_eq!(t.common.certificates[0].chain.len(), 1);
    let v = t.common.validation.as_ref().unwrap();
    assert_eq!(v.trusted_ca.len(), 1);
    assert_eq!(v.san_matchers[0].san_type, SanType::Uri);
    // Upstream: SNI and the default of one session key.
    let yaml = HTTP.replacen(
        CLUSTER,
        &format!("{CLUSTER}    transport_socket:\n      name: tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: backend.example\n        common_tls_context: {{ validation_context: {{ trusted_ca: {{ filename: {}/ca.pem }} }} }}\n", d.display()),
        1,
    );
    let b = load(&yaml, Format::Yaml).unwrap();
    let TransportSocket::Tls(u) = &b.snapshot.clusters[0].transport else {
        panic!("TLS expected")
    };
    assert_eq!(u.sni.as_deref(), Some("backend.example"));
    assert_eq!(u.max_session_keys, 1);
}

#[test]
fn tls_errors_name_the_field() {
    let d = pki();
    let d = d.display();
    let cases = [
        (
            downstream("            tls_params: { tls_minimum_protocol_version: TLSv1_1 }\n", ""),
            ".tls_params.tls_minimum_protocol_version",
            "TLSv1_1 is not supported",
        ),
        (
            downstream("            tls_params: { cipher_suites: [AES128-SHA] }\n", ""),
            ".tls_params.cipher_suites[0]",
            "not available",
        ),
        (
            downstream("", "          require_client_certificate: true\n"),
            ".require_client_certificate",
            "validation_context",
        ),
        (
            downstream("            validation_context: { match_typed_subject_alt_names: [ { san_type: URI, matcher: { exact: x } } ] }\n", ""),
            ".validation_context.trusted_ca",
            "needs one",
        ),
        (
            downstream("            tls_certificate_sds_secret_configs: [ { name: x } ]\n", ""),
            ".tls_certificate_sds_secret_configs[0].name",
            "unknown static secret",
        ),
        (
            downstream("", "          session_timeout: 10s\n"),
            ".session_timeout",
            "not supported",
        ),
        // A key that is not the certificate's.
        (
            downstream("", "").replace(&format!("{d}/srv.key"), &format!("{d}/other.key")),
            ".tls_certificates[0].private_key",
            "does not belong",
        ),
        (
            downstream("", "").replace(&format!("{d}/srv.pem"), &format!("{d}/missing.pem")),
            ".tls_certificates[0].certificate_chain.filename",
            "missing.pem",
        ),
    ];
    for (yaml, path, msg) in cases {
        let e = load(&yaml, Format::Yaml).expect_err(path);
        assert!(e.path.ends_with(path), "{path}: {e}");
        assert!(e.to_string().contains(msg), "{path}: {e}");
    }
}
