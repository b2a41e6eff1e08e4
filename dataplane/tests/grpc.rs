//! gRPC through zerohop over HTTP/2 both ways (issue #15), against Envoy 1.40: the same
//! bootstrap (an HTTP/2 cluster by `explicit_http_config`, another by the deprecated
//! `Cluster.http2_protocol_options`) and the same calls from a grpcio client
//! (tests/grpc/peer.py) to a grpcio server: unary, 3 MiB messages each way, every streaming
//! kind, status and trailing metadata, deadlines, cancellation, 200 calls at once, and the
//! local replies Envoy shapes for gRPC (no healthy upstream, route timeout, no route). Each
//! case's code, details, payload digest and trailing metadata must agree. Also plain HTTP
//! (curl) to an HTTP/2 upstream through both. CI sets ZEROHOP_REQUIRE_PEERS=1, so there a
//! missing Envoy or grpcio fails the test.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use support::envoy;
use support::http::{http_bootstrap, observed, upstream};
use support::Proxy;

/// The grpcio server; ends when dropped (its stdin closes).
struct GrpcServer(Child, u16, Option<BufReader<std::process::ChildStdout>>);

impl GrpcServer {
    /// Sets its health (a named server's): `SERVING` or `NOT_SERVING`.
    fn set(&mut self, status: &str) {
        use std::io::Write;
        let stdin = self.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{status}").unwrap();
        let mut line = String::new();
        self.2.as_mut().unwrap().read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The grpcio server; `name`: it also serves grpc.health.v1 and answers `who` with it.
fn grpc_server(python: &std::path::Path, name: Option<&str>) -> GrpcServer {
    let mut child = Command::new(python)
        .arg(peer_script())
        .arg("server")
        .args(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("grpc server");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port = line.trim().parse().expect("the server's port");
    GrpcServer(child, port, Some(out))
}

fn peer_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/grpc/peer.py")
}

/// The client's suite against `addr`: one line per case.
fn calls(python: &std::path::Path, addr: SocketAddr) -> Vec<String> {
    let out = Command::new(python)
        .arg(peer_script())
        .arg("client")
        .arg(addr.to_string())
        .output()
        .expect("grpc client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().map(str::to_owned).collect()
}

const H2: &str = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n";

fn cluster(name: &str, port: u16, h2: &str) -> String {
    format!(
        "  - name: {name}\n    type: STATIC\n{h2}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n"
    )
}

fn config(grpc_port: u16, deprecated: bool) -> String {
    let h2 = match deprecated {
        true => "    http2_protocol_options: {}\n",
        false => H2,
    };
    let routes = concat!(
        "              - match: { prefix: \"/\", headers: [{ name: x-target, string_match: { exact: dead } }] }\n",
        "                route: { cluster: dead }\n",
        "              - match: { prefix: \"/\", headers: [{ name: x-target, string_match: { exact: slow } }] }\n",
        "                route: { cluster: up, timeout: 0.3s }\n",
        "              - match: { prefix: \"/\", headers: [{ name: x-target, present_match: true, invert_match: true }] }\n",
        "                route: { cluster: up }\n",
    );
    let clusters =
        cluster("up", grpc_port, h2) + &cluster("dead", support::refused_port().port(), h2);
    http_bootstrap("", 0, "          codec_type: AUTO\n", routes, &clusters)
}

#[test]
fn grpc_through_http2_as_envoys() {
    let Some(python) = support::xds::grpc_python() else {
        return;
    };
    let server = grpc_server(&python, None);
    for deprecated in [false, true] {
        let cfg = config(server.1, deprecated);
        let proxy = Proxy::start(&cfg);
        let z = calls(&python, proxy.addr("web"));
        for line in &z {
            eprintln!("[zerohop] {line}");
        }
        assert_eq!(z.len(), 13, "{z:#?}");
        let ok = |case: &str| {
            z.iter().any(|l| {
                l.contains(&format!("\"case\": \"{case}\"")) && l.contains("\"code\": \"OK\"")
            })
        };
        for case in [
            "unary",
            "unary 3 MiB each way",
            "server streaming",
            "client streaming",
            "bidi streaming",
            "200 concurrent",
        ] {
            assert!(ok(case), "{case}: {z:#?}");
        }
        assert!(
            z.iter().any(|l| l.contains("\"got\": \"200/200\"")),
            "{z:#?}"
        );
        assert!(
            z.iter().any(|l| l.contains("\"case\": \"status\"")
                && l.contains("NOT_FOUND")
                && l.contains("x-trailer=t")),
            "{z:#?}"
        );
        if !envoy::available() {
            continue;
        }
        let (_envoy, addr) = envoy::start(&cfg);
        let e = calls(&python, addr);
        for (zl, el) in z.iter().zip(&e) {
            if zl != el {
                eprintln!("differ:\n  zerohop {zl}\n  envoy   {el}");
            }
        }
        assert_eq!(
            z, e,
            "zerohop and Envoy differ (deprecated field: {deprecated})"
        );
    }
}

/// curl's requests (HTTP/1.1 and h2c) to an HTTP/1.1 client-facing listener whose cluster
/// speaks HTTP/2 to an nghttpd-like upstream: here the upstream is zerohop itself, HTTP/2
/// downstream to the describing HTTP/1.1 upstream, so what reaches the end is comparable.
#[test]
fn http_to_an_http2_upstream_as_envoys() {
    let up = upstream("a");
    // The inner hop: codec HTTP2 in front of the describing upstream (the same for both).
    let inner_cfg = http_bootstrap(
        "",
        0,
        "          codec_type: HTTP2\n",
        "              - { match: { prefix: \"/\" }, route: { cluster: a } }\n",
        &cluster("a", up.addr.port(), ""),
    );
    let inner = Proxy::start(&inner_cfg);
    let outer_cfg = |port: u16| {
        http_bootstrap(
            "",
            0,
            "          codec_type: AUTO\n",
            "              - { match: { prefix: \"/\" }, route: { cluster: b } }\n",
            &cluster("b", port, H2),
        )
    };
    let cfg = outer_cfg(inner.addr("web").port());
    let observe = |addr: SocketAddr| -> Vec<String> {
        let mut out = Vec::new();
        for (name, args) in [
            ("h1 get", vec!["-H", "x-shop: 1"]),
            ("h2 get", vec!["--http2-prior-knowledge", "-H", "x-shop: 1"]),
            ("h1 post", vec!["--data-binary", "hello world"]),
            (
                "h1 chunked post",
                vec![
                    "-H",
                    "transfer-encoding: chunked",
                    "--data-binary",
                    "hello world",
                ],
            ),
            (
                "h2 post",
                vec!["--http2-prior-knowledge", "--data-binary", "hello world"],
            ),
        ] {
            let o = Command::new("curl")
                .args(["-s", "-i", "--max-time", "10"])
                .args(&args)
                .arg(format!("http://{addr}/p?q=1"))
                .output()
                .unwrap();
            let r = support::http::parse_curl(&o.stdout);
            let here = addr.to_string();
            out.extend(
                observed(&r)
                    .into_iter()
                    .map(|l| format!("{name}: {}", l.replace(&here, "PROXY"))),
            );
            out.push(format!("{name}: version {}", r.version));
        }
        out
    };
    let z = observe(Proxy::start(&cfg).addr("web"));
    for l in &z {
        eprintln!("[zerohop] {l}");
    }
    assert!(z.iter().any(|l| l == "h1 post: status 200"), "{z:#?}");
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    let e = observe(addr);
    for (zl, el) in z.iter().zip(&e) {
        if zl != el {
            eprintln!("differ:\n  zerohop {zl}\n  envoy   {el}");
        }
    }
    assert_eq!(z, e, "zerohop and Envoy differ");
}

/// Which servers `n` `who` calls through `addr` reached, counted.
fn who(python: &std::path::Path, addr: SocketAddr, n: usize) -> serde_json::Value {
    let out = Command::new(python)
        .arg(peer_script())
        .args(["who", &addr.to_string(), &n.to_string()])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `grpc_health_check` on an HTTP/2 cluster of two grpcio servers: one set NOT_SERVING
/// stops getting calls, and gets them again once SERVING; zerohop and Envoy alike.
#[test]
fn grpc_health_checks_as_envoys() {
    let Some(python) = support::xds::grpc_python() else {
        return;
    };
    let (mut a, b) = (
        grpc_server(&python, Some("a")),
        grpc_server(&python, Some("b")),
    );
    let hc = "    health_checks: [ { timeout: 1s, interval: 0.2s, no_traffic_interval: 0.2s, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: {} } ]\n";
    let clusters = format!(
        "  - name: up\n    type: STATIC\n{H2}{hc}    load_assignment:\n      cluster_name: up\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        a.1, b.1
    );
    let cfg = http_bootstrap(
        "",
        0,
        "          codec_type: AUTO\n",
        "              - { match: { prefix: \"/\" }, route: { cluster: up } }\n",
        &clusters,
    );
    let proxy = Proxy::start(&cfg);
    let envoy = envoy::available().then(|| envoy::start(&cfg));
    let mut addrs = vec![("zerohop", proxy.addr("web"))];
    if let Some((_, addr)) = &envoy {
        addrs.push(("envoy", *addr));
    }
    // Both healthy (the first checks pass within the interval).
    std::thread::sleep(std::time::Duration::from_secs(2));
    for (name, addr) in &addrs {
        let seen = who(&python, *addr, 20);
        assert!(
            seen.get("a").is_some() && seen.get("b").is_some(),
            "{name}: {seen}"
        );
    }
    a.set("NOT_SERVING");
    // Past Envoy's balancer lag behind its own health flags (about a second).
    std::thread::sleep(std::time::Duration::from_secs(2));
    for (name, addr) in &addrs {
        let seen = who(&python, *addr, 20);
        assert_eq!(seen, serde_json::json!({ "b": 20 }), "{name}");
    }
    a.set("SERVING");
    std::thread::sleep(std::time::Duration::from_secs(2));
    for (name, addr) in &addrs {
        let seen = who(&python, *addr, 20);
        assert!(
            seen.get("a").is_some() && seen.get("b").is_some(),
            "{name}: {seen}"
        );
    }
}
