//! `--config-yaml` (and `--service-node` / `--service-cluster`), as Envoy applies them: each
//! overlay is merged over the bootstrap with protobuf's merge rules (mappings merged key by
//! key, lists appended, scalars replaced), later overlays winning.

use serde_json::Value;

use super::{ConfigError, Format};

/// The bootstrap `base` (in `format`; empty when there is no file) with `overlays` (YAML
/// documents) merged over it, as JSON text.
pub fn merge(base: &str, format: Format, overlays: &[String]) -> Result<String, ConfigError> {
    let mut merged = match base.trim().is_empty() {
        true => Value::Object(Default::default()),
        false => parse(base, format).map_err(|e| ConfigError::at("", e))?,
    };
    for (i, o) in overlays.iter().enumerate() {
        let overlay = parse(o, Format::Yaml)
            .map_err(|e| ConfigError::at("", format!("--config-yaml (overlay {}): {e}", i + 1)))?;
        if !overlay.is_object() {
            return Err(ConfigError::at(
                "",
                format!("--config-yaml (overlay {}): not a mapping", i + 1),
            ));
        }
        merge_into(&mut merged, overlay);
    }
    Ok(merged.to_string())
}

fn parse(text: &str, format: Format) -> Result<Value, String> {
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::from_str(text).map_err(|e| e.to_string()),
    }
}

fn merge_into(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge_into(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (slot, v) => *slot = v,
    }
}

/// The overlay `--service-node` / `--service-cluster` stand for (`node.id`, `node.cluster`).
pub fn node_overlay(id: Option<&str>, cluster: Option<&str>) -> Option<String> {
    if id.is_none() && cluster.is_none() {
        return None;
    }
    let mut node = serde_json::Map::new();
    if let Some(id) = id {
        node.insert("id".into(), id.into());
    }
    if let Some(c) = cluster {
        node.insert("cluster".into(), c.into());
    }
    Some(serde_json::json!({ "node": node }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_merge_as_protobuf_merges() {
        let base =
            "node: { id: a, metadata: { x: 1 } }\nstatic_resources:\n  clusters: [{ name: c1 }]\n";
        let overlays = [
            "node: { cluster: svc, metadata: { y: 2 } }\nstatic_resources: { clusters: [{ name: c2 }] }".to_owned(),
            node_overlay(Some("b"), None).unwrap(),
        ];
        let out: Value =
            serde_json::from_str(&merge(base, Format::Yaml, &overlays).unwrap()).unwrap();
        assert_eq!(out["node"]["id"], "b");
        assert_eq!(out["node"]["cluster"], "svc");
        assert_eq!(
            out["node"]["metadata"],
            serde_json::json!({ "x": 1, "y": 2 })
        );
        assert_eq!(
            out["static_resources"]["clusters"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // No file: the overlay is the bootstrap.
        let alone: Value =
            serde_json::from_str(&merge("", Format::Yaml, &["admin: {}".to_owned()]).unwrap())
                .unwrap();
        assert_eq!(alone, serde_json::json!({ "admin": {} }));
        assert!(merge("", Format::Yaml, &["- a list".to_owned()]).is_err());
    }
}
