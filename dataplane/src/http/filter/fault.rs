//! `envoy.filters.http.fault`: a delay and/or an abort injected into a share of the
//! requests, as Envoy's fault filter decides them. A request qualifies when every one of
//! `headers` matches and its `x-envoy-downstream-service-node` is one of `downstream_nodes`
//! (when any are given), and fewer than `max_active_faults` faults are active on this shard
//! (each shard keeps its own count; Envoy's is per process). Then, each drawn against its
//! percentage: a delay, fixed or the request's `x-envoy-fault-delay-request` ms (its
//! `-percentage` header may lower the share), and an abort, a fixed status or the request's
//! `x-envoy-fault-abort-request` (200 to 599). The stream waits out the delay, then answers
//! the abort locally (`fault filter abort`, flag FI) or goes on (flag DI).

use std::time::Duration;

use zerohop_proto::stats::Counter;
use zerohop_proto::{FaultConfig, Fraction};

use super::{Ctx, Decisions, Filter, Status};
use crate::route::header_matches;

/// What the filter injects into one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Injected {
    pub delay: Option<Duration>,
    /// The abort's status and body.
    pub abort: Option<(u16, String)>,
}

#[derive(Debug)]
pub struct Fault;

impl Filter for Fault {
    type Config = FaultConfig;

    fn on_request_headers(cfg: &FaultConfig, ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
        let header = |n: &str| ctx.req.header(n);
        let qualifies = cfg.headers.iter().all(|h| header_matches(h, header))
            && (cfg.downstream_nodes.is_empty()
                || header("x-envoy-downstream-service-node")
                    .is_some_and(|n| cfg.downstream_nodes.iter().any(|d| d == n)));
        if !qualifies || (cfg.delay.is_none() && cfg.abort.is_none()) {
            return Status::Continue;
        }
        if let Some(max) = cfg.max_active_faults {
            if ctx.stats.get(Counter::FaultActiveFaults) >= u64::from(max) {
                ctx.stats.inc(Counter::FaultFaultsOverflow);
                return Status::Continue;
            }
        }
        let draw = |own: Fraction, percent_header: &str| {
            let f = percentage(own, header(percent_header));
            let d = u64::from(f.denominator.max(1));
            ctx.rng.next_u64() % d < u64::from(f.numerator)
        };
        let delay = cfg.delay.as_ref().and_then(|dl| {
            if !draw(dl.percentage, "x-envoy-fault-delay-request-percentage") {
                return None;
            }
            let t = match dl.fixed {
                Some(t) => t,
                None => Duration::from_millis(header("x-envoy-fault-delay-request")?.parse().ok()?),
            };
            (!t.is_zero()).then_some(t)
        });
        let abort = cfg.abort.as_ref().and_then(|a| {
            if !draw(a.percentage, "x-envoy-fault-abort-request-percentage") {
                return None;
            }
            let status = match a.http_status {
                Some(s) => s,
                None => header("x-envoy-fault-abort-request")?
                    .parse()
                    .ok()
                    .filter(|s| (200..600).contains(s))?,
            };
            let body = a.body.as_deref().unwrap_or("fault filter abort");
            Some((status, body.to_owned()))
        });
        if delay.is_none() && abort.is_none() {
            return Status::Continue;
        }
        if delay.is_some() {
            ctx.stats.inc(Counter::FaultDelaysInjected);
        }
        ctx.stats.inc(Counter::FaultActiveFaults);
        d.fault = Some(Injected { delay, abort });
        Status::Continue
    }
}

/// The configured share, lowered to a request header's numerator (same denominator) when it
/// carries a smaller one, as Envoy's `HeaderPercentageProvider`.
fn percentage(own: Fraction, header: Option<&str>) -> Fraction {
    match header.and_then(|h| h.trim().parse::<u32>().ok()) {
        Some(n) => Fraction {
            numerator: n.min(own.numerator),
            denominator: own.denominator,
        },
        None => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_only_lowers_the_share() {
        let own = Fraction {
            numerator: 50,
            denominator: 100,
        };
        assert_eq!(percentage(own, Some("10")).numerator, 10);
        assert_eq!(percentage(own, Some("90")).numerator, 50);
        assert_eq!(percentage(own, Some("x")).numerator, 50);
        assert_eq!(percentage(own, None), own);
    }
}
