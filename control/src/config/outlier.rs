//! A cluster's `outlier_detection`: the consecutive-failure detectors (5xx, gateway
//! failures, local-origin failures) with Envoy's defaults. Success-rate and
//! failure-percentage ejection are not implemented: a config that enforces them (Envoy
//! enforces success rate by default) is refused, naming the field to set to 0.

use std::time::Duration;

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::OutlierDetection;

use super::compile::{duration, msg, plain_bool, u32_value};
use super::ConfigError;

pub(super) fn outlier_detection(
    c: &DynamicMessage,
    path: &str,
) -> Result<Option<OutlierDetection>, ConfigError> {
    let Some(od) = msg(c, "outlier_detection") else {
        return Ok(None);
    };
    let path = format!("{path}.outlier_detection");
    let num = |field: &str, default: u32| msg(od, field).map_or(default, u32_value);
    let percent = |field: &str, default: u32| -> Result<u32, ConfigError> {
        match num(field, default) {
            n if n <= 100 => Ok(n),
            n => Err(ConfigError::at(
                format!("{path}.{field}"),
                format!("{n}: a percentage is at most 100"),
            )),
        }
    };
    let time = |field: &str, default: Duration| -> Result<Duration, ConfigError> {
        match msg(od, field) {
            Some(d) => duration(d, &format!("{path}.{field}")),
            None => Ok(default),
        }
    };
    let split = plain_bool(od, "split_external_local_origin_errors");
    let not_enforced = [
        ("enforcing_success_rate", 100, true),
        ("enforcing_failure_percentage", 0, true),
        ("enforcing_local_origin_success_rate", 100, split),
        ("enforcing_failure_percentage_local_origin", 0, split),
    ];
    for (field, default, applies) in not_enforced {
        if applies && percent(field, default)? != 0 {
            return Err(ConfigError::at(
                format!("{path}.{field}"),
                format!("success-rate and failure-percentage ejection are not supported by zerohop (Envoy's default for {field} is {default}): set it to 0"),
            ));
        }
    }
    let interval = time("interval", Duration::from_secs(10))?;
    if interval.is_zero() {
        return Err(ConfigError::at(
            format!("{path}.interval"),
            "must be greater than 0",
        ));
    }
    let base = time("base_ejection_time", Duration::from_secs(30))?;
    if base.is_zero() {
        return Err(ConfigError::at(
            format!("{path}.base_ejection_time"),
            "must be greater than 0",
        ));
    }
    let always_eject_one_host = match msg(od, "always_eject_one_host") {
        Some(b) => matches!(
            b.get_field_by_name("value").as_deref(),
            Some(Value::Bool(true))
        ),
        None => false,
    };
    Ok(Some(OutlierDetection {
        interval,
        base_ejection_time: base,
        max_ejection_time: time("max_ejection_time", Duration::from_secs(300))?,
        max_ejection_time_jitter: time("max_ejection_time_jitter", Duration::ZERO)?,
        max_ejection_percent: percent("max_ejection_percent", 10)?,
        always_eject_one_host,
        consecutive_5xx: num("consecutive_5xx", 5),
        enforcing_consecutive_5xx: percent("enforcing_consecutive_5xx", 100)?,
        consecutive_gateway_failure: num("consecutive_gateway_failure", 5),
        enforcing_consecutive_gateway_failure: percent("enforcing_consecutive_gateway_failure", 0)?,
        split_external_local_origin_errors: split,
        consecutive_local_origin_failure: num("consecutive_local_origin_failure", 5),
        enforcing_consecutive_local_origin_failure: percent(
            "enforcing_consecutive_local_origin_failure",
            100,
        )?,
    }))
}

/// `common_lb_config.healthy_panic_threshold` (a `Percent`, default 50).
pub(super) fn panic_threshold(c: &DynamicMessage) -> f64 {
    msg(c, "common_lb_config")
        .and_then(|l| msg(l, "healthy_panic_threshold"))
        .and_then(|p| match p.get_field_by_name("value").as_deref() {
            Some(Value::F64(v)) => Some(v.clamp(0.0, 100.0)),
            _ => None,
        })
        .unwrap_or(50.0)
}
