//! Circuit breakers: how many connections, connecting requests and requests in flight a
//! cluster may have before more are refused at once (503, Envoy's flag UO).
//!
//! Thresholds are the cluster's `circuit_breakers` (priority DEFAULT), else Envoy's defaults
//! (1,024 connections, pending requests and requests; 3 retries), which Envoy enforces per
//! cluster for the whole process. zerohop's shards share nothing on the request path, so a
//! process-wide threshold is split evenly between them: each shard enforces
//! `threshold / shards` (at least 1 when the threshold is not 0) on its own plain counters,
//! and the sum over the shards does not exceed the threshold (unless it is smaller than the
//! number of shards). The price of the split is that one shard alone reaches its share
//! sooner than Envoy's process would reach the whole; traffic spread by SO_REUSEPORT meets
//! the same total.
//!
//! What counts, and what happens when full, as Envoy's connection pool does it:
//! - a connection counts from the moment its connect starts until it closes (idle in the
//!   pool included). When the breaker is full, no connection is made (`upstream_cx_overflow`)
//!   unless the cluster has none at all; the request waits, pending, for a pooled connection
//!   to come back or a connection to close, until the route timeout (504, UT);
//! - a request is pending from when it finds no idle connection until it has one; beyond
//!   the pending threshold it is refused at once (503, UO, `upstream_rq_pending_overflow`);
//! - a request counts from when it is given a connection until its response is relayed;
//!   beyond the threshold it is refused at once (503, UO, `upstream_rq_pending_overflow`).
//!
//! Counts are kept per cluster slot (stable across generations), so connections opened under
//! one generation still count under the next.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use zerohop_proto::stats::{ClusterHist, ClusterStat, Counter};
use zerohop_proto::{CircuitBreakers, StatScope};

use crate::error::{Kind, ProxyError};
use crate::stats::ShardStats;

/// What one cluster holds open on this shard, and who waits for a connection.
#[derive(Debug, Default)]
pub struct Open {
    connections: Cell<u32>,
    pending: Cell<u32>,
    requests: Cell<u32>,
    retries: Cell<u32>,
    /// Bumped whenever a connection closes or goes back to the pool.
    freed: Cell<u64>,
    /// Pending requests waiting for `freed` to move.
    waiters: RefCell<Vec<Waker>>,
}

/// A shard's breakers, by cluster slot. The limits its methods take are this shard's share
/// ([`share`]), computed with the generation (`ClusterPlan::breakers`).
#[derive(Debug, Default)]
pub struct Breakers {
    by_slot: RefCell<Vec<Rc<Open>>>,
}

/// One shard's share of process-wide `thresholds` among `shards` shards: each threshold
/// divided evenly, at least 1 unless it is 0.
pub fn share(thresholds: &CircuitBreakers, shards: usize) -> CircuitBreakers {
    let shards = shards.clamp(1, u32::MAX as usize) as u32;
    let one = |n: u32| if n == 0 { 0 } else { (n / shards).max(1) };
    CircuitBreakers {
        max_connections: one(thresholds.max_connections),
        max_pending_requests: one(thresholds.max_pending_requests),
        max_requests: one(thresholds.max_requests),
        max_retries: one(thresholds.max_retries),
        retry_budget: thresholds.retry_budget.map(|b| zerohop_proto::RetryBudget {
            min_retry_concurrency: one(b.min_retry_concurrency),
            ..b
        }),
    }
}

/// Which count a [`Held`] takes part in.
#[derive(Clone, Copy, Debug)]
enum Resource {
    Connection,
    Pending,
    Request,
    Retry,
}

/// One unit of a cluster's connections, pending requests or requests; given back on drop.
#[derive(Debug)]
pub struct Held {
    open: Rc<Open>,
    resource: Resource,
    /// The cluster's `cluster.<name>.*`: each resource held is its gauge
    /// (`upstream_cx_active`, `upstream_rq_pending_active`, `upstream_rq_active`), and a
    /// connection's life its `upstream_cx_length_ms`.
    charge: Charge,
    /// When a connection's place was taken (its `upstream_cx_length_ms`).
    since: Option<Instant>,
}

/// Where a held resource is counted.
#[derive(Clone, Copy, Debug)]
pub struct Charge {
    pub stats: ShardStats,
    pub scope: StatScope,
}

impl Resource {
    fn gauge(self) -> Option<ClusterStat> {
        match self {
            Resource::Connection => Some(ClusterStat::UpstreamCxActive),
            Resource::Pending => Some(ClusterStat::UpstreamRqPendingActive),
            Resource::Request => Some(ClusterStat::UpstreamRqActive),
            Resource::Retry => None,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let c = self.open.cell(self.resource);
        c.set(c.get().saturating_sub(1));
        let Charge { stats, scope } = self.charge;
        if let Some(g) = self.resource.gauge() {
            stats.uncount(scope, g);
        }
        if let Resource::Connection = self.resource {
            stats.count(scope, ClusterStat::UpstreamCxDestroy);
            if let Some(since) = self.since {
                stats.record_ms(
                    scope,
                    ClusterHist::UpstreamCxLengthMs,
                    crate::stats::ms_since(since),
                );
            }
            self.open.freed();
        }
    }
}

impl Open {
    /// A connection closed or went back to the pool: every waiter looks again.
    fn freed(&self) {
        self.freed.set(self.freed.get().wrapping_add(1));
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn cell(&self, r: Resource) -> &Cell<u32> {
        match r {
            Resource::Connection => &self.connections,
            Resource::Pending => &self.pending,
            Resource::Request => &self.requests,
            Resource::Retry => &self.retries,
        }
    }
}

impl Breakers {
    fn open(&self, slot: usize) -> Rc<Open> {
        let mut by_slot = self.by_slot.borrow_mut();
        if by_slot.len() <= slot {
            by_slot.resize_with(slot + 1, Rc::default);
        }
        by_slot[slot].clone()
    }

    fn take(&self, slot: usize, resource: Resource, max: u32, charge: Charge) -> Option<Held> {
        take_from(self.open(slot), resource, max, charge)
    }

    /// A request in flight to cluster `slot`, or the overflow (counted) if it is full.
    pub fn request(
        &self,
        slot: usize,
        limits: &CircuitBreakers,
        charge: Charge,
    ) -> Result<Held, ProxyError> {
        self.take(slot, Resource::Request, limits.max_requests, charge)
            .ok_or_else(|| overflow(charge, Counter::UpstreamRqPendingOverflow))
    }

    /// A request waiting for a new connection to cluster `slot`, or the overflow (counted).
    pub fn pending(
        &self,
        slot: usize,
        limits: &CircuitBreakers,
        charge: Charge,
    ) -> Result<Held, ProxyError> {
        let held = self
            .take(slot, Resource::Pending, limits.max_pending_requests, charge)
            .ok_or_else(|| overflow(charge, Counter::UpstreamRqPendingOverflow))?;
        charge
            .stats
            .count(charge.scope, ClusterStat::UpstreamRqPendingTotal);
        Ok(held)
    }

    /// A new connection to cluster `slot` for a pool. If the cluster holds its share already
    /// (and at least one: a cluster with no connection may always open one, as Envoy's pool),
    /// counts `upstream_cx_overflow` and returns what resolves when one of its connections
    /// closes or goes back to the pool.
    pub fn connection(
        &self,
        slot: usize,
        limits: &CircuitBreakers,
        charge: Charge,
    ) -> Result<Held, Freed> {
        let open = self.open(slot);
        let max = match open.connections.get() {
            0 => 1,
            _ => limits.max_connections,
        };
        take_from(open.clone(), Resource::Connection, max, charge).ok_or_else(|| {
            charge.stats.inc(Counter::UpstreamCxOverflow);
            charge
                .stats
                .count(charge.scope, ClusterStat::UpstreamCxOverflow);
            let seen = open.freed.get();
            Freed { open, seen }
        })
    }

    /// A new connection to cluster `slot` within its share, with no exception for a cluster
    /// that has none (Envoy's tcp_proxy asks the breaker directly, not through a pool); the
    /// overflow (counted as `upstream_cx_overflow`) when full.
    pub fn connection_strict(
        &self,
        slot: usize,
        limits: &CircuitBreakers,
        charge: Charge,
    ) -> Result<Held, ProxyError> {
        self.take(slot, Resource::Connection, limits.max_connections, charge)
            .ok_or_else(|| overflow(charge, Counter::UpstreamCxOverflow))
    }

    /// A retry of a request to cluster `slot`, held while the retry runs; `None` (counted as
    /// Envoy's `upstream_rq_retry_overflow`) when the retry breaker is full: no retry then.
    pub fn retry(&self, slot: usize, limits: &CircuitBreakers, charge: Charge) -> Option<Held> {
        // A retry budget: a share of the requests active and pending, at least its
        // minimum concurrency, instead of `max_retries` (as Envoy's).
        let max = match limits.retry_budget {
            Some(b) => {
                let open = self.open(slot);
                let active = f64::from(open.requests.get() + open.pending.get());
                let share = (active * f64::from_bits(b.budget_percent) / 100.0) as u32;
                share.max(b.min_retry_concurrency)
            }
            None => limits.max_retries,
        };
        let held = self.take(slot, Resource::Retry, max, charge);
        if held.is_none() {
            charge.stats.inc(Counter::UpstreamRqRetryOverflow);
            charge
                .stats
                .count(charge.scope, ClusterStat::UpstreamRqRetryOverflow);
        }
        held
    }

    /// A connection of `slot` went back to the pool: wakes the requests waiting for one.
    pub fn returned(&self, slot: usize) {
        if let Some(open) = self.by_slot.borrow().get(slot) {
            open.freed();
        }
    }
}

/// One unit of `resource` of the cluster `open` counts for, unless it holds `max` already.
fn take_from(open: Rc<Open>, resource: Resource, max: u32, charge: Charge) -> Option<Held> {
    let c = open.cell(resource);
    if c.get() >= max {
        return None;
    }
    c.set(c.get() + 1);
    if let Some(g) = resource.gauge() {
        charge.stats.count(charge.scope, g);
    }
    Some(Held {
        open,
        resource,
        charge,
        since: matches!(resource, Resource::Connection).then(Instant::now),
    })
}

/// Counts an overflow in `counter` (and the cluster's): the request gets 503 UO.
fn overflow(charge: Charge, counter: Counter) -> ProxyError {
    charge.stats.inc(counter);
    let scoped = match counter {
        Counter::UpstreamCxOverflow => ClusterStat::UpstreamCxOverflow,
        _ => ClusterStat::UpstreamRqPendingOverflow,
    };
    charge.stats.count(charge.scope, scoped);
    Kind::UpstreamOverflow.into()
}

/// Resolves once a connection of its cluster has closed or gone back to the pool.
#[derive(Debug)]
pub struct Freed {
    open: Rc<Open>,
    seen: u64,
}

impl Future for Freed {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.open.freed.get() != self.seen {
            return Poll::Ready(());
        }
        let mut waiters = self.open.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Charge {
        let block: &'static [std::sync::atomic::AtomicU64] = Vec::leak(
            (0..Counter::ALL.len())
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        );
        Charge {
            stats: ShardStats::new(crate::stats::Blocks::detached(block)),
            scope: StatScope::NONE,
        }
    }

    fn limits(connections: u32, pending: u32, requests: u32) -> CircuitBreakers {
        CircuitBreakers {
            max_connections: connections,
            max_pending_requests: pending,
            max_requests: requests,
            max_retries: 1,
            retry_budget: None,
        }
    }

    #[test]
    fn thresholds_are_split_between_shards() {
        let envoy = CircuitBreakers::default();
        assert_eq!(share(&envoy, 1), envoy);
        assert_eq!(share(&envoy, 2).max_requests, 512);
        assert_eq!(share(&envoy, 2).max_retries, 1);
        assert_eq!(share(&envoy, 4096).max_connections, 1);
        assert_eq!(share(&limits(0, 1, 1), 2).max_connections, 0);
    }

    #[test]
    fn a_full_breaker_refuses_until_one_is_given_back() {
        let (b, l) = (Breakers::default(), limits(2, 1, 1));
        let s = stats();
        let c1 = b.connection(3, &l, s).unwrap();
        let _c2 = b.connection(3, &l, s).unwrap();
        assert!(b.connection(3, &l, s).is_err());
        assert!(
            b.connection(0, &l, s).is_ok(),
            "another cluster has its own"
        );
        drop(c1);
        let c3 = b.connection(3, &l, s).unwrap();
        assert!(b.connection_strict(3, &l, s).is_err());
        drop(c3);
        assert_eq!(s.stats.get(Counter::UpstreamCxOverflow), 2);
        let r = b.request(3, &l, s).unwrap();
        assert!(b.request(3, &l, s).is_err());
        drop(r);
        assert!(b.request(3, &l, s).is_ok());
        let p = b.pending(3, &l, s).unwrap();
        let e = b.pending(3, &l, s).unwrap_err();
        assert_eq!(e.kind, Kind::UpstreamOverflow);
        assert_eq!(e.local_reply().map(|r| r.0), Some(503));
        drop(p);
        assert_eq!(s.stats.get(Counter::UpstreamRqPendingOverflow), 2);
        let retry = b.retry(3, &l, s).unwrap();
        assert!(b.retry(3, &l, s).is_none());
        drop(retry);
        assert!(b.retry(3, &l, s).is_some());
        assert_eq!(s.stats.get(Counter::UpstreamRqRetryOverflow), 1);
    }

    #[test]
    fn a_cluster_without_connections_may_always_open_one() {
        let (b, l) = (Breakers::default(), limits(0, 1, 1));
        let s = stats();
        let c = b.connection(0, &l, s).unwrap();
        assert!(b.connection(0, &l, s).is_err());
        drop(c);
        assert!(b.connection(0, &l, s).is_ok());
        assert!(
            b.connection_strict(0, &l, s).is_err(),
            "not for a tcp_proxy"
        );
    }

    #[test]
    fn a_waiter_wakes_when_a_connection_closes_or_returns() {
        let (b, l) = (Breakers::default(), limits(1, 4, 4));
        let s = stats();
        let held = b.connection(1, &l, s).unwrap();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut freed = Box::pin(b.connection(1, &l, s).unwrap_err());
        assert!(freed.as_mut().poll(&mut cx).is_pending());
        b.returned(1);
        assert!(freed.as_mut().poll(&mut cx).is_ready());
        let mut freed = Box::pin(b.connection(1, &l, s).unwrap_err());
        assert!(freed.as_mut().poll(&mut cx).is_pending());
        drop(held);
        assert!(freed.as_mut().poll(&mut cx).is_ready());
        assert_eq!(s.stats.get(Counter::UpstreamCxOverflow), 2);
    }
}
