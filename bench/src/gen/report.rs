//! What a run prints and writes: a percentile table, JSON, an HdrHistogram interval log
//! (`.hlog`, for HistogramLogAnalyzer and the hdrhistogram libraries) and a percentile
//! distribution (`.hgrm`, the format HdrHistogram's online plotter reads).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::{Failure, Outcome};

#[derive(Debug, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
}

impl Latency {
    /// In microseconds, from a nanosecond histogram.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1e3;
        let q = |p: f64| us(h.value_at_quantile(p / 100.0));
        Latency {
            p50: q(50.0),
            p90: q(90.0),
            p99: q(99.0),
            p99_9: q(99.9),
            p99_99: q(99.99),
            max: us(h.max()),
            min: us(h.min()),
            mean: h.mean() / 1e3,
            stdev: h.stdev() / 1e3,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub protocol: super::Proto,
    pub target: String,
    pub intended_rate: f64,
    pub achieved_rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    pub threads: usize,
    /// The generator's own CPU use, in cores: near `threads`, it is the limit.
    pub generator_cpu: f64,
    pub requests_ok: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<Failure, u64>,
    /// From the intended send time to the end of the response.
    pub latency_us: Latency,
    /// From the intended send time to the actual send.
    pub send_wait_us: Latency,
}

pub fn summary(o: &Outcome) -> Summary {
    Summary {
        protocol: o.spec.proto,
        target: o.spec.addr.to_string(),
        intended_rate: o.spec.rate,
        achieved_rate: o.achieved_rate,
        duration_s: o.spec.duration.as_secs_f64(),
        warmup_s: o.spec.warmup.as_secs_f64(),
        connections: o.spec.connections,
        threads: o.spec.threads,
        generator_cpu: o.generator_cpu,
        requests_ok: o.ok,
        statuses: o.statuses.clone(),
        errors: o.failures.clone(),
        latency_us: Latency::of(&o.latency),
        send_wait_us: Latency::of(&o.wait),
    }
}

pub fn table(s: &Summary) -> String {
    let mut r = String::new();
    let rate = if s.intended_rate > 0.0 {
        format!(
            "{:.0}/s intended, {:.1}/s achieved ({:.1}%)",
            s.intended_rate,
            s.achieved_rate,
            100.0 * s.achieved_rate / s.intended_rate
        )
    } else {
        format!("closed loop, {:.1}/s achieved", s.achieved_rate)
    };
    let _ = writeln!(
        r,
        "{} to {}: {rate}, {} s after {} s warm-up, {} connections, {} threads",
        s.protocol.name(),
        s.target,
        s.duration_s,
        s.warmup_s,
        s.connections,
        s.threads
    );
    let _ = writeln!(r, "\nlatency from the intended send time (us):");
    let _ = writeln!(
        r,
        "  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
    );
    for (name, l) in [("latency", &s.latency_us), ("send wait", &s.send_wait_us)] {
        let _ = writeln!(
            r,
            "  {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}   {name}",
            l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max, l.mean
        );
    }
    let _ = writeln!(
        r,
        "\nresponses: {} ok; generator CPU {:.0}% of {} core(s)",
        s.requests_ok,
        100.0 * s.generator_cpu / s.threads as f64,
        s.threads
    );
    if !s.statuses.is_empty() {
        let statuses: Vec<String> = s
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(r, "statuses: {}", statuses.join(", "));
    }
    if s.errors.is_empty() {
        let _ = writeln!(r, "errors: none");
    } else {
        let errors: Vec<String> = s
            .errors
            .iter()
            .map(|(k, v)| format!("{}: {v}", k.name()))
            .collect();
        let _ = writeln!(r, "errors: {}", errors.join(", "));
    }
    if s.send_wait_us.p99 > 1000.0 {
        let _ = writeln!(
            r,
            "note: p99 send wait is {:.1} ms: requests queued for a free connection (or for this generator); \
             more --connections, or a lower rate, measure the target rather than the queue",
            s.send_wait_us.p99 / 1e3
        );
    }
    r
}

/// Writes the per-second histograms as an HdrHistogram interval log (values in ns; the
/// max-value divisor makes tools print milliseconds).
pub fn write_hlog(o: &Outcome, path: &Path) -> io::Result<()> {
    let mut file = io::BufWriter::new(std::fs::File::create(path)?);
    let mut ser = hdrhistogram::serialization::V2DeflateSerializer::new();
    let mut w = hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder::new()
        .add_comment("zerohop-bench: latency from the intended send time, in nanoseconds")
        .with_start_time(std::time::SystemTime::now())
        .with_max_value_divisor(1e6)
        .begin_log_with(&mut file, &mut ser)?;
    for (i, h) in o.intervals.iter().enumerate() {
        w.write_histogram(
            h,
            Duration::from_secs(i as u64),
            Duration::from_secs(1),
            None,
        )
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    drop(w);
    file.flush()
}

/// Writes the percentile distribution in milliseconds, as HdrHistogram's
/// `outputPercentileDistribution` does, for the online plotter.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut r = String::new();
    let ms = |ns: u64| ns as f64 / 1e6;
    let _ = writeln!(
        r,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0;
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        total += v.count_since_last_iteration();
        let inv = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        let _ = writeln!(
            r,
            "{:>12.3} {q:>14.12} {total:>10} {inv}",
            ms(v.value_iterated_to())
        );
    }
    let _ = writeln!(
        r,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1e6,
        h.stdev() / 1e6
    );
    let _ = writeln!(
        r,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        ms(h.max()),
        h.len()
    );
    r
}
