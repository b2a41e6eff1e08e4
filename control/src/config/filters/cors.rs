//! `envoy.filters.http.cors`: the filter's own config (`Cors`) is empty, as in Envoy v3;
//! policies (`CorsPolicy`) come per route configuration, virtual host and route
//! (`typed_per_filter_config`), merged field by field when the route table is built. The
//! percentages are read from the runtime when the snapshot compiles.

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::{CorsPolicy, FilterOverride, Fraction, HttpFilterConfig};

use super::{runtime_percent, HttpFilterKind, PerRoute};
use crate::config::compile::{as_msg, list, msg, string};
use crate::config::runtime::Runtime;
use crate::config::ConfigError;

const FILTER_TYPE: &str = "envoy.extensions.filters.http.cors.v3.Cors";
const POLICY: &str = "envoy.extensions.filters.http.cors.v3.CorsPolicy";

pub(super) const FILTER: HttpFilterKind = HttpFilterKind {
    name: "envoy.filters.http.cors",
    type_name: FILTER_TYPE,
    fields: &[
        (FILTER_TYPE, &[]),
        (
            POLICY,
            &[
                "allow_origin_string_match",
                "allow_methods",
                "allow_headers",
                "expose_headers",
                "max_age",
                "allow_credentials",
                "filter_enabled",
                "shadow_enabled",
                "allow_private_network_access",
                "forward_not_matching_preflights",
            ],
        ),
    ],
    compile,
    per_route: Some(PerRoute {
        type_name: POLICY,
        compile: per_route,
    }),
    terminal: false,
};

fn compile(_: &DynamicMessage, _: &str, _: &Runtime) -> Result<HttpFilterConfig, ConfigError> {
    Ok(HttpFilterConfig::Cors(CorsPolicy {
        present: false,
        allow_origins: Vec::new(),
        allow_methods: None,
        allow_headers: None,
        expose_headers: None,
        max_age: None,
        allow_credentials: None,
        allow_private_network_access: None,
        forward_not_matching_preflights: None,
        enabled: Fraction {
            numerator: 0,
            denominator: 100,
        },
        shadow: Fraction {
            numerator: 0,
            denominator: 100,
        },
    }))
}

fn per_route(m: &DynamicMessage, path: &str, rt: &Runtime) -> Result<FilterOverride, ConfigError> {
    let text = |f: &str| Some(string(m, f)).filter(|s| !s.is_empty());
    let flag = |f: &str| {
        msg(m, f).map(|b| {
            matches!(
                b.get_field_by_name("value").as_deref(),
                Some(Value::Bool(true))
            )
        })
    };
    let allow_origins = list(m, "allow_origin_string_match")
        .iter()
        .enumerate()
        .map(|(i, o)| {
            crate::config::route::string_matcher(
                as_msg(o),
                &format!("{path}.allow_origin_string_match[{i}]"),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let enabled = match msg(m, "filter_enabled") {
        None => Fraction {
            numerator: 100,
            denominator: 100,
        },
        Some(_) => runtime_percent(m, "filter_enabled", path, rt)?,
    };
    Ok(FilterOverride::Config(HttpFilterConfig::Cors(CorsPolicy {
        present: true,
        allow_origins,
        allow_methods: text("allow_methods"),
        allow_headers: text("allow_headers"),
        expose_headers: text("expose_headers"),
        max_age: text("max_age"),
        allow_credentials: flag("allow_credentials"),
        allow_private_network_access: flag("allow_private_network_access"),
        forward_not_matching_preflights: flag("forward_not_matching_preflights"),
        enabled,
        shadow: runtime_percent(m, "shadow_enabled", path, rt)?,
    })))
}
