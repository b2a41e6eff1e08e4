//! `envoy.filters.http.router`: forwards the request to the route's cluster. Always the last
//! HTTP filter; zerohop honours none of its options yet, so its config must be empty.

use prost_reflect::DynamicMessage;
use zerohop_proto::HttpFilterConfig;

use super::HttpFilterKind;
use crate::config::ConfigError;

pub(super) const FILTER: HttpFilterKind = HttpFilterKind {
    name: "envoy.filters.http.router",
    type_name: "envoy.extensions.filters.http.router.v3.Router",
    fields: &[("envoy.extensions.filters.http.router.v3.Router", &[])],
    compile,
    per_route: None,
    terminal: true,
};

fn compile(_: &DynamicMessage, _: &str) -> Result<HttpFilterConfig, ConfigError> {
    Ok(HttpFilterConfig::Router)
}
