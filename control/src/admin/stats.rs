//! `/stats`, `/stats?format=json` and `/stats/prometheus`, with Envoy's parameters
//! (`filter`, `usedonly`, `type`), and the facts control adds to the shards' stats: cluster
//! membership, the cluster and listener managers' counts, `server.*`, and the xDS and DNS
//! clients' counters.

use std::collections::HashMap;

use zerohop_proto::shm::Segment;
use zerohop_proto::stats::Counter;

use super::{params, Shared, State};
use crate::stats::{self, Facts, Select};

/// Counts of what publishes changed, by name (Envoy's `cluster_manager.cluster_added`, ...).
#[derive(Clone, Copy, Debug, Default)]
pub struct Changes {
    pub cluster_added: u64,
    pub cluster_modified: u64,
    pub cluster_removed: u64,
    pub listener_added: u64,
    pub listener_modified: u64,
    pub listener_removed: u64,
}

impl Changes {
    /// Counts what `next` adds, changes and removes against `prev`, by name. (A name keeps
    /// its stat place, so the place never makes a resource look changed.)
    pub fn record(&mut self, prev: &zerohop_proto::Snapshot, next: &zerohop_proto::Snapshot) {
        let (a, m, r) = diff(
            prev.clusters.iter().map(|c| (c.name.as_str(), c)).collect(),
            next.clusters.iter().map(|c| (c.name.as_str(), c)).collect(),
        );
        self.cluster_added += a;
        self.cluster_modified += m;
        self.cluster_removed += r;
        let (a, m, r) = diff(
            prev.listeners
                .iter()
                .map(|l| (l.name.as_str(), l))
                .collect(),
            next.listeners
                .iter()
                .map(|l| (l.name.as_str(), l))
                .collect(),
        );
        self.listener_added += a;
        self.listener_modified += m;
        self.listener_removed += r;
    }
}

/// `(added, modified, removed)` between two sets of named resources.
fn diff<T: PartialEq>(old: HashMap<&str, &T>, new: HashMap<&str, &T>) -> (u64, u64, u64) {
    let added = new.keys().filter(|k| !old.contains_key(*k)).count() as u64;
    let removed = old.keys().filter(|k| !new.contains_key(*k)).count() as u64;
    let modified = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
        .count() as u64;
    (added, modified, removed)
}

/// Serves one of the three stats paths; `None` when `path` is not one.
pub fn route(
    path: &str,
    query: &str,
    seg: &Segment,
    state: &Shared,
) -> Option<(u16, &'static str, String)> {
    let mut ps = params(query);
    let format = ps
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.clone());
    ps.retain(|(k, _)| k != "format");
    let kind = match (path, format.as_deref()) {
        ("/stats", None | Some("text")) => "text",
        ("/stats", Some("json")) => "json",
        ("/stats", Some("prometheus")) | ("/stats/prometheus", _) => "prometheus",
        ("/stats", Some(other)) => {
            return Some((
                400,
                "text/plain",
                format!("usage: /stats?format=json|prometheus|text ({other:?} is not a format)\n"),
            ));
        }
        _ => return None,
    };
    let sel = match Select::parse(&ps) {
        Ok(s) => s,
        Err(e) => return Some((400, "text/plain", format!("{e}\n"))),
    };
    let (snap, facts) = {
        let st = state.lock().expect("admin state lock");
        (st.snapshot.clone(), facts(&st, seg))
    };
    Some(match kind {
        "json" => (
            200,
            "application/json",
            format!("{:#}\n", stats::json(seg, &snap, &facts, &sel)),
        ),
        "prometheus" => (
            200,
            "text/plain; version=0.0.4",
            stats::prometheus(seg, &snap, &facts, &sel),
        ),
        _ => (200, "text/plain", stats::text(seg, &snap, &facts, &sel)),
    })
}

/// What control knows: membership, managers, server, xDS and DNS.
pub fn facts(st: &State, seg: &Segment) -> Facts {
    let mut lines: Vec<(String, u64, bool)> = Vec::new();
    let snap = &st.snapshot;
    for c in &snap.clusters {
        let healthy = c
            .endpoints
            .iter()
            .filter(|e| !e.eds_unhealthy && !e.health_slot.is_some_and(|s| seg.host_failed(s)))
            .count() as u64;
        let name = &c.name;
        lines.push((
            format!("cluster.{name}.membership_total"),
            c.endpoints.len() as u64,
            true,
        ));
        lines.push((format!("cluster.{name}.membership_healthy"), healthy, true));
        lines.push((format!("cluster.{name}.membership_degraded"), 0, true));
        lines.push((format!("cluster.{name}.membership_excluded"), 0, true));
    }
    let ch = st.changes;
    let warming = st
        .xds
        .as_ref()
        .map(|x| x.lock().expect("xds stats").warming as u64)
        .unwrap_or(0);
    let counters = seg.read_counters();
    let sum = |c: Counter| counters.iter().map(|s| s[c.index()]).sum::<u64>();
    let shards = seg.active_shards() as u64;
    lines.extend([
        (
            "cluster_manager.active_clusters".into(),
            snap.clusters.len() as u64,
            true,
        ),
        ("cluster_manager.warming_clusters".into(), warming, true),
        (
            "cluster_manager.cluster_added".into(),
            ch.cluster_added,
            false,
        ),
        (
            "cluster_manager.cluster_modified".into(),
            ch.cluster_modified,
            false,
        ),
        (
            "cluster_manager.cluster_removed".into(),
            ch.cluster_removed,
            false,
        ),
        (
            "listener_manager.total_listeners_active".into(),
            snap.listeners.len() as u64,
            true,
        ),
        (
            "listener_manager.listener_added".into(),
            ch.listener_added,
            false,
        ),
        (
            "listener_manager.listener_modified".into(),
            ch.listener_modified,
            false,
        ),
        (
            "listener_manager.listener_removed".into(),
            ch.listener_removed,
            false,
        ),
        // Envoy counts a listener made on each worker.
        (
            "listener_manager.listener_create_success".into(),
            (ch.listener_added + ch.listener_modified) * shards,
            false,
        ),
        (
            "listener_manager.listener_create_failure".into(),
            sum(Counter::ListenerCreateFailure),
            false,
        ),
    ]);
    let g = seg.current_generation();
    let live = g > 0 && seg.dataplane_pid() != 0 && shards > 0 && seg.all_applied(g);
    let pid = seg.dataplane_pid();
    let (rss_anon, rss) = memory(pid);
    lines.extend([
        ("server.live".into(), u64::from(live), true),
        // Envoy's server.state: 0 LIVE, 2 PRE_INITIALIZING.
        ("server.state".into(), if live { 0 } else { 2 }, true),
        ("server.concurrency".into(), shards, true),
        ("server.uptime".into(), uptime(pid), true),
        ("server.memory_allocated".into(), rss_anon, true),
        ("server.memory_heap_size".into(), rss_anon, true),
        ("server.memory_physical_size".into(), rss, true),
        ("server.hot_restart_epoch".into(), 0, true),
    ]);
    // The access logs' drain (control/src/accesslog): records written, dropped by a full
    // ring, invalid, and failed writes.
    let al = &crate::accesslog::COUNTS;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    lines.extend([
        (
            "zerohop.access_log.records".into(),
            load(&al.records),
            false,
        ),
        (
            "zerohop.access_log.dropped".into(),
            crate::accesslog::dropped(seg),
            false,
        ),
        (
            "zerohop.access_log.invalid".into(),
            load(&al.invalid),
            false,
        ),
        (
            "zerohop.access_log.write_failed".into(),
            load(&al.write_failed),
            false,
        ),
    ]);
    // Envoy's OpenTelemetry tracer's counters, once a tracer is configured, and the spans
    // zerohop's exporters could not queue.
    let tr = &crate::tracing::export::COUNTS;
    if tr.configured.load(std::sync::atomic::Ordering::Relaxed) {
        lines.extend(
            [
                ("tracing.zipkin.spans_sent", load(&tr.zipkin_spans_sent)),
                (
                    "tracing.zipkin.timer_flushed",
                    load(&tr.zipkin_timer_flushed),
                ),
                ("tracing.zipkin.reports_sent", load(&tr.zipkin_reports_sent)),
                (
                    "tracing.zipkin.reports_dropped",
                    load(&tr.zipkin_reports_dropped),
                ),
                ("tracing.opentelemetry.spans_sent", load(&tr.spans_sent)),
                (
                    "tracing.opentelemetry.timer_flushed",
                    load(&tr.timer_flushed),
                ),
                (
                    "tracing.opentelemetry.http_reports_sent",
                    load(&tr.http_reports_sent),
                ),
                (
                    "tracing.opentelemetry.http_reports_success",
                    load(&tr.http_reports_success),
                ),
                (
                    "tracing.opentelemetry.http_reports_failed",
                    load(&tr.http_reports_failed),
                ),
                ("zerohop.tracing.spans_dropped", load(&tr.spans_dropped)),
                ("zerohop.tracing.reports_failed", load(&tr.reports_failed)),
            ]
            .map(|(n, v)| (n.to_string(), v, false)),
        );
    }
    for (name, v) in super::control_lines_of(st) {
        let gauge = name.ends_with("connected_state");
        lines.push((name, v, gauge));
    }
    Facts {
        lines,
        base: st.counter_base.clone(),
    }
}

/// `POST /reset_counters`: every counter reads 0 from now on (gauges and histograms are
/// left, as Envoy's).
pub fn reset_counters(seg: &Segment, state: &Shared) -> (u16, &'static str, String) {
    let mut st = state.lock().expect("admin state lock");
    let facts = facts(&st, seg);
    st.counter_base = stats::counters_now(seg, &st.snapshot, &facts)
        .into_iter()
        .collect();
    (200, "text/plain", "OK\n".into())
}

/// The data plane's anonymous and whole resident memory, in bytes (`/proc/<pid>/status`).
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("VmRSS:"))
}

/// Seconds since the data plane process started (`/proc/<pid>/stat` start time).
fn uptime(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 22, counted after the `)` that ends the command name.
    let start_ticks = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|v| v.parse::<u64>().ok());
    let up = std::fs::read_to_string("/proc/uptime").ok().and_then(|s| {
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
    });
    // /proc counts in USER_HZ, 100 on Linux whatever the kernel's own tick.
    match (start_ticks, up) {
        (Some(t), Some(up)) => (up - t as f64 / 100.0).max(0.0) as u64,
        _ => 0,
    }
}
