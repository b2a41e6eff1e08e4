//! A route's retry policy, compiled for the request path: which outcomes of an attempt are
//! retried, as Envoy's `RetryStateImpl` decides (sans-I/O: the router asks, this answers).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zerohop_proto::{RetryOn, RetryPolicy};

use super::HeaderRule;

/// How an attempt ended without a response head to pass on, in Envoy's reset terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection: refused, timed out, unreachable.
    Connect,
    /// The connection failed after the request started out: closed or reset, or a response
    /// that broke the framing rules. `sent` is whether the request had been sent whole.
    Reset { sent: bool },
    /// The policy's `per_try_timeout` ended the attempt.
    PerTryTimeout,
    /// An HTTP/2 upstream refused the stream (REFUSED_STREAM): nothing of it was processed.
    RefusedStream,
}

#[derive(Debug)]
pub struct RetryPlan {
    pub policy: RetryPolicy,
    retriable_headers: Vec<HeaderRule>,
    retriable_request_headers: Vec<HeaderRule>,
}

impl RetryPlan {
    pub fn compile(policy: &RetryPolicy) -> Result<RetryPlan, regex::Error> {
        let rules = |m: &[zerohop_proto::HeaderMatcher]| {
            m.iter()
                .map(HeaderRule::compile)
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(RetryPlan {
            retriable_headers: rules(&policy.retriable_headers)?,
            retriable_request_headers: rules(&policy.retriable_request_headers)?,
            policy: policy.clone(),
        })
    }

    /// The conditions that apply to a request with these headers: none when
    /// `retriable_request_headers` is set and no rule matches it.
    pub fn retry_on<'h>(&self, header: impl Fn(&str) -> Option<&'h str>) -> RetryOn {
        let limited = !self.retriable_request_headers.is_empty()
            && !self
                .retriable_request_headers
                .iter()
                .any(|r| r.matches(&header));
        match limited {
            true => RetryOn(0),
            false => self.policy.retry_on,
        }
    }

    /// Whether a response with `status` and these headers is retried under `on`.
    pub fn retriable_response<'h>(
        &self,
        on: RetryOn,
        status: u16,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> bool {
        // A rate-limited answer from an upstream Envoy: only under envoy-ratelimited.
        if header("x-envoy-ratelimited").is_some() {
            return on.has(RetryOn::ENVOY_RATELIMITED);
        }
        (on.has(RetryOn::FIVE_XX) && (500..600).contains(&status))
            || (on.has(RetryOn::GATEWAY_ERROR) && (502..=504).contains(&status))
            || (on.has(RetryOn::RETRIABLE_4XX) && status == 409)
            || (on.has(RetryOn::RETRIABLE_STATUS_CODES)
                && self.policy.retriable_status_codes.contains(&status))
            || (on.has(RetryOn::RETRIABLE_HEADERS)
                && self.retriable_headers.iter().any(|r| r.matches(&header)))
            || (on.has(RetryOn::GRPC_ANY) && grpc_retriable(on, header("grpc-status")))
    }

    /// The wait a rate-limited response asks for in one of `reset_headers` (at most
    /// `max_interval`), when the policy has `rate_limited_retry_back_off`.
    pub fn rate_limited_wait<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Option<Duration> {
        let rl = self.policy.rate_limited.as_ref()?;
        rl.reset_headers.iter().find_map(|h| {
            let n: u64 = header(&h.name)?.trim().parse().ok()?;
            let wait = match h.unix_timestamp {
                false => Duration::from_secs(n),
                true => {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
                    Duration::from_secs(n).checked_sub(now)?
                }
            };
            (wait <= rl.max_interval).then_some(wait)
        })
    }
}

/// Whether a failure is retried under `on`.
pub fn retriable_failure(on: RetryOn, f: Failure) -> bool {
    let any_reset = on.has(RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR | RetryOn::RESET);
    match f {
        Failure::Connect => {
            any_reset || on.has(RetryOn::CONNECT_FAILURE | RetryOn::RESET_BEFORE_REQUEST)
        }
        Failure::Reset { sent } => any_reset || (!sent && on.has(RetryOn::RESET_BEFORE_REQUEST)),
        Failure::PerTryTimeout => any_reset,
        Failure::RefusedStream => {
            any_reset || on.has(RetryOn::REFUSED_STREAM | RetryOn::RESET_BEFORE_REQUEST)
        }
    }
}

/// `grpc-status` 1 (cancelled), 4 (deadline exceeded), 8 (resource exhausted), 13
/// (internal) or 14 (unavailable), each under its own condition.
fn grpc_retriable(on: RetryOn, status: Option<&str>) -> bool {
    let bit = match status.map(str::trim) {
        Some("1") => RetryOn::GRPC_CANCELLED,
        Some("4") => RetryOn::GRPC_DEADLINE_EXCEEDED,
        Some("8") => RetryOn::GRPC_RESOURCE_EXHAUSTED,
        Some("13") => RetryOn::GRPC_INTERNAL,
        Some("14") => RetryOn::GRPC_UNAVAILABLE,
        _ => return false,
    };
    on.has(bit)
}

/// Envoy's fully jittered exponential back-off: the n-th wait is drawn below
/// `base * 2^(n-1)`, that bound capped at `max` (`random` is the shard's generator's draw).
pub fn back_off(base: Duration, max: Duration, retry: u32, random: u64) -> Duration {
    let base_ms = base.as_millis().max(1) as u64;
    let max_ms = max.as_millis().max(1) as u64;
    let bound = base_ms
        .checked_shl(retry.saturating_sub(1).min(63))
        .filter(|b| *b <= max_ms && *b >= base_ms)
        .unwrap_or(max_ms);
    Duration::from_millis(random % bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_proto::{HeaderMatcher, RateLimitedBackOff, ResetHeader, StringRule};

    fn plan(on: u32) -> RetryPlan {
        RetryPlan::compile(&RetryPolicy {
            retry_on: RetryOn(on),
            num_retries: 1,
            per_try_timeout: None,
            back_off_base: Duration::from_millis(25),
            back_off_max: Duration::from_millis(250),
            rate_limited: Some(RateLimitedBackOff {
                reset_headers: vec![ResetHeader {
                    name: "retry-after".into(),
                    unix_timestamp: false,
                }],
                max_interval: Duration::from_secs(5),
            }),
            previous_hosts: false,
            host_selection_retry_max_attempts: 1,
            retriable_status_codes: vec![418],
            retriable_headers: vec![HeaderMatcher {
                name: "x-try-again".into(),
                rule: StringRule::Exact {
                    value: "yes".into(),
                    ignore_case: false,
                },
                invert: false,
            }],
            retriable_request_headers: vec![HeaderMatcher {
                name: "x-idempotent".into(),
                rule: StringRule::Present(true),
                invert: false,
            }],
        })
        .unwrap()
    }

    fn none(_: &str) -> Option<&'static str> {
        None
    }

    #[test]
    fn responses_retried_by_condition() {
        let p = plan(0);
        let on = |bits| RetryOn(bits);
        assert!(p.retriable_response(on(RetryOn::FIVE_XX), 500, none));
        assert!(!p.retriable_response(on(RetryOn::FIVE_XX), 404, none));
        assert!(!p.retriable_response(on(RetryOn::GATEWAY_ERROR), 500, none));
        assert!(p.retriable_response(on(RetryOn::GATEWAY_ERROR), 503, none));
        assert!(p.retriable_response(on(RetryOn::RETRIABLE_4XX), 409, none));
        assert!(!p.retriable_response(on(RetryOn::RETRIABLE_4XX), 429, none));
        assert!(p.retriable_response(on(RetryOn::RETRIABLE_STATUS_CODES), 418, none));
        assert!(!p.retriable_response(on(RetryOn::RETRIABLE_STATUS_CODES), 419, none));
        let again = |n: &str| (n == "x-try-again").then_some("yes");
        assert!(p.retriable_response(on(RetryOn::RETRIABLE_HEADERS), 200, again));
        assert!(!p.retriable_response(on(RetryOn::RETRIABLE_HEADERS), 200, none));
        let grpc = |n: &str| (n == "grpc-status").then_some("14");
        assert!(p.retriable_response(on(RetryOn::GRPC_UNAVAILABLE), 200, grpc));
        assert!(!p.retriable_response(on(RetryOn::GRPC_CANCELLED), 200, grpc));
        // x-envoy-ratelimited: only under envoy-ratelimited, whatever the status.
        let limited = |n: &str| (n == "x-envoy-ratelimited").then_some("true");
        assert!(!p.retriable_response(on(RetryOn::FIVE_XX), 503, limited));
        assert!(p.retriable_response(on(RetryOn::ENVOY_RATELIMITED), 429, limited));
    }

    #[test]
    fn failures_retried_by_condition() {
        let on = RetryOn;
        let sent = Failure::Reset { sent: true };
        let unsent = Failure::Reset { sent: false };
        assert!(retriable_failure(
            on(RetryOn::CONNECT_FAILURE),
            Failure::Connect
        ));
        assert!(!retriable_failure(on(RetryOn::CONNECT_FAILURE), sent));
        assert!(retriable_failure(on(RetryOn::FIVE_XX), sent));
        assert!(retriable_failure(
            on(RetryOn::RESET),
            Failure::PerTryTimeout
        ));
        assert!(retriable_failure(on(RetryOn::RESET_BEFORE_REQUEST), unsent));
        assert!(!retriable_failure(on(RetryOn::RESET_BEFORE_REQUEST), sent));
        assert!(!retriable_failure(
            on(RetryOn::RETRIABLE_4XX),
            Failure::Connect
        ));
        assert!(!retriable_failure(on(RetryOn::REFUSED_STREAM), sent));
    }

    #[test]
    fn request_headers_limit_the_policy() {
        let p = plan(RetryOn::FIVE_XX);
        assert_eq!(p.retry_on(none), RetryOn(0));
        let marked = |n: &str| (n == "x-idempotent").then_some("1");
        assert_eq!(p.retry_on(marked), RetryOn(RetryOn::FIVE_XX));
    }

    #[test]
    fn rate_limited_waits_come_from_the_header() {
        let p = plan(RetryOn::ENVOY_RATELIMITED);
        let after = |v: &'static str| move |n: &str| (n == "retry-after").then_some(v);
        assert_eq!(
            p.rate_limited_wait(after("2")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.rate_limited_wait(after("60")), None, "past max_interval");
        assert_eq!(p.rate_limited_wait(after("soon")), None);
    }

    #[test]
    fn back_off_is_jittered_below_a_doubling_bound() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        for r in [0, 7, 24, 25, 1000, u64::MAX] {
            assert!(back_off(base, max, 1, r) < Duration::from_millis(25));
            assert!(back_off(base, max, 2, r) < Duration::from_millis(50));
            assert!(back_off(base, max, 4, r) < Duration::from_millis(200));
            assert!(back_off(base, max, 5, r) < Duration::from_millis(250));
            assert!(back_off(base, max, 64, r) < Duration::from_millis(250));
        }
        assert_eq!(back_off(base, max, 3, 99), Duration::from_millis(99));
    }
}
