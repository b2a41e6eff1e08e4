//! The admin endpoint, served by control (never by the data plane's shards).
//!
//! `GET /ready` (200 once every shard applied the current generation, else 503),
//! `/stats`, `/stats?format=json`, `/stats/prometheus`, `/config_dump` and `/server_info` in
//! Envoy's shapes, and zerohop's own `/generations` (the generation published and the one each
//! shard applied). One request per connection on a plain thread: it is an operator's tool, not
//! a traffic path.

mod config_dump;
pub mod stats;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use zerohop_proto::shm::Segment;
use zerohop_proto::stats::Counter;
use zerohop_proto::Snapshot;

/// What admin shows besides the segment: the compiled config that is in force.
#[derive(Debug, Default)]
pub struct State {
    pub snapshot: Snapshot,
    pub generation: u64,
    pub node_id: String,
    /// The ADS client's counters, under `dynamic_resources`.
    pub xds: Option<Arc<Mutex<crate::xds::Stats>>>,
    /// DNS discovery, for its clusters' `update_*` counters.
    pub dns: Option<Arc<crate::dns::Discovery>>,
    /// The bootstrap in force, as text, and when it was loaded (`/config_dump`).
    pub bootstrap: Option<crate::config::Source>,
    pub loaded_at: Option<SystemTime>,
    /// `node` of the bootstrap in proto JSON (`/server_info`).
    pub node: serde_json::Value,
    /// When control started (`/server_info` uptime).
    pub started_at: Option<SystemTime>,
    /// `layered_runtime` of the bootstrap in force (`/runtime`).
    pub runtime: crate::config::runtime::Runtime,
    /// Told when `/runtime_modify` changed the admin layer: the configuration is compiled
    /// again with the new values.
    pub runtime_changed: Option<std::sync::mpsc::Sender<()>>,
    /// Admin-layer changes asked for, and the last one a reload has compiled and the shards
    /// applied: `/runtime_modify` answers once its change is in force, as Envoy's does.
    pub runtime_ticket: u64,
    pub runtime_done: u64,
    /// What publishes added, changed and removed (`cluster_manager.*`, `listener_manager.*`).
    pub changes: stats::Changes,
    /// Counter values at the last `POST /reset_counters`.
    pub counter_base: std::collections::HashMap<String, u64>,
}

impl State {
    /// Takes a bootstrap that has just been loaded.
    pub fn loaded(&mut self, boot: &crate::config::Bootstrap) {
        self.node_id = boot.node_id.clone();
        self.node = boot.node.clone();
        self.bootstrap = boot.source.clone();
        self.runtime = boot.runtime.clone();
        self.loaded_at = Some(SystemTime::now());
    }
}

pub type Shared = Arc<Mutex<State>>;

/// Binds `addr` and serves on a background thread. Returns the bound address.
pub fn spawn(addr: SocketAddr, seg: Arc<Segment>, state: Shared) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Err(e) = serve(conn, &seg, &state) {
                    log::debug!("admin connection: {e}");
                }
            }
        })?;
    Ok(bound)
}

fn serve(mut conn: TcpStream, seg: &Segment, state: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 || buf.len() > 16 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(0)])
        .into_owned();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, ctype, body) = match (method, path) {
        ("POST", "/runtime_modify") => runtime_modify(query, state),
        ("POST", "/reset_counters") => stats::reset_counters(seg, state),
        (_, "/runtime_modify" | "/reset_counters") => (
            405,
            "text/plain",
            format!("Method {method} not allowed, POST required.\n"),
        ),
        ("GET", _) => route(target, seg, state),
        _ => (405, "text/plain", "only GET is supported here\n".to_owned()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `key=value` pairs of a query string (`+` and `%XX` decoded).
pub(crate) fn params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(target: &str, seg: &Segment, state: &Shared) -> (u16, &'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some(answer) = stats::route(path, query, seg, state) {
        return answer;
    }
    if path == "/config_dump" {
        let q = config_dump::Query::parse(query);
        let st = state.lock().expect("admin state lock");
        return match config_dump::render(&st, &q) {
            Ok(v) => (200, "application/json", format!("{v:#}\n")),
            Err(e) => (404, "text/plain", e),
        };
    }
    match target {
        "/ready" => {
            let g = seg.current_generation();
            if g > 0 && seg.dataplane_pid() != 0 && seg.active_shards() > 0 && seg.all_applied(g) {
                let recreated: u64 = seg
                    .read_counters()
                    .iter()
                    .map(|s| s[Counter::SegmentRecreated.index()])
                    .sum();
                let mut body = String::from("LIVE\n");
                if recreated > 0 {
                    body.push_str(&format!(
                        "segment: re-created {recreated} time(s) by the data plane after its file was removed or damaged (segment_recreated)\n"
                    ));
                }
                (200, "text/plain", body)
            } else {
                (503, "text/plain", "NOT READY\n".into())
            }
        }
        "/generations" => {
            let st = state.lock().expect("admin state lock");
            (
                200,
                "application/json",
                format!("{:#}\n", generations(&st, seg)),
            )
        }
        "/runtime" => {
            let st = state.lock().expect("admin state lock");
            (
                200,
                "application/json",
                format!("{:#}\n", runtime(&st.runtime)),
            )
        }
        "/server_info" => {
            let st = state.lock().expect("admin state lock");
            (
                200,
                "application/json",
                format!("{:#}\n", server_info(&st, seg)),
            )
        }
        _ => (
            404,
            "text/plain",
            "endpoints: /ready /stats /stats?format=json /stats/prometheus /config_dump /server_info /runtime /runtime_modify (POST) /generations\n".into(),
        ),
    }
}

/// Counters kept by control itself: the ADS client's (under dynamic_resources) and DNS
/// clusters' `cluster.<name>.update_*`.
fn control_lines_of(st: &State) -> Vec<(String, u64)> {
    let (xds, dns) = (st.xds.clone(), st.dns.clone());
    let mut lines = xds
        .map(|x| x.lock().expect("xds stats").lines())
        .unwrap_or_default();
    if let Some(d) = dns {
        lines.extend(crate::dns::stat_lines(&d.stats()));
    }
    lines
}

/// `/runtime`: every key, each layer's value and the one in force, as Envoy prints them.
fn runtime(rt: &crate::config::runtime::Runtime) -> serde_json::Value {
    let entries: serde_json::Map<String, serde_json::Value> = rt
        .keys()
        .into_iter()
        .map(|k| {
            let (layers, last) = rt.lookup(&k);
            let layer_values: Vec<String> = layers
                .iter()
                .map(|v| v.as_ref().map(|e| e.display()).unwrap_or_default())
                .collect();
            let v = serde_json::json!({
                "layer_values": layer_values,
                "final_value": last.map(|e| e.display()).unwrap_or_default(),
            });
            (k, v)
        })
        .collect();
    serde_json::json!({
        "layers": rt.layers.iter().map(|l| &l.name).collect::<Vec<_>>(),
        "entries": entries,
    })
}

/// `POST /runtime_modify?key=value&...`: sets admin-layer keys (an empty value removes one),
/// then the configuration is compiled again with them.
fn runtime_modify(query: &str, state: &Shared) -> (u16, &'static str, String) {
    let st = state.lock().expect("admin state lock");
    if !st.runtime.has_admin_layer() {
        return (503, "text/plain", "No admin layer specified\n".into());
    }
    if st.xds.is_some() {
        return (
            503,
            "text/plain",
            "runtime_modify with dynamic_resources is not supported by zerohop: change the static_layer\n".into(),
        );
    }
    let pairs = params(query);
    if pairs.is_empty() {
        return (
            400,
            "text/plain",
            "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n".into(),
        );
    }
    crate::config::runtime::modify(&pairs);
    let mut st = st;
    st.runtime_ticket += 1;
    let ticket = st.runtime_ticket;
    if let Some(tx) = &st.runtime_changed {
        let _ = tx.send(());
    }
    drop(st);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while state.lock().expect("admin state lock").runtime_done < ticket {
        if std::time::Instant::now() > deadline {
            return (
                200,
                "text/plain",
                "OK (set; the configuration compiled with it is not applied yet)\n".into(),
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (200, "text/plain", "OK\n".into())
}

/// Envoy's `envoy.admin.v3.ServerInfo`: what is true of zerohop in it.
fn server_info(st: &State, seg: &Segment) -> serde_json::Value {
    let g = seg.current_generation();
    let live = g > 0 && seg.dataplane_pid() != 0 && seg.active_shards() > 0 && seg.all_applied(g);
    let uptime = st
        .started_at
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default()
        .as_secs();
    serde_json::json!({
        "version": format!("zerohop/{}/Clean/RELEASE/rustls", env!("CARGO_PKG_VERSION")),
        "state": if live { "LIVE" } else { "PRE_INITIALIZING" },
        "command_line_options": { "concurrency": seg.active_shards(), "mode": "Serve" },
        "node": st.node,
        "uptime_current_epoch": format!("{uptime}s"),
        "uptime_all_epochs": format!("{uptime}s"),
    })
}

/// zerohop's own view of the hand-over: the generation in force, the one each shard applied,
/// and the ADS client's state.
pub fn generations(st: &State, seg: &Segment) -> serde_json::Value {
    let shards: Vec<_> = (0..seg.active_shards())
        .map(|i| {
            let (applied, rejected, _) = seg.shard_ack(i);
            serde_json::json!({ "shard": i, "applied_generation": applied, "rejected_generation": rejected })
        })
        .collect();
    let xds = st.xds.as_ref().map(|x| {
        let x = x.lock().expect("xds stats");
        serde_json::json!({
            "server": x.server,
            "connected": x.connected,
            "initialized": x.initialized,
            "warming": x.warming,
            "last_nack": x.last_nack,
            "resources": x.versions.iter().map(|(k, version, count)| serde_json::json!({
                "type": crate::xds::short(*k), "version": version, "count": count,
            })).collect::<Vec<_>>(),
            "no_op_filters": crate::config::ISTIO_NO_OPS,
        })
    });
    serde_json::json!({
        "node_id": st.node_id,
        "xds": xds,
        "generation": st.generation,
        "published_generation": seg.current_generation(),
        "dataplane_pid": seg.dataplane_pid(),
        "shards": shards,
        "listeners": st.snapshot.listeners.iter().map(|l| &l.name).collect::<Vec<_>>(),
        "clusters": st.snapshot.clusters.len(),
    })
}
