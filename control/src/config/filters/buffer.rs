//! `envoy.filters.http.buffer`: each request body is read whole, up to `max_request_bytes`
//! (413 beyond), before the request goes upstream. Per route, `BufferPerRoute` disables it
//! or sets another limit.

use prost_reflect::DynamicMessage;
use zerohop_proto::{BufferConfig, FilterOverride, HttpFilterConfig};

use super::{HttpFilterKind, PerRoute};
use crate::config::compile::{msg, u32_value};
use crate::config::runtime::Runtime;
use crate::config::ConfigError;

const BUFFER: &str = "envoy.extensions.filters.http.buffer.v3.Buffer";
const PER_ROUTE: &str = "envoy.extensions.filters.http.buffer.v3.BufferPerRoute";

pub(super) const FILTER: HttpFilterKind = HttpFilterKind {
    name: "envoy.filters.http.buffer",
    type_name: BUFFER,
    fields: &[
        (BUFFER, &["max_request_bytes"]),
        (PER_ROUTE, &["disabled", "buffer"]),
    ],
    compile,
    per_route: Some(PerRoute {
        type_name: PER_ROUTE,
        compile: per_route,
    }),
    terminal: false,
};

fn compile(
    buffer: &DynamicMessage,
    path: &str,
    _: &crate::config::runtime::Runtime,
) -> Result<HttpFilterConfig, ConfigError> {
    Ok(HttpFilterConfig::Buffer(config(buffer, path)?))
}

/// `max_request_bytes`: required, above 0, as Envoy validates it.
fn config(buffer: &DynamicMessage, path: &str) -> Result<BufferConfig, ConfigError> {
    match msg(buffer, "max_request_bytes").map(u32_value) {
        Some(n) if n > 0 => Ok(BufferConfig {
            max_request_bytes: n,
        }),
        _ => Err(ConfigError::at(
            format!("{path}.max_request_bytes"),
            "must be set and greater than 0",
        )),
    }
}

/// `BufferPerRoute`: `disabled: true` or a `buffer` of its own (one of them, as Envoy's
/// oneof requires).
fn per_route(p: &DynamicMessage, path: &str, _: &Runtime) -> Result<FilterOverride, ConfigError> {
    if let Some(b) = msg(p, "buffer") {
        let own = config(b, &format!("{path}.buffer"))?;
        return Ok(FilterOverride::Config(HttpFilterConfig::Buffer(own)));
    }
    match p.get_field_by_name("disabled").as_deref() {
        Some(prost_reflect::Value::Bool(true)) => Ok(FilterOverride::Disabled),
        _ => Err(ConfigError::at(
            path,
            "BufferPerRoute needs disabled: true or a buffer",
        )),
    }
}
