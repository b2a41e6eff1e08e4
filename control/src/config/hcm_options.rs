//! Connection-manager options beyond the basics: `upgrade_configs` (also on a route action:
//! which `Upgrade` types are forwarded; Envoy answers any other upgrade request 403, and so
//! does zerohop; CONNECT is not implemented and is refused by name), the `server` header,
//! path normalization, and the HTTP/2 codec's `http2_protocol_options`.

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::{
    EscapedSlashes, Http2Keepalive, Http2Options, PathNormalization, ServerHeader, UpgradeConfig,
};

use super::compile::{as_msg, duration, enum_name, list, msg, plain_bool, string, u32_value};
use super::supported::element_label;
use super::ConfigError;

/// The `upgrade_configs` of `m` (at `path`).
pub(super) fn upgrade_configs(
    m: &DynamicMessage,
    path: &str,
) -> Result<Vec<UpgradeConfig>, ConfigError> {
    let mut out: Vec<UpgradeConfig> = Vec::new();
    for (i, u) in list(m, "upgrade_configs").iter().enumerate() {
        let u = as_msg(u);
        let p = format!("{path}.upgrade_configs{}", element_label(i, u));
        let upgrade_type = string(u, "upgrade_type").to_ascii_lowercase();
        if upgrade_type.is_empty() {
            return Err(ConfigError::at(
                format!("{p}.upgrade_type"),
                "an upgrade config needs an upgrade_type",
            ));
        }
        if upgrade_type == "connect" {
            return Err(ConfigError::at(
                format!("{p}.upgrade_type"),
                "CONNECT is not supported by zerohop (WebSocket and other Upgrade types are)",
            ));
        }
        if out.iter().any(|o| o.upgrade_type == upgrade_type) {
            // Envoy refuses a type given twice.
            return Err(ConfigError::at(
                format!("{p}.upgrade_type"),
                format!("upgrade type {upgrade_type:?} is configured twice"),
            ));
        }
        let enabled = match msg(u, "enabled") {
            Some(b) => matches!(
                b.get_field_by_name("value").as_deref(),
                Some(Value::Bool(true))
            ),
            None => true,
        };
        out.push(UpgradeConfig {
            upgrade_type,
            enabled,
        });
    }
    Ok(out)
}

/// `server_name` (Envoy's default `envoy`) and `server_header_transformation`.
pub(super) fn server(
    hcm: &DynamicMessage,
    path: &str,
) -> Result<(String, ServerHeader), ConfigError> {
    let mode = match enum_name(hcm, "server_header_transformation").as_str() {
        "OVERWRITE" => ServerHeader::Overwrite,
        "APPEND_IF_ABSENT" => ServerHeader::AppendIfAbsent,
        "PASS_THROUGH" => ServerHeader::PassThrough,
        other => {
            return Err(ConfigError::at(
                format!("{path}.server_header_transformation"),
                format!("unknown value {other}"),
            ))
        }
    };
    let name = match string(hcm, "server_name") {
        n if n.is_empty() => "envoy".to_owned(),
        n => n,
    };
    Ok((name, mode))
}

/// `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`.
pub(super) fn path_normalization(
    hcm: &DynamicMessage,
    path: &str,
) -> Result<PathNormalization, ConfigError> {
    let escaped_slashes = match enum_name(hcm, "path_with_escaped_slashes_action").as_str() {
        "IMPLEMENTATION_SPECIFIC_DEFAULT" | "KEEP_UNCHANGED" => EscapedSlashes::KeepUnchanged,
        "REJECT_REQUEST" => EscapedSlashes::Reject,
        "UNESCAPE_AND_REDIRECT" => EscapedSlashes::UnescapeAndRedirect,
        "UNESCAPE_AND_FORWARD" => EscapedSlashes::UnescapeAndForward,
        other => {
            return Err(ConfigError::at(
                format!("{path}.path_with_escaped_slashes_action"),
                format!("unknown value {other}"),
            ))
        }
    };
    Ok(PathNormalization {
        normalize: msg(hcm, "normalize_path").is_some_and(|b| {
            matches!(
                b.get_field_by_name("value").as_deref(),
                Some(Value::Bool(true))
            )
        }),
        merge_slashes: plain_bool(hcm, "merge_slashes"),
        escaped_slashes,
    })
}

/// The connection manager's `http2_protocol_options` (at `path`).
pub(super) fn http2_options(hcm: &DynamicMessage, path: &str) -> Result<Http2Options, ConfigError> {
    http2_protocol_options(
        msg(hcm, "http2_protocol_options"),
        &format!("{path}.http2_protocol_options"),
        Http2Options::default(),
    )
}

/// An `Http2ProtocolOptions` (at `path`; `None`: all defaults), with Envoy's bounds. What the
/// HTTP/2 codec does not honour is refused by name (the supported-field table): the
/// frame-flood limits Envoy counts itself are the `h2` library's own (see ARCHITECTURE.md,
/// "HTTP/2").
pub(super) fn http2_protocol_options(
    o: Option<&DynamicMessage>,
    path: &str,
    defaults: Http2Options,
) -> Result<Http2Options, ConfigError> {
    let mut out = defaults;
    let Some(o) = o else {
        return Ok(out);
    };
    let at = |f: &str| format!("{path}.{f}");
    let bounded = |f: &str, lo: u32, hi: u32, into: &mut u32| match msg(o, f).map(u32_value) {
        Some(n) if !(lo..=hi).contains(&n) => Err(ConfigError::at(
            at(f),
            format!("must be between {lo} and {hi}"),
        )),
        Some(n) => {
            *into = n;
            Ok(())
        }
        None => Ok(()),
    };
    bounded(
        "max_concurrent_streams",
        1,
        2_147_483_647,
        &mut out.max_concurrent_streams,
    )?;
    bounded(
        "initial_stream_window_size",
        65_535,
        2_147_483_647,
        &mut out.initial_stream_window_size,
    )?;
    bounded(
        "initial_connection_window_size",
        65_535,
        2_147_483_647,
        &mut out.initial_connection_window_size,
    )?;
    bounded("hpack_table_size", 0, u32::MAX, &mut out.hpack_table_size)?;
    // The h2 codec answers a malformed request by resetting its stream (Envoy's behaviour
    // with `true`); closing the whole connection instead (`false`) is not available.
    let field = "override_stream_error_on_invalid_http_message";
    if o.has_field_by_name(field) && !super::http::bool_value(o, field, true) {
        return Err(ConfigError::at(
            at("override_stream_error_on_invalid_http_message"),
            "false is not supported by zerohop: a malformed HTTP/2 request resets its stream only (as with true)",
        ));
    }
    if let Some(k) = msg(o, "connection_keepalive") {
        let kat = at("connection_keepalive");
        let interval = msg(k, "interval")
            .map(|d| duration(d, &format!("{kat}.interval")))
            .transpose()?;
        let timeout = msg(k, "timeout")
            .map(|d| duration(d, &format!("{kat}.timeout")))
            .transpose()?;
        let Some(timeout) = timeout.filter(|t| *t >= std::time::Duration::from_millis(1)) else {
            return Err(ConfigError::at(
                format!("{kat}.timeout"),
                "connection_keepalive needs a timeout of at least 1ms",
            ));
        };
        // Without an interval Envoy sends no PING (the timeout alone has nothing to time).
        if let Some(interval) = interval.filter(|i| !i.is_zero()) {
            if interval < std::time::Duration::from_millis(1) {
                return Err(ConfigError::at(
                    format!("{kat}.interval"),
                    "must be at least 1ms",
                ));
            }
            out.keepalive = Some(Http2Keepalive { interval, timeout });
        }
    }
    Ok(out)
}
