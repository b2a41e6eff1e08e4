//! `zerohop-bench config`, last part: fixed-rate traffic with a config change every second
//! against the same traffic without changes.
//!
//! Each round runs five arms back to back (this machine's noise moves p99.9 by tens of
//! percent between runs: the median of per-round ratios, and the ratio of all rounds pooled,
//! are what hold):
//!
//! 1. steady traffic through a zerohop run on a config file (control beside it);
//! 2. the same, SIGHUP every second on the unchanged file: control's reload alone (it reads
//!    and compiles the file, finds the snapshot unchanged and publishes nothing);
//! 3. the same, a changed file renamed over the config every second (as an editor or a
//!    ConfigMap update does); control's watcher picks it up: one reload each, as in 2, and a
//!    publish;
//! 4. steady traffic through a second zerohop attached to a segment this process publishes to;
//! 5. the same changes as 3, compiled and encoded before the run and published straight into
//!    that segment every second: what a change costs the data plane, without control's parse.
//!
//! Nothing is generated or spawned during a run, so the generator's own work stays out of
//! the figures. A build that cannot attach to this bench's segment layout (an older one) runs
//! arms 1-3 only.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::{config, free_addr, gen};

pub struct Spec {
    pub zerohop: PathBuf,
    pub clusters: usize,
    pub rate: f64,
    pub seconds: f64,
    pub rounds: usize,
}

const ARMS: [&str; 5] = [
    "no config changes",
    "a reload, no change, every second",
    "a change every second, through control",
    "attached: no config changes",
    "attached: a change every second, published directly",
];

/// Which arm each ratio compares, and against which steady arm.
const RATIOS: [(&str, usize, usize); 3] = [
    ("reload without change (control's work alone)", 1, 0),
    ("config change through control", 2, 0),
    (
        "config change published directly (the data plane's work alone)",
        4,
        3,
    ),
];

pub fn report(spec: &Spec, echo: SocketAddr) -> String {
    let yaml =
        |front: SocketAddr, variant: usize| config::yaml(spec.clusters, 10, front, echo, variant);
    let proxy = {
        let front = free_addr();
        config::Proxy::start(&spec.zerohop, &yaml(front, 0), front)
    };
    let attached = {
        let front = free_addr();
        config::Attached::start(&spec.zerohop, &yaml(front, 0), front)
    };
    let dur = Duration::from_secs_f64(spec.seconds);
    let changes = spec.seconds.ceil() as usize + 3;
    let mut variant = 1000;
    let pid = rustix::process::Pid::from_raw(proxy.pid() as i32).expect("a live pid");
    let run = |front: SocketAddr, each_second: &mut dyn FnMut()| {
        config::open_loop(front, spec.rate, 10, dur, each_second)
    };

    // rounds[r][arm]; an arm not run is None. Beside them, the generations each arm
    // published (read from the segments: the check that the arms did what they say).
    let mut rounds: Vec<[Option<Histogram<u64>>; 5]> = Vec::new();
    // Another build's segment may have a layout this bench cannot read: its generations
    // are then not counted ("n/a").
    let mut published: [Option<u64>; 5] = [Some(0); 5];
    let generation = |arm: usize| match arm {
        0..=2 => proxy.try_segment().map(|s| s.current_generation()),
        _ => Some(attached.as_ref().map_or(0, |a| a.generation())),
    };
    for round in 1..=spec.rounds.max(1) {
        let mut h: [Option<Histogram<u64>>; 5] = Default::default();
        eprintln!("round {round}: {}", ARMS[0]);
        let before = generation(0);
        h[0] = Some(run(proxy.front, &mut || {}));
        published[0] = count(published[0], before, generation(0));
        let before = generation(1);
        eprintln!("round {round}: {}", ARMS[1]);
        h[1] = Some(run(proxy.front, &mut || {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::HUP);
        }));
        published[1] = count(published[1], before, generation(1));
        eprintln!("round {round}: {}", ARMS[2]);
        let next: Vec<PathBuf> = (0..changes)
            .map(|k| {
                variant += 1;
                let path = proxy.config.with_extension(format!("next-{k}"));
                std::fs::write(&path, yaml(proxy.front, variant)).unwrap();
                path
            })
            .collect();
        let mut pending = next.iter();
        let before = generation(2);
        h[2] = Some(run(proxy.front, &mut || {
            if let Some(path) = pending.next() {
                std::fs::rename(path, &proxy.config).unwrap();
            }
        }));
        std::thread::sleep(Duration::from_secs(1)); // the last change's reload
        published[2] = count(published[2], before, generation(2));
        for path in &next {
            let _ = std::fs::remove_file(path); // the ones not used
        }
        if let Some(a) = &attached {
            eprintln!("round {round}: {}", ARMS[3]);
            let before = generation(3);
            h[3] = Some(run(a.front, &mut || {}));
            published[3] = count(published[3], before, generation(3));
            eprintln!("round {round}: {}", ARMS[4]);
            let next: Vec<Vec<u8>> = (0..changes)
                .map(|_| {
                    variant += 1;
                    config::encode(&yaml(a.front, variant))
                })
                .collect();
            let mut pending = next.iter();
            let before = generation(4);
            h[4] = Some(run(a.front, &mut || {
                if let Some(bytes) = pending.next() {
                    a.publish(bytes);
                }
            }));
            published[4] = count(published[4], before, generation(4));
            assert!(
                a.all_applied(),
                "the attached data plane did not apply every generation"
            );
        }
        rounds.push(h);
    }
    render(spec, &rounds, &published, attached.is_some())
}

/// `total` plus the generations published between `before` and `after`, if both were read.
fn count(total: Option<u64>, before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(total? + (after? - before?))
}

fn render(
    spec: &Spec,
    rounds: &[[Option<Histogram<u64>>; 5]],
    published: &[Option<u64>; 5],
    attached: bool,
) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "\nOpen-loop echo exchanges at {} /s over 10 connections, {} s per run, {} rounds; a change is a {}-cluster config (10 endpoints each) with one endpoint weight changed; latency in us from the intended send time{}:\n",
        spec.rate,
        spec.seconds,
        rounds.len(),
        spec.clusters,
        if attached {
            ""
        } else {
            " (this build cannot attach to the bench's segment layout: the direct-publish arms are not run)"
        }
    );
    let row = |name: &str, h: &Histogram<u64>, generations: String| {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {generations} |",
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999),
            h.max() as f64 / 1e3
        )
    };
    let _ = writeln!(
        r,
        "| run | p50 | p90 | p99 | p99.9 | max | generations published |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
    let mut pooled: [Option<Histogram<u64>>; 5] = Default::default();
    for (i, round) in rounds.iter().enumerate() {
        for (arm, h) in round.iter().enumerate() {
            let Some(h) = h else { continue };
            let _ = writeln!(
                r,
                "{}",
                row(&format!("{}: {}", i + 1, ARMS[arm]), h, String::new())
            );
            pooled[arm]
                .get_or_insert_with(gen::histogram)
                .add(h)
                .expect("same bounds");
        }
    }
    for (arm, h) in pooled.iter().enumerate() {
        if let Some(h) = h {
            let name = format!("all rounds: {}", ARMS[arm]);
            let _ = writeln!(
                r,
                "{}",
                row(
                    &name,
                    h,
                    published[arm].map_or("n/a".into(), |n| n.to_string())
                )
            );
        }
    }
    let q = |h: &Option<Histogram<u64>>, q: f64| {
        h.as_ref().map(|h| h.value_at_quantile(q).max(1) as f64)
    };
    let _ = writeln!(r);
    for (name, arm, base) in RATIOS {
        let (Some(_), Some(_)) = (&pooled[arm], &pooled[base]) else {
            continue;
        };
        let mut line = format!("{name} / steady:");
        for (label, p) in [("p99", 0.99), ("p99.9", 0.999)] {
            let all = q(&pooled[arm], p).unwrap() / q(&pooled[base], p).unwrap();
            let mut each: Vec<f64> = rounds
                .iter()
                .filter_map(|h| Some(q(&h[arm], p)? / q(&h[base], p)?))
                .collect();
            let listed = each
                .iter()
                .map(|x| format!("{x:.2}x"))
                .collect::<Vec<_>>()
                .join(", ");
            each.sort_by(f64::total_cmp);
            let _ = write!(
                line,
                " {label} pooled {all:.2}x, median of rounds {:.2}x ({listed});",
                each[each.len() / 2]
            );
        }
        let _ = writeln!(r, "- {}", line.trim_end_matches(';'));
    }
    r
}
