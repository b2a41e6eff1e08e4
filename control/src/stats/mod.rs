//! The stats admin serves: Envoy's (`envoy`: the scopes of the snapshot in force, read from
//! the shards' stat spaces, and control's own facts; `render`: text, JSON, Prometheus), and
//! zerohop's own per-process counters under `zerohop.` (totals and a per-shard view).
//! `scopes` assigns the stat space when a snapshot is published.

pub mod envoy;
pub mod render;
pub mod scopes;

use std::fmt::Write;

use zerohop_proto::shm::Segment;
use zerohop_proto::stats::Counter;
use zerohop_proto::Snapshot;

pub use envoy::{Facts, Select};

/// Counter values of every active shard, indexed `[shard][Counter::index()]`.
pub fn read(seg: &Segment) -> Vec<Vec<u64>> {
    seg.read_counters()
}

fn total(shards: &[Vec<u64>], c: Counter) -> u64 {
    shards.iter().map(|s| s[c.index()]).sum()
}

/// zerohop's own counters as `(name, value)`: `zerohop.<name>` (all shards), then
/// `zerohop.shard.<n>.<name>`, those `sel` lets through.
pub fn extras(shards: &[Vec<u64>], sel: &Select, facts: &Facts) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut push = |name: String, v: u64, gauge: bool| {
        let v = match gauge {
            true => v,
            false => facts.since_reset(&name, v),
        };
        let keep = if gauge { sel.gauges } else { sel.counters };
        if keep
            && (!sel.used_only || v != 0)
            && sel.filter.as_ref().is_none_or(|r| r.is_match(&name))
        {
            out.push((name, v));
        }
    };
    for c in Counter::ALL {
        push(
            format!("zerohop.{}", c.name()),
            total(shards, c),
            c.is_gauge(),
        );
    }
    for (i, s) in shards.iter().enumerate() {
        for c in Counter::ALL {
            push(
                format!("zerohop.shard.{i}.{}", c.name()),
                s[c.index()],
                c.is_gauge(),
            );
        }
    }
    out
}

/// Every counter's value now, by name (for `POST /reset_counters`).
pub fn counters_now(seg: &Segment, snap: &Snapshot, facts: &Facts) -> Vec<(String, u64)> {
    let raw = Facts {
        lines: facts.lines.clone(),
        base: Default::default(),
    };
    let mut out: Vec<(String, u64)> = envoy::collect(seg, snap, &raw)
        .values
        .into_iter()
        .filter(|v| !v.gauge)
        .map(|v| (v.name, v.value))
        .collect();
    let counters = Select {
        gauges: false,
        ..Select::parse(&[]).expect("no parameters")
    };
    out.extend(extras(&read(seg), &counters, &raw));
    out
}

/// `/stats`: Envoy's stats, then zerohop's own.
pub fn text(seg: &Segment, snap: &Snapshot, facts: &Facts, sel: &Select) -> String {
    let mut out = String::new();
    render::text(&envoy::collect(seg, snap, facts), sel, &mut out);
    for (name, v) in extras(&read(seg), sel, facts) {
        let _ = writeln!(out, "{name}: {v}");
    }
    out
}

/// `/stats?format=json`: Envoy's shape, zerohop's own counters among the values.
pub fn json(seg: &Segment, snap: &Snapshot, facts: &Facts, sel: &Select) -> serde_json::Value {
    render::json(
        &envoy::collect(seg, snap, facts),
        sel,
        &extras(&read(seg), sel, facts),
    )
}

/// `/stats/prometheus`: Envoy's families, then zerohop's own, one series per shard.
pub fn prometheus(seg: &Segment, snap: &Snapshot, facts: &Facts, sel: &Select) -> String {
    let mut out = String::new();
    render::prometheus(&envoy::collect(seg, snap, facts), sel, &mut out);
    let shards = read(seg);
    for c in Counter::ALL {
        let name = format!("zerohop_{}", c.name());
        if sel
            .filter
            .as_ref()
            .is_some_and(|r| !r.is_match(&format!("zerohop.{}", c.name())))
        {
            continue;
        }
        let kind = if c.is_gauge() { "gauge" } else { "counter" };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", s[c.index()]);
        }
    }
    out
}
