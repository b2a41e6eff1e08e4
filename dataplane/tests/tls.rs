//! TLS (issue #16, transport sockets) against Envoy 1.40: the same bootstraps and the same
//! clients through both. Termination for HTTP/1.1 and HTTP/2 (by ALPN); mutual TLS with a
//! SPIFFE SAN matcher, and the clients each refuses (no certificate, the wrong SAN, another
//! CA) with the `ssl.*` counter Envoy increments; origination to TLS upstreams (SNI, the
//! server's chain and SAN checked, a client certificate, HTTP/2 by ALPN); and the
//! tls_inspector's SNI and transport-protocol chain match, passthrough, session resumption,
//! CRLs and a tcp_proxy behind TLS. Certificates are made by `support::tls` (rcgen), the
//! clients are curl and openssl. RBAC's authenticated principals are in `rbac.rs`, the
//! testssl.sh scan in `tls_scan.rs`. CI sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::envoy;
use support::http::{static_cluster, upstream, ROUTER};
use support::same;
use support::tls::{bootstrap, curl, server_tls, Pki};
use support::Proxy;
use zerohop_proto::stats::Counter;

#[test]
fn termination_as_envoys() {
    let pki = Pki::new("term");
    let up = upstream("a");
    let routes =
        "              - match: { prefix: \"/\" }\n                route: { cluster: a }\n";
    let cfg = bootstrap(
        &server_tls(&pki, "", ""),
        routes,
        &static_cluster("a", up.addr.port()),
    );
    let run = |addr: SocketAddr| {
        let mut out = Vec::new();
        for (name, args) in [
            ("http/1.1", vec!["--http1.1"]),
            ("h2 by ALPN", vec!["--http2"]),
            ("TLS 1.2 only", vec!["--http1.1", "--tls-max", "1.2"]),
            (
                "post",
                vec!["--http2", "--data-binary", "hello over TLS", "-H", "x-a: 1"],
            ),
        ] {
            out.extend(
                curl(&pki, addr, "/p?q=1", &args)
                    .into_iter()
                    .map(|l| format!("{name}: {l}")),
            );
        }
        out
    };
    let proxy = Proxy::start(&cfg);
    let z = run(proxy.addr("web"));
    for l in &z {
        eprintln!("[zerohop] {l}");
    }
    assert!(z.iter().any(|l| l == "http/1.1: HTTP/1.1 200"), "{z:#?}");
    assert!(z.iter().any(|l| l == "h2 by ALPN: HTTP/2 200"), "{z:#?}");
    assert!(
        z.iter()
            .any(|l| l.contains("x-forwarded-proto: [\"https\"]")),
        "the upstream is told the client used TLS: {z:#?}"
    );
    assert_eq!(proxy.total(Counter::SslHandshake), 4);
    assert_eq!(proxy.total(Counter::SslNoCertificate), 4);
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    same("termination", &z, &run(addr));
}

#[test]
fn mutual_tls_spiffe_as_envoys() {
    let pki = Pki::new("mtls");
    let validation = format!(
        r#"            validation_context:
              trusted_ca: {{ filename: {} }}
              crl: {{ filename: {} }}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {{ prefix: "spiffe://cluster.local/ns/a/" }}
"#,
        pki.path("ca.pem"),
        pki.path("crl.pem")
    );
    let tls = server_tls(
        &pki,
        "          require_client_certificate: true\n",
        &validation,
    );
    let routes = "              - match: { prefix: \"/\" }\n                direct_response: { status: 200, body: { inline_string: \"in\" } }\n";
    // Envoy's admin, for its ssl counters.
    let admin_port = envoy::free_port();
    let cfg = format!(
        "{}{}",
        support::http::admin_prefix(admin_port),
        bootstrap(&tls, routes, "")
    );
    let cases = |addr: SocketAddr| {
        let mut out = Vec::new();
        for (name, cert) in [
            ("allowed SPIFFE id", Some("client")),
            ("other SPIFFE id", Some("intruder")),
            ("another CA", Some("stranger")),
            ("revoked by the CRL", Some("revoked")),
            ("no certificate", None),
        ] {
            let (c, k);
            let mut args = vec!["--http1.1"];
            if let Some(n) = cert {
                (c, k) = (pki.path(&format!("{n}.pem")), pki.path(&format!("{n}.key")));
                args.extend(["--cert", &c, "--key", &k]);
            }
            let r = curl(&pki, addr, "/", &args);
            out.push(format!("{name}: {}", r[0]));
        }
        out
    };
    let proxy = Proxy::start(&cfg.replace(&admin_port.to_string(), "0"));
    let z = cases(proxy.addr("web"));
    eprintln!("[zerohop] {z:#?}");
    assert_eq!(z[0], "allowed SPIFFE id: HTTP/1.1 200");
    assert!(
        z[1..].iter().all(|l| l.ends_with("failed: no response")),
        "{z:#?}"
    );
    let counts = [
        ("fail_verify_san", Counter::SslFailVerifySan),
        ("fail_verify_error", Counter::SslFailVerifyError),
        ("no_certificate", Counter::SslNoCertificate),
        ("fail_verify_no_cert", Counter::SslFailVerifyNoCert),
        ("connection_error", Counter::SslConnectionError),
        ("handshake", Counter::SslHandshake),
    ];
    let zc: Vec<String> = counts
        .iter()
        .map(|(n, c)| format!("{n} {}", proxy.total(*c)))
        .collect();
    eprintln!("[zerohop] {zc:?}");
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    same("mutual TLS", &z, &cases(addr));
    let stats = support::admin::get(admin_port, "/stats").unwrap_or_default();
    let ec: Vec<String> = counts
        .iter()
        .map(|(n, _)| {
            let v: u64 = stats
                .lines()
                .filter(|l| l.starts_with("listener.") && l.contains(&format!(".ssl.{n}:")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            format!("{n} {v}")
        })
        .collect();
    assert_eq!(zc, ec, "the ssl counters differ from Envoy's");
}

/// A TLS backend: zerohop terminating mutual TLS, answering who it is.
fn backend(pki: &Pki) -> Proxy {
    let validation = format!(
        "            validation_context:\n              trusted_ca: {{ filename: {} }}\n",
        pki.path("ca.pem")
    );
    let tls = server_tls(
        pki,
        "          require_client_certificate: true\n",
        &validation,
    );
    let routes = "              - match: { prefix: \"/\" }\n                direct_response: { status: 200, body: { inline_string: \"backend over mTLS\" } }\n";
    Proxy::start(&bootstrap(&tls, routes, ""))
}

/// A cluster `b` to `port` over TLS: SNI, the CA, a SAN matcher and a client certificate.
fn tls_cluster(pki: &Pki, port: u16, san: &str, ca: &str, http2: bool) -> String {
    let h2 = match http2 {
        true => "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n",
        false => "",
    };
    let alpn = if http2 { "[h2]" } else { "[http/1.1]" };
    format!(
        r#"{}{h2}    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.test
        common_tls_context:
          alpn_protocols: {alpn}
          tls_certificates:
          - certificate_chain: {{ filename: {} }}
            private_key: {{ filename: {} }}
          validation_context:
            trusted_ca: {{ filename: {} }}
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {{ exact: "{san}" }}
"#,
        static_cluster("b", port),
        pki.path("client.pem"),
        pki.path("client.key"),
        pki.path(ca),
    )
}

#[test]
fn origination_as_envoys() {
    let pki = Pki::new("orig");
    let back = backend(&pki);
    let port = back.addr("web").port();
    let good = "spiffe://cluster.local/ns/default/sa/backend";
    let routes =
        "              - match: { prefix: \"/\" }\n                route: { cluster: b }\n";
    let cases = [
        ("HTTP/1.1, server verified", good, "ca.pem", false),
        ("HTTP/2 by ALPN, server verified", good, "ca.pem", true),
        (
            "server SAN mismatch",
            "spiffe://cluster.local/ns/x/sa/y",
            "ca.pem",
            false,
        ),
        ("server from another CA", good, "other-ca.pem", false),
    ];
    for (name, san, ca, h2) in cases {
        let cfg =
            support::http::http_bootstrap("", 0, "", routes, &tls_cluster(&pki, port, san, ca, h2));
        let get = |addr: SocketAddr| {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "10",
                ])
                .arg(format!("http://{addr}/x"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let proxy = Proxy::start(&cfg);
        let z = get(proxy.addr("web"));
        eprintln!("[zerohop] {name}: {z}");
        match name.contains("verified") {
            true => assert_eq!(z, "200", "{name}"),
            false => {
                assert_eq!(z, "503", "{name}");
                let c = match name.contains("SAN") {
                    true => Counter::UpstreamSslFailVerifySan,
                    false => Counter::UpstreamSslFailVerifyError,
                };
                assert!(proxy.total(c) >= 1, "{name}: {c:?}");
            }
        }
        if envoy::available() {
            let (_envoy, addr) = envoy::start(&cfg);
            assert_eq!(z, get(addr), "zerohop and Envoy differ: {name}");
        }
    }
}

#[test]
fn tls_inspector_chooses_chains_as_envoys() {
    let pki = Pki::new("sni");
    let chain = |server_names: &str, body: &str, tls: bool| {
        let direct = format!(
            r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {body}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }}
          http_filters:
{ROUTER}"#
        );
        let tls = if tls {
            server_tls(&pki, "", "")
        } else {
            String::new()
        };
        format!("    - filter_chain_match: {server_names}\n      filters:\n{direct}{tls}")
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
        chain("{ server_names: [a.example.com] }", "chain-a", true),
        chain("{ server_names: [\"*.example.com\"] }", "wildcard", true),
        chain("{ transport_protocol: tls }", "other-tls", true),
        chain("{ transport_protocol: raw_buffer }", "plaintext", false),
    );
    let run = |addr: SocketAddr| {
        let mut out = Vec::new();
        for host in ["a.example.com", "b.example.com", "localhost"] {
            let o = Command::new("curl")
                .args(["-s", "-k", "--max-time", "10"])
                .args(["--resolve", &format!("{host}:{}:127.0.0.1", addr.port())])
                .arg(format!("https://{host}:{}/", addr.port()))
                .output()
                .unwrap();
            out.push(format!("{host}: {}", String::from_utf8_lossy(&o.stdout)));
        }
        let o = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://{addr}/"))
            .output()
            .unwrap();
        out.push(format!("plaintext: {}", String::from_utf8_lossy(&o.stdout)));
        out
    };
    let proxy = Proxy::start(&cfg);
    let z = run(proxy.addr("web"));
    eprintln!("[zerohop] {z:#?}");
    assert_eq!(
        z,
        [
            "a.example.com: chain-a",
            "b.example.com: wildcard",
            "localhost: other-tls",
            "plaintext: plaintext"
        ]
    );
    if envoy::available() {
        let (_envoy, addr) = envoy::start(&cfg);
        same("tls_inspector", &z, &run(addr));
    }
}

/// Whether openssl's second connection resumed the first one's session.
fn resumed(addr: SocketAddr, pki: &Pki) -> Vec<String> {
    let sess = pki.dir.join(format!("session-{}", addr.port()));
    let _ = std::fs::remove_file(&sess);
    let mut out = Vec::new();
    for flag in ["-sess_out", "-sess_in"] {
        // No session saved (the server offered none): the second connection has none to use.
        let (flag, file) = match flag == "-sess_in" && !sess.exists() {
            true => ("-sess_in", String::new()),
            false => (flag, format!("{flag} {}", sess.display())),
        };
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf 'GET / HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n' | timeout 10 openssl s_client -connect {addr} -servername localhost -CAfile {} {file} -ign_eof 2>/dev/null",
                pki.path("ca.pem"),
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let kind = text
            .lines()
            .find(|l| l.starts_with("New,") || l.starts_with("Reused,"))
            .map(|l| l.split(',').next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| "no handshake".to_owned());
        out.push(format!(
            "{flag}: {kind}, answered {}",
            text.contains("resumable")
        ));
    }
    out
}

#[test]
fn session_resumption_as_envoys() {
    let pki = Pki::new("resume");
    let routes = "              - match: { prefix: \"/\" }\n                direct_response: { status: 200, body: { inline_string: \"resumable\" } }\n";
    for (extra, want) in [
        ("", "Reused"),
        (
            "          disable_stateless_session_resumption: true\n          disable_stateful_session_resumption: true\n",
            "New",
        ),
    ] {
        let cfg = bootstrap(&server_tls(&pki, extra, ""), routes, "");
        let proxy = Proxy::start(&cfg);
        let z = resumed(proxy.addr("web"), &pki);
        eprintln!("[zerohop] {z:?}");
        assert_eq!(z[1], format!("-sess_in: {want}, answered true"), "{extra}");
        assert_eq!(
            proxy.total(Counter::SslSessionReused),
            u64::from(want == "Reused")
        );
        if envoy::available() {
            let (_envoy, addr) = envoy::start(&cfg);
            same("session resumption", &z, &resumed(addr, &pki));
        }
    }
}

#[test]
fn passthrough_by_sni_as_envoys() {
    let pki = Pki::new("pass");
    let routes = "              - match: { prefix: \"/\" }\n                direct_response: { status: 200, body: { inline_string: \"the backend's own TLS\" } }\n";
    let back = Proxy::start(&bootstrap(&server_tls(&pki, "", ""), routes, ""));
    let port = back.addr("web").port();
    let cfg = format!(
        r#"static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}
    filter_chains:
    - filter_chain_match: {{ server_names: [backend.test] }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: pass
          cluster: b
  clusters:
{}"#,
        static_cluster("b", port)
    );
    let run = |addr: SocketAddr| {
        let mut out = Vec::new();
        for host in ["backend.test", "other.test"] {
            let o = Command::new("curl")
                .args(["-s", "--max-time", "10", "--cacert", &pki.path("ca.pem")])
                .args(["--resolve", &format!("{host}:{}:127.0.0.1", addr.port())])
                .arg(format!("https://{host}:{}/", addr.port()))
                .output()
                .unwrap();
            out.push(format!(
                "{host}: exit {:?} {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stdout)
            ));
        }
        out
    };
    let proxy = Proxy::start(&cfg);
    let z = run(proxy.addr("web"));
    eprintln!("[zerohop] {z:?}");
    assert_eq!(z[0], "backend.test: exit Some(0) the backend's own TLS");
    assert_eq!(proxy.total(Counter::NoFilterChainMatch), 1, "other.test");
    if envoy::available() {
        let (_envoy, addr) = envoy::start(&cfg);
        same("passthrough", &z, &run(addr));
    }
}

/// A tcp_proxy behind a TLS transport socket terminates TLS and proxies the plaintext.
#[test]
fn tcp_proxy_terminates_tls_as_envoys() {
    let pki = Pki::new("tcp");
    let up = upstream("a");
    let cfg = format!(
        r#"static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: a
{}  clusters:
{}"#,
        server_tls(&pki, "", "").replace("[h2, http/1.1]", "[http/1.1]"),
        static_cluster("a", up.addr.port())
    );
    let body = pki.dir.join("body.bin");
    std::fs::write(&body, "x".repeat(300_000)).unwrap();
    let at_body = format!("@{}", body.display());
    let run = |addr: SocketAddr| {
        let mut out = curl(&pki, addr, "/t", &["--http1.1"]);
        out.extend(curl(
            &pki,
            addr,
            "/post",
            &["--http1.1", "--data-binary", &at_body],
        ));
        out
    };
    let proxy = Proxy::start(&cfg);
    let z = run(proxy.addr("web"));
    eprintln!("[zerohop] {z:#?}");
    assert_eq!(z[0], "HTTP/1.1 200");
    assert!(
        z.iter()
            .any(|l| l.contains("upstream saw x-forwarded-proto: []")),
        "bytes pass as sent: no connection manager adds headers: {z:#?}"
    );
    if envoy::available() {
        let (_envoy, addr) = envoy::start(&cfg);
        same("tcp_proxy behind TLS", &z, &run(addr));
    }
}
