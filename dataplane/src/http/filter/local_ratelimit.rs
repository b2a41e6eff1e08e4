//! `envoy.filters.http.local_ratelimit`: a token bucket in front of the route. A request
//! drawn by `filter_enabled` takes a token; with none left it is rate limited, and when
//! `filter_enforced` draws it too it is answered locally (`status`, default 429, body
//! `local_rate_limited`, flag RL) and stops the chain. A route's
//! configuration replaces the filter's, with its own bucket.
//!
//! **One bucket for the process**, as Envoy's is shared by its workers: see
//! [`crate::ratelimit`].

use std::time::Instant;

use zerohop_proto::stats::Counter;
use zerohop_proto::{Fraction, LocalRateLimitConfig};

use super::{Ctx, Decisions, Filter, Status};
use crate::ratelimit::buckets;

/// A limited request's reply: its status and extra headers (the body is
/// `local_rate_limited`).
#[derive(Debug, PartialEq, Eq)]
pub struct Limited {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct LocalRateLimit;

impl Filter for LocalRateLimit {
    type Config = LocalRateLimitConfig;

    fn on_request_headers(cfg: &LocalRateLimitConfig, ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
        let Some(bucket) = &cfg.bucket else {
            return Status::Continue;
        };
        let draw = |f: Fraction| {
            ctx.rng.next_u64() % u64::from(f.denominator.max(1)) < u64::from(f.numerator)
        };
        if !draw(cfg.enabled) {
            return Status::Continue;
        }
        ctx.stats.inc(Counter::HttpLocalRateLimitEnabled);
        let next_fill = match buckets().take(bucket, Instant::now()) {
            Ok(()) => {
                ctx.stats.inc(Counter::HttpLocalRateLimitOk);
                return Status::Continue;
            }
            Err(next_fill) => next_fill,
        };
        ctx.stats.inc(Counter::HttpLocalRateLimitRateLimited);
        if !draw(cfg.enforced) {
            return Status::Continue;
        }
        ctx.stats.inc(Counter::HttpLocalRateLimitEnforced);
        let mut headers: Vec<(String, String)> = cfg
            .response_headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        if cfg.retry_after {
            // Whole seconds, rounded up.
            let secs = next_fill.as_millis().div_ceil(1000).max(1);
            headers.push(("retry-after".into(), secs.to_string()));
        }
        d.limited = Some(Limited {
            status: cfg.status,
            headers,
        });
        Status::Stop
    }
}
