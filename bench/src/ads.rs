//! A driver for the scripted ADS server (tests/xds/ads_server.py): starts it, sets the
//! resources it serves, and waits on the events it prints (one JSON object per line).
//!
//! Shared by `zerohop-bench xds` and the data plane's xDS tests (which include this file
//! with `#[path]`), so the two drive the server the same way.
#![allow(dead_code)] // Reason: each of the two users calls a different part of it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The repository root (tests/xds/ lives there).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `ZEROHOP_XDS_PYTHON`, else the venv `.ci/run` creates.
pub fn default_python() -> PathBuf {
    std::env::var_os("ZEROHOP_XDS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/ci/xds-venv/bin/python3"))
}

/// True when `python` can import what the server needs.
pub fn python_ready(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import grpc, envoy.service.discovery.v3.ads_pb2_grpc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A bootstrap whose ADS server (`api`: `GRPC` or `DELTA_GRPC`) is at `server`, an Envoy
/// `Address` in YAML (see [`socket_address`], or `{ pipe: { path: ... } }`), with an admin
/// port and one `initial_fetch_timeout` (e.g. `5s`, `0s` for ever) for CDS and LDS. The
/// same file runs zerohop and Envoy.
pub fn bootstrap(
    node: &str,
    server: &str,
    api: &str,
    admin_port: u16,
    initial_fetch_timeout: &str,
) -> String {
    format!(
        r#"node: {{ id: {node}, cluster: {node}, metadata: {{ purpose: test }} }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }} }}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    grpc_services: [ {{ envoy_grpc: {{ cluster_name: xds }} }} ]
  cds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: {initial_fetch_timeout} }}
  lds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: {initial_fetch_timeout} }}
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
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {server} }} }} ] }} ]
"#
    )
}

/// `addr` as an Envoy `Address` in YAML.
pub fn socket_address(addr: SocketAddr) -> String {
    format!(
        "{{ socket_address: {{ address: {}, port_value: {} }} }}",
        addr.ip(),
        addr.port()
    )
}

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
    /// Starts the server on 127.0.0.1 port 0, or on the Unix socket `unix`.
    pub fn start(python: &Path, unix: Option<&Path>) -> Result<AdsServer, String> {
        let mut cmd = Command::new(python);
        cmd.arg(workspace().join("tests/xds/ads_server.py"));
        if let Some(path) = unix {
            cmd.arg("--unix").arg(path);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", python.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let events: Events = Arc::default();
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.0.lock().unwrap().push(v);
                    sink.1.notify_all();
                }
            }
        });
        let mut ads = AdsServer {
            child,
            stdin,
            events,
            port: 0,
        };
        let e = ads.wait(Duration::from_secs(30), |e| e["event"] == "listening")?;
        ads.port = e["port"].as_u64().unwrap_or(0) as u16;
        Ok(ads)
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn command(&mut self, v: Value) -> Result<(), String> {
        writeln!(self.stdin, "{v}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())
    }

    /// Sets the resources of `ty` (cds, eds, lds, rds) at `version`; the server pushes them
    /// to every client that subscribes.
    pub fn set(&mut self, ty: &str, version: &str, resources: Vec<Value>) -> Result<(), String> {
        self.command(json!({"op": "set", "type": ty, "version": version, "resources": resources}))?;
        self.wait(Duration::from_secs(120), |e| {
            e["event"] == "set" && e["type"] == ty && e["version"] == version
        })
        .map(drop)
    }

    /// Stops the server for `down` seconds (streams cut), then serves again, same port.
    pub fn restart(&mut self, down: f64) -> Result<(), String> {
        self.command(json!({"op": "restart", "down_seconds": down}))?;
        self.wait(Duration::from_secs(30), |e| e["event"] == "restarted")
            .map(drop)
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.0.lock().unwrap().clone()
    }

    /// The first event (from the start) matching `pred`.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value, String> {
        self.wait_from(0, timeout, pred)
    }

    /// The first event at index `from` or later matching `pred`.
    pub fn wait_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.events;
        let mut events = lock.lock().unwrap();
        loop {
            if let Some(e) = events.iter().skip(from).find(|e| pred(e)) {
                return Ok(e.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seen: Vec<String> = events.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "no such xDS event within {timeout:?}; events:\n{}",
                    seen.join("\n")
                ));
            }
            events = cv.wait_timeout(events, left).unwrap().0;
        }
    }

    /// The response of `ty` at `version` for which `carried` holds (given its resource
    /// names), and the client's answer to it (the request echoing its nonce: an ACK, or a
    /// NACK when `error` is set).
    pub fn exchange(
        &self,
        ty: &str,
        version: &str,
        carried: impl Fn(&[Value]) -> bool,
        timeout: Duration,
    ) -> Result<(Value, Value), String> {
        let resp = self.wait(timeout, |e| {
            e["event"] == "response"
                && e["type"] == ty
                && e["version"] == version
                && e["names"].as_array().is_some_and(|n| carried(n))
        })?;
        let nonce = resp["nonce"].clone();
        let answer = self.wait(timeout, |e| {
            e["event"] == "request" && e["type"] == ty && e["nonce"] == nonce
        })?;
        Ok((resp, answer))
    }
}
