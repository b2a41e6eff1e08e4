//! Config tests of secrets: `static_resources.secrets`, SDS secret configs (over ADS and
//! over an SDS server's own gRPC cluster), combined validation contexts, and the fields
//! zerohop refuses by name.

use super::tls_tests::{downstream, pki};
use super::*;
use crate::config::secret::SecretSource;
use zerohop_proto::SanType;

/// `static_resources.secrets` with the test PKI's server certificate and CA, appended to
/// a bootstrap's `static_resources`.
fn with_secrets(yaml: &str) -> String {
    let d = pki();
    let secrets = format!(
        "  secrets:\n  - name: cert\n    tls_certificate: {{ certificate_chain: {{ filename: {d}/srv.pem }}, private_key: {{ filename: {d}/srv.key }} }}\n  - name: ca\n    validation_context: {{ trusted_ca: {{ filename: {d}/ca.pem }}, match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ exact: \"spiffe://b\" }} }} ] }}\n",
        d = d.display()
    );
    format!("{yaml}{secrets}")
}

/// A listener whose context takes its certificate (and validation) by SDS `common`.
fn sds_listener(common: &str) -> String {
    let d = pki();
    let certificate = format!(
        "            tls_certificates: [ {{ certificate_chain: {{ filename: {d}/srv.pem }}, private_key: {{ filename: {d}/srv.key }} }} ]\n",
        d = d.display()
    );
    downstream("", "").replacen(&certificate, common, 1)
}

#[test]
fn static_secrets_compile_into_the_context() {
    let yaml = with_secrets(&sds_listener(
        "            tls_certificate_sds_secret_configs: [ { name: cert } ]\n            combined_validation_context:\n              default_validation_context: { match_typed_subject_alt_names: [ { san_type: DNS, matcher: { exact: a } } ] }\n              validation_context_sds_secret_config: { name: ca }\n",
    ));
    let b = load(&yaml, Format::Yaml).unwrap();
    assert!(b.dynamic.is_none(), "static secrets alone keep it static");
    let t = b.snapshot.listeners[0].filter_chains[0]
        .tls
        .as_ref()
        .unwrap();
    assert_eq!(t.common.certificates.len(), 1);
    let v = t.common.validation.as_ref().unwrap();
    assert_eq!(v.trusted_ca.len(), 1, "the CA from the secret");
    let kinds: Vec<_> = v.san_matchers.iter().map(|m| m.san_type).collect();
    assert_eq!(
        kinds,
        [SanType::Dns, SanType::Uri],
        "default, then SDS merged"
    );
}

#[test]
fn an_sds_server_makes_the_bootstrap_dynamic() {
    let sds = "            tls_certificate_sds_secret_configs:\n            - name: default\n              sds_config:\n                resource_api_version: V3\n                initial_fetch_timeout: 0s\n                api_config_source: { api_type: GRPC, transport_api_version: V3, set_node_on_first_message_only: true, grpc_services: [ { envoy_grpc: { cluster_name: sds-grpc } } ] }\n";
    let pipe = "  - name: sds-grpc\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment: { cluster_name: sds-grpc, endpoints: [ { lb_endpoints: [ { endpoint: { address: { pipe: { path: /tmp/sds.sock } } } } ] } ] }\n";
    let yaml = sds_listener(sds).replacen("  clusters:\n", &format!("  clusters:\n{pipe}"), 1);
    let b = load(&yaml, Format::Yaml).unwrap();
    let d = b.dynamic.expect("SDS makes it dynamic");
    assert!(d.ads.is_none());
    let source = SecretSource::Grpc {
        cluster: "sds-grpc".into(),
        api: AdsApi::Sotw,
        node_first_only: true,
    };
    assert_eq!(
        d.target(&source),
        Some(&AdsTarget::Unix("/tmp/sds.sock".into()))
    );
    // Nothing serves before the secret arrives: the listener is left out.
    let r = Resources::new(&d);
    assert!(r.assemble(&d).listeners.is_empty());
    assert_eq!(
        r.wanted_secrets(&d).get(&source).map(|n| n.len()),
        Some(1),
        "default is subscribed to"
    );
}

#[test]
fn secret_errors_name_the_field() {
    let cert = |sds_config: &str| {
        sds_listener(&format!(
            "            tls_certificate_sds_secret_configs: [ {{ name: s, sds_config: {sds_config} }} ]\n"
        ))
    };
    let cases = [
        (
            cert("{ ads: {} }"),
            ".tls_certificate_sds_secret_configs[0].sds_config.ads",
            "ads_config",
        ),
        (
            cert("{ api_config_source: { api_type: GRPC, grpc_services: [ { envoy_grpc: { cluster_name: nope } } ] } }"),
            ".grpc_services[0].envoy_grpc.cluster_name",
            "not a static cluster",
        ),
        (
            cert("{ api_config_source: { api_type: REST, grpc_services: [ { envoy_grpc: { cluster_name: a } } ] } }"),
            ".api_config_source.api_type",
            "REST",
        ),
        (
            cert("{ ads: {}, initial_fetch_timeout: 5s }"),
            ".sds_config.initial_fetch_timeout",
            "0s",
        ),
        (
            cert("{ path_config_source: { path: /x } }"),
            ".sds_config.path_config_source",
            "not supported",
        ),
        (
            with_secrets(&sds_listener(
                "            tls_certificate_sds_secret_configs: [ { name: ca } ]\n",
            )),
            ".tls_certificate_sds_secret_configs[0]",
            "validation_context, not a tls_certificate",
        ),
        (
            format!(
                "{}  secrets:\n  - name: key\n    session_ticket_keys: {{ keys: [ {{ inline_string: x }} ] }}\n",
                sds_listener("            tls_certificate_sds_secret_configs: [ { name: key } ]\n")
            ),
            "static_resources.secrets[0](key).session_ticket_keys",
            "not supported",
        ),
        (
            format!("{}  - name: cert\n    tls_certificate: {{}}\n", with_secrets(HTTP_)),
            "static_resources.secrets[2](cert).tls_certificate",
            "certificate_chain",
        ),
    ];
    for (yaml, path, msg) in cases {
        let e = load(&yaml, Format::Yaml).expect_err(path);
        assert!(e.path.ends_with(path), "{path}: {e}");
        assert!(e.to_string().contains(msg), "{path}: {e}");
    }
}

const HTTP_: &str = include_str!("../../tests/fixtures/http.yaml");

/// An SDS secret read from files is read again when they change; a pair caught
/// mid-rotation (the key not the certificate's) leaves the secret in force.
#[test]
fn sds_secret_files_are_read_again_only_when_usable() {
    let d = pki();
    let dir = d.join("volume");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(d.join("srv.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(d.join("srv.key"), dir.join("key.pem")).unwrap();
    let yaml = format!(
        "{}  - name: sds-grpc\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment: {{ cluster_name: sds-grpc, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ pipe: {{ path: /tmp/sds }} }} }} }} ] }} ] }}\n",
        include_str!("../../tests/fixtures/ads.yaml")
    );
    let dynamic = load(&yaml, Format::Yaml).unwrap().dynamic.unwrap();
    let mut r = Resources::new(&dynamic);
    let secret = serde_json::json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": "cert",
        "tls_certificate": {
            "certificate_chain": {"filename": dir.join("cert.pem")},
            "private_key": {"filename": dir.join("key.pem")},
        },
    });
    let c = r
        .check(
            &dynamic,
            Kind::Secret,
            &super::dynamic_tests::any(secret),
            "",
            &SecretSource::Ads,
        )
        .unwrap();
    r.apply(c);
    assert!(r.watches_files());
    assert!(!r.reread_files(), "nothing changed");
    // The key of another certificate: refused, the secret in force stays.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(d.join("other.key"), dir.join("key.pem")).unwrap();
    assert!(!r.reread_files());
    // Back to a usable pair with the same content: read, nothing to publish.
    std::fs::copy(d.join("srv.key"), dir.join("key.pem")).unwrap();
    assert!(!r.reread_files());
}
