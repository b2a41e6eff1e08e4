//! A cluster's `outlier_detection`: the consecutive-failure detectors (5xx, gateway
//! failures, local-origin failures) and the success-rate and failure-percentage ones, with
//! Envoy's defaults.

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
        success_rate_minimum_hosts: num("success_rate_minimum_hosts", 5),
        success_rate_request_volume: num("success_rate_request_volume", 100),
        success_rate_stdev_factor: num("success_rate_stdev_factor", 1900),
        enforcing_success_rate: percent("enforcing_success_rate", 100)?,
        enforcing_local_origin_success_rate: percent("enforcing_local_origin_success_rate", 100)?,
        failure_percentage_threshold: percent("failure_percentage_threshold", 85)?,
        failure_percentage_minimum_hosts: num("failure_percentage_minimum_hosts", 5),
        failure_percentage_request_volume: num("failure_percentage_request_volume", 50),
        enforcing_failure_percentage: percent("enforcing_failure_percentage", 0)?,
        enforcing_failure_percentage_local_origin: percent(
            "enforcing_failure_percentage_local_origin",
            0,
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
