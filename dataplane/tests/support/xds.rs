//! The scripted ADS server (tests/xds/ads_server.py, grpcio + xds-protos), driven over its
//! stdin, and the resources the xDS tests send.
//!
//! Its Python is `ZEROHOP_XDS_PYTHON`, else `target/ci/xds-venv/bin/python3`, the venv
//! `.ci/run` creates from tests/xds/requirements.txt.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("ZEROHOP_XDS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/ci/xds-venv/bin/python3"));
    let ok = Command::new(&p)
        .args(["-c", "import grpc, envoy.service.discovery.v3.ads_pb2_grpc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("ZEROHOP_REQUIRE_PEERS").is_none(),
            "{} with grpcio and xds-protos is required here (ZEROHOP_REQUIRE_PEERS)",
            p.display()
        );
        eprintln!(
            "no xDS test server Python at {} (python3 -m venv target/ci/xds-venv && target/ci/xds-venv/bin/pip install -r tests/xds/requirements.txt): test skipped",
            p.display()
        );
        return None;
    }
    Some(p)
}

/// Everything the server printed, in order.
type Events = Arc<(Mutex<Vec<Value>>, Condvar)>;

pub struct AdsServer {
    child: Child,
    stdin: ChildStdin,
    events: Events,
    pub port: u16,
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AdsServer {
    /// `None` when the server's Python is missing (and peers are not required).
    pub fn start() -> Option<AdsServer> {
        AdsServer::start_on(None)
    }

    /// On a Unix socket at `unix` instead of TCP.
    pub fn start_on(unix: Option<&std::path::Path>) -> Option<AdsServer> {
        let python = python()?;
        let mut cmd = Command::new(python);
        cmd.arg(workspace().join("tests/xds/ads_server.py"));
        if let Some(path) = unix {
            cmd.arg("--unix").arg(path);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ads_server.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let events: Events = Arc::default();
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).expect("server event is JSON");
                sink.0.lock().unwrap().push(v);
                sink.1.notify_all();
            }
        });
        let mut s = AdsServer {
            child,
            stdin,
            events,
            port: 0,
        };
        let e = s.wait(Duration::from_secs(30), |e| e["event"] == "listening");
        s.port = e["port"].as_u64().unwrap() as u16;
        Some(s)
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn command(&mut self, v: Value) {
        writeln!(self.stdin, "{v}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sets the resources of `ty` (cds, eds, lds, rds) at `version`; the server pushes them.
    pub fn set(&mut self, ty: &str, version: &str, resources: Vec<Value>) {
        self.command(json!({"op": "set", "type": ty, "version": version, "resources": resources}));
        self.wait(Duration::from_secs(10), |e| {
            e["event"] == "set" && e["type"] == ty && e["version"] == version
        });
    }

    /// Stops the server for `down` seconds (streams cut), then serves again, same port.
    pub fn restart(&mut self, down: f64) {
        self.command(json!({"op": "restart", "down_seconds": down}));
        self.wait(Duration::from_secs(30), |e| e["event"] == "restarted");
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.0.lock().unwrap().clone()
    }

    /// Waits for the first event (from the start) matching `pred`.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_from(0, timeout, pred)
    }

    /// Waits for an event at index `from` or later matching `pred`.
    pub fn wait_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.events;
        let mut events = lock.lock().unwrap();
        loop {
            if let Some(e) = events.iter().skip(from).find(|e| pred(e)) {
                return e.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no such xDS event within {timeout:?}; events:\n{}",
                events
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            events = cv.wait_timeout(events, left).unwrap().0;
        }
    }

    /// Waits for the client's answer to the response of `ty` at `version`: its ACK (the
    /// request echoing that response's nonce without an error) or NACK. Returns the request.
    pub fn answer(&self, ty: &str, version: &str, timeout: Duration) -> Value {
        self.answer_for(ty, version, None, timeout)
    }

    /// Like [`AdsServer::answer`], for the response of that version that carried `name`
    /// (a by-name type is sent again when the subscription grows).
    pub fn answer_for(
        &self,
        ty: &str,
        version: &str,
        name: Option<&str>,
        timeout: Duration,
    ) -> Value {
        let resp = self.wait(timeout, |e| {
            e["event"] == "response"
                && e["type"] == ty
                && e["version"] == version
                && name.is_none_or(|n| e["names"].as_array().unwrap().iter().any(|x| x == n))
        });
        let nonce = resp["nonce"].clone();
        self.wait(timeout, |e| {
            e["event"] == "request" && e["type"] == ty && e["nonce"] == nonce
        })
    }
}

/// A bootstrap whose ADS server is `ads` (`GRPC` or `DELTA_GRPC`), with an admin port.
pub fn bootstrap(ads: SocketAddr, api: &str, admin_port: u16) -> String {
    format!(
        r#"node: {{ id: xds-test, cluster: test, metadata: {{ purpose: test }} }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }} }}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    grpc_services: [ {{ envoy_grpc: {{ cluster_name: xds }} }} ]
  cds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 5s }}
  lds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 5s }}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: xds
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }} ] }} ]
"#,
        ads.port()
    )
}

/// An EDS cluster (over ADS).
pub fn eds_cluster(name: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
    })
}

/// A STATIC cluster on `endpoints`.
pub fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> Value {
    let mut la = assignment(name, endpoints);
    la.as_object_mut().unwrap().remove("@type");
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": la,
    })
}

/// A ClusterLoadAssignment for `cluster`.
pub fn assignment(cluster: &str, endpoints: &[SocketAddr]) -> Value {
    let lb: Vec<Value> = endpoints
        .iter()
        .map(|a| {
            json!({"endpoint": {"address": {"socket_address": {
                "address": a.ip().to_string(), "port_value": a.port()}}}})
        })
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": cluster,
        "endpoints": [{"lb_endpoints": lb}],
    })
}

/// An HTTP listener on 127.0.0.1:`port` taking route configuration `routes` by RDS.
pub fn http_listener(name: &str, port: u16, routes: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "rds": {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": routes},
                "http_filters": [
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            },
        }]}],
    })
}

/// A route configuration: each `(prefix, cluster)` in order, for any host.
pub fn routes(name: &str, table: &[(&str, &str)]) -> Value {
    let routes: Vec<Value> = table
        .iter()
        .map(
            |(prefix, cluster)| json!({"match": {"prefix": prefix}, "route": {"cluster": cluster}}),
        )
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": name,
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
    })
}

/// `listener` with an HTTP filter of a type neither zerohop nor Envoy implements before its
/// router, marked `is_optional` or not.
pub fn with_unknown_filter(mut listener: Value, optional: bool) -> Value {
    let filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array_mut()
        .unwrap();
    filters.insert(
        0,
        json!({
            "name": "acme.rewrite",
            "is_optional": optional,
            "typed_config": {
                "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                "type_url": "type.googleapis.com/acme.filters.Rewrite",
                "value": {"mode": "strict"},
            },
        }),
    );
    listener
}
