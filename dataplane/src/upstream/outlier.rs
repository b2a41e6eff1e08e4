//! Outlier detection, the consecutive-failure detectors, as Envoy's: each response (or
//! local-origin failure) of an attempt is reported for its host; a host that reaches
//! `consecutive_5xx`, `consecutive_gateway_failure` (or, with
//! `split_external_local_origin_errors`, `consecutive_local_origin_failure`) failures in a
//! row is ejected, as often as the detector's enforcing percentage says, unless that would
//! put more than `max_ejection_percent` of the cluster's hosts out (`always_eject_one_host`
//! lets one go regardless). An ejected host is skipped by the load balancers until the first
//! sweep (every `interval`) after `base_ejection_time` x its ejections (at most
//! `max_ejection_time`, plus jitter).
//!
//! Ejection is a property of the host for the whole process: the state is one array of
//! atomics per cluster (built with the generation, kept while the cluster is unchanged),
//! read and written by every shard. A response writes its host's counters only when they
//! change (a success on a host with no failures stores nothing), so hosts that answer well
//! cost every shard one load; a pick costs one load per host tried. No config generation is
//! involved: every shard sees an ejection at its next pick.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use zerohop_proto::stats::Counter;
use zerohop_proto::OutlierDetection;

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

#[derive(Debug, Default)]
struct Host {
    five: AtomicU32,
    gateway: AtomicU32,
    local: AtomicU32,
    /// Milliseconds since the detector's start until which the host is out (0: in).
    until: AtomicU64,
    ejections: AtomicU32,
}

/// One cluster's detector, by endpoint index.
#[derive(Debug)]
pub struct Hosts {
    cfg: OutlierDetection,
    start: Instant,
    hosts: Box<[Host]>,
    ejected: AtomicU32,
}

impl Hosts {
    pub fn new(cfg: OutlierDetection, endpoints: usize) -> Hosts {
        Hosts {
            cfg,
            start: Instant::now(),
            hosts: (0..endpoints).map(|_| Host::default()).collect(),
            ejected: AtomicU32::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Whether the balancer should pass over ejected hosts now: not below the healthy panic
    /// threshold (then every host takes traffic, as Envoy's panic mode).
    pub fn enforced(&self) -> bool {
        let n = self.hosts.len() as f64;
        let ejected = f64::from(self.ejected.load(Relaxed));
        ejected == 0.0
            || 100.0 * (n - ejected) / n >= f64::from_bits(self.cfg.healthy_panic_threshold)
    }

    /// Whether every host is out.
    pub fn all_out(&self) -> bool {
        self.ejected.load(Relaxed) as usize >= self.hosts.len()
    }

    /// Whether endpoint `i` is ejected now (an ejection whose time has passed ends here).
    pub fn ejected(&self, i: usize) -> bool {
        let Some(h) = self.hosts.get(i) else {
            return false;
        };
        let until = h.until.load(Relaxed);
        if until == 0 {
            return false;
        }
        if self.now_ms() < until {
            return true;
        }
        if h.until.compare_exchange(until, 0, Relaxed, Relaxed).is_ok() {
            self.ejected.fetch_sub(1, Relaxed);
        }
        false
    }

    /// Reports what an attempt to endpoint `i` came to.
    pub fn report(&self, i: usize, outcome: Outcome, stats: ShardStats, rng: &Rng) {
        let Some(h) = self.hosts.get(i) else {
            return;
        };
        let cfg = &self.cfg;
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
        if rng.below(100) >= u64::from(enforcing) || h.until.load(Relaxed) != 0 {
            return false;
        }
        let cfg = &self.cfg;
        let hosts = self.hosts.len() as u64;
        let ejected = u64::from(self.ejected.load(Relaxed));
        let allowed = 100 * (ejected + 1) <= u64::from(cfg.max_ejection_percent) * hosts
            || (cfg.always_eject_one_host && ejected == 0);
        if !allowed {
            stats.inc(Counter::OutlierEjectionsOverflow);
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
        stats.inc(Counter::OutlierEjectionsEnforcedTotal);
        stats.inc(counter);
        true
    }
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
        ShardStats::new(block)
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
            healthy_panic_threshold: 50.0f64.to_bits(),
        }
    }

    #[test]
    fn consecutive_5xx_eject_and_a_success_starts_over() {
        let (s, rng) = (stats(), Rng::new(7));
        let h = Hosts::new(cfg(), 4);
        h.report(0, Outcome::Status(500), s, &rng);
        h.report(0, Outcome::Status(500), s, &rng);
        h.report(0, Outcome::Status(200), s, &rng);
        h.report(0, Outcome::Status(500), s, &rng);
        assert!(!h.ejected(0), "a success in between");
        h.report(0, Outcome::Status(500), s, &rng);
        // A connect failure counts as 503.
        h.report(0, Outcome::ConnectFailed, s, &rng);
        assert!(h.ejected(0));
        assert_eq!(s.get(Counter::OutlierEjectionsEnforcedConsecutive5xx), 1);
        // Gateway failures are detected but not enforced by default (enforcing 0).
        h.report(1, Outcome::Status(503), s, &rng);
        h.report(1, Outcome::Status(503), s, &rng);
        assert!(!h.ejected(1));
        // Back after base x 1, at a sweep.
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.ejected(0));
    }

    #[test]
    fn at_most_max_ejection_percent_of_the_hosts_are_out() {
        let (s, rng) = (stats(), Rng::new(7));
        let h = Hosts::new(cfg(), 4);
        for host in 0..3 {
            for _ in 0..3 {
                h.report(host, Outcome::Timeout, s, &rng);
            }
        }
        let out = (0..4).filter(|&i| h.ejected(i)).count();
        assert_eq!(out, 2, "50% of 4");
        assert_eq!(s.get(Counter::OutlierEjectionsOverflow), 1);
        assert!(h.enforced(), "50% in is not below the 50% panic threshold");
        let strict = Hosts::new(
            OutlierDetection {
                max_ejection_percent: 100,
                healthy_panic_threshold: 60.0f64.to_bits(),
                ..cfg()
            },
            4,
        );
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
        let h = Hosts::new(
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
        assert!(!h.ejected(1));
        h.report(1, Outcome::ConnectFailed, s, &rng);
        h.report(1, Outcome::ConnectFailed, s, &rng);
        assert!(h.ejected(1));
        assert_eq!(
            s.get(Counter::OutlierEjectionsEnforcedConsecutiveLocalOriginFailure),
            1
        );
    }
}
