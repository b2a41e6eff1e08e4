//! The retry decision for one request, its own object as Envoy's `RetryStateImpl`: the
//! route's compiled policy ([`RetryPlan`]) says which outcomes are retried, this keeps what
//! the request has used (retries, the retry breaker's place, the hosts tried) and answers
//! each outcome with a [`Decision`].
//!
//! Two kinds of second attempt exist. The pool's own replay, made with or without a policy
//! and counted as no retry: a bodiless request that met a pooled connection the upstream had
//! closed while it idled (nothing reached the application; [`Retry::ReusedOnly`]) is sent
//! once more on a new connection. And the policy's retries, as Envoy makes them: counted
//! (`upstream_rq_retry`, `_success`, `_limit_exceeded`, `_overflow`, the back-off kind),
//! bounded by `num_retries` and the cluster's retry breaker, after a jittered back-off, to a
//! host picked again (avoiding the hosts already tried under `previous_hosts`).
//!
//! [`Retry::ReusedOnly`]: crate::error::Retry::ReusedOnly

use std::net::SocketAddr;
use std::time::Duration;

use zerohop_proto::stats::{ClusterStat, Counter};
use zerohop_proto::{RetryOn, StatScope};

use crate::error::ProxyError;
use crate::http::message::{Framing, Request};
use crate::route::retry::{back_off, retriable_failure, Failure, RetryPlan};
use crate::stats::ShardStats;
use crate::upstream::breaker::Held;
use crate::upstream::lb::Rng;

use super::RequestBody;

/// An attempt that failed.
#[derive(Debug)]
pub struct Failed {
    pub error: ProxyError,
    /// The failure in Envoy's reset terms (`None`: one no policy retries).
    pub failure: Option<Failure>,
    /// The connection had served a request before.
    pub reused: bool,
    /// Part of a response had arrived.
    pub answered: bool,
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Pass the outcome on.
    No,
    /// The pool's replay: at once, to the same host, on a new connection.
    Replay,
    /// A policy retry, after this back-off, to a host picked again.
    Retry(Duration),
}

#[derive(Debug)]
pub struct RetryState<'p> {
    plan: Option<&'p RetryPlan>,
    /// The policy's conditions for this request (none when its request headers do not
    /// qualify).
    on: RetryOn,
    /// Policy retries left.
    left: u32,
    /// Policy retries made.
    pub retries: u32,
    /// The pool's replay is still available (a bodiless request).
    replay: bool,
    /// The request can be sent again as it is: its body (if any) is in hand, not streamed.
    replayable: bool,
    /// The place taken in the cluster's retry breaker by the retry under way.
    held: Option<Held>,
    /// The attempt under way is a policy retry (its outcome decides `_retry_success`).
    pending: bool,
    /// The hosts tried, under `previous_hosts`.
    tried: Vec<SocketAddr>,
    /// The cluster's `cluster.<name>.upstream_rq_retry*`.
    pub scope: StatScope,
}

impl<'p> RetryState<'p> {
    pub fn new<D>(
        plan: Option<&'p RetryPlan>,
        req: &Request,
        body: &RequestBody<'_, D>,
    ) -> RetryState<'p> {
        let on = plan.map_or(RetryOn(0), |p| p.retry_on(|n| req.header(n)));
        RetryState {
            plan,
            on,
            left: plan.map_or(0, |p| p.policy.num_retries),
            retries: 0,
            replay: req.framing == Framing::Empty && matches!(body, RequestBody::None),
            replayable: matches!(body, RequestBody::None | RequestBody::Buffered(_)),
            held: None,
            pending: false,
            tried: Vec::new(),
            scope: StatScope::NONE,
        }
    }

    /// Whether a policy may retry this request at all.
    pub fn armed(&self) -> bool {
        self.on.0 != 0 && self.replayable
    }

    /// After a failed attempt. `breaker` takes a place in the cluster's retry breaker.
    pub fn on_failure(
        &mut self,
        a: &Failed,
        stats: ShardStats,
        rng: &Rng,
        breaker: impl FnOnce() -> Option<Held>,
    ) -> Decision {
        let would = a.failure.is_some_and(|f| retriable_failure(self.on, f));
        // A failure the policy retries is the policy's (counted, to a host picked again),
        // as Envoy sees every reset; the pool's replay covers the rest.
        let replay = self.replay && a.reused && !a.answered && a.error.retry.decide(true);
        if replay && !(would && self.replayable) {
            let Some(held) = breaker() else {
                return Decision::No;
            };
            self.replay = false;
            self.held = Some(held);
            return Decision::Replay;
        }
        self.policy(would, None, stats, rng, breaker)
    }

    /// After a response head with `status` and these headers.
    pub fn on_response<'h>(
        &mut self,
        status: u16,
        header: impl Fn(&str) -> Option<&'h str>,
        stats: ShardStats,
        rng: &Rng,
        breaker: impl FnOnce() -> Option<Held>,
    ) -> Decision {
        let Some(plan) = self.plan else {
            return Decision::No;
        };
        let would = plan.retriable_response(self.on, status, &header);
        let wait = match would {
            true => plan.rate_limited_wait(&header),
            false => None,
        };
        self.policy(would, wait, stats, rng, breaker)
    }

    /// Envoy's `shouldRetry`: a retry that follows a retry and is not itself retried counts
    /// as the retry's success; a wanted retry needs a retry left and a place in the breaker.
    fn policy(
        &mut self,
        would: bool,
        rate_limited: Option<Duration>,
        stats: ShardStats,
        rng: &Rng,
        breaker: impl FnOnce() -> Option<Held>,
    ) -> Decision {
        self.held = None;
        if std::mem::take(&mut self.pending) && !would {
            stats.inc(Counter::UpstreamRqRetrySuccess);
            stats.count(self.scope, ClusterStat::UpstreamRqRetrySuccess);
        }
        let Some(plan) = self.plan.filter(|_| would && self.replayable) else {
            return Decision::No;
        };
        if self.left == 0 {
            stats.inc(Counter::UpstreamRqRetryLimitExceeded);
            stats.count(self.scope, ClusterStat::UpstreamRqRetryLimitExceeded);
            return Decision::No;
        }
        self.left -= 1;
        let Some(held) = breaker() else {
            return Decision::No;
        };
        self.held = Some(held);
        self.pending = true;
        self.retries += 1;
        stats.inc(Counter::UpstreamRqRetry);
        stats.count(self.scope, ClusterStat::UpstreamRqRetry);
        let p = &plan.policy;
        let wait = match rate_limited.filter(|w| w.as_millis() > 1) {
            Some(w) => {
                // Envoy's jittered lower bound: from the interval asked for to half again.
                stats.inc(Counter::UpstreamRqRetryBackoffRatelimited);
                let half = (w.as_millis() as u64 / 2).max(1);
                w + Duration::from_millis(rng.next_u64() % half)
            }
            None => {
                stats.inc(Counter::UpstreamRqRetryBackoffExponential);
                back_off(
                    p.back_off_base,
                    p.back_off_max,
                    self.retries,
                    rng.next_u64(),
                )
            }
        };
        Decision::Retry(wait)
    }

    /// Notes a host an attempt went to (only kept under `previous_hosts`).
    pub fn tried(&mut self, host: SocketAddr) {
        if self.plan.is_some_and(|p| p.policy.previous_hosts) {
            self.tried.push(host);
        }
    }

    /// A host for a retry: `pick` asked again while it gives a host already tried, up to
    /// `host_selection_retry_max_attempts` more times (the last pick stands). `pick` is told
    /// which selection attempt it makes (0 first), for a hashing balancer to vary the hash.
    pub fn pick_again<T>(
        &self,
        mut pick: impl FnMut(u32) -> Option<(SocketAddr, T)>,
    ) -> Option<(SocketAddr, T)> {
        let mut host = pick(0)?;
        let Some(p) = self.plan.filter(|p| p.policy.previous_hosts) else {
            return Some(host);
        };
        for attempt in 1..=p.policy.host_selection_retry_max_attempts {
            if !self.tried.contains(&host.0) {
                break;
            }
            host = pick(attempt)?;
        }
        Some(host)
    }
}
