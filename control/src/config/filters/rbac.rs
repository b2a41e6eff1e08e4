//! `envoy.filters.http.rbac`: `rules` enforced (403 `RBAC: access denied`), `shadow_rules`
//! evaluated and counted. The policies compile in `config::rbac`.

use prost_reflect::DynamicMessage;
use zerohop_proto::{HttpFilterConfig, RbacConfig};

use super::HttpFilterKind;
use crate::config::compile::msg;
use crate::config::runtime::Runtime;
use crate::config::ConfigError;

const RBAC: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";

pub(super) const FILTER: HttpFilterKind = HttpFilterKind {
    name: "envoy.filters.http.rbac",
    type_name: RBAC,
    fields: &[(RBAC, &["rules", "shadow_rules"])],
    compile,
    per_route: None,
    terminal: false,
};

fn compile(m: &DynamicMessage, path: &str, _: &Runtime) -> Result<HttpFilterConfig, ConfigError> {
    let rules = match msg(m, "rules") {
        Some(r) => Some(crate::config::rbac::rules(r, &format!("{path}.rules"))?),
        None => None,
    };
    let shadow = match msg(m, "shadow_rules") {
        Some(r) => Some(crate::config::rbac::rules(
            r,
            &format!("{path}.shadow_rules"),
        )?),
        None => None,
    };
    Ok(HttpFilterConfig::Rbac(RbacConfig { rules, shadow }))
}
