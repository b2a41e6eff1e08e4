//! `layered_runtime`: Envoy's runtime, the key/value layers that config fields name by
//! `runtime_key`. zerohop takes `static_layer` and `admin_layer` layers (a later layer
//! overrides an earlier one, as in Envoy); `disk_layer` and `rtds_layer` are refused by name.
//!
//! Values are read where the config is compiled: a `runtime_fraction` becomes a fixed
//! fraction in the snapshot, and a change to the admin layer (`POST /runtime_modify`)
//! compiles and publishes the configuration again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prost_reflect::{DynamicMessage, Value};

use super::compile::{list, msg, string};
use super::ConfigError;
use zerohop_proto::snapshot::Fraction;

/// One value as a layer holds it: Envoy keeps the text, and a fractional percent given as
/// `{numerator, denominator}` apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Text(String),
    Fraction(Fraction),
}

impl Entry {
    /// As `/runtime` prints it.
    pub fn display(&self) -> String {
        match self {
            Entry::Text(t) => t.clone(),
            Entry::Fraction(f) => {
                format!(
                    "{{numerator: {}, denominator: {}}}",
                    f.numerator, f.denominator
                )
            }
        }
    }
}

/// A layer of `layered_runtime.layers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    /// `None`: the admin layer, whose values live in [`ADMIN_LAYER`].
    pub values: Option<BTreeMap<String, Entry>>,
}

/// The layers a bootstrap declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runtime {
    pub layers: Vec<Layer>,
}

/// The admin layer's values, set by `POST /runtime_modify`. One per process, as Envoy's.
static ADMIN_LAYER: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Sets (or, with an empty value, removes) admin-layer keys.
pub fn modify(pairs: &[(String, String)]) {
    let mut admin = ADMIN_LAYER.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in pairs {
        match v.is_empty() {
            true => admin.remove(k),
            false => admin.insert(k.clone(), v.clone()),
        };
    }
}

impl Runtime {
    /// Parses `layered_runtime` (already checked field by field against what zerohop takes).
    pub(super) fn parse(b: &DynamicMessage) -> Result<Runtime, ConfigError> {
        let Some(lr) = msg(b, "layered_runtime") else {
            return Ok(Runtime::default());
        };
        let mut layers = Vec::new();
        for (i, l) in list(lr, "layers").iter().enumerate() {
            let Value::Message(l) = l else { continue };
            let path = format!("layered_runtime.layers[{i}]");
            let name = string(l, "name");
            let values = if let Some(s) = msg(l, "static_layer") {
                let mut values = BTreeMap::new();
                walk_struct(s, "", &path, &mut values)?;
                Some(values)
            } else if msg(l, "admin_layer").is_some() {
                None
            } else {
                return Err(ConfigError::at(
                    path,
                    "a layer needs static_layer or admin_layer (disk_layer and rtds_layer are not supported by zerohop)",
                ));
            };
            layers.push(Layer { name, values });
        }
        Ok(Runtime { layers })
    }

    pub fn has_admin_layer(&self) -> bool {
        self.layers.iter().any(|l| l.values.is_none())
    }

    /// Each layer's value for `key` (empty where a layer lacks it), and the one in force.
    pub fn lookup(&self, key: &str) -> (Vec<Option<Entry>>, Option<Entry>) {
        let admin = ADMIN_LAYER.lock().unwrap_or_else(|e| e.into_inner());
        let per_layer: Vec<Option<Entry>> = self
            .layers
            .iter()
            .map(|l| match &l.values {
                Some(v) => v.get(key).cloned(),
                None => admin.get(key).cloned().map(Entry::Text),
            })
            .collect();
        let last = per_layer.iter().rev().find_map(|v| v.clone());
        (per_layer, last)
    }

    /// Every key any layer holds.
    pub fn keys(&self) -> Vec<String> {
        let admin = ADMIN_LAYER.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<String> = self
            .layers
            .iter()
            .flat_map(|l| match &l.values {
                Some(v) => v.keys().cloned().collect::<Vec<_>>(),
                None => admin.keys().cloned().collect(),
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// A `RuntimeFeatureFlag`: the runtime's `true` / `false` for `key`, else `default`.
    pub fn boolean(&self, key: &str, default: bool) -> bool {
        if key.is_empty() {
            return default;
        }
        match self.lookup(key).1 {
            Some(Entry::Text(t)) if t == "true" => true,
            Some(Entry::Text(t)) if t == "false" => false,
            _ => default,
        }
    }

    /// A whole number (Envoy's `getInteger`): the runtime's value for `key` when it is one,
    /// else `default`.
    pub fn integer(&self, key: &str, default: u64) -> u64 {
        if key.is_empty() {
            return default;
        }
        match self.lookup(key).1 {
            Some(Entry::Text(t)) => t.trim().parse().unwrap_or(default),
            _ => default,
        }
    }

    /// A `RuntimeFractionalPercent`, as Envoy's `featureEnabled`: the runtime value when it is
    /// a fractional percent or a whole number (a percentage; above 100 always), else the
    /// default.
    pub fn fraction(&self, key: &str, default: Fraction) -> Fraction {
        if key.is_empty() {
            return default;
        }
        match self.lookup(key).1 {
            Some(Entry::Fraction(f)) => f,
            Some(Entry::Text(t)) => match t.trim().parse::<u64>() {
                Ok(n) if n > 100 => Fraction {
                    numerator: 100,
                    denominator: 100,
                },
                Ok(n) => Fraction {
                    numerator: n as u32,
                    denominator: 100,
                },
                Err(_) => default,
            },
            None => default,
        }
    }
}

/// Flattens a `google.protobuf.Struct` into dotted keys, as Envoy's static layer.
fn walk_struct(
    s: &DynamicMessage,
    prefix: &str,
    path: &str,
    out: &mut BTreeMap<String, Entry>,
) -> Result<(), ConfigError> {
    let Some(fields) = s.get_field_by_name("fields") else {
        return Ok(());
    };
    let Value::Map(fields) = fields.as_ref() else {
        return Ok(());
    };
    for (k, v) in fields {
        let prost_reflect::MapKey::String(k) = k else {
            continue;
        };
        let key = match prefix {
            "" => k.clone(),
            p => format!("{p}.{k}"),
        };
        let Value::Message(v) = v else { continue };
        walk_value(v, &key, path, out)?;
    }
    Ok(())
}

/// One `google.protobuf.Value` of a static layer.
fn walk_value(
    v: &DynamicMessage,
    key: &str,
    path: &str,
    out: &mut BTreeMap<String, Entry>,
) -> Result<(), ConfigError> {
    let kind = v.fields().next();
    let at = || format!("{path}.static_layer.{key}");
    match kind {
        Some((f, Value::F64(n))) if f.name() == "number_value" => {
            out.insert(key.to_owned(), Entry::Text(format!("{n}")));
        }
        Some((f, Value::String(s))) if f.name() == "string_value" => {
            out.insert(key.to_owned(), Entry::Text(s.clone()));
        }
        Some((f, Value::Bool(b))) if f.name() == "bool_value" => {
            out.insert(key.to_owned(), Entry::Text(b.to_string()));
        }
        Some((f, Value::Message(s))) if f.name() == "struct_value" => {
            let fields = struct_fields(s);
            if fields.contains_key("numerator") || fields.contains_key("denominator") {
                out.insert(key.to_owned(), Entry::Fraction(fraction(&fields, &at())?));
            } else {
                walk_struct(s, key, path, out)?;
            }
        }
        Some((f, _)) if f.name() == "list_value" => {
            return Err(ConfigError::at(
                at(),
                "a list is not a runtime value (Envoy refuses it too)",
            ))
        }
        // null_value: no entry, as Envoy.
        _ => {}
    }
    Ok(())
}

fn struct_fields(s: &DynamicMessage) -> BTreeMap<String, DynamicMessage> {
    let mut out = BTreeMap::new();
    if let Some(f) = s.get_field_by_name("fields") {
        if let Value::Map(m) = f.as_ref() {
            for (k, v) in m {
                if let (prost_reflect::MapKey::String(k), Value::Message(v)) = (k, v) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
}

/// `{numerator: N, denominator: HUNDRED | TEN_THOUSAND | MILLION}`.
fn fraction(
    fields: &BTreeMap<String, DynamicMessage>,
    path: &str,
) -> Result<Fraction, ConfigError> {
    let numerator = match fields.get("numerator").and_then(|v| v.fields().next()) {
        Some((_, Value::F64(n))) if *n >= 0.0 && n.fract() == 0.0 && *n <= u32::MAX as f64 => {
            *n as u32
        }
        None => 0,
        _ => {
            return Err(ConfigError::at(
                format!("{path}.numerator"),
                "not a whole number",
            ))
        }
    };
    let denominator = match fields.get("denominator").and_then(|v| v.fields().next()) {
        None => 100,
        Some((_, Value::String(s))) => denominator(s).ok_or_else(|| {
            ConfigError::at(
                format!("{path}.denominator"),
                format!("{s:?}: not HUNDRED, TEN_THOUSAND or MILLION"),
            )
        })?,
        Some((_, Value::F64(n))) if *n == 0.0 => 100,
        Some((_, Value::F64(n))) if *n == 1.0 => 10_000,
        Some((_, Value::F64(n))) if *n == 2.0 => 1_000_000,
        _ => {
            return Err(ConfigError::at(
                format!("{path}.denominator"),
                "not HUNDRED, TEN_THOUSAND or MILLION",
            ))
        }
    };
    Ok(Fraction {
        numerator,
        denominator,
    })
}

/// `envoy.type.v3.FractionalPercent.DenominatorType` by name.
pub(super) fn denominator(name: &str) -> Option<u32> {
    match name.to_ascii_uppercase().as_str() {
        "HUNDRED" => Some(100),
        "TEN_THOUSAND" => Some(10_000),
        "MILLION" => Some(1_000_000),
        _ => None,
    }
}
