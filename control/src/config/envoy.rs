//! Envoy's proto3 JSON mapping, decoded exactly as Envoy does: against the Envoy v3 API
//! descriptors, with inline `"@type"` for `Any`, either field-name spelling, and unknown
//! fields refused.

use std::cell::RefCell;
use std::fmt;
use std::sync::OnceLock;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value,
};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

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

/// What the streaming decoder hands each resource to, as soon as it has been decoded.
pub(super) trait Sink {
    /// `static_resources.clusters[i]` (path given), `.listeners[i]` or `.secrets[i]`.
    fn resource(
        &mut self,
        kind: Resource,
        msg: DynamicMessage,
        path: String,
    ) -> Result<(), ConfigError>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resource {
    Cluster,
    Listener,
    Secret,
}

/// Decodes a bootstrap, streaming `static_resources` one resource at a time into `sink`,
/// and returns the rest of the bootstrap (without `static_resources`).
///
/// A 10,000-cluster bootstrap decoded whole would be held as ~110,000 small dynamic
/// messages at once (measured: 650 MB); streamed, only one cluster is decoded at a time.
pub(super) fn decode_bootstrap(
    text: &str,
    format: Format,
    sink: &mut dyn Sink,
) -> Result<DynamicMessage, ConfigError> {
    let desc = descriptor_pool()
        .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
        .expect("Bootstrap is in the embedded descriptors");
    let failed = RefCell::new(None);
    let seed = BootstrapSeed {
        desc,
        sink: RefCell::new(sink),
        failed: &failed,
    };
    let mut track = serde_path_to_error::Track::new();
    let result = match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            seed.deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
                .map_err(|e| e.to_string())
        }
        Format::Yaml => {
            let de = serde_yaml::Deserializer::from_str(text);
            seed.deserialize(serde_path_to_error::Deserializer::new(de, &mut track))
                .map_err(|e| e.to_string())
        }
    };
    // A resource the sink refused carries its own path; report it as is.
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    result.map_err(|message| serde_error(track.path().to_string(), message, format))
}

/// Turns a deserializer error into a ConfigError naming the field.
fn serde_error(mut path: String, mut message: String, format: Format) -> ConfigError {
    if path == "." {
        path.clear();
    }
    // An error from inside a resource: its own path, joined to the resource's. The
    // location the YAML/JSON reader adds is the resource's end, not the error's: dropped.
    if let Some(start) = message.find(INNER) {
        let rest = &message[start + 1..];
        if let Some((inner, msg)) = rest.split_once(INNER) {
            if inner != "." && !inner.is_empty() {
                if !path.is_empty() && !inner.starts_with('[') {
                    path.push('.');
                }
                path.push_str(inner);
            }
            let msg = match msg.rfind(" at line ") {
                Some(i) => &msg[..i],
                None => msg,
            };
            message = msg.to_owned();
        }
    }
    // serde_yaml prefixes its own copy of the path (and appends `at line L column C`).
    if let Some(rest) = message.strip_prefix(&format!("{path}: ")) {
        message = rest.to_owned();
    }
    if path.is_empty() && !message.contains("not supported by zerohop") {
        let syntax = match format {
            Format::Json => "invalid JSON",
            Format::Yaml => "invalid YAML",
        };
        message = format!("{syntax} or not an Envoy bootstrap: {message}");
    }
    // An `Any` whose type the descriptors lack: an extension zerohop does not have.
    if let Some(rest) = message.strip_prefix("message '") {
        if let Some(name) = rest.strip_suffix("' not found") {
            message = format!("extension type {name} is not supported by zerohop");
        }
    }
    // The tracker stops at the object that holds an unknown field; name the field itself.
    const UNKNOWN: &str = "unrecognized field name '";
    if let Some(i) = message.find(UNKNOWN) {
        let field = message[i + UNKNOWN.len()..]
            .split('\'')
            .next()
            .unwrap_or_default();
        path = if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
    }
    ConfigError::at(path, message)
}

/// Set when the sink refuses a resource; the deserializer is then stopped with a marker
/// error and this one is reported instead.
type Failed = RefCell<Option<ConfigError>>;

struct BootstrapSeed<'s, 'f> {
    desc: MessageDescriptor,
    sink: RefCell<&'s mut dyn Sink>,
    failed: &'f Failed,
}

impl<'de> DeserializeSeed<'de> for BootstrapSeed<'_, '_> {
    type Value = DynamicMessage;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DynamicMessage, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BootstrapSeed<'_, '_> {
    type Value = DynamicMessage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an Envoy bootstrap mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DynamicMessage, A::Error> {
        let mut boot = DynamicMessage::new(self.desc.clone());
        while let Some(key) = map.next_key::<String>()? {
            let field = field_by_key(&self.desc, &key).map_err(A::Error::custom)?;
            if field.name() == "static_resources" {
                let seed = StaticResources {
                    sink: &self.sink,
                    failed: self.failed,
                };
                map.next_value_seed(seed)?;
                continue;
            }
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => {
                    let v = map.next_value_seed(MessageSeed(m))?;
                    boot.set_field(&field, Value::Message(v));
                }
                _ => {
                    return Err(A::Error::custom(format!(
                        "field envoy.config.bootstrap.v3.Bootstrap.{} is not supported by zerohop",
                        field.name()
                    )))
                }
            }
        }
        Ok(boot)
    }
}

/// A field of `desc` by its proto name or its JSON (camelCase) name, as Envoy accepts both.
fn field_by_key(desc: &MessageDescriptor, key: &str) -> Result<FieldDescriptor, String> {
    desc.get_field_by_name(key)
        .or_else(|| desc.get_field_by_json_name(key))
        .ok_or_else(|| format!("unrecognized field name '{key}'"))
}

struct MessageSeed(MessageDescriptor);

impl<'de> DeserializeSeed<'de> for MessageSeed {
    type Value = DynamicMessage;
    /// Read as a JSON tree, made strict ([`super::lenient`]: what Envoy's loader accepts
    /// beyond the proto3 mapping), then decoded. A decoding error carries its path inside
    /// the resource to [`serde_error`], which joins it to the resource's.
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DynamicMessage, D::Error> {
        use serde::Deserialize;
        let mut tree = serde_json::Value::deserialize(d)?;
        super::lenient::normalize(&self.0, &mut tree);
        let mut track = serde_path_to_error::Track::new();
        DynamicMessage::deserialize(
            self.0,
            serde_path_to_error::Deserializer::new(tree, &mut track),
        )
        .map_err(|e| D::Error::custom(format!("{INNER}{}{INNER}{e}", track.path())))
    }
}

/// Brackets the path inside a resource in a decoding error's message.
const INNER: char = '\u{1}';

struct StaticResources<'a, 's, 'f> {
    sink: &'a RefCell<&'s mut dyn Sink>,
    failed: &'f Failed,
}

impl<'de> DeserializeSeed<'de> for StaticResources<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for StaticResources<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("static_resources")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let desc = descriptor_pool()
            .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap.StaticResources")
            .expect("StaticResources is in the embedded descriptors");
        while let Some(key) = map.next_key::<String>()? {
            let field = field_by_key(&desc, &key).map_err(A::Error::custom)?;
            let kind = match field.name() {
                "clusters" => Resource::Cluster,
                "listeners" => Resource::Listener,
                "secrets" => Resource::Secret,
                other => {
                    return Err(A::Error::custom(format!(
                        "field envoy.config.bootstrap.v3.Bootstrap.StaticResources.{other} is not supported by zerohop"
                    )))
                }
            };
            let Kind::Message(m) = field.kind() else {
                unreachable!("resources are messages")
            };
            map.next_value_seed(ResourceList {
                kind,
                desc: m,
                sink: self.sink,
                failed: self.failed,
            })?;
        }
        Ok(())
    }
}

struct ResourceList<'a, 's, 'f> {
    kind: Resource,
    desc: MessageDescriptor,
    sink: &'a RefCell<&'s mut dyn Sink>,
    failed: &'f Failed,
}

impl<'de> DeserializeSeed<'de> for ResourceList<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ResourceList<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of resources")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let list = match self.kind {
            Resource::Cluster => "clusters",
            Resource::Listener => "listeners",
            Resource::Secret => "secrets",
        };
        let mut i = 0;
        while let Some(msg) = seq.next_element_seed(MessageSeed(self.desc.clone()))? {
            let path = format!(
                "static_resources.{list}{}",
                super::supported::element_label(i, &msg)
            );
            if let Err(e) = self.sink.borrow_mut().resource(self.kind, msg, path) {
                *self.failed.borrow_mut() = Some(e);
                return Err(A::Error::custom("resource refused"));
            }
            i += 1;
        }
        Ok(())
    }
}
