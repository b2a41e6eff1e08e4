//! A cluster's `health_checks` (HTTP/1.1, TCP and gRPC checkers, with Envoy's defaults and
//! validation), an endpoint's `health_check_config`, and the EDS `health_status` of an
//! `LbEndpoint`. The checks run in control (`crate::health`).

use std::net::SocketAddr;
use std::time::Duration;

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::{HealthCheck, HealthChecker, HttpHealthCheck};

use super::compile::{as_msg, duration, enum_name, list, msg, port_value, string, u32_value};
use super::ConfigError;

/// `Cluster.health_checks`; `cluster` names the host header's default, `http2` says
/// whether the cluster speaks HTTP/2 (gRPC checks need it).
pub(super) fn health_checks(
    c: &DynamicMessage,
    cluster: &str,
    http2: bool,
    path: &str,
) -> Result<Vec<HealthCheck>, ConfigError> {
    let mut out = Vec::new();
    let all = list(c, "health_checks");
    if all.len() > 1 {
        // Envoy's checkers would share (and fight over) each host's one flag.
        return Err(ConfigError::at(
            format!("{path}.health_checks[1]"),
            "zerohop runs one health check per cluster",
        ));
    }
    for (i, hc) in all.iter().enumerate() {
        out.push(health_check(
            as_msg(hc),
            cluster,
            http2,
            &format!("{path}.health_checks[{i}]"),
        )?);
    }
    Ok(out)
}

fn health_check(
    hc: &DynamicMessage,
    cluster: &str,
    http2: bool,
    path: &str,
) -> Result<HealthCheck, ConfigError> {
    let time = |field: &str| -> Result<Option<Duration>, ConfigError> {
        msg(hc, field)
            .map(|d| duration(d, &format!("{path}.{field}")))
            .transpose()
    };
    let positive = |field: &str| -> Result<Duration, ConfigError> {
        match time(field)? {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(ConfigError::at(
                format!("{path}.{field}"),
                "is required and must be greater than 0",
            )),
        }
    };
    // Envoy's validation: timeout, interval and both thresholds are required.
    let timeout = positive("timeout")?;
    let interval = positive("interval")?;
    let threshold = |field: &str| -> Result<u32, ConfigError> {
        msg(hc, field).map(u32_value).ok_or_else(|| {
            ConfigError::at(
                format!("{path}.{field}"),
                "is required (Envoy's validation)",
            )
        })
    };
    let unhealthy_threshold = threshold("unhealthy_threshold")?;
    let healthy_threshold = threshold("healthy_threshold")?;
    let unhealthy_interval = time("unhealthy_interval")?.unwrap_or(interval);
    let no_traffic_interval = time("no_traffic_interval")?.unwrap_or(Duration::from_secs(60));
    let reuse_connection = match msg(hc, "reuse_connection") {
        Some(b) => matches!(
            b.get_field_by_name("value").as_deref(),
            Some(Value::Bool(true))
        ),
        None => true,
    };
    let checker = if let Some(h) = msg(hc, "http_health_check") {
        HealthChecker::Http(http(h, cluster, &format!("{path}.http_health_check"))?)
    } else if let Some(t) = msg(hc, "tcp_health_check") {
        let p = format!("{path}.tcp_health_check");
        let send = match msg(t, "send") {
            Some(s) => payload(s, &format!("{p}.send"))?,
            None => Vec::new(),
        };
        HealthChecker::Tcp {
            send,
            receive: payloads(t, "receive", &p)?,
        }
    } else if let Some(g) = msg(hc, "grpc_health_check") {
        // Envoy checks gRPC over the cluster's own HTTP/2, and refuses it on a cluster
        // that speaks HTTP/1.1.
        if !http2 {
            return Err(ConfigError::at(
                format!("{path}.grpc_health_check"),
                format!("{cluster} cluster must support HTTP/2 for gRPC healthchecking"),
            ));
        }
        let authority = match string(g, "authority") {
            a if a.is_empty() => cluster.to_owned(),
            a => a,
        };
        HealthChecker::Grpc {
            service_name: string(g, "service_name"),
            authority,
        }
    } else {
        return Err(ConfigError::at(
            path,
            "a health check needs http_health_check, tcp_health_check or grpc_health_check (zerohop has no other checkers)",
        ));
    };
    Ok(HealthCheck {
        timeout,
        interval,
        initial_jitter: time("initial_jitter")?.unwrap_or_default(),
        interval_jitter: time("interval_jitter")?.unwrap_or_default(),
        interval_jitter_percent: match hc.get_field_by_name("interval_jitter_percent").as_deref() {
            Some(Value::U32(p)) => *p,
            _ => 0,
        },
        unhealthy_threshold,
        healthy_threshold,
        unhealthy_interval,
        unhealthy_edge_interval: time("unhealthy_edge_interval")?.unwrap_or(unhealthy_interval),
        healthy_edge_interval: time("healthy_edge_interval")?.unwrap_or(interval),
        no_traffic_interval,
        no_traffic_healthy_interval: time("no_traffic_healthy_interval")?
            .unwrap_or(no_traffic_interval),
        reuse_connection,
        checker,
    })
}

fn http(h: &DynamicMessage, cluster: &str, path: &str) -> Result<HttpHealthCheck, ConfigError> {
    match enum_name(h, "codec_client_type").as_str() {
        "HTTP1" => {}
        other => {
            return Err(ConfigError::at(
                format!("{path}.codec_client_type"),
                format!("{other} health checks are not supported by zerohop (HTTP1 only; use grpc_health_check for gRPC services)"),
            ))
        }
    }
    let p = string(h, "path");
    if p.is_empty() || !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ConfigError::at(
            format!("{path}.path"),
            format!("{p:?}: a health check needs a path starting with /"),
        ));
    }
    let method = match enum_name(h, "method").as_str() {
        "METHOD_UNSPECIFIED" => "GET".to_owned(),
        "CONNECT" => {
            return Err(ConfigError::at(
                format!("{path}.method"),
                "CONNECT is not allowed (Envoy's validation)",
            ))
        }
        m => m.to_owned(),
    };
    let send = match msg(h, "send") {
        Some(s) => payload(s, &format!("{path}.send"))?,
        None => Vec::new(),
    };
    if !send.is_empty() && matches!(method.as_str(), "GET" | "HEAD" | "DELETE" | "TRACE") {
        return Err(ConfigError::at(
            format!("{path}.send"),
            format!(
                "a request payload cannot go with method {method} (POST, PUT, PATCH or OPTIONS)"
            ),
        ));
    }
    let receive = payloads(h, "receive", path)?;
    let response_buffer_size = match msg(h, "response_buffer_size") {
        Some(w) => match w.get_field_by_name("value").as_deref() {
            Some(Value::U64(n)) => *n,
            _ => 0,
        },
        None => 1024,
    };
    let total: usize = receive.iter().map(Vec::len).sum();
    if response_buffer_size != 0 && total as u64 > response_buffer_size {
        return Err(ConfigError::at(
            format!("{path}.receive"),
            format!("the expected response length {total} is over response_buffer_size {response_buffer_size}"),
        ));
    }
    let mut request_headers_to_add = Vec::new();
    for (i, o) in list(h, "request_headers_to_add").iter().enumerate() {
        let o = as_msg(o);
        let p = format!("{path}.request_headers_to_add[{i}]");
        let Some(hv) = msg(o, "header") else {
            return Err(ConfigError::at(format!("{p}.header"), "needs a header"));
        };
        let (name, value) = (string(hv, "key").to_ascii_lowercase(), string(hv, "value"));
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) || name == "host" {
            return Err(ConfigError::at(
                format!("{p}.header.key"),
                format!("{name:?} cannot be added to a health check request"),
            ));
        }
        if value.contains('%') || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(ConfigError::at(
                format!("{p}.header.value"),
                "zerohop takes plain values here (no %...% variables, CR, LF or NUL)",
            ));
        }
        request_headers_to_add.push((name, value));
    }
    let request_headers_to_remove = list(h, "request_headers_to_remove")
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let host = match string(h, "host") {
        s if s.is_empty() => cluster.to_owned(),
        s => s,
    };
    Ok(HttpHealthCheck {
        host,
        path: p,
        method,
        send,
        receive,
        response_buffer_size,
        request_headers_to_add,
        request_headers_to_remove,
        expected_statuses: match ranges(h, "expected_statuses", path)? {
            r if r.is_empty() => vec![(200, 201)],
            r => r,
        },
        retriable_statuses: ranges(h, "retriable_statuses", path)?,
    })
}

/// `Int64Range`s of statuses, `[start, end)` within 100..=600 as Envoy checks them.
fn ranges(h: &DynamicMessage, field: &str, path: &str) -> Result<Vec<(u16, u16)>, ConfigError> {
    let mut out = Vec::new();
    for (i, r) in list(h, field).iter().enumerate() {
        let r = as_msg(r);
        let n = |f: &str| match r.get_field_by_name(f).as_deref() {
            Some(Value::I64(v)) => *v,
            _ => 0,
        };
        let (start, end) = (n("start"), n("end"));
        if start >= end || start < 100 || end > 600 {
            return Err(ConfigError::at(
                format!("{path}.{field}[{i}]"),
                format!("[{start}, {end}): a status range needs 100 <= start < end <= 600"),
            ));
        }
        out.push((start as u16, end as u16));
    }
    Ok(out)
}

fn payloads(m: &DynamicMessage, field: &str, path: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    list(m, field)
        .iter()
        .enumerate()
        .map(|(i, p)| payload(as_msg(p), &format!("{path}.{field}[{i}]")))
        .collect()
}

/// A `Payload`: `text` (hex) or `binary`.
fn payload(p: &DynamicMessage, path: &str) -> Result<Vec<u8>, ConfigError> {
    if let Some(Value::Bytes(b)) = p.get_field_by_name("binary").as_deref() {
        if p.has_field_by_name("binary") {
            return Ok(b.to_vec());
        }
    }
    let text = string(p, "text");
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    if !text.len().is_multiple_of(2) {
        return Err(ConfigError::at(
            format!("{path}.text"),
            format!("{text:?} is not hex (an odd number of digits)"),
        ));
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(hex(pair[0])? << 4 | hex(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| ConfigError::at(format!("{path}.text"), format!("{text:?} is not hex")))
}

/// `endpoint.health_check_config`: the address and port checks go to instead of the
/// endpoint's own.
pub(super) fn check_address(
    endpoint: &DynamicMessage,
    address: SocketAddr,
    path: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(hc) = msg(endpoint, "health_check_config") else {
        return Ok(None);
    };
    let path = format!("{path}.health_check_config");
    let mut at = match msg(hc, "address") {
        Some(a) => super::compile::socket_address(a, &format!("{path}.address"))?,
        None => address,
    };
    if let Some(Value::U32(p)) = hc.get_field_by_name("port_value").as_deref() {
        if *p != 0 {
            at.set_port(port_value(hc, &path).map_err(|_| {
                ConfigError::at(
                    format!("{path}.port_value"),
                    format!("port {p} is out of range"),
                )
            })?);
        }
    }
    Ok(Some(at))
}

/// `LbEndpoint.health_status`: whether EDS says the host is out (UNHEALTHY, DRAINING,
/// TIMEOUT), as Envoy's `FAILED_EDS_HEALTH`. DEGRADED is refused: zerohop's balancers have
/// no degraded tier.
pub(super) fn eds_unhealthy(lbe: &DynamicMessage, path: &str) -> Result<bool, ConfigError> {
    match enum_name(lbe, "health_status").as_str() {
        "UNKNOWN" | "HEALTHY" => Ok(false),
        "UNHEALTHY" | "DRAINING" | "TIMEOUT" => Ok(true),
        other => Err(ConfigError::at(
            format!("{path}.health_status"),
            format!("{other} is not supported by zerohop (no degraded load balancing)"),
        )),
    }
}
