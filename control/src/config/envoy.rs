//! Envoy's proto3 JSON mapping, decoded exactly as Envoy does: against the Envoy v3 API
//! descriptors, with inline `"@type"` for `Any`, either field-name spelling, and unknown
//! fields refused.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage};

use super::ConfigError;

/// Compiled from the `.proto` files that `envoy-types` 0.7.7 ships, by
/// `tools/gen-descriptors` (see its README note there to regenerate).
static DESCRIPTORS: &[u8] = include_bytes!("../../descriptors/envoy.bin");

/// The Envoy v3 API descriptor pool, decoded once.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTORS).expect("embedded Envoy descriptors decode")
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// By file extension, as Envoy does (`.json` is JSON, anything else YAML).
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Yaml,
        }
    }

    /// JSON if the first non-blank character opens an object.
    pub fn sniff(text: &str) -> Format {
        match text.trim_start().starts_with('{') {
            true => Format::Json,
            false => Format::Yaml,
        }
    }
}

pub(super) fn decode_bootstrap(text: &str, format: Format) -> Result<DynamicMessage, ConfigError> {
    let value: serde_json::Value = match format {
        Format::Json => serde_json::from_str(text)
            .map_err(|e| ConfigError::at("", format!("invalid JSON: {e}")))?,
        Format::Yaml => serde_yaml::from_str(text)
            .map_err(|e| ConfigError::at("", format!("invalid YAML: {e}")))?,
    };
    if !value.is_object() {
        return Err(ConfigError::at(
            "",
            "the bootstrap must be a mapping at the top level",
        ));
    }
    decode_message("envoy.config.bootstrap.v3.Bootstrap", value)
}

/// Decodes one JSON value as the named Envoy message; errors carry the JSON path.
pub(super) fn decode_message(
    type_name: &str,
    value: serde_json::Value,
) -> Result<DynamicMessage, ConfigError> {
    let desc = descriptor_pool()
        .get_message_by_name(type_name)
        .unwrap_or_else(|| panic!("{type_name} is in the embedded descriptors"));
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize(desc, de).map_err(|e| {
        let message = e.to_string();
        let mut path = track.path().to_string();
        if path == "." {
            path.clear();
        }
        // The tracker stops at the object that holds an unknown field; name the field itself.
        if let Some(field) = message
            .strip_prefix("unrecognized field name '")
            .and_then(|r| r.strip_suffix('\''))
        {
            path = if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
        }
        ConfigError::at(path, message)
    })
}
