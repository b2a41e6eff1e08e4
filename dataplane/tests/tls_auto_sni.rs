//! Upstream `auto_sni`, `auto_san_validation` and `override_auto_sni_header` (issue #16)
//! against Envoy 1.40: a cluster without a fixed `sni` sends each request's host (without
//! its port; none for an IP address) and checks the server's certificate against it. The
//! backend is a zerohop TLS listener whose tls_inspector chooses a chain by SNI and says
//! which; the pools keep connections made for one name away from requests for another.
//! CI sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::envoy;
use support::http::{static_cluster, ROUTER};
use support::tls::{server_tls, Pki};
use support::Proxy;
use zerohop_proto::stats::Counter;

/// The backend: one chain per SNI it knows, answering with the name it chose.
fn backend(pki: &Pki) -> Proxy {
    let chain = |server_names: &str, body: &str| {
        format!(
            r#"    - filter_chain_match: {server_names}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: b
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }}
          http_filters:
{ROUTER}{}"#,
            server_tls(pki, "", "")
        )
    };
    let cfg = format!(
        r#"static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}
    filter_chains:
{}{}{}{}  clusters: []
"#,
        chain("{ server_names: [backend.test] }", "sni backend.test"),
        chain("{ server_names: [other.test] }", "sni other.test"),
        chain("{ server_names: [localhost] }", "sni localhost"),
        chain("{ transport_protocol: tls }", "no sni"),
    );
    Proxy::start(&cfg)
}

fn front(pki: &Pki, port: u16) -> String {
    let cluster = format!(
        r#"{}    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http_protocol_options: {{}} }}
        upstream_http_protocol_options: {{ auto_sni: true, auto_san_validation: true, override_auto_sni_header: x-sni }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          validation_context: {{ trusted_ca: {{ filename: {} }} }}
"#,
        static_cluster("b", port),
        pki.path("ca.pem"),
    );
    support::http::http_bootstrap(
        &support::http::admin_prefix(0),
        0,
        "",
        "              - match: { prefix: \"/\" }\n                route: { cluster: b }\n",
        &cluster,
    )
}

fn run(addr: SocketAddr, backend_port: u16) -> Vec<String> {
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("backend.test", vec![]),
        ("localhost:PORT", vec![]),
        ("other.test", vec![]),
        ("127.0.0.1", vec![]),
        ("backend.test", vec!["x-sni: localhost".into()]),
        ("backend.test", vec![]),
    ];
    cases
        .iter()
        .map(|(host, extra)| {
            let h = host.replace("PORT", &backend_port.to_string());
            let mut c = Command::new("curl");
            c.args(["-s", "--max-time", "10", "-w", " %{http_code}"])
                .args(["-H", &format!("host: {h}")]);
            for x in extra {
                c.args(["-H", x]);
            }
            let out = c.arg(format!("http://{addr}/")).output().expect("curl");
            format!("{host} {extra:?}: {}", String::from_utf8_lossy(&out.stdout))
        })
        .collect()
}

#[test]
fn auto_sni_and_san_validation_as_envoys() {
    let pki = Pki::new("autosni");
    let back = backend(&pki);
    let port = back.addr("web").port();
    let cfg = front(&pki, port);
    let proxy = Proxy::start(&cfg);
    let z = run(proxy.addr("web"), port);
    for l in &z {
        eprintln!("[zerohop] {l}");
    }
    assert!(z[0].ends_with("sni backend.test 200"), "{z:#?}");
    assert!(z[2].ends_with(" 503"), "{z:#?}");
    assert!(proxy.total(Counter::UpstreamSslFailVerifySan) >= 1);
    if !envoy::available() {
        return;
    }
    let admin = envoy::free_port();
    let ecfg = cfg.replacen("port_value: 0", &format!("port_value: {admin}"), 1);
    let (_envoy, addr) = envoy::start(&ecfg);
    let e = run(addr, port);
    support::same("auto_sni", &z, &e);
    let stats = support::admin::get(admin, "/stats").unwrap_or_default();
    let san = support::admin::stat(&stats, "cluster.b.ssl.fail_verify_san");
    assert_eq!(
        proxy.total(Counter::UpstreamSslFailVerifySan),
        san,
        "fail_verify_san"
    );
}
