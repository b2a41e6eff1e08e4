//! A route's (or virtual host's) `retry_policy`, checked as Envoy checks it, with Envoy's
//! defaults filled in.

use std::time::Duration;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::{RateLimitedBackOff, ResetHeader, RetryOn, RetryPolicy};

use super::compile::{as_msg, duration, list, msg, string, u32_value};
use super::route::header_matcher;
use super::supported::{element_label, unpack_any};
use super::ConfigError;

/// The fields of the retry policy messages zerohop implements. `retry_priority`,
/// `retry_options_predicates`, `per_try_idle_timeout` and hedging are refused by name.
pub(super) const FIELDS: &[(&str, &[&str])] = &[
    (
        "envoy.config.route.v3.RetryPolicy",
        &[
            "retry_on",
            "num_retries",
            "per_try_timeout",
            "retry_back_off",
            "rate_limited_retry_back_off",
            "retry_host_predicate",
            "host_selection_retry_max_attempts",
            "retriable_status_codes",
            "retriable_headers",
            "retriable_request_headers",
        ],
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RetryBackOff",
        &["base_interval", "max_interval"],
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RateLimitedRetryBackOff",
        &["reset_headers", "max_interval"],
    ),
    (
        "envoy.config.route.v3.RetryPolicy.ResetHeader",
        &["name", "format"],
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RetryHostPredicate",
        &["name", "typed_config"],
    ),
    (PREVIOUS_HOSTS, &[]),
];

const PREVIOUS_HOSTS: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// Compiles `retry_policy` at `path`.
pub(super) fn retry_policy(rp: &DynamicMessage, path: &str) -> Result<RetryPolicy, ConfigError> {
    let mut retry_on = 0;
    for name in string(rp, "retry_on").split(',') {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        match RetryOn::NAMES.iter().find(|(n, _)| *n == name) {
            Some((_, bit)) => retry_on |= bit,
            None => {
                return Err(ConfigError::at(
                    format!("{path}.retry_on"),
                    format!("invalid retry_on value {name:?}"),
                ))
            }
        }
    }
    let ms = |d: Duration| d.as_millis();
    let (back_off_base, back_off_max) = match msg(rp, "retry_back_off") {
        Some(b) => {
            let bp = format!("{path}.retry_back_off");
            let Some(base) = msg(b, "base_interval") else {
                return Err(ConfigError::at(format!("{bp}.base_interval"), "required"));
            };
            let base = duration(base, &format!("{bp}.base_interval"))?;
            if ms(base) == 0 {
                return Err(ConfigError::at(
                    format!("{bp}.base_interval"),
                    "must be at least 1ms",
                ));
            }
            let max = match msg(b, "max_interval") {
                Some(m) => duration(m, &format!("{bp}.max_interval"))?,
                None => base * 10,
            };
            if max < base {
                return Err(ConfigError::at(
                    format!("{bp}.max_interval"),
                    "must be greater than or equal to the base_interval",
                ));
            }
            (base, max)
        }
        None => (Duration::from_millis(25), Duration::from_millis(250)),
    };
    let rate_limited = match msg(rp, "rate_limited_retry_back_off") {
        Some(r) => Some(rate_limited(
            r,
            &format!("{path}.rate_limited_retry_back_off"),
        )?),
        None => None,
    };
    let mut previous_hosts = false;
    for (i, p) in list(rp, "retry_host_predicate").iter().enumerate() {
        let p = as_msg(p);
        let pp = format!("{path}.retry_host_predicate[{i}]");
        // Envoy finds the predicate by its typed_config's type (a name alone is refused).
        let Some(any) = msg(p, "typed_config") else {
            return Err(ConfigError::at(
                format!("{pp}.typed_config"),
                "required (Envoy finds a retry host predicate by its type)",
            ));
        };
        let ty = unpack_any(any)
            .map_err(|e| ConfigError::at(format!("{pp}.typed_config"), e))?
            .descriptor()
            .full_name()
            .to_owned();
        if ty != PREVIOUS_HOSTS {
            return Err(ConfigError::at(
                format!("{pp}.typed_config"),
                format!(
                    "retry host predicate {ty} is not supported by zerohop (only previous_hosts)"
                ),
            ));
        }
        previous_hosts = true;
    }
    let mut retriable_status_codes = Vec::new();
    for (i, c) in list(rp, "retriable_status_codes").iter().enumerate() {
        match c {
            Value::U32(c) if (100..600).contains(c) => retriable_status_codes.push(*c as u16),
            other => {
                return Err(ConfigError::at(
                    format!("{path}.retriable_status_codes[{i}]"),
                    format!("{other:?}: not an HTTP status code"),
                ))
            }
        }
    }
    let matchers = |field: &str| {
        list(rp, field)
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let h = as_msg(h);
                header_matcher(h, &format!("{path}.{field}{}", element_label(i, h)))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let host_selection_retry_max_attempts = match rp
        .get_field_by_name("host_selection_retry_max_attempts")
        .as_deref()
    {
        Some(Value::I64(n)) if *n > 0 => (*n).min(u32::MAX as i64) as u32,
        _ => 1,
    };
    Ok(RetryPolicy {
        retry_on: RetryOn(retry_on),
        num_retries: msg(rp, "num_retries").map_or(1, u32_value),
        per_try_timeout: match msg(rp, "per_try_timeout") {
            Some(d) => {
                Some(duration(d, &format!("{path}.per_try_timeout"))?).filter(|d| !d.is_zero())
            }
            None => None,
        },
        back_off_base,
        back_off_max,
        rate_limited,
        previous_hosts,
        host_selection_retry_max_attempts,
        retriable_status_codes,
        retriable_headers: matchers("retriable_headers")?,
        retriable_request_headers: matchers("retriable_request_headers")?,
    })
}

fn rate_limited(r: &DynamicMessage, path: &str) -> Result<RateLimitedBackOff, ConfigError> {
    let mut reset_headers = Vec::new();
    for (i, h) in list(r, "reset_headers").iter().enumerate() {
        let h = as_msg(h);
        let hp = format!("{path}.reset_headers[{i}]");
        let name = string(h, "name").to_ascii_lowercase();
        if name.is_empty() {
            return Err(ConfigError::at(format!("{hp}.name"), "required"));
        }
        let unix_timestamp = match h.get_field_by_name("format").as_deref() {
            Some(Value::EnumNumber(1)) => true,
            Some(Value::EnumNumber(0)) | None => false,
            Some(other) => {
                return Err(ConfigError::at(
                    format!("{hp}.format"),
                    format!("{other:?}: not SECONDS or UNIX_TIMESTAMP"),
                ))
            }
        };
        reset_headers.push(ResetHeader {
            name,
            unix_timestamp,
        });
    }
    if reset_headers.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.reset_headers"),
            "at least one reset header is required",
        ));
    }
    let max_interval = match msg(r, "max_interval") {
        Some(d) => {
            let d = duration(d, &format!("{path}.max_interval"))?;
            if d < Duration::from_millis(1) {
                return Err(ConfigError::at(
                    format!("{path}.max_interval"),
                    "must be at least 1ms",
                ));
            }
            d
        }
        None => Duration::from_secs(300),
    };
    Ok(RateLimitedBackOff {
        reset_headers,
        max_interval,
    })
}
