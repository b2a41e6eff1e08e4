//! An HTTP/2 upstream that refuses streams (RST_STREAM REFUSED_STREAM; tests/h2/upstream.py,
//! on PyPI h2), through zerohop and Envoy 1.40 on the same bootstrap: without a retry policy
//! the client gets Envoy's 503 "remote refused stream reset"; under `retry_on:
//! refused-stream` a refused stream goes again (and answers once the upstream takes it), and
//! one refused every time ends in Envoy's "retried and the latest reset reason". Status and
//! body must agree for each request.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use support::envoy;
use support::http::http_bootstrap;
use support::Proxy;

struct H2Upstream(Child, u16);

impl Drop for H2Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn h2_upstream(python: &std::path::Path) -> H2Upstream {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/h2/upstream.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg("refuse")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("upstream.py");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the upstream's port");
    H2Upstream(child, port)
}

fn observe(addr: SocketAddr) -> Vec<String> {
    ["/refused", "/retry/refused", "/retry/once", "/plain"]
        .iter()
        .map(|path| {
            let o = Command::new("curl")
                .args(["-s", "-i", "--max-time", "10"])
                .arg(format!("http://{addr}{path}"))
                .output()
                .unwrap();
            let r = support::http::parse_curl(&o.stdout);
            format!("{path}: {} {:?}", r.status, r.text())
        })
        .collect()
}

#[test]
fn refused_streams_as_envoy_treats_them() {
    let Some(python) = support::xds::grpc_python() else {
        return;
    };
    let up = h2_upstream(&python);
    let routes = concat!(
        "              - match: { prefix: \"/retry\" }\n",
        "                route: { cluster: up, retry_policy: { retry_on: refused-stream, num_retries: 1 } }\n",
        "              - { match: { prefix: \"/\" }, route: { cluster: up } }\n",
    );
    let cluster = format!(
        "  - name: up\n    type: STATIC\n    http2_protocol_options: {{}}\n    load_assignment:\n      cluster_name: up\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        up.1
    );
    let cfg = http_bootstrap("", 0, "", routes, &cluster);
    let proxy = Proxy::start(&cfg);
    let z = observe(proxy.addr("web"));
    for l in &z {
        eprintln!("[zerohop] {l}");
    }
    assert!(z[0].starts_with("/refused: 503"), "{z:#?}");
    assert!(z[2].starts_with("/retry/once: 200"), "{z:#?}");
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    let e = observe(addr);
    for l in &e {
        eprintln!("[envoy] {l}");
    }
    assert_eq!(z, e, "zerohop and Envoy differ");
}
