//! The HTTP filters zerohop implements, one file each, and the one registry that lists them.
//!
//! A filter is known by the type its `typed_config` carries (as Envoy finds its factory).
//! Its file says which fields of its messages zerohop honours (the `supported` check reads
//! them), how its `typed_config` compiles to an [`HttpFilterConfig`], and, if it takes one,
//! how a `typed_per_filter_config` entry compiles to a [`FilterOverride`]. Adding a filter
//! is its file, one line in [`REGISTRY`], and its variant in the snapshot contract.

mod buffer;
mod compressor;
mod cors;
mod csrf;
mod fault;
mod local_ratelimit;
mod rbac;
pub(super) mod router;

pub(super) use local_ratelimit::{runtime_percent, token_bucket};

use prost_reflect::DynamicMessage;
use zerohop_proto::{FilterOverride, HttpFilterConfig};

use super::runtime::Runtime;
use super::ConfigError;

/// What control knows of one HTTP filter type.
#[derive(Debug)]
pub(crate) struct HttpFilterKind {
    /// The canonical name, e.g. `envoy.filters.http.buffer` (for messages).
    pub name: &'static str,
    /// The full name of the message its `typed_config` carries.
    pub type_name: &'static str,
    /// The fields zerohop honours, per message type of the filter's own API.
    pub fields: &'static [(&'static str, &'static [&'static str])],
    /// Compiles the decoded `typed_config` found at `path` (runtime keys read from the
    /// runtime given).
    pub compile: fn(&DynamicMessage, &str, &Runtime) -> Result<HttpFilterConfig, ConfigError>,
    /// The filter's per-route type and its compiler, if it takes per-route configuration.
    pub per_route: Option<PerRoute>,
    /// Ends the chain (the router): it must be last.
    pub terminal: bool,
}

#[derive(Debug)]
pub(crate) struct PerRoute {
    pub type_name: &'static str,
    pub compile: fn(&DynamicMessage, &str, &Runtime) -> Result<FilterOverride, ConfigError>,
}

/// Every HTTP filter zerohop implements.
pub(crate) const REGISTRY: &[&HttpFilterKind] = &[
    &router::FILTER,
    &buffer::FILTER,
    &compressor::FILTER,
    &fault::FILTER,
    &local_ratelimit::FILTER,
    &rbac::FILTER,
    &csrf::FILTER,
    &cors::FILTER,
];

/// The filter whose `typed_config` carries `type_name`.
pub(crate) fn by_type(type_name: &str) -> Option<&'static HttpFilterKind> {
    REGISTRY.iter().copied().find(|f| f.type_name == type_name)
}

/// The filter whose per-route configuration type is `type_name`.
pub(crate) fn by_per_route_type(type_name: &str) -> Option<&'static HttpFilterKind> {
    REGISTRY.iter().copied().find(|f| {
        f.per_route
            .as_ref()
            .is_some_and(|p| p.type_name == type_name)
    })
}

/// The fields zerohop honours for `type_name`, if it is one of a filter's messages.
pub(crate) fn fields(type_name: &str) -> Option<&'static [&'static str]> {
    REGISTRY
        .iter()
        .flat_map(|f| f.fields.iter())
        .find(|(t, _)| *t == type_name)
        .map(|(_, fields)| *fields)
}

/// The names of every filter, for messages.
pub(crate) fn names() -> String {
    REGISTRY
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}
