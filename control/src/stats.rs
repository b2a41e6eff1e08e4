//! Reading the per-shard counters out of the segment and rendering them.

use std::fmt::Write;

use zerohop_proto::shm::Segment;
use zerohop_proto::stats::Counter;

/// Counter values of every active shard, indexed `[shard][Counter::index()]`.
pub fn read(seg: &Segment) -> Vec<Vec<u64>> {
    seg.read_counters()
}

fn total(shards: &[Vec<u64>], c: Counter) -> u64 {
    shards.iter().map(|s| s[c.index()]).sum()
}

/// Envoy's `/stats` text format: `zerohop.<name>: <total>`, then `zerohop.shard.<n>.<name>`.
pub fn text(shards: &[Vec<u64>]) -> String {
    let mut out = String::new();
    for c in Counter::ALL {
        let _ = writeln!(out, "zerohop.{}: {}", c.name(), total(shards, c));
    }
    for (i, s) in shards.iter().enumerate() {
        for c in Counter::ALL {
            let _ = writeln!(out, "zerohop.shard.{i}.{}: {}", c.name(), s[c.index()]);
        }
    }
    out
}

/// Prometheus exposition format, one series per shard.
pub fn prometheus(shards: &[Vec<u64>]) -> String {
    let mut out = String::new();
    for c in Counter::ALL {
        let kind = if c.is_gauge() { "gauge" } else { "counter" };
        let _ = writeln!(out, "# TYPE zerohop_{} {kind}", c.name());
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "zerohop_{}{{shard=\"{i}\"}} {}",
                c.name(),
                s[c.index()]
            );
        }
    }
    out
}

/// `{"total": {...}, "shards": [{...}, ...]}`.
pub fn json(shards: &[Vec<u64>]) -> serde_json::Value {
    let obj = |f: &dyn Fn(Counter) -> u64| {
        serde_json::Value::Object(
            Counter::ALL
                .iter()
                .map(|&c| (c.name().to_owned(), f(c).into()))
                .collect(),
        )
    };
    serde_json::json!({
        "total": obj(&|c| total(shards, c)),
        "shards": shards.iter().map(|s| obj(&|c| s[c.index()])).collect::<Vec<_>>(),
    })
}
