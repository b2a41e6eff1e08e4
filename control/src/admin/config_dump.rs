//! `/config_dump` in Envoy's shape: an `envoy.admin.v3.ConfigDump` whose `configs` are the
//! bootstrap, clusters, listeners, scoped routes, routes and secrets dumps (endpoints too with
//! `?include_eds`), in Envoy's order, each resource as proto JSON with its `@type`.
//! `?resource=NAME` returns the elements of that repeated field, as Envoy does.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use crate::config::dump::{self, StaticDump};
use crate::config::Kind;
use crate::xds::Held;

use super::State;

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

/// What `/config_dump?...` asked for.
#[derive(Debug, Default)]
pub struct Query {
    pub resource: Option<String>,
    pub include_eds: bool,
}

impl Query {
    pub fn parse(query: &str) -> Query {
        let mut q = Query::default();
        for (k, v) in super::params(query) {
            match k.as_str() {
                "resource" => q.resource = Some(v),
                "include_eds" => q.include_eds = true,
                _ => {}
            }
        }
        q
    }
}

/// Envoy prints `last_updated` as an RFC 3339 timestamp in UTC, to the millisecond.
pub fn timestamp(t: SystemTime) -> String {
    match jiff::Timestamp::try_from(t) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => String::new(),
    }
}

/// The dump, or (404, message) for a `resource` no dump has.
pub fn render(st: &State, q: &Query) -> Result<Value, String> {
    let statics = match &st.bootstrap {
        Some(source) => {
            dump::static_dump(&source.text, source.format).map_err(|e| e.to_string())?
        }
        None => StaticDump::default(),
    };
    let loaded = timestamp(st.loaded_at.unwrap_or(SystemTime::UNIX_EPOCH));
    let held: Vec<((Kind, String), Held)> = match &st.xds {
        Some(x) => {
            let h = x.lock().expect("xds stats").held.clone();
            let h = h.lock().expect("held resources");
            h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        None => Vec::new(),
    };
    let versions = |kind: Kind| -> Option<String> {
        let x = st.xds.as_ref()?;
        let x = x.lock().expect("xds stats");
        x.versions
            .iter()
            .find(|(k, v, _)| *k == kind && !v.is_empty())
            .map(|(_, v, _)| v.clone())
    };
    let dynamic = |kind: Kind| held.iter().filter(move |((k, _), _)| *k == kind);

    let mut configs = Vec::new();
    configs.push(typed(
        "BootstrapConfigDump",
        [
            ("bootstrap", statics.bootstrap.clone()),
            ("last_updated", loaded.clone().into()),
        ],
    ));

    let static_clusters: Vec<Value> = statics
        .clusters
        .iter()
        .map(|c| json!({ "cluster": c, "last_updated": loaded }))
        .collect();
    let dynamic_clusters: Vec<Value> = dynamic(Kind::Cluster)
        .map(|(_, h)| versioned(h, "cluster"))
        .collect();
    configs.push(typed(
        "ClustersConfigDump",
        [
            ("version_info", versions(Kind::Cluster).into()),
            ("static_clusters", list(static_clusters)),
            ("dynamic_active_clusters", list(dynamic_clusters)),
        ],
    ));

    if q.include_eds {
        // Static and DNS clusters: the endpoints in force (DNS answers resolved), as Envoy
        // prints its host sets; EDS: the assignments as received.
        let statics_named: std::collections::HashSet<&str> = statics
            .clusters
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        let static_endpoints: Vec<Value> = st
            .snapshot
            .clusters
            .iter()
            .filter(|c| statics_named.contains(c.name.as_str()))
            .map(|c| {
                let hosts: Vec<Value> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        json!({
                            "endpoint": { "address": { "socket_address": {
                                "address": e.address.ip().to_string(),
                                "port_value": e.address.port(),
                            } } },
                            "health_status": "HEALTHY",
                            "load_balancing_weight": e.weight,
                        })
                    })
                    .collect();
                json!({
                    "endpoint_config": {
                        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                        "cluster_name": c.name,
                        "endpoints": [{ "locality": {}, "lb_endpoints": hosts }],
                        "policy": { "overprovisioning_factor": 140 },
                    },
                })
            })
            .collect();
        let dynamic_endpoints: Vec<Value> = dynamic(Kind::Endpoint)
            .map(|(_, h)| versioned(h, "endpoint_config"))
            .collect();
        configs.push(typed(
            "EndpointsConfigDump",
            [
                ("static_endpoint_configs", list(static_endpoints)),
                ("dynamic_endpoint_configs", list(dynamic_endpoints)),
            ],
        ));
    }

    let static_listeners: Vec<Value> = statics
        .listeners
        .iter()
        .map(|l| json!({ "listener": l, "last_updated": loaded }))
        .collect();
    let dynamic_listeners: Vec<Value> = dynamic(Kind::Listener)
        .map(|((_, name), h)| {
            json!({
                "name": name,
                "active_state": versioned(h, "listener"),
            })
        })
        .collect();
    configs.push(typed(
        "ListenersConfigDump",
        [
            ("version_info", versions(Kind::Listener).into()),
            ("static_listeners", list(static_listeners)),
            ("dynamic_listeners", list(dynamic_listeners)),
        ],
    ));
    configs.push(typed("ScopedRoutesConfigDump", []));

    // Route configurations written inline, in static listeners and in those from LDS.
    let inline = statics.route_configs.iter().cloned().chain(
        dynamic(Kind::Listener)
            .flat_map(|(_, h)| dump::inline_route_configs(&dump::any_to_json(&h.resource))),
    );
    let static_routes: Vec<Value> = inline
        .map(|r| json!({ "route_config": r, "last_updated": loaded }))
        .collect();
    let dynamic_routes: Vec<Value> = dynamic(Kind::Route)
        .map(|(_, h)| versioned(h, "route_config"))
        .collect();
    configs.push(typed(
        "RoutesConfigDump",
        [
            ("static_route_configs", list(static_routes)),
            ("dynamic_route_configs", list(dynamic_routes)),
        ],
    ));
    let static_secrets: Vec<Value> = statics
        .secrets
        .iter()
        .map(|s| json!({ "name": s["name"], "last_updated": loaded, "secret": s }))
        .collect();
    let dynamic_secrets: Vec<Value> = dynamic(Kind::Secret)
        .map(|((_, name), h)| {
            json!({
                "name": name,
                "version_info": h.version,
                "last_updated": timestamp(h.last_updated),
                "secret": dump::redact_secret(dump::any_to_json(&h.resource)),
            })
        })
        .collect();
    configs.push(typed(
        "SecretsConfigDump",
        [
            ("static_secrets", list(static_secrets)),
            ("dynamic_active_secrets", list(dynamic_secrets)),
        ],
    ));

    match &q.resource {
        None => Ok(json!({ "configs": configs })),
        Some(field) => select(&configs, field),
    }
}

/// `?resource=FIELD`: every element of the repeated field `FIELD` of any dump, each as an
/// `Any` of its element type (`ClustersConfigDump.StaticCluster`, ...).
fn select(configs: &[Value], field: &str) -> Result<Value, String> {
    let element = match field {
        "static_clusters" => "ClustersConfigDump.StaticCluster",
        "dynamic_active_clusters" | "dynamic_warming_clusters" => {
            "ClustersConfigDump.DynamicCluster"
        }
        "static_listeners" => "ListenersConfigDump.StaticListener",
        "dynamic_listeners" => "ListenersConfigDump.DynamicListener",
        "static_route_configs" => "RoutesConfigDump.StaticRouteConfig",
        "dynamic_route_configs" => "RoutesConfigDump.DynamicRouteConfig",
        "static_endpoint_configs" => "EndpointsConfigDump.StaticEndpointConfig",
        "dynamic_endpoint_configs" => "EndpointsConfigDump.DynamicEndpointConfig",
        "static_secrets" => "SecretsConfigDump.StaticSecret",
        "dynamic_active_secrets" => "SecretsConfigDump.DynamicSecret",
        _ => return Err(format!("{field} not found in config dump")),
    };
    let mut out = Vec::new();
    for config in configs {
        for item in config[field].as_array().into_iter().flatten() {
            let mut any = Map::new();
            any.insert("@type".into(), format!("{ADMIN}{element}").into());
            if let Value::Object(o) = item {
                any.extend(o.clone());
            }
            out.push(Value::Object(any));
        }
    }
    Ok(json!({ "configs": out }))
}

/// A resource held from xDS as a dump lists it: its version, the resource under `field`,
/// and when it was taken.
fn versioned(h: &Held, field: &str) -> Value {
    let mut m = Map::new();
    m.insert("version_info".into(), h.version.clone().into());
    m.insert(field.into(), dump::any_to_json(&h.resource));
    m.insert("last_updated".into(), timestamp(h.last_updated).into());
    Value::Object(m)
}

/// A dump message: `@type`, then the fields that are set (proto JSON omits empty ones).
fn typed<const N: usize>(name: &str, fields: [(&str, Value); N]) -> Value {
    let mut m = Map::new();
    m.insert("@type".into(), format!("{ADMIN}{name}").into());
    for (k, v) in fields {
        let empty = match &v {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            m.insert(k.into(), v);
        }
    }
    Value::Object(m)
}

fn list(items: Vec<Value>) -> Value {
    Value::Array(items)
}
