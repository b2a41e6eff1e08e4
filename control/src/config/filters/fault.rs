//! `envoy.filters.http.fault`: delays and aborts injected into a share of requests, fixed or
//! asked for by the request's headers, as Envoy's fault filter (the data plane's
//! `http::filter::fault`). The runtime keys Envoy reads per request are read here when the
//! snapshot compiles (a runtime change recompiles it). Per route, an `HTTPFault` replaces
//! the filter's configuration. gRPC aborts, response rate limits and `upstream_cluster` are
//! refused by name.

use std::time::Duration;

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::{
    FaultAbort, FaultConfig, FaultDelay, FilterOverride, Fraction, HttpFilterConfig,
};

use super::{HttpFilterKind, PerRoute};
use crate::config::compile::{as_msg, duration, list, msg, string, u32_value};
use crate::config::route::{fractional_percent, header_matcher};
use crate::config::runtime::Runtime;
use crate::config::supported::element_label;
use crate::config::ConfigError;

const FAULT: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";
const ABORT: &str = "envoy.extensions.filters.http.fault.v3.FaultAbort";
const HEADER_ABORT: &str = "envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort";
const DELAY: &str = "envoy.extensions.filters.common.fault.v3.FaultDelay";
const HEADER_DELAY: &str = "envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay";

pub(super) const FILTER: HttpFilterKind = HttpFilterKind {
    name: "envoy.filters.http.fault",
    type_name: FAULT,
    fields: &[
        (
            FAULT,
            &[
                "delay",
                "abort",
                "headers",
                "downstream_nodes",
                "max_active_faults",
                "delay_percent_runtime",
                "abort_percent_runtime",
                "delay_duration_runtime",
                "abort_http_status_runtime",
                "max_active_faults_runtime",
            ],
        ),
        (
            ABORT,
            &["http_status", "header_abort", "percentage", "response_body"],
        ),
        (HEADER_ABORT, &[]),
        (DELAY, &["fixed_delay", "header_delay", "percentage"]),
        (HEADER_DELAY, &[]),
    ],
    compile,
    per_route: Some(PerRoute {
        type_name: FAULT,
        compile: per_route,
    }),
    terminal: false,
};

fn compile(f: &DynamicMessage, path: &str, rt: &Runtime) -> Result<HttpFilterConfig, ConfigError> {
    Ok(HttpFilterConfig::Fault(config(f, path, rt)?))
}

fn per_route(f: &DynamicMessage, path: &str, rt: &Runtime) -> Result<FilterOverride, ConfigError> {
    Ok(FilterOverride::Config(compile(f, path, rt)?))
}

/// A runtime key field: the key given, else Envoy's default key.
fn key(f: &DynamicMessage, field: &str, default: &str) -> String {
    match string(f, field) {
        k if k.is_empty() => default.to_owned(),
        k => k,
    }
}

/// `percentage` (unset: 0%, as the proto's default), the runtime's value for `key` over it.
fn percentage(
    m: &DynamicMessage,
    path: &str,
    rt: &Runtime,
    key: &str,
) -> Result<Fraction, ConfigError> {
    let own = match msg(m, "percentage") {
        Some(p) => fractional_percent(p, &format!("{path}.percentage"))?,
        None => Fraction {
            numerator: 0,
            denominator: 100,
        },
    };
    Ok(rt.fraction(key, own))
}

fn config(f: &DynamicMessage, path: &str, rt: &Runtime) -> Result<FaultConfig, ConfigError> {
    let delay = match msg(f, "delay") {
        Some(d) => {
            let dp = format!("{path}.delay");
            let fixed = match msg(d, "fixed_delay") {
                Some(fd) => {
                    let own = duration(fd, &format!("{dp}.fixed_delay"))?;
                    if own.is_zero() {
                        return Err(ConfigError::at(
                            format!("{dp}.fixed_delay"),
                            "must be greater than 0",
                        ));
                    }
                    let k = key(
                        f,
                        "delay_duration_runtime",
                        "fault.http.delay.fixed_duration_ms",
                    );
                    let ms = rt.integer(&k, own.as_millis() as u64);
                    Some(Duration::from_millis(ms))
                }
                None if msg(d, "header_delay").is_some() => None,
                None => {
                    return Err(ConfigError::at(
                        dp,
                        "a delay needs fixed_delay or header_delay",
                    ))
                }
            };
            let k = key(
                f,
                "delay_percent_runtime",
                "fault.http.delay.fixed_delay_percent",
            );
            Some(FaultDelay {
                fixed,
                percentage: percentage(d, &dp, rt, &k)?,
            })
        }
        None => None,
    };
    let abort = match msg(f, "abort") {
        Some(a) => {
            let ap = format!("{path}.abort");
            let http_status = match a.get_field_by_name("http_status").as_deref() {
                Some(Value::U32(s)) if a.has_field_by_name("http_status") => {
                    if !(200..600).contains(s) {
                        return Err(ConfigError::at(
                            format!("{ap}.http_status"),
                            "must be from 200 to 599",
                        ));
                    }
                    let k = key(
                        f,
                        "abort_http_status_runtime",
                        "fault.http.abort.http_status",
                    );
                    let s = rt.integer(&k, u64::from(*s));
                    Some(if (200..600).contains(&s) {
                        s as u16
                    } else {
                        503
                    })
                }
                _ if msg(a, "header_abort").is_some() => None,
                _ => {
                    return Err(ConfigError::at(
                        ap,
                        "an abort needs http_status or header_abort",
                    ))
                }
            };
            let k = key(f, "abort_percent_runtime", "fault.http.abort.abort_percent");
            Some(FaultAbort {
                http_status,
                percentage: percentage(a, &ap, rt, &k)?,
                body: Some(string(a, "response_body")).filter(|b| !b.is_empty()),
            })
        }
        None => None,
    };
    let mut headers = Vec::new();
    for (i, h) in list(f, "headers").iter().enumerate() {
        let h = as_msg(h);
        headers.push(header_matcher(
            h,
            &format!("{path}.headers{}", element_label(i, h)),
        )?);
    }
    let downstream_nodes = list(f, "downstream_nodes")
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let max_key = key(
        f,
        "max_active_faults_runtime",
        "fault.http.max_active_faults",
    );
    let max_active_faults = match msg(f, "max_active_faults").map(u32_value) {
        Some(n) => Some(rt.integer(&max_key, u64::from(n)).min(u64::from(u32::MAX)) as u32),
        None => match rt.integer(&max_key, u64::MAX) {
            u64::MAX => None,
            n => Some(n.min(u64::from(u32::MAX)) as u32),
        },
    };
    Ok(FaultConfig {
        delay,
        abort,
        headers,
        downstream_nodes,
        max_active_faults,
    })
}
