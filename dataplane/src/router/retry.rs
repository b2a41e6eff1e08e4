//! The retry decision for one request, its own object as Envoy's `RetryStateImpl`: the
//! error says whether a retry could help (and whether only on a reused connection), this
//! says whether this request may have one.

use crate::error::ProxyError;
use crate::http::message::{Framing, Request};
use crate::upstream::breaker::Held;

use super::RequestBody;

#[derive(Debug)]
pub struct RetryState {
    /// Retries left.
    left: u32,
    /// The request can be sent again as it is: it has no body (a body that streamed from
    /// the client cannot be replayed).
    replayable: bool,
    /// The place taken in the cluster's retry breaker by the retry under way.
    held: Option<Held>,
}

impl RetryState {
    /// One retry, for a request without a body: the one zerohop makes without a retry
    /// policy, when a pooled connection turns out closed.
    pub fn new<D>(req: &Request, body: &RequestBody<'_, D>) -> RetryState {
        RetryState {
            left: 1,
            replayable: req.framing == Framing::Empty && matches!(body, RequestBody::None),
            held: None,
        }
    }

    /// Whether to send again after `e`, on a connection that was `reused`, once part of a
    /// response may have arrived (`answered`); takes a retry when it says yes, and a place
    /// in the cluster's retry breaker from `breaker` (none left: no retry).
    pub fn again(
        &mut self,
        e: &ProxyError,
        reused: bool,
        answered: bool,
        breaker: impl FnOnce() -> Option<Held>,
    ) -> bool {
        let wanted = self.left > 0 && self.replayable && !answered && e.retry.decide(reused);
        if !wanted {
            return false;
        }
        let Some(held) = breaker() else {
            return false;
        };
        self.held = Some(held);
        self.left -= 1;
        true
    }
}
