//! `/stats` as Envoy prints it: text (`name: value`, histograms as quantiles), JSON
//! (`{"stats": [...]}` with a `histograms` entry), and Prometheus (`envoy_` families with
//! Envoy's tags, histograms as `_bucket` / `_sum` / `_count`).

use std::collections::BTreeMap;
use std::fmt::Write;

use zerohop_proto::stats::hist::{BOUNDS, QUANTILES};

use super::envoy::{Hist, Select, Stats, Value};

/// [`QUANTILES`] as Envoy labels them.
const PERCENTS: [&str; 10] = [
    "0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100",
];

fn quantile_text(h: &Hist) -> String {
    if h.merged.count() == 0 {
        return "No recorded values".into();
    }
    let mut out = String::new();
    for (q, p) in QUANTILES.iter().zip(PERCENTS) {
        let v = h.merged.quantile(*q).unwrap_or(f64::NAN);
        let _ = write!(out, "P{p}(nan,{}) ", num(v));
    }
    out.trim_end().to_owned()
}

/// A number as Envoy prints one: no trailing `.0`.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Envoy's text format.
pub fn text(stats: &Stats, sel: &Select, out: &mut String) {
    for v in stats.values.iter().filter(|v| sel.value(v)) {
        let _ = writeln!(out, "{}: {}", v.name, v.value);
    }
    for h in stats.hists.iter().filter(|h| sel.hist(h)) {
        let _ = writeln!(out, "{}: {}", h.name, quantile_text(h));
    }
}

/// Envoy's JSON format; `extra` (zerohop's own, already selected) join the values.
pub fn json(stats: &Stats, sel: &Select, extra: &[(String, u64)]) -> serde_json::Value {
    let mut list: Vec<serde_json::Value> = stats
        .values
        .iter()
        .filter(|v| sel.value(v))
        .map(|v| serde_json::json!({"name": v.name, "value": v.value}))
        .collect();
    list.extend(
        extra
            .iter()
            .map(|(n, v)| serde_json::json!({"name": n, "value": v})),
    );
    if sel.hists {
        let computed: Vec<serde_json::Value> = stats
            .hists
            .iter()
            .filter(|h| sel.hist(h))
            .map(|h| {
                let values: Vec<serde_json::Value> = QUANTILES
                    .iter()
                    .map(|&q| {
                        serde_json::json!({"interval": null, "cumulative": h.merged.quantile(q)})
                    })
                    .collect();
                serde_json::json!({"name": h.name, "values": values})
            })
            .collect();
        let supported: Vec<f64> = PERCENTS.iter().filter_map(|p| p.parse().ok()).collect();
        list.push(serde_json::json!({"histograms": {
            "supported_quantiles": supported,
            "computed_quantiles": computed,
        }}));
    }
    serde_json::json!({ "stats": list })
}

fn prom_name(extracted: &str) -> String {
    let mut out = String::from("envoy_");
    out.extend(
        extracted
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    out
}

fn labels(tags: &[(&'static str, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus exposition, one family per tag-extracted name.
pub fn prometheus(stats: &Stats, sel: &Select, out: &mut String) {
    let mut families: BTreeMap<(String, bool), Vec<&Value>> = BTreeMap::new();
    for v in stats.values.iter().filter(|v| sel.value(v)) {
        families
            .entry((prom_name(&v.extracted), v.gauge))
            .or_default()
            .push(v);
    }
    for ((family, gauge), series) in &families {
        let kind = if *gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for v in series {
            let _ = writeln!(out, "{family}{} {}", labels(&v.tags, None), v.value);
        }
    }
    let mut hists: BTreeMap<String, Vec<&Hist>> = BTreeMap::new();
    for h in stats.hists.iter().filter(|h| sel.hist(h)) {
        hists.entry(prom_name(&h.extracted)).or_default().push(h);
    }
    for (family, series) in &hists {
        let _ = writeln!(out, "# TYPE {family} histogram");
        for h in series {
            let cum = h.merged.cumulative();
            for (b, c) in BOUNDS.iter().zip(cum) {
                let le = num(*b);
                let _ = writeln!(
                    out,
                    "{family}_bucket{} {c}",
                    labels(&h.tags, Some(("le", &le)))
                );
            }
            let _ = writeln!(
                out,
                "{family}_bucket{} {}",
                labels(&h.tags, Some(("le", "+Inf"))),
                h.merged.count()
            );
            let _ = writeln!(
                out,
                "{family}_sum{} {}",
                labels(&h.tags, None),
                h.merged.sum
            );
            let _ = writeln!(
                out,
                "{family}_count{} {}",
                labels(&h.tags, None),
                h.merged.count()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::envoy::{plain, Stats};
    use super::*;
    use zerohop_proto::stats::hist::{bucket, Merged, SUM};

    fn sel() -> Select {
        Select::parse(&[]).unwrap()
    }

    #[test]
    fn prometheus_takes_envoys_tags_out() {
        let mut s = Stats::default();
        s.values
            .push(plain("cluster.backend.upstream_rq_200", 3, false));
        s.values
            .push(plain("cluster.backend.upstream_rq_2xx", 3, false));
        s.values
            .push(plain("cluster.backend.membership_healthy", 1, true));
        s.values.push(plain("server.live", 1, true));
        let mut words = vec![0u64; 21];
        words[bucket(3)] += 2;
        words[SUM] += 6;
        let mut merged = Merged::default();
        merged.add(&words);
        s.hists.push(Hist {
            name: "cluster.backend.upstream_rq_time".into(),
            merged,
            extracted: "cluster.upstream_rq_time".into(),
            tags: vec![("envoy_cluster_name", "backend".into())],
        });
        let mut out = String::new();
        prometheus(&s, &sel(), &mut out);
        for line in [
            "# TYPE envoy_cluster_upstream_rq counter",
            "envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"backend\"} 3",
            "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"backend\"} 3",
            "# TYPE envoy_cluster_membership_healthy gauge",
            "envoy_server_live 1",
            "# TYPE envoy_cluster_upstream_rq_time histogram",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"1\"} 0",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"5\"} 2",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"+Inf\"} 2",
            "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"backend\"} 6",
            "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
        let mut text_out = String::new();
        text(
            &s,
            &Select::parse(&[("filter".into(), "rq_2".into())]).unwrap(),
            &mut text_out,
        );
        assert_eq!(
            text_out,
            "cluster.backend.upstream_rq_200: 3\ncluster.backend.upstream_rq_2xx: 3\n"
        );
        let only_used = Select::parse(&[
            ("usedonly".into(), String::new()),
            ("type".into(), "Histograms".into()),
        ])
        .unwrap();
        let mut h = String::new();
        text(&s, &only_used, &mut h);
        assert!(
            h.starts_with("cluster.backend.upstream_rq_time: P0(nan,1) P25(nan,"),
            "{h}"
        );
        assert!(Select::parse(&[("type".into(), "Bogus".into())]).is_err());
        assert!(Select::parse(&[("filter".into(), "(".into())]).is_err());
    }
}
