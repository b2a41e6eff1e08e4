//! Connection-manager options beyond the basics: `upgrade_configs` (also on a route action:
//! which `Upgrade` types are forwarded; Envoy answers any other upgrade request 403, and so
//! does zerohop; CONNECT is not implemented and is refused by name), the `server` header,
//! and path normalization.

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::{EscapedSlashes, PathNormalization, ServerHeader, UpgradeConfig};

use super::compile::{as_msg, enum_name, list, msg, plain_bool, string};
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
