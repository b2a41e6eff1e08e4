//! Which of a cluster's hosts may take traffic, for the whole process: outlier detection's
//! ejections, active health checks' verdicts and EDS health, with Envoy's panic mode.
//!
//! Outlier detection, the consecutive-failure detectors, as Envoy's: each response (or
//! local-origin failure) of an attempt is reported for its host; a host that reaches
//! `consecutive_5xx`, `consecutive_gateway_failure` (or, with
//! `split_external_local_origin_errors`, `consecutive_local_origin_failure`) failures in a
//! row is ejected, as often as the detector's enforcing percentage says, unless that would
//! put more than `max_ejection_percent` of the cluster's hosts out (`always_eject_one_host`
//! lets one go regardless). An ejected host is skipped by the load balancers until the first
//! sweep (every `interval`) after `base_ejection_time` x its ejections (at most
//! `max_ejection_time`, plus jitter). The success-rate and failure-percentage detectors
//! count each host's requests and successes per `interval` and, every `interval`, eject
//! the hosts below the cluster's mean less `success_rate_stdev_factor` deviations, or at
//! `failure_percentage_threshold` (shard 0 runs the sweep: [`Hosts::sweep`]).
//!
//! Active health checks run in control; the config thread copies their verdicts from the
//! segment's health table into each host's flags ([`Hosts::sync_health`]) when control says
//! they changed, and tells control which clusters have had traffic
//! ([`Hosts::tell_traffic`]). EDS health is fixed per
//! generation. A host with any flag set is out; below the cluster's healthy panic threshold
//! every host takes traffic again.
//!
//! This is the one process-wide state on the request path: one array of atomics per
//! cluster (built with the generation, kept while the cluster is unchanged), read and
//! written by every shard. A response writes its host's counters only when they change (a
//! success on a host with no failures stores nothing), so hosts that answer well cost every
//! shard one load; a pick costs one load per host tried. No config generation is involved:
//! every shard sees an ejection at its next pick.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use zerohop_proto::stats::{ClusterStat, Counter};
use zerohop_proto::{Cluster, OutlierDetection};

use crate::stats::ShardStats;
use crate::upstream::lb::Rng;

/// What an attempt came to, for its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// The connection could not be made.
    ConnectFailed,
    /// It timed out (a connect or a per-try timeout).
    Timeout,
    /// The connection was reset or closed before a whole response head.
    Reset,
    /// A connection was made and that is all the request needs (the tcp_proxy): a success
    /// (Envoy's `LocalOriginConnectSuccessFinal`, a 200 without the split).
    ConnectSucceeded,
}

/// A host's flags: why it is out.
const EJECTED: u8 = 1;
const FAILED_ACTIVE_HC: u8 = 2;
const FAILED_EDS_HEALTH: u8 = 4;

#[derive(Debug, Default)]
struct Host {
    five: AtomicU32,
    gateway: AtomicU32,
    local: AtomicU32,
    /// Milliseconds since the detector's start until which the host is out (0: in).
    until: AtomicU64,
    ejections: AtomicU32,
    flags: AtomicU8,
    /// This interval's requests (high 32 bits) and successes (low 32 bits), for the
    /// success-rate and failure-percentage detectors; local-origin events apart with
    /// `split_external_local_origin_errors`.
    window: AtomicU64,
    local_window: AtomicU64,
}

/// One request, and one success when `ok`, in a window word.
fn tally(window: &AtomicU64, ok: bool) {
    window.fetch_add((1 << 32) | u64::from(ok), Relaxed);
}

/// One cluster's hosts, by endpoint index.
#[derive(Debug)]
pub struct Hosts {
    /// `None`: no outlier detection (reports do nothing).
    cfg: Option<OutlierDetection>,
    /// `healthy_panic_threshold`, in percent.
    panic_threshold: f64,
    start: Instant,
    hosts: Box<[Host]>,
    /// Hosts ejected now (for `max_ejection_percent`).
    ejected: AtomicU32,
    /// Hosts with any flag set.
    out: AtomicU32,
    /// Each endpoint's place in the segment's health table.
    slots: Box<[Option<u32>]>,
    /// A shard picked a host (set once); and whether the config thread has told control.
    traffic: AtomicBool,
    traffic_told: AtomicBool,
    /// Milliseconds since `start` of the next success-rate / failure-percentage sweep.
    next_sweep: AtomicU64,
    /// The cluster's `cluster.<name>.outlier_detection.*`.
    scope: zerohop_proto::StatScope,
}

/// The cluster's own counter (`cluster.<name>.outlier_detection.*`) for a detector's
/// ejection counter.
fn scoped(c: Counter) -> Option<ClusterStat> {
    Some(match c {
        Counter::OutlierEjectionsEnforcedConsecutive5xx => {
            ClusterStat::OutlierEjectionsEnforcedConsecutive5xx
        }
        Counter::OutlierEjectionsEnforcedConsecutiveGatewayFailure => {
            ClusterStat::OutlierEjectionsEnforcedConsecutiveGatewayFailure
        }
        Counter::OutlierEjectionsEnforcedConsecutiveLocalOriginFailure => {
            ClusterStat::OutlierEjectionsEnforcedConsecutiveLocalOriginFailure
        }
        Counter::OutlierEjectionsEnforcedSuccessRate => {
            ClusterStat::OutlierEjectionsEnforcedSuccessRate
        }
        Counter::OutlierEjectionsEnforcedFailurePercentage => {
            ClusterStat::OutlierEjectionsEnforcedFailurePercentage
        }
        Counter::OutlierEjectionsEnforcedLocalOriginSuccessRate => {
            ClusterStat::OutlierEjectionsEnforcedLocalOriginSuccessRate
        }
        Counter::OutlierEjectionsEnforcedLocalOriginFailurePercentage => {
            ClusterStat::OutlierEjectionsEnforcedLocalOriginFailurePercentage
        }
        _ => return None,
    })
}

impl Hosts {
    /// The state of `cluster`'s hosts, when anything can put one out: outlier detection,
    /// health checks, or EDS health. Health-checked hosts start in; the config thread syncs
    /// them before any shard sees the generation.
    pub fn for_cluster(cluster: &Cluster) -> Option<Hosts> {
        let checked = cluster.endpoints.iter().any(|e| e.health_slot.is_some());
        let eds = cluster.endpoints.iter().any(|e| e.eds_unhealthy);
        if cluster.outlier_detection.is_none() && !checked && !eds {
            return None;
        }
        let hosts = Hosts {
            cfg: cluster.outlier_detection,
            panic_threshold: f64::from_bits(cluster.healthy_panic_threshold),
            start: Instant::now(),
            hosts: cluster.endpoints.iter().map(|_| Host::default()).collect(),
            ejected: AtomicU32::new(0),
            out: AtomicU32::new(0),
            slots: cluster.endpoints.iter().map(|e| e.health_slot).collect(),
            traffic: AtomicBool::new(false),
            traffic_told: AtomicBool::new(false),
            next_sweep: AtomicU64::new(
                cluster
                    .outlier_detection
                    .map_or(0, |od| od.interval.as_millis() as u64),
            ),
            scope: cluster.stats,
        };
        for (h, e) in hosts.hosts.iter().zip(&cluster.endpoints) {
            if e.eds_unhealthy {
                hosts.set(h, FAILED_EDS_HEALTH);
            }
        }
        Some(hosts)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn set(&self, h: &Host, flag: u8) {
        if h.flags.fetch_or(flag, Relaxed) == 0 {
            self.out.fetch_add(1, Relaxed);
        }
    }

    fn clear(&self, h: &Host, flag: u8) {
        if h.flags.fetch_and(!flag, Relaxed) == flag {
            self.out.fetch_sub(1, Relaxed);
        }
    }

    /// Whether the balancer should pass over hosts that are out now: not below the healthy
    /// panic threshold (then every host takes traffic, as Envoy's panic mode).
    pub fn enforced(&self) -> bool {
        let n = self.hosts.len() as f64;
        let out = f64::from(self.out.load(Relaxed));
        out == 0.0 || 100.0 * (n - out) / n >= self.panic_threshold
    }

    /// Whether every host is out.
    pub fn all_out(&self) -> bool {
        self.out.load(Relaxed) as usize >= self.hosts.len()
    }

    /// Whether endpoint `i` is out now (an ejection whose time has passed ends here). A
    /// pick also notes that the cluster has traffic.
    pub fn unavailable(&self, i: usize) -> bool {
        let Some(h) = self.hosts.get(i) else {
            return false;
        };
        let flags = h.flags.load(Relaxed);
        if flags == 0 {
            return false;
        }
        if flags & EJECTED != 0 {
            let until = h.until.load(Relaxed);
            if until != 0 && self.now_ms() < until {
                return true;
            }
            if until != 0 && h.until.compare_exchange(until, 0, Relaxed, Relaxed).is_ok() {
                self.ejected.fetch_sub(1, Relaxed);
                self.clear(h, EJECTED);
            }
            return h.flags.load(Relaxed) & !EJECTED != 0;
        }
        true
    }

    /// A shard sends the cluster traffic (one load once noted).
    pub fn note_traffic(&self) {
        if !self.traffic.load(Relaxed) {
            self.traffic.store(true, Relaxed);
        }
    }

    /// The config thread: copies the health checks' verdicts (`failed(slot)`) into the
    /// hosts' flags.
    pub fn sync_health(&self, failed: impl Fn(u32) -> bool) {
        for (h, slot) in self.hosts.iter().zip(&self.slots) {
            let Some(slot) = *slot else { continue };
            match failed(slot) {
                true => self.set(h, FAILED_ACTIVE_HC),
                false => self.clear(h, FAILED_ACTIVE_HC),
            }
        }
    }

    /// The config thread: marks the cluster's slots (`mark(slot)`) once, after its first
    /// traffic.
    pub fn tell_traffic(&self, mark: impl Fn(u32)) {
        if self.traffic.load(Relaxed) && !self.traffic_told.load(Relaxed) {
            self.slots.iter().flatten().for_each(|&s| mark(s));
            self.traffic_told.store(true, Relaxed);
        }
    }

    /// Whether any host is health checked.
    pub fn checked(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }

    /// Reports what an attempt to endpoint `i` came to.
    pub fn report(&self, i: usize, outcome: Outcome, stats: ShardStats, rng: &Rng) {
        let (Some(h), Some(cfg)) = (self.hosts.get(i), &self.cfg) else {
            return;
        };
        if cfg.sweeps() {
            // The windows the sweep reads: without the split, local-origin failures count
            // as the 503 / 504 Envoy maps them to; with it, they and the connections made
            // (every answer had one, as Envoy's router reports) count apart.
            let split = cfg.split_external_local_origin_errors;
            match outcome {
                Outcome::Status(s) => {
                    tally(&h.window, !(500..600).contains(&s));
                    if split {
                        tally(&h.local_window, true);
                    }
                }
                Outcome::ConnectSucceeded if split => tally(&h.local_window, true),
                Outcome::ConnectSucceeded => tally(&h.window, true),
                _ if split => tally(&h.local_window, false),
                _ => tally(&h.window, false),
            }
        }
        // Without the split, local-origin failures count as the status Envoy maps them to.
        let status = match (outcome, cfg.split_external_local_origin_errors) {
            (Outcome::Status(s), _) => s,
            (Outcome::ConnectSucceeded, false) => 200,
            (Outcome::ConnectSucceeded, true) => {
                if h.local.load(Relaxed) != 0 {
                    h.local.store(0, Relaxed);
                }
                return;
            }
            (Outcome::Timeout, false) => 504,
            (Outcome::ConnectFailed | Outcome::Reset, false) => 503,
            (_, true) => {
                let n = h.local.fetch_add(1, Relaxed) + 1;
                if n >= cfg.consecutive_local_origin_failure {
                    self.detected(
                        h,
                        &h.local,
                        cfg.enforcing_consecutive_local_origin_failure,
                        Counter::OutlierEjectionsEnforcedConsecutiveLocalOriginFailure,
                        stats,
                        rng,
                    );
                }
                return;
            }
        };
        if cfg.split_external_local_origin_errors && h.local.load(Relaxed) != 0 {
            // An answer means the connection was made.
            h.local.store(0, Relaxed);
        }
        if !(500..600).contains(&status) {
            // Stored only when there is something to clear: a host that answers well costs
            // the shards a load, not a contended store.
            if h.five.load(Relaxed) != 0 {
                h.five.store(0, Relaxed);
            }
            if h.gateway.load(Relaxed) != 0 {
                h.gateway.store(0, Relaxed);
            }
            return;
        }
        let five = h.five.fetch_add(1, Relaxed) + 1;
        let gateway = match status {
            502..=504 => h.gateway.fetch_add(1, Relaxed) + 1,
            _ => {
                h.gateway.store(0, Relaxed);
                0
            }
        };
        if gateway >= cfg.consecutive_gateway_failure && gateway > 0 {
            let enforced = self.detected(
                h,
                &h.gateway,
                cfg.enforcing_consecutive_gateway_failure,
                Counter::OutlierEjectionsEnforcedConsecutiveGatewayFailure,
                stats,
                rng,
            );
            if enforced {
                return;
            }
        }
        if five >= cfg.consecutive_5xx {
            self.detected(
                h,
                &h.five,
                cfg.enforcing_consecutive_5xx,
                Counter::OutlierEjectionsEnforcedConsecutive5xx,
                stats,
                rng,
            );
        }
    }

    /// A detector fired for `h`: its counter starts over (as Envoy's, so that another run
    /// of failures is detected again), and the host is ejected when the enforcing
    /// percentage draws it and the cluster may lose another host. Returns whether it was
    /// ejected.
    fn detected(
        &self,
        h: &Host,
        count: &AtomicU32,
        enforcing: u32,
        counter: Counter,
        stats: ShardStats,
        rng: &Rng,
    ) -> bool {
        count.store(0, Relaxed);
        self.eject(h, enforcing, counter, stats, rng)
    }

    /// Ejects `h` when the enforcing percentage draws it and the cluster may lose another
    /// host. Returns whether it was ejected.
    fn eject(
        &self,
        h: &Host,
        enforcing: u32,
        counter: Counter,
        stats: ShardStats,
        rng: &Rng,
    ) -> bool {
        if rng.below(100) >= u64::from(enforcing) || h.until.load(Relaxed) != 0 {
            return false;
        }
        let Some(cfg) = &self.cfg else {
            return false;
        };
        let hosts = self.hosts.len() as u64;
        let ejected = u64::from(self.ejected.load(Relaxed));
        let allowed = 100 * (ejected + 1) <= u64::from(cfg.max_ejection_percent) * hosts
            || (cfg.always_eject_one_host && ejected == 0);
        if !allowed {
            stats.inc(Counter::OutlierEjectionsOverflow);
            stats.count(self.scope, ClusterStat::OutlierEjectionsOverflow);
            return false;
        }
        let n = h.ejections.fetch_add(1, Relaxed) + 1;
        let cap = cfg.max_ejection_time.max(cfg.base_ejection_time);
        let mut time = (cfg.base_ejection_time * n).min(cap);
        let jitter = cfg.max_ejection_time_jitter.as_millis() as u64;
        if jitter > 0 {
            time += Duration::from_millis(rng.below(jitter + 1));
        }
        // Back at the first sweep after the time has passed.
        let interval = cfg.interval.as_millis().max(1) as u64;
        let end = self.now_ms() + time.as_millis() as u64;
        let until = end.div_ceil(interval) * interval;
        if h.until
            .compare_exchange(0, until.max(1), Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.ejected.fetch_add(1, Relaxed);
        self.set(h, EJECTED);
        stats.inc(Counter::OutlierEjectionsEnforcedTotal);
        stats.inc(counter);
        stats.count(self.scope, ClusterStat::OutlierEjectionsEnforcedTotal);
        if let Some(scoped) = scoped(counter) {
            stats.count(self.scope, scoped);
        }
        true
    }

    /// Whether the cluster has success-rate or failure-percentage detectors to sweep.
    pub fn sweeps(&self) -> bool {
        self.cfg.as_ref().is_some_and(OutlierDetection::sweeps)
    }

    /// The success-rate and failure-percentage detectors, once every `interval` (shard 0
    /// calls this at each tick, as Envoy's detector runs on its main thread's timer): every
    /// host's window since the last sweep is read and started over, and the hosts that fall
    /// below are ejected.
    pub fn sweep(&self, stats: ShardStats, rng: &Rng) {
        let Some(cfg) = self.cfg.as_ref().filter(|c| c.sweeps()) else {
            return;
        };
        let now = self.now_ms();
        if now < self.next_sweep.load(Relaxed) {
            return;
        }
        let interval = cfg.interval.as_millis().max(1) as u64;
        self.next_sweep.store(now + interval, Relaxed);
        let external = Detectors {
            window: |h| &h.window,
            success_rate: (
                cfg.enforcing_success_rate,
                Counter::OutlierEjectionsEnforcedSuccessRate,
            ),
            failure_percentage: (
                cfg.enforcing_failure_percentage,
                Counter::OutlierEjectionsEnforcedFailurePercentage,
            ),
        };
        self.detect(cfg, external, stats, rng);
        if cfg.split_external_local_origin_errors {
            let local = Detectors {
                window: |h| &h.local_window,
                success_rate: (
                    cfg.enforcing_local_origin_success_rate,
                    Counter::OutlierEjectionsEnforcedLocalOriginSuccessRate,
                ),
                failure_percentage: (
                    cfg.enforcing_failure_percentage_local_origin,
                    Counter::OutlierEjectionsEnforcedLocalOriginFailurePercentage,
                ),
            };
            self.detect(cfg, local, stats, rng);
        }
    }

    fn detect(&self, cfg: &OutlierDetection, d: Detectors, stats: ShardStats, rng: &Rng) {
        // (host, requests, success rate in percent); hosts out now take no part.
        let rates: Vec<(usize, u64, f64)> = self
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let w = (d.window)(h).swap(0, Relaxed);
                let (total, ok) = (w >> 32, w & 0xffff_ffff);
                (total > 0 && h.until.load(Relaxed) == 0)
                    .then(|| (i, total, 100.0 * ok as f64 / total as f64))
            })
            .collect();
        let valid = |volume: u32, minimum: u32| {
            let v: Vec<_> = rates.iter().filter(|r| r.1 >= u64::from(volume)).collect();
            (!v.is_empty() && v.len() >= minimum as usize).then_some(v)
        };
        if let Some(v) = valid(
            cfg.success_rate_request_volume,
            cfg.success_rate_minimum_hosts,
        ) {
            let n = v.len() as f64;
            let mean = v.iter().map(|r| r.2).sum::<f64>() / n;
            let variance = v.iter().map(|r| (r.2 - mean).powi(2)).sum::<f64>() / n;
            let factor = f64::from(cfg.success_rate_stdev_factor) / 1000.0;
            let threshold = mean - factor * variance.sqrt();
            for r in v.iter().filter(|r| r.2 < threshold) {
                let (enforcing, counter) = d.success_rate;
                self.eject(&self.hosts[r.0], enforcing, counter, stats, rng);
            }
        }
        if let Some(v) = valid(
            cfg.failure_percentage_request_volume,
            cfg.failure_percentage_minimum_hosts,
        ) {
            let threshold = f64::from(cfg.failure_percentage_threshold);
            for r in v.iter().filter(|r| 100.0 - r.2 >= threshold) {
                let (enforcing, counter) = d.failure_percentage;
                self.eject(&self.hosts[r.0], enforcing, counter, stats, rng);
            }
        }
    }
}

/// One origin's window and what its two detectors do.
struct Detectors {
    window: fn(&Host) -> &AtomicU64,
    success_rate: (u32, Counter),
    failure_percentage: (u32, Counter),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> ShardStats {
        let block: &'static [std::sync::atomic::AtomicU64] = Box::leak(
            (0..Counter::ALL.len())
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        );
        ShardStats::new(crate::stats::Blocks::detached(block))
    }

    fn cfg() -> OutlierDetection {
        OutlierDetection {
            interval: Duration::from_millis(10),
            base_ejection_time: Duration::from_millis(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 50,
            always_eject_one_host: false,
            consecutive_5xx: 3,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 2,
            enforcing_consecutive_gateway_failure: 0,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_local_origin_failure: 100,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_success_rate: 0,
            enforcing_local_origin_success_rate: 0,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
        }
    }

    fn cluster(od: Option<OutlierDetection>, n: u16, panic: f64) -> Cluster {
        Cluster {
            stats: Default::default(),
            name: "c".into(),
            connect_timeout: Duration::from_secs(1),
            lb_policy: zerohop_proto::LbPolicy::RoundRobin,
            endpoints: (0..n)
                .map(|i| zerohop_proto::Endpoint::new(([127, 0, 0, 1], 1000 + i).into(), 1))
                .collect(),
            protocol: Default::default(),
            transport: Default::default(),
            circuit_breakers: Default::default(),
            outlier_detection: od,
            healthy_panic_threshold: panic.to_bits(),
            health_checks: Vec::new(),
        }
    }

    fn detector(od: OutlierDetection, n: u16) -> Hosts {
        Hosts::for_cluster(&cluster(Some(od), n, 50.0)).unwrap()
    }

    #[test]
    fn consecutive_5xx_eject_and_a_success_starts_over() {
        let (s, rng) = (stats(), Rng::new(7));
        let h = detector(cfg(), 4);
        h.report(0, Outcome::Status(500), s, &rng);
        h.report(0, Outcome::Status(500), s, &rng);
        h.report(0, Outcome::Status(200), s, &rng);
        h.report(0, Outcome::Status(500), s, &rng);
        assert!(!h.unavailable(0), "a success in between");
        h.report(0, Outcome::Status(500), s, &rng);
        // A connect failure counts as 503.
        h.report(0, Outcome::ConnectFailed, s, &rng);
        assert!(h.unavailable(0));
        assert_eq!(s.get(Counter::OutlierEjectionsEnforcedConsecutive5xx), 1);
        // Gateway failures are detected but not enforced by default (enforcing 0).
        h.report(1, Outcome::Status(503), s, &rng);
        h.report(1, Outcome::Status(503), s, &rng);
        assert!(!h.unavailable(1));
        // Back after base x 1, at a sweep.
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.unavailable(0));
    }

    #[test]
    fn at_most_max_ejection_percent_of_the_hosts_are_out() {
        let (s, rng) = (stats(), Rng::new(7));
        let h = detector(cfg(), 4);
        for host in 0..3 {
            for _ in 0..3 {
                h.report(host, Outcome::Timeout, s, &rng);
            }
        }
        let out = (0..4).filter(|&i| h.unavailable(i)).count();
        assert_eq!(out, 2, "50% of 4");
        assert_eq!(s.get(Counter::OutlierEjectionsOverflow), 1);
        assert!(h.enforced(), "50% in is not below the 50% panic threshold");
        let strict = Hosts::for_cluster(&cluster(
            Some(OutlierDetection {
                max_ejection_percent: 100,
                ..cfg()
            }),
            4,
            60.0,
        ))
        .unwrap();
        for host in 0..2 {
            for _ in 0..3 {
                strict.report(host, Outcome::Status(500), s, &rng);
            }
        }
        assert!(
            !strict.enforced(),
            "50% in is below 60%: panic, every host takes traffic"
        );
    }

    #[test]
    fn split_local_origin_failures_have_their_own_detector() {
        let (s, rng) = (stats(), Rng::new(7));
        let h = detector(
            OutlierDetection {
                split_external_local_origin_errors: true,
                consecutive_local_origin_failure: 2,
                ..cfg()
            },
            2,
        );
        // The upstream's 503s and the local-origin failures count apart.
        h.report(1, Outcome::Status(503), s, &rng);
        h.report(1, Outcome::ConnectFailed, s, &rng);
        h.report(1, Outcome::Status(503), s, &rng);
        assert!(!h.unavailable(1));
        h.report(1, Outcome::ConnectFailed, s, &rng);
        h.report(1, Outcome::ConnectFailed, s, &rng);
        assert!(h.unavailable(1));
        assert_eq!(
            s.get(Counter::OutlierEjectionsEnforcedConsecutiveLocalOriginFailure),
            1
        );
    }

    #[test]
    fn health_check_verdicts_and_eds_health_put_hosts_out_with_panic_mode() {
        let mut c = cluster(None, 4, 50.0);
        for (i, e) in c.endpoints.iter_mut().enumerate() {
            e.health_slot = Some(10 + i as u32);
        }
        c.endpoints[3].eds_unhealthy = true;
        let h = Hosts::for_cluster(&c).unwrap();
        assert!(h.checked());
        assert!(h.unavailable(3) && !h.unavailable(0), "EDS health, fixed");
        let failed = std::cell::Cell::new(vec![11u32]);
        let marked = std::cell::RefCell::new(Vec::new());
        let read = |s: u32| {
            let f = failed.take();
            let out = f.contains(&s);
            failed.set(f);
            out
        };
        h.sync_health(read);
        h.tell_traffic(|s| marked.borrow_mut().push(s));
        assert!(h.unavailable(1) && !h.unavailable(2));
        assert!(h.enforced(), "2 of 4 in: not below 50%");
        assert!(marked.borrow().is_empty(), "no traffic yet");
        failed.set(vec![10, 11]);
        h.note_traffic();
        h.sync_health(read);
        h.tell_traffic(|s| marked.borrow_mut().push(s));
        assert!(!h.enforced(), "1 of 4 in: panic, every host takes traffic");
        assert_eq!(*marked.borrow(), vec![10, 11, 12, 13]);
        failed.set(Vec::new());
        h.sync_health(read);
        h.tell_traffic(|s| marked.borrow_mut().push(s));
        assert!(!h.unavailable(0) && !h.unavailable(1) && h.unavailable(3));
        assert_eq!(marked.borrow().len(), 4, "told once");
        // An ejection and a failed check on one host count it out once.
        let both = Hosts::for_cluster(&{
            let mut c = cluster(Some(cfg()), 2, 0.0);
            c.endpoints[0].health_slot = Some(1);
            c
        })
        .unwrap();
        both.sync_health(|_| true);
        let (s, rng) = (stats(), Rng::new(7));
        for _ in 0..3 {
            both.report(0, Outcome::Status(500), s, &rng);
        }
        assert!(both.unavailable(0) && !both.all_out());
        both.sync_health(|_| false);
        assert!(both.unavailable(0), "still ejected");
    }

    #[test]
    fn success_rate_and_failure_percentage_sweeps_eject_the_outlier() {
        let (s, rng) = (stats(), Rng::new(7));
        let od = OutlierDetection {
            consecutive_5xx: 1_000_000,
            enforcing_success_rate: 100,
            interval: Duration::from_millis(20),
            ..cfg()
        };
        let h = detector(od, 6);
        assert!(h.sweeps());
        // Hosts 0-4 answer 120 requests well; host 5 half of them with 503; nothing is
        // judged before the interval has passed.
        let load = |h: &Hosts| {
            for i in 0..6 {
                for k in 0..120 {
                    let status = if i == 5 && k % 2 == 0 { 503 } else { 200 };
                    h.report(i, Outcome::Status(status), s, &rng);
                }
            }
        };
        load(&h);
        h.sweep(s, &rng);
        assert!(!h.unavailable(5), "the first interval has not passed");
        std::thread::sleep(Duration::from_millis(25));
        h.sweep(s, &rng);
        // Mean 91.7, deviation 18.6: the threshold is 56.3, and host 5 is at 50.
        assert!(h.unavailable(5) && !h.unavailable(0));
        assert_eq!(s.get(Counter::OutlierEjectionsEnforcedSuccessRate), 1);
        // Too few requests (under success_rate_request_volume) judge nobody.
        let quiet = detector(od, 6);
        for i in 0..6 {
            for _ in 0..50 {
                quiet.report(i, Outcome::Status(if i == 5 { 503 } else { 200 }), s, &rng);
            }
        }
        std::thread::sleep(Duration::from_millis(25));
        quiet.sweep(s, &rng);
        assert!(!quiet.unavailable(5));
        // Failure percentage: host 5 fails 90% (at least the 85% threshold).
        let fp = detector(
            OutlierDetection {
                enforcing_success_rate: 0,
                enforcing_failure_percentage: 100,
                ..od
            },
            6,
        );
        for i in 0..6 {
            for k in 0..60 {
                let bad = i == 5 && k % 10 != 0;
                fp.report(i, Outcome::Status(if bad { 500 } else { 200 }), s, &rng);
            }
        }
        std::thread::sleep(Duration::from_millis(25));
        fp.sweep(s, &rng);
        assert!(fp.unavailable(5) && !fp.unavailable(4));
        assert_eq!(s.get(Counter::OutlierEjectionsEnforcedFailurePercentage), 1);
    }
}
