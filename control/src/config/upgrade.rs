//! `upgrade_configs`, on the connection manager and on a route action: which `Upgrade`
//! types (WebSocket and the like) are forwarded. Envoy answers any other upgrade request
//! 403; so does zerohop. CONNECT (`connect_config`, the CONNECT upgrade type) is not
//! implemented and is refused by name.

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::UpgradeConfig;

use super::compile::{as_msg, list, msg, string};
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
