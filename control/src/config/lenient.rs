//! What Envoy's config loader accepts beyond the strict proto3 JSON mapping, applied to a
//! resource's JSON tree before it is decoded against the descriptors (Envoy 1.40 validates
//! each of these; `tests` has them):
//!
//! - a `Duration` written as `{seconds, nanos}` as well as `"1.5s"`;
//! - an enum value in any letter case (`codec_type: auto`, `lb_policy: round_robin`);
//! - a single value where a repeated field is expected (`domains: "*"`, a `filter_chains`
//!   mapping), taken as a list of one.
//!
//! The walk follows the descriptors, through `Any` (by its `@type`) and map values; keys it
//! does not know are left for the decoder, which refuses them with their path.

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

/// Rewrites `v`, a JSON value of message type `desc`, into the strict mapping.
pub(super) fn normalize(desc: &MessageDescriptor, v: &mut Value) {
    match desc.full_name() {
        "google.protobuf.Duration" => return duration(v),
        // Free-form JSON, and wrappers whose mapping is their plain value.
        "google.protobuf.Struct"
        | "google.protobuf.Value"
        | "google.protobuf.ListValue"
        | "google.protobuf.FieldMask"
        | "google.protobuf.Timestamp" => return,
        name if name.starts_with("google.protobuf.") && name.ends_with("Value") => return,
        "google.protobuf.Any" => return any(desc.parent_pool(), v),
        _ => {}
    }
    let Value::Object(fields) = v else {
        return;
    };
    for (key, value) in fields.iter_mut() {
        let field = desc
            .get_field_by_name(key)
            .or_else(|| desc.get_field_by_json_name(key));
        if let Some(field) = field {
            normalize_field(&field, value);
        }
    }
}

fn normalize_field(field: &FieldDescriptor, v: &mut Value) {
    if v.is_null() {
        return;
    }
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return;
        };
        let value_field = entry.map_entry_value_field();
        if let Value::Object(entries) = v {
            for value in entries.values_mut() {
                normalize_single(&value_field, value);
            }
        }
        return;
    }
    if field.is_list() {
        if !v.is_array() {
            *v = Value::Array(vec![v.take()]);
        }
        if let Value::Array(items) = v {
            for item in items {
                normalize_single(field, item);
            }
        }
        return;
    }
    normalize_single(field, v);
}

/// One value of `field`'s kind (an element, for a repeated field).
fn normalize_single(field: &FieldDescriptor, v: &mut Value) {
    match field.kind() {
        Kind::Message(m) => normalize(&m, v),
        Kind::Enum(e) => {
            if let Value::String(s) = v {
                if e.get_value_by_name(s).is_none() {
                    if let Some(canonical) = e.values().find(|ev| ev.name().eq_ignore_ascii_case(s))
                    {
                        *s = canonical.name().to_owned();
                    }
                }
            }
        }
        _ => {}
    }
}

/// `{seconds, nanos}` (either may be left out; numbers or numeric strings) becomes the
/// canonical `"S.NNNNNNNNNs"`; anything else is left for the decoder to judge.
fn duration(v: &mut Value) {
    let Value::Object(o) = v else {
        return;
    };
    if o.keys().any(|k| k != "seconds" && k != "nanos") {
        return;
    }
    let int = |k: &str| -> Option<i64> {
        match o.get(k) {
            None => Some(0),
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
    };
    let (Some(seconds), Some(nanos)) = (int("seconds"), int("nanos")) else {
        return;
    };
    if !(0..1_000_000_000).contains(&nanos.abs())
        || (seconds != 0 && nanos != 0 && (seconds < 0) != (nanos < 0))
    {
        return;
    }
    let sign = if seconds < 0 || nanos < 0 { "-" } else { "" };
    *v = Value::String(format!(
        "{sign}{}.{:09}s",
        seconds.unsigned_abs(),
        nanos.unsigned_abs()
    ));
}

/// An `Any` in the JSON mapping: its fields beside `@type`, of the type `@type` names.
fn any(pool: &DescriptorPool, v: &mut Value) {
    let Some(url) = v.get("@type").and_then(Value::as_str) else {
        return;
    };
    let Some(desc) = pool.get_message_by_name(url.rsplit('/').next().unwrap_or_default()) else {
        return;
    };
    if desc.full_name().starts_with("google.protobuf.") {
        // A well-known type inside an Any carries its mapping under `value`.
        if let Some(inner) = v.get_mut("value") {
            normalize(&desc, inner);
        }
        return;
    }
    normalize(&desc, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster() -> MessageDescriptor {
        super::super::descriptor_pool()
            .get_message_by_name("envoy.config.cluster.v3.Cluster")
            .unwrap()
    }

    #[test]
    fn durations_enums_and_single_values_take_the_strict_form() {
        let mut v = json!({
            "name": "c",
            "type": "strict_dns",
            "lbPolicy": "Round_Robin",
            "connect_timeout": { "seconds": 1, "nanos": 500000000 },
            "dns_refresh_rate": { "nanos": 250000000 },
            "dns_jitter": { "seconds": "2" },
            "load_assignment": {
                "cluster_name": "c",
                "endpoints": { "lb_endpoints": { "endpoint": { "address": { "socket_address": {
                    "address": "x", "port_value": 1, "protocol": "tcp" } } } } }
            },
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": { "idle_timeout": { "seconds": 3 } }
                }
            }
        });
        normalize(&cluster(), &mut v);
        assert_eq!(v["type"], "STRICT_DNS");
        assert_eq!(v["lbPolicy"], "ROUND_ROBIN");
        assert_eq!(v["connect_timeout"], "1.500000000s");
        assert_eq!(v["dns_refresh_rate"], "0.250000000s");
        assert_eq!(v["dns_jitter"], "2.000000000s");
        let lbe = &v["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
        assert_eq!(
            lbe["endpoint"]["address"]["socket_address"]["protocol"],
            "TCP"
        );
        let opts = &v["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(
            opts["common_http_protocol_options"]["idle_timeout"],
            "3.000000000s"
        );
    }

    #[test]
    fn what_is_not_lenient_is_left_for_the_decoder() {
        let mut v = json!({
            "type": "NO_SUCH_TYPE",
            "connect_timeout": { "seconds": 1, "minutes": 2 },
            "dns_refresh_rate": "5s",
            "unknown_field": [1],
            "metadata": { "filter_metadata": { "x": { "anything": ["goes", { "seconds": 1 }] } } }
        });
        let before = v.clone();
        normalize(&cluster(), &mut v);
        assert_eq!(v, before);
    }
}
