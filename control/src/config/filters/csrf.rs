//! `envoy.filters.http.csrf`: `filter_enabled` (required, as Envoy's), `shadow_enabled` and
//! `additional_origins`, the same `CsrfPolicy` per route (`typed_per_filter_config`). The
//! percentages are read from the runtime when the snapshot compiles.

use prost_reflect::DynamicMessage;
use zerohop_proto::{CsrfConfig, FilterOverride, HttpFilterConfig};

use super::{runtime_percent, HttpFilterKind, PerRoute};
use crate::config::compile::{as_msg, list, msg};
use crate::config::runtime::Runtime;
use crate::config::ConfigError;

const POLICY: &str = "envoy.extensions.filters.http.csrf.v3.CsrfPolicy";

pub(super) const FILTER: HttpFilterKind = HttpFilterKind {
    name: "envoy.filters.http.csrf",
    type_name: POLICY,
    fields: &[(
        POLICY,
        &["filter_enabled", "shadow_enabled", "additional_origins"],
    )],
    compile,
    per_route: Some(PerRoute {
        type_name: POLICY,
        compile: per_route,
    }),
    terminal: false,
};

fn config(m: &DynamicMessage, path: &str, rt: &Runtime) -> Result<CsrfConfig, ConfigError> {
    if msg(m, "filter_enabled").is_none() {
        return Err(ConfigError::at(
            format!("{path}.filter_enabled"),
            "required (Envoy refuses a CSRF policy without it)",
        ));
    }
    let additional_origins = list(m, "additional_origins")
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let at = format!("{path}.additional_origins[{i}]");
            match crate::config::route::string_matcher(as_msg(o), &at)? {
                zerohop_proto::StringRule::Regex(_) => Err(ConfigError::at(
                    format!("{at}.safe_regex"),
                    "regular expressions are not supported here (exact, prefix, suffix, contains)",
                )),
                r => Ok(r),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CsrfConfig {
        enabled: runtime_percent(m, "filter_enabled", path, rt)?,
        shadow: runtime_percent(m, "shadow_enabled", path, rt)?,
        additional_origins,
    })
}

fn compile(m: &DynamicMessage, path: &str, rt: &Runtime) -> Result<HttpFilterConfig, ConfigError> {
    Ok(HttpFilterConfig::Csrf(config(m, path, rt)?))
}

fn per_route(m: &DynamicMessage, path: &str, rt: &Runtime) -> Result<FilterOverride, ConfigError> {
    Ok(FilterOverride::Config(HttpFilterConfig::Csrf(config(
        m, path, rt,
    )?)))
}
