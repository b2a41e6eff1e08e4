//! Which Envoy fields zerohop implements.
//!
//! Every field set in a decoded resource must appear in [`FIELDS`] for its message type, and
//! every `Any` must carry a type listed there; anything else is refused with the path of the
//! field. Nothing is silently ignored: a config that loads is a config zerohop honours.
//! Value-level limits (e.g. which `lb_policy` values) are checked in `compile`.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use super::ConfigError;

mod fields;

use fields::FIELDS;

const HTTP_FILTER: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter";
const FILTER_CONFIG: &str = "envoy.config.route.v3.FilterConfig";

/// The fields zerohop honours for a message type: the [`FIELDS`] table, or an HTTP filter's own.
fn known_fields(type_name: &str) -> Option<&'static [&'static str]> {
    FIELDS
        .iter()
        .find(|(t, _)| *t == type_name)
        .map(|(_, f)| *f)
        .or_else(|| super::filters::fields(type_name))
        .or_else(|| {
            [
                super::retry::FIELDS,
                super::accesslog::FIELDS,
                super::tracing::FIELDS,
            ]
            .iter()
            .flat_map(|t| t.iter())
            .find(|(t, _)| *t == type_name)
            .map(|(_, f)| *f)
        })
}

/// Well-known types taken whole as values.
const LEAVES: &[&str] = &[
    "google.protobuf.Duration",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.UInt64Value",
    "google.protobuf.Struct",
];

/// Checks `msg`, a message found at `path` (empty for the bootstrap itself).
pub(super) fn check(msg: &DynamicMessage, path: &str) -> Result<(), ConfigError> {
    walk(msg, &mut path.to_owned())
}

fn walk(msg: &DynamicMessage, path: &mut String) -> Result<(), ConfigError> {
    let type_name = msg.descriptor().full_name().to_owned();
    if LEAVES.contains(&type_name.as_str()) {
        return Ok(());
    }
    if type_name == "google.protobuf.Any" {
        let inner = unpack_any(msg).map_err(|e| ConfigError::at(path.clone(), e))?;
        let inner_name = inner.descriptor().full_name().to_owned();
        if known_fields(&inner_name).is_none() {
            return Err(ConfigError::at(
                path.clone(),
                format!("extension type {inner_name} is not supported by zerohop"),
            ));
        }
        return walk(&inner, path);
    }
    // An optional HTTP filter of a type zerohop lacks is skipped (compile does the same).
    if type_name == HTTP_FILTER && super::http::optional_unknown(msg) {
        return Ok(());
    }
    // A per-route FilterConfig marked optional whose type zerohop lacks is skipped too.
    if type_name == FILTER_CONFIG && super::http::per_filter_optional_unknown(msg) {
        return Ok(());
    }
    let allowed = known_fields(&type_name).unwrap_or(&[]);
    for (field, value) in msg.fields() {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(field.name());
        if !allowed.contains(&field.name()) {
            return Err(ConfigError::at(
                path.clone(),
                format!(
                    "field {}.{} is not supported by zerohop",
                    type_name,
                    field.name()
                ),
            ));
        }
        walk_value(value, path)?;
        path.truncate(len);
    }
    Ok(())
}

fn walk_value(value: &Value, path: &mut String) -> Result<(), ConfigError> {
    match value {
        Value::Message(m) => walk(m, path),
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                match item {
                    Value::Message(m) => path.push_str(&element_label(i, m)),
                    _ => path.push_str(&format!("[{i}]")),
                }
                walk_value(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                let len = path.len();
                match k {
                    prost_reflect::MapKey::String(k) => path.push_str(&format!("[{k:?}]")),
                    other => path.push_str(&format!("[{other:?}]")),
                }
                walk_value(v, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `[3]`, or `[3](backend)` when the element is a named resource.
pub(super) fn element_label(index: usize, item: &DynamicMessage) -> String {
    let name = match item.get_field_by_name("name").as_deref() {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    match name {
        Some(n) => format!("[{index}]({n})"),
        None => format!("[{index}]"),
    }
}

/// Decodes the message inside a `google.protobuf.Any` by its type URL.
pub(super) fn unpack_any(any: &DynamicMessage) -> Result<DynamicMessage, String> {
    let url = match any.get_field_by_name("type_url").as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let type_name = url.rsplit('/').next().unwrap_or_default();
    let desc = any
        .descriptor()
        .parent_pool()
        .get_message_by_name(type_name)
        .ok_or_else(|| format!("unknown type URL {url:?}"))?;
    let bytes = match any.get_field_by_name("value").as_deref() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    DynamicMessage::decode(desc, bytes).map_err(|e| format!("{type_name}: {e}"))
}
