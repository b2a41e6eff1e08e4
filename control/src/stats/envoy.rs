//! Envoy's stats as an operator reads them: collected from the shards' stat spaces and code
//! tables by the scopes of the snapshot in force, plus what control knows itself
//! (`cluster.<name>.membership_*`, `cluster_manager.*`, `listener_manager.*`, `server.*`,
//! `control_plane.*`), rendered as `/stats` text, JSON and Prometheus with Envoy's tag
//! extraction.

use std::collections::{BTreeMap, HashSet};

use zerohop_proto::shm::Segment;
use zerohop_proto::stats::hist::{Merged, HIST_WORDS};
use zerohop_proto::stats::{
    codes, ClusterScope, HttpScope, ListenerScope, ScopeKind, StatScope, TcpScope,
};
use zerohop_proto::Snapshot;

use super::scopes::{visit, Kind};

/// One counter or gauge.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub value: u64,
    pub gauge: bool,
    /// Prometheus: the name with its tags taken out, and the tags (Envoy's default tag
    /// extractors, in their order).
    pub extracted: String,
    pub tags: Vec<(&'static str, String)>,
}

/// One histogram, summed over the shards.
#[derive(Clone, Debug, PartialEq)]
pub struct Hist {
    pub name: String,
    pub merged: Merged,
    pub extracted: String,
    pub tags: Vec<(&'static str, String)>,
}

/// Every stat, sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub values: Vec<Value>,
    pub hists: Vec<Hist>,
}

/// What control adds from its own state.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// `(name, value, gauge)` in Envoy's names.
    pub lines: Vec<(String, u64, bool)>,
    /// Counter values at the last `POST /reset_counters`, by name: shown as the difference
    /// (the shards' words only ever count up).
    pub base: std::collections::HashMap<String, u64>,
}

impl Facts {
    /// `v`, a counter named `name`, since the last reset.
    pub fn since_reset(&self, name: &str, v: u64) -> u64 {
        v.saturating_sub(self.base.get(name).copied().unwrap_or(0))
    }
}

/// The tags Envoy's default extractors take out of a scoped stat's name.
fn scope_tags(kind: Kind, scope: &str, stat: &str) -> (String, Vec<(&'static str, String)>) {
    let (prefix, tag) = match kind {
        Kind::Listener => ("listener", "envoy_listener_address"),
        Kind::Http => ("http", "envoy_http_conn_manager_prefix"),
        Kind::Cluster => ("cluster", "envoy_cluster_name"),
        Kind::Tcp => ("tcp", "envoy_tcp_prefix"),
    };
    let mut tags = Vec::new();
    let mut stat = stat.to_owned();
    // `_rq_<code>` and `_rq_<class>xx` at the end (envoy.response_code, _class).
    if let Some(at) = stat.rfind("_rq_") {
        let tail = &stat[at + 4..];
        if tail.len() == 3 && tail.bytes().all(|b| b.is_ascii_digit()) {
            tags.push(("envoy_response_code", tail.to_owned()));
            stat.truncate(at + 3);
        } else if tail.len() == 3 && tail.as_bytes()[0].is_ascii_digit() && &tail[1..] == "xx" {
            tags.push(("envoy_response_code_class", tail[..1].to_owned()));
            stat = format!("{}_rq_xx", &stat[..at]);
        }
    }
    tags.push((tag, scope.to_owned()));
    (format!("{prefix}.{stat}"), tags)
}

fn value(kind: Kind, scope: &str, stat: &str, v: u64, gauge: bool) -> Value {
    let (extracted, tags) = scope_tags(kind, scope, stat);
    Value {
        name: format!("{}.{scope}.{stat}", prefix(kind)),
        value: v,
        gauge,
        extracted,
        tags,
    }
}

fn prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Listener => ListenerScope::PREFIX,
        Kind::Http => HttpScope::PREFIX,
        Kind::Cluster => ClusterScope::PREFIX,
        Kind::Tcp => TcpScope::PREFIX,
    }
}

/// One scope's words summed over the active shards.
fn sum_words(seg: &Segment, base: StatScope, words: usize) -> Vec<u64> {
    let mut out = vec![0u64; words];
    let (from, to) = (base.0 as usize, base.0 as usize + words);
    for line in seg.shard_base()..seg.shard_base() + seg.active_shards() {
        let space = seg.shard_space(line);
        let Some(run) = space.get(from..to) else {
            continue;
        };
        for (o, w) in out.iter_mut().zip(run) {
            *o = o.wrapping_add(w.load(std::sync::atomic::Ordering::Relaxed));
        }
    }
    out
}

fn scope_stats<K: ScopeKind>(kind: Kind, name: &str, words: &[u64], out: &mut Stats) {
    for (i, &v) in words.iter().enumerate().take(K::STATS) {
        let (stat, gauge) = K::stat(i);
        out.values.push(value(kind, name, stat, v, gauge));
    }
    for h in 0..K::HISTS {
        let at = K::STATS + h * HIST_WORDS;
        let mut merged = Merged::default();
        merged.add(&words[at..at + HIST_WORDS]);
        let (extracted, tags) = scope_tags(kind, name, K::hist(h));
        out.hists.push(Hist {
            name: format!("{}.{name}.{}", prefix(kind), K::hist(h)),
            merged,
            extracted,
            tags,
        });
    }
}

/// Every stat of the scopes of `snap`, and control's own.
pub fn collect(seg: &Segment, snap: &Snapshot, facts: &Facts) -> Stats {
    let mut out = Stats::default();
    let mut seen = HashSet::new();
    let mut clusters = BTreeMap::new();
    let mut snap = snap.clone();
    visit(&mut snap, |kind, name, scope| {
        if scope.is_none() || !seen.insert((kind, name.to_owned())) {
            return;
        }
        let words = sum_words(seg, *scope, kind.words() as usize);
        match kind {
            Kind::Listener => scope_stats::<ListenerScope>(kind, name, &words, &mut out),
            Kind::Http => scope_stats::<HttpScope>(kind, name, &words, &mut out),
            Kind::Cluster => {
                scope_stats::<ClusterScope>(kind, name, &words, &mut out);
                clusters.insert(*scope, name.to_owned());
            }
            Kind::Tcp => scope_stats::<TcpScope>(kind, name, &words, &mut out),
        }
    });
    // upstream_rq_<code>, summed over the shards' code tables.
    let mut by_code: BTreeMap<(StatScope, u16), u64> = BTreeMap::new();
    for line in seg.shard_base()..seg.shard_base() + seg.active_shards() {
        for (scope, code, n) in codes::read(seg.shard_codes(line)) {
            *by_code.entry((scope, code)).or_default() += n;
        }
    }
    for ((scope, code), n) in by_code {
        if let Some(name) = clusters.get(&scope) {
            out.values.push(value(
                Kind::Cluster,
                name,
                &format!("upstream_rq_{code}"),
                n,
                false,
            ));
        }
    }
    for (name, v, gauge) in &facts.lines {
        out.values.push(plain(name, *v, *gauge));
    }
    for v in out.values.iter_mut().filter(|v| !v.gauge) {
        v.value = facts.since_reset(&v.name, v.value);
    }
    out.values.sort_by(|a, b| a.name.cmp(&b.name));
    out.hists.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A stat outside the three scopes; `cluster.<name>.*` from control (membership, DNS
/// updates) gets its cluster tag.
pub fn plain(name: &str, value: u64, gauge: bool) -> Value {
    if let Some(rest) = name.strip_prefix("cluster.") {
        if let Some((cluster, stat)) = rest.rsplit_once('.') {
            let (extracted, tags) = scope_tags(Kind::Cluster, cluster, stat);
            return Value {
                name: name.to_owned(),
                value,
                gauge,
                extracted,
                tags,
            };
        }
    }
    Value {
        name: name.to_owned(),
        value,
        gauge,
        extracted: name.to_owned(),
        tags: Vec::new(),
    }
}

/// Which stats a request asks for: Envoy's `filter`, `usedonly` and `type` parameters.
#[derive(Debug, Default)]
pub struct Select {
    pub filter: Option<regex::Regex>,
    pub used_only: bool,
    pub counters: bool,
    pub gauges: bool,
    pub hists: bool,
}

impl Select {
    /// From the query's parameters; an invalid regex or type is the caller's 400.
    pub fn parse(params: &[(String, String)]) -> Result<Select, String> {
        let mut s = Select {
            counters: true,
            gauges: true,
            hists: true,
            ..Select::default()
        };
        for (k, v) in params {
            match k.as_str() {
                "filter" if !v.is_empty() => {
                    s.filter =
                        Some(regex::Regex::new(v).map_err(|e| format!("Invalid regex: {e}"))?);
                }
                "usedonly" => s.used_only = true,
                "type" => {
                    let (c, g, h) = match v.as_str() {
                        "All" => (true, true, true),
                        "Counters" => (true, false, false),
                        "Gauges" => (false, true, false),
                        "Histograms" => (false, false, true),
                        "TextReadouts" => (false, false, false),
                        other => return Err(format!("invalid type: {other}")),
                    };
                    (s.counters, s.gauges, s.hists) = (c, g, h);
                }
                _ => {}
            }
        }
        Ok(s)
    }

    fn name(&self, name: &str) -> bool {
        self.filter.as_ref().is_none_or(|r| r.is_match(name))
    }

    pub fn value(&self, v: &Value) -> bool {
        (if v.gauge { self.gauges } else { self.counters })
            && (!self.used_only || v.value != 0)
            && self.name(&v.name)
    }

    pub fn hist(&self, h: &Hist) -> bool {
        self.hists && (!self.used_only || h.merged.count() != 0) && self.name(&h.name)
    }
}
