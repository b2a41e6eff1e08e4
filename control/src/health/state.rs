//! One host's health-check state, sans I/O: Envoy's rules for when a check's result changes
//! the host's health and how long until the next check.
//!
//! A host starts failed (Envoy's `FAILED_ACTIVE_HC` with `PENDING_ACTIVE_HC`). The first
//! check's success makes it healthy at once; after that `healthy_threshold` successes in a
//! row do. A healthy host fails at once on a check that got an unexpected answer, and after
//! `unhealthy_threshold` in a row of network failures, timeouts and retriable statuses.

use std::time::Duration;

use zerohop_proto::HealthCheck;

/// What one check came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// The host answered, wrongly: fails a healthy host at once.
    Failed,
    /// A status in `retriable_statuses`: counts toward `unhealthy_threshold`.
    Retriable,
    /// No answer (connect failure, reset, close): counts toward `unhealthy_threshold`.
    Network,
    /// The check's `timeout` passed: as `Network`.
    Timeout,
}

/// Envoy's `HealthTransition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// The result points the other way but the threshold is not reached yet.
    Pending,
    Changed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostState {
    pub failed: bool,
    first: bool,
    healthy_run: u32,
    unhealthy_run: u32,
}

impl Default for HostState {
    fn default() -> HostState {
        HostState {
            failed: true,
            first: true,
            healthy_run: 0,
            unhealthy_run: 0,
        }
    }
}

impl HostState {
    /// Takes one check's verdict; says what it did to the host's health.
    pub fn apply(&mut self, verdict: Verdict, cfg: &HealthCheck) -> Transition {
        let mut t = Transition::Unchanged;
        if verdict == Verdict::Healthy {
            self.unhealthy_run = 0;
            if self.failed {
                self.healthy_run += 1;
                if self.first || self.healthy_run >= cfg.healthy_threshold {
                    self.failed = false;
                    self.healthy_run = 0;
                    t = Transition::Changed;
                } else {
                    t = Transition::Pending;
                }
            }
        } else {
            self.healthy_run = 0;
            if !self.failed {
                self.unhealthy_run += 1;
                let at_once = verdict == Verdict::Failed;
                if at_once || self.unhealthy_run >= cfg.unhealthy_threshold {
                    self.failed = true;
                    self.unhealthy_run = 0;
                    t = Transition::Changed;
                } else {
                    t = Transition::Pending;
                }
            }
        }
        if self.first {
            // The pending flag clears with the first result: Envoy reports a change.
            self.first = false;
            t = Transition::Changed;
        }
        t
    }
}

/// The wait before the next check after one with `verdict` that did `t`, before jitter
/// (Envoy's `interval()`): `traffic` is whether the cluster has had any.
pub fn base_interval(
    cfg: &HealthCheck,
    verdict: Verdict,
    t: Transition,
    traffic: bool,
) -> Duration {
    let healthy = verdict == Verdict::Healthy;
    let pending = t == Transition::Pending;
    match (traffic, healthy, pending) {
        (true, false, true) => cfg.unhealthy_edge_interval,
        (true, false, false) => cfg.unhealthy_interval,
        (true, true, true) => cfg.healthy_edge_interval,
        (true, true, false) => cfg.interval,
        (false, true, false) => cfg.no_traffic_healthy_interval,
        (false, _, _) => cfg.no_traffic_interval,
    }
}

/// `base` with Envoy's jitter: up to `interval_jitter_percent` of it and up to
/// `interval_jitter`, drawn by `random` (a uniform u64); at least 1 ms.
pub fn with_jitter(cfg: &HealthCheck, base: Duration, mut random: impl FnMut() -> u64) -> Duration {
    let mut ms = base.as_millis() as u64;
    let by_percent = u64::from(cfg.interval_jitter_percent) * ms / 100;
    if by_percent > 0 {
        ms += random() % by_percent;
    }
    let jitter = cfg.interval_jitter.as_millis() as u64;
    if jitter > 0 {
        ms += random() % jitter;
    }
    Duration::from_millis(ms.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_proto::HealthChecker;

    fn cfg() -> HealthCheck {
        HealthCheck {
            timeout: Duration::from_secs(1),
            interval: Duration::from_millis(100),
            initial_jitter: Duration::ZERO,
            interval_jitter: Duration::ZERO,
            interval_jitter_percent: 0,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            unhealthy_interval: Duration::from_millis(300),
            unhealthy_edge_interval: Duration::from_millis(50),
            healthy_edge_interval: Duration::from_millis(70),
            no_traffic_interval: Duration::from_secs(60),
            no_traffic_healthy_interval: Duration::from_secs(90),
            reuse_connection: true,
            checker: HealthChecker::Tcp {
                send: Vec::new(),
                receive: Vec::new(),
            },
        }
    }

    #[test]
    fn the_first_success_is_enough_then_thresholds_apply() {
        let c = cfg();
        let mut h = HostState::default();
        assert!(h.failed, "a host starts failed");
        assert_eq!(h.apply(Verdict::Healthy, &c), Transition::Changed);
        assert!(!h.failed);
        // Network failures count to the threshold; a success in between starts over.
        assert_eq!(h.apply(Verdict::Network, &c), Transition::Pending);
        assert_eq!(h.apply(Verdict::Timeout, &c), Transition::Pending);
        assert_eq!(h.apply(Verdict::Healthy, &c), Transition::Unchanged);
        assert_eq!(h.apply(Verdict::Retriable, &c), Transition::Pending);
        assert_eq!(h.apply(Verdict::Network, &c), Transition::Pending);
        assert_eq!(h.apply(Verdict::Network, &c), Transition::Changed);
        assert!(h.failed);
        assert_eq!(h.apply(Verdict::Failed, &c), Transition::Unchanged);
        // Back after healthy_threshold (2) successes.
        assert_eq!(h.apply(Verdict::Healthy, &c), Transition::Pending);
        assert_eq!(h.apply(Verdict::Healthy, &c), Transition::Changed);
        // An unexpected answer fails a healthy host at once.
        assert_eq!(h.apply(Verdict::Failed, &c), Transition::Changed);
        assert!(h.failed);
    }

    #[test]
    fn a_first_failure_keeps_the_host_out_and_reports_a_change() {
        let c = cfg();
        let mut h = HostState::default();
        assert_eq!(h.apply(Verdict::Network, &c), Transition::Changed);
        assert!(h.failed);
        assert_eq!(h.apply(Verdict::Healthy, &c), Transition::Pending);
    }

    #[test]
    fn intervals_follow_the_verdict_the_transition_and_traffic() {
        let c = cfg();
        let ms = |n| Duration::from_millis(n);
        let i = |v, t, traffic| base_interval(&c, v, t, traffic);
        assert_eq!(i(Verdict::Healthy, Transition::Unchanged, true), ms(100));
        assert_eq!(i(Verdict::Healthy, Transition::Pending, true), ms(70));
        assert_eq!(i(Verdict::Network, Transition::Pending, true), ms(50));
        assert_eq!(i(Verdict::Failed, Transition::Changed, true), ms(300));
        assert_eq!(i(Verdict::Healthy, Transition::Changed, false), ms(90_000));
        assert_eq!(i(Verdict::Healthy, Transition::Pending, false), ms(60_000));
        assert_eq!(i(Verdict::Failed, Transition::Unchanged, false), ms(60_000));
        let jittered = HealthCheck {
            interval_jitter_percent: 10,
            interval_jitter: ms(5),
            ..cfg()
        };
        let mut draws = [9u64, 4].into_iter();
        assert_eq!(
            with_jitter(&jittered, ms(100), || draws.next().unwrap()),
            ms(113)
        );
        assert_eq!(with_jitter(&c, Duration::ZERO, || 0), ms(1));
    }
}
