//! Resources as Envoy's admin prints them in `/config_dump`: proto JSON with the field names
//! of the `.proto` files, fields at their default left out, every `Any` with its `@type`.

use prost_reflect::ReflectMessage;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{json, Map, Value};

use super::envoy::{self, descriptor_pool, Format};
use super::ConfigError;

const TYPE_PREFIX: &str = "type.googleapis.com/";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_CONFIGURATION: &str =
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// `msg` in Envoy's proto JSON (`preserve_proto_field_names`, defaults omitted).
pub fn to_json(msg: &DynamicMessage) -> Value {
    let options = SerializeOptions::new().use_proto_field_name(true);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or_else(|e| json!({ "error": format!("not printable: {e}") }))
}

/// `msg` as an `Any` in proto JSON: `@type` first, then its fields.
pub fn to_any_json(msg: &DynamicMessage) -> Value {
    let mut out = Map::new();
    out.insert(
        "@type".into(),
        format!("{TYPE_PREFIX}{}", msg.descriptor().full_name()).into(),
    );
    if let Value::Object(fields) = to_json(msg) {
        out.extend(fields);
    }
    Value::Object(out)
}

/// A resource received over xDS, decoded again for printing.
pub fn any_to_json(any: &prost_types::Any) -> Value {
    let name = any.type_url.strip_prefix(TYPE_PREFIX).unwrap_or_default();
    let Some(desc) = descriptor_pool().get_message_by_name(name) else {
        return json!({ "@type": any.type_url });
    };
    match DynamicMessage::decode(desc, any.value.as_slice()) {
        Ok(m) => to_any_json(&m),
        Err(e) => json!({ "@type": any.type_url, "error": e.to_string() }),
    }
}

/// The static part of a bootstrap, for `/config_dump`.
#[derive(Debug, Default)]
pub struct StaticDump {
    /// The whole bootstrap, `static_resources` included.
    pub bootstrap: Value,
    /// `static_resources.clusters` and `.listeners`, each an `Any`.
    pub clusters: Vec<Value>,
    pub listeners: Vec<Value>,
    /// The route configurations written inline in the listeners' connection managers.
    pub route_configs: Vec<Value>,
    /// `static_resources.secrets`, each an `Any`, private keys redacted.
    pub secrets: Vec<Value>,
}

/// A `Secret` as Envoy's `/config_dump` shows it: every value inside the private key (a
/// field Envoy marks sensitive) replaced by `[redacted]`.
pub fn redact_secret(mut v: Value) -> Value {
    if let Some(Value::Object(key)) = v
        .get_mut("tls_certificate")
        .and_then(|t| t.get_mut("private_key"))
    {
        for value in key.values_mut() {
            *value = "[redacted]".into();
        }
    }
    v
}

/// Decodes `text` again, one resource at a time as [`super::load`] does, and prints it.
pub fn static_dump(text: &str, format: Format) -> Result<StaticDump, ConfigError> {
    struct Print(StaticDump);
    impl envoy::Sink for Print {
        fn resource(
            &mut self,
            kind: envoy::Resource,
            msg: DynamicMessage,
            _path: String,
        ) -> Result<(), ConfigError> {
            let v = to_any_json(&msg);
            match kind {
                envoy::Resource::Cluster => self.0.clusters.push(v),
                envoy::Resource::Secret => self.0.secrets.push(redact_secret(v)),
                envoy::Resource::Listener => {
                    self.0.route_configs.extend(inline_route_configs(&v));
                    self.0.listeners.push(v)
                }
            }
            Ok(())
        }
    }
    let mut print = Print(StaticDump::default());
    let rest = envoy::decode_bootstrap(text, format, &mut print)?;
    let mut dump = print.0;
    let mut bootstrap = to_json(&rest);
    // As Envoy adds its own name and version to the node (and zerohop's ADS client sends).
    if let Some(b) = bootstrap.as_object_mut() {
        let node = b.entry("node").or_insert_with(|| json!({}));
        if let Some(n) = node.as_object_mut() {
            n.insert("user_agent_name".into(), "zerohop".into());
            n.insert(
                "user_agent_version".into(),
                env!("CARGO_PKG_VERSION").into(),
            );
        }
    }
    let plain = |list: &[Value]| -> Vec<Value> {
        list.iter()
            .map(|v| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("@type");
                }
                v
            })
            .collect()
    };
    let mut statics = Map::new();
    if !dump.listeners.is_empty() {
        statics.insert("listeners".into(), plain(&dump.listeners).into());
    }
    if !dump.clusters.is_empty() {
        statics.insert("clusters".into(), plain(&dump.clusters).into());
    }
    if let (Some(b), false) = (bootstrap.as_object_mut(), statics.is_empty()) {
        b.insert("static_resources".into(), statics.into());
    }
    dump.bootstrap = bootstrap;
    Ok(dump)
}

/// Every `route_config` written inline in a listener's HTTP connection managers, as an
/// `Any` of `RouteConfiguration`.
pub fn inline_route_configs(listener: &Value) -> Vec<Value> {
    let chains = listener["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(listener.get("default_filter_chain"));
    let mut out = Vec::new();
    for chain in chains {
        for filter in chain["filters"].as_array().into_iter().flatten() {
            let typed = &filter["typed_config"];
            if typed["@type"] != HCM {
                continue;
            }
            if let Some(Value::Object(rc)) = typed.get("route_config") {
                let mut any = Map::new();
                any.insert("@type".into(), ROUTE_CONFIGURATION.into());
                any.extend(rc.clone());
                out.push(Value::Object(any));
            }
        }
    }
    out
}
