//! `envoy.filters.http.router`: forwards the request to the route's cluster. Always the last
//! HTTP filter. Its one option zerohop honours, `suppress_envoy_headers`, is the connection
//! manager's (`HttpManager::suppress_envoy_headers`, read by `suppress_envoy_headers` here).

use prost_reflect::DynamicMessage;
use zerohop_proto::HttpFilterConfig;

use super::HttpFilterKind;
use crate::config::ConfigError;

pub(super) const FILTER: HttpFilterKind = HttpFilterKind {
    name: "envoy.filters.http.router",
    type_name: "envoy.extensions.filters.http.router.v3.Router",
    fields: &[(
        "envoy.extensions.filters.http.router.v3.Router",
        &["suppress_envoy_headers"],
    )],
    compile,
    per_route: None,
    terminal: true,
};

fn compile(
    _: &DynamicMessage,
    _: &str,
    _: &crate::config::runtime::Runtime,
) -> Result<HttpFilterConfig, ConfigError> {
    Ok(HttpFilterConfig::Router)
}

/// The router's `suppress_envoy_headers` in the connection manager `hcm`'s `http_filters`.
pub(crate) fn suppress_envoy_headers(hcm: &DynamicMessage) -> bool {
    use crate::config::compile::{as_msg, list, msg, plain_bool};
    list(hcm, "http_filters")
        .iter()
        .filter_map(|f| msg(as_msg(f), "typed_config"))
        .filter_map(|any| crate::config::supported::unpack_any(any).ok())
        .filter(|m| prost_reflect::ReflectMessage::descriptor(m).full_name() == FILTER.type_name)
        .any(|m| plain_bool(&m, "suppress_envoy_headers"))
}
