//! `envoy.filters.http.local_ratelimit`: a token bucket per filter (and per route that
//! configures one), shared by every shard of the process as Envoy's is shared by its
//! workers (the data plane's `http::filter::local_ratelimit`). `filter_enabled` and
//! `filter_enforced` are read from the runtime when the snapshot compiles. Descriptors and
//! everything built on them, per-connection buckets, the local cluster's share,
//! `x-ratelimit-*` headers and `request_headers_to_add_when_not_enforced` are refused by
//! name.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::{
    FilterOverride, Fraction, HttpFilterConfig, LocalRateLimitConfig, TokenBucket,
};

use super::{HttpFilterKind, PerRoute};
use crate::config::compile::{duration, msg, plain_bool, string, u32_value};
use crate::config::route::{fractional_percent, header_adds};
use crate::config::runtime::Runtime;
use crate::config::ConfigError;

const LIMIT: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

pub(super) const FILTER: HttpFilterKind = HttpFilterKind {
    name: "envoy.filters.http.local_ratelimit",
    type_name: LIMIT,
    fields: &[
        (
            LIMIT,
            &[
                "stat_prefix",
                "status",
                "token_bucket",
                "filter_enabled",
                "filter_enforced",
                "response_headers_to_add",
                "enable_retry_after_header",
                // Only read with descriptors (refused): its default, true, is what
                // zerohop does.
                "always_consume_default_token_bucket",
            ],
        ),
        ("envoy.type.v3.HttpStatus", &["code"]),
        (
            "envoy.type.v3.TokenBucket",
            &["max_tokens", "tokens_per_fill", "fill_interval"],
        ),
        (
            "envoy.config.core.v3.RuntimeFractionalPercent",
            &["default_value", "runtime_key"],
        ),
    ],
    compile,
    per_route: Some(PerRoute {
        type_name: LIMIT,
        compile: per_route,
    }),
    terminal: false,
};

fn compile(f: &DynamicMessage, path: &str, rt: &Runtime) -> Result<HttpFilterConfig, ConfigError> {
    Ok(HttpFilterConfig::LocalRateLimit(config(f, path, rt)?))
}

fn per_route(f: &DynamicMessage, path: &str, rt: &Runtime) -> Result<FilterOverride, ConfigError> {
    Ok(FilterOverride::Config(compile(f, path, rt)?))
}

/// A `RuntimeFractionalPercent` (unset: 0%, Envoy's default here), the runtime's value
/// for its key over its default.
pub(crate) fn runtime_percent(
    f: &DynamicMessage,
    field: &str,
    path: &str,
    rt: &Runtime,
) -> Result<Fraction, ConfigError> {
    let Some(m) = msg(f, field) else {
        return Ok(Fraction {
            numerator: 0,
            denominator: 100,
        });
    };
    let own = match msg(m, "default_value") {
        Some(p) => fractional_percent(p, &format!("{path}.{field}.default_value"))?,
        None => Fraction {
            numerator: 0,
            denominator: 100,
        },
    };
    match string(m, "runtime_key") {
        k if k.is_empty() => Ok(own),
        k => Ok(rt.fraction(&k, own)),
    }
}

fn config(
    f: &DynamicMessage,
    path: &str,
    rt: &Runtime,
) -> Result<LocalRateLimitConfig, ConfigError> {
    let stat_prefix = string(f, "stat_prefix");
    if stat_prefix.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.stat_prefix"),
            "is required (Envoy's validation)",
        ));
    }
    let status = match msg(f, "status") {
        Some(s) => match s.get_field_by_name("code").as_deref() {
            // Envoy's HttpStatus: a code of 100 or more.
            Some(Value::EnumNumber(n)) if (100..600).contains(n) => *n as u16,
            Some(Value::EnumNumber(n)) => {
                return Err(ConfigError::at(
                    format!("{path}.status.code"),
                    format!("{n} is not an HTTP status"),
                ))
            }
            _ => 429,
        },
        None => 429,
    };
    let bucket = match msg(f, "token_bucket") {
        Some(tb) => Some(token_bucket(tb, &format!("{path}.token_bucket"), path)?),
        None => None,
    };
    Ok(LocalRateLimitConfig {
        stat_prefix,
        status,
        bucket,
        enabled: runtime_percent(f, "filter_enabled", path, rt)?,
        enforced: runtime_percent(f, "filter_enforced", path, rt)?,
        response_headers: header_adds(f, "response_headers_to_add", path)?,
        retry_after: plain_bool(f, "enable_retry_after_header"),
    })
}

/// The bucket: Envoy's validation (at least one token, a fill interval of 50 ms or more),
/// and its id, from where it is configured (`at`: the filter's or the route's path) and
/// what it holds.
pub(crate) fn token_bucket(
    tb: &DynamicMessage,
    path: &str,
    at: &str,
) -> Result<TokenBucket, ConfigError> {
    let max_tokens = match tb.get_field_by_name("max_tokens").as_deref() {
        Some(Value::U32(n)) if *n > 0 => *n,
        _ => {
            return Err(ConfigError::at(
                format!("{path}.max_tokens"),
                "must be greater than 0",
            ))
        }
    };
    let tokens_per_fill = msg(tb, "tokens_per_fill").map_or(1, u32_value);
    if tokens_per_fill == 0 {
        return Err(ConfigError::at(
            format!("{path}.tokens_per_fill"),
            "must be greater than 0",
        ));
    }
    let fill_interval = match msg(tb, "fill_interval") {
        Some(d) => duration(d, &format!("{path}.fill_interval"))?,
        None => Duration::ZERO,
    };
    if fill_interval < Duration::from_millis(50) {
        return Err(ConfigError::at(
            format!("{path}.fill_interval"),
            "the local rate limit token bucket fill timer must be >= 50ms (Envoy's rule)",
        ));
    }
    // Stable across runs (SipHash with fixed keys) so that a restarted control names the
    // same buckets.
    #[allow(deprecated)] // Reason: SipHasher's fixed keys are the point here.
    let mut h = std::hash::SipHasher::new();
    (at, max_tokens, tokens_per_fill, fill_interval).hash(&mut h);
    Ok(TokenBucket {
        id: h.finish().max(1),
        max_tokens,
        tokens_per_fill,
        fill_interval,
    })
}
