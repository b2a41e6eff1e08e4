//! One attempt of a request, whatever the upstream protocol: what it is given and what it
//! comes to. The protocols' attempts are in `h1` and `h2`; the retry loop around them is
//! [`super::forward`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use zerohop_proto::stats::{ClusterStat, Counter};

use crate::config::ClusterPlan;
use crate::error::{Kind, ProxyError};
use crate::http::message::Response;
use crate::route::retry::Failure;
use crate::shard::Shard;
use crate::upstream::breaker::Held;
use crate::upstream::hosts::Outcome;
use crate::upstream::UpstreamSide;

use super::Failed;

/// What every attempt of one request shares.
pub struct Try<'a, 'g> {
    pub shard: &'a Rc<Shard>,
    pub cluster: &'g ClusterPlan,
    pub endpoint: SocketAddr,
    /// When the router took the request.
    pub started: Instant,
    /// The route timeout (or `max_stream_duration`).
    pub deadline: Option<Instant>,
    pub per_try: Option<Duration>,
    /// The host `auto_sni` / `auto_san_validation` take from the request.
    pub server_name: Option<&'a str>,
}

impl Try<'_, '_> {
    /// The attempt's own deadline: the per-try timeout runs from when the attempt has its
    /// connection (or stream), as Envoy's.
    pub fn try_deadline(&self) -> Option<Instant> {
        match self.per_try {
            Some(t) => super::earlier(self.deadline, Some(Instant::now() + t)),
            None => self.deadline,
        }
    }
}

/// How an attempt ended.
// Reason: returned once per attempt and taken apart at once; boxing the answer would cost an
// allocation per request on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Attempt {
    /// A response head came back.
    Answered(Answer),
    /// The attempt failed; the outlier detector hears `Outcome`, the retry policy decides.
    Failed(Failed, Outcome),
    /// The request ends with this error (no retry can help).
    Fatal(ProxyError),
}

/// A response head and what it holds on to. Fields drop in order: the abandon guard first.
pub struct Answer {
    /// Shuts an HTTP/1.1 connection down if the exchange is dropped before it is forgotten.
    pub abandon: Option<AbandonGuard>,
    pub resp: Response,
    pub buf: Vec<u8>,
    pub up: UpstreamSide,
    /// The request's place in the cluster's request breaker.
    pub in_flight: Held,
}

/// Shuts an upstream socket down (both ways) when dropped: set while a request is out on it.
pub struct AbandonGuard(pub std::os::fd::RawFd);

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        // The connection it guards is still open (it drops after this guard).
        let _ = crate::net::sys::shutdown_both(self.0);
    }
}

/// No connection (or stream) for the attempt: a connect failure is the retry policy's to
/// decide; anything else (the breakers, the route timeout) ends the request.
pub fn connect_failed(e: ProxyError) -> Attempt {
    match e.kind {
        Kind::ConnectRefused | Kind::ConnectTimeout | Kind::ConnectFailed => {
            let outcome = match e.kind {
                Kind::ConnectTimeout => Outcome::Timeout,
                _ => Outcome::ConnectFailed,
            };
            let failed = Failed {
                error: e,
                failure: Some(Failure::Connect),
                reused: false,
                answered: false,
            };
            Attempt::Failed(failed, outcome)
        }
        _ => Attempt::Fatal(e),
    }
}

/// The response head did not come: a timeout (the per-try one counted as its own), a reset,
/// a head that broke the rules.
pub fn response_failed(
    t: &Try<'_, '_>,
    mut e: ProxyError,
    try_deadline: Option<Instant>,
    reused: bool,
    answered: bool,
) -> Attempt {
    let outcome = match e.kind {
        Kind::UpstreamTimeout => Outcome::Timeout,
        _ => Outcome::Reset,
    };
    let failure = match e.kind {
        // The per-try timeout, not the route's.
        Kind::UpstreamTimeout if try_deadline != t.deadline => {
            t.shard.stats.inc(Counter::UpstreamRqPerTryTimeout);
            t.shard.stats.count(
                t.cluster.cluster.stats,
                ClusterStat::UpstreamRqPerTryTimeout,
            );
            e = Kind::PerTryTimeout.into();
            Some(Failure::PerTryTimeout)
        }
        Kind::UpstreamClosed | Kind::UpstreamReset | Kind::MalformedResponse => {
            Some(Failure::Reset { sent: true })
        }
        Kind::UpstreamRefusedStream => Some(Failure::RefusedStream),
        _ => None,
    };
    let failed = Failed {
        error: e,
        failure,
        reused,
        answered,
    };
    Attempt::Failed(failed, outcome)
}
