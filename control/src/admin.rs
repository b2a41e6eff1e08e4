//! The admin endpoint, served by control (never by the data plane's shards).
//!
//! `GET /ready` (200 once every shard applied the current generation, else 503),
//! `/stats`, `/stats?format=json`, `/stats/prometheus`, and `/config_dump` (the active
//! configuration with its generation and every shard's applied generation). One request per
//! connection on a plain thread: it is an operator's tool, not a traffic path.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zerohop_proto::shm::Segment;
use zerohop_proto::stats::Counter;
use zerohop_proto::Snapshot;

use crate::stats;

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
    let (status, ctype, body) = if method != "GET" {
        (405, "text/plain", "only GET is supported\n".to_owned())
    } else {
        route(target, seg, state)
    };
    let reason = match status {
        200 => "OK",
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

fn route(target: &str, seg: &Segment, state: &Shared) -> (u16, &'static str, String) {
    let shards = stats::read(seg);
    match target {
        "/ready" => {
            let g = seg.current_generation();
            if g > 0 && seg.dataplane_pid() != 0 && seg.active_shards() > 0 && seg.all_applied(g) {
                let recreated: u64 = shards
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
        "/stats" => {
            let mut out = stats::text(&shards);
            for (name, v) in control_lines(state) {
                out.push_str(&format!("{name}: {v}\n"));
            }
            (200, "text/plain", out)
        }
        "/stats?format=json" => {
            let mut v = stats::json(&shards);
            let own: serde_json::Map<_, _> = control_lines(state)
                .into_iter()
                .map(|(n, v)| (n, v.into()))
                .collect();
            if !own.is_empty() {
                v["control"] = own.into();
            }
            (200, "application/json", format!("{v:#}\n"))
        }
        "/stats/prometheus" => {
            let mut out = stats::prometheus(&shards);
            for (name, v) in control_lines(state) {
                let name: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                out.push_str(&format!(
                    "# TYPE zerohop_{name} gauge\nzerohop_{name} {v}\n"
                ));
            }
            (200, "text/plain; version=0.0.4", out)
        }
        "/config_dump" => {
            let st = state.lock().expect("admin state lock");
            (
                200,
                "application/json",
                format!("{:#}\n", config_dump(&st, seg)),
            )
        }
        _ => (
            404,
            "text/plain",
            "endpoints: /ready /stats /stats?format=json /stats/prometheus /config_dump\n".into(),
        ),
    }
}

/// Counters kept by control itself: the ADS client's (under dynamic_resources) and DNS
/// clusters' `cluster.<name>.update_*`.
fn control_lines(state: &Shared) -> Vec<(String, u64)> {
    let (xds, dns) = {
        let st = state.lock().expect("admin state lock");
        (st.xds.clone(), st.dns.clone())
    };
    let mut lines = xds
        .map(|x| x.lock().expect("xds stats").lines())
        .unwrap_or_default();
    if let Some(d) = dns {
        lines.extend(crate::dns::stat_lines(&d.stats()));
    }
    lines
}

/// The active configuration as JSON, with the generation every shard applied.
pub fn config_dump(st: &State, seg: &Segment) -> serde_json::Value {
    let s = &st.snapshot;
    // The compiled snapshot as it is (issue #13 will give it Envoy's ConfigDump shape).
    let clusters = serde_json::to_value(&s.clusters).unwrap_or_default();
    let listeners = serde_json::to_value(&s.listeners).unwrap_or_default();
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
        "listeners": listeners,
        "clusters": clusters,
    })
}
