//! `envoy.filters.http.compressor`: response bodies compressed with gzip, brotli or zstd
//! when the request accepts the encoding, as Envoy decides it (the data plane's
//! `http::filter::compressor`). The request direction is refused by name. Per route,
//! `CompressorPerRoute` disables it, or enables it with `remove_accept_encoding_header`.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::{CompressorConfig, CompressorLibrary, FilterOverride, HttpFilterConfig};

use super::{HttpFilterKind, PerRoute};
use crate::config::compile::{list, msg, plain_bool, string, u32_value};
use crate::config::runtime::Runtime;
use crate::config::supported::unpack_any;
use crate::config::ConfigError;

const COMPRESSOR: &str = "envoy.extensions.filters.http.compressor.v3.Compressor";
const COMMON: &str = "envoy.extensions.filters.http.compressor.v3.Compressor.CommonDirectionConfig";
const RESPONSE: &str =
    "envoy.extensions.filters.http.compressor.v3.Compressor.ResponseDirectionConfig";
const PER_ROUTE: &str = "envoy.extensions.filters.http.compressor.v3.CompressorPerRoute";
const OVERRIDES: &str = "envoy.extensions.filters.http.compressor.v3.CompressorOverrides";
const RESPONSE_OVERRIDES: &str =
    "envoy.extensions.filters.http.compressor.v3.ResponseDirectionOverrides";
const GZIP: &str = "envoy.extensions.compression.gzip.compressor.v3.Gzip";
const BROTLI: &str = "envoy.extensions.compression.brotli.compressor.v3.Brotli";
const ZSTD: &str = "envoy.extensions.compression.zstd.compressor.v3.Zstd";

pub(super) const FILTER: HttpFilterKind = HttpFilterKind {
    name: "envoy.filters.http.compressor",
    type_name: COMPRESSOR,
    fields: &[
        (
            COMPRESSOR,
            &[
                "compressor_library",
                "response_direction_config",
                "choose_first",
                // Deprecated forms of the response direction's settings, still in wide use.
                "content_length",
                "content_type",
                "disable_on_etag_header",
                "remove_accept_encoding_header",
                "runtime_enabled",
            ],
        ),
        (COMMON, &["enabled", "min_content_length", "content_type"]),
        (
            RESPONSE,
            &[
                "common_config",
                "disable_on_etag_header",
                "weaken_etag_on_compress",
                "remove_accept_encoding_header",
                "uncompressible_response_codes",
            ],
        ),
        (
            "envoy.config.core.v3.RuntimeFeatureFlag",
            &["default_value", "runtime_key"],
        ),
        (
            "envoy.config.core.v3.TypedExtensionConfig",
            &["name", "typed_config"],
        ),
        // zlib's memory level and strategy are not exposed by the maintained Rust zlib
        // bindings zerohop uses: both are refused rather than ignored.
        (GZIP, &["compression_level", "window_bits", "chunk_size"]),
        (
            BROTLI,
            &[
                "quality",
                "encoder_mode",
                "window_bits",
                "input_block_bits",
                "chunk_size",
                "disable_literal_context_modeling",
            ],
        ),
        (
            ZSTD,
            &[
                "compression_level",
                "enable_checksum",
                "strategy",
                "chunk_size",
            ],
        ),
        (PER_ROUTE, &["disabled", "overrides"]),
        (OVERRIDES, &["response_direction_config"]),
        (RESPONSE_OVERRIDES, &["remove_accept_encoding_header"]),
    ],
    compile,
    per_route: Some(PerRoute {
        type_name: PER_ROUTE,
        compile: per_route,
    }),
    terminal: false,
};

/// Envoy's media types compressed when `content_type` is empty.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/x-javascript",
    "text/ecmascript",
    "text/js",
    "text/jscript",
    "text/x-js",
    "application/ecmascript",
    "application/x-json",
    "application/xml",
    "application/json",
    "image/svg+xml",
    "text/xml",
    "application/xhtml+xml",
    "application/grpc-web",
    "application/grpc-web+proto",
];

fn compile(c: &DynamicMessage, path: &str, rt: &Runtime) -> Result<HttpFilterConfig, ConfigError> {
    Ok(HttpFilterConfig::Compressor(config(c, path, rt)?))
}

fn config(c: &DynamicMessage, path: &str, rt: &Runtime) -> Result<CompressorConfig, ConfigError> {
    let lib_path = format!("{path}.compressor_library");
    let Some(lib) = msg(c, "compressor_library") else {
        return Err(ConfigError::at(lib_path, "required"));
    };
    let library = library(lib, &lib_path)?;
    // The response direction's settings: `response_direction_config`, else the deprecated
    // top-level fields (as Envoy reads them).
    let (common, resp) = match msg(c, "response_direction_config") {
        Some(r) => (msg(r, "common_config"), Some(r)),
        None => (None, None),
    };
    let enabled_flag = match (resp, common) {
        (Some(_), Some(cc)) => msg(cc, "enabled"),
        (Some(_), None) => None,
        (None, _) => msg(c, "runtime_enabled"),
    };
    let enabled = match enabled_flag {
        Some(flag) => {
            let default = msg(flag, "default_value").is_none_or(|v| plain_bool(v, "value"));
            rt.boolean(&string(flag, "runtime_key"), default)
        }
        None => true,
    };
    let min = match resp {
        Some(_) => common.and_then(|cc| msg(cc, "min_content_length")),
        None => msg(c, "content_length"),
    };
    let min_content_length = min.map(u32_value).filter(|n| *n > 0).unwrap_or(30);
    let types = match resp {
        Some(_) => common.map(|cc| list(cc, "content_type")).unwrap_or(&[]),
        None => list(c, "content_type"),
    };
    let mut content_types: Vec<String> = types
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.trim().to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    if content_types.is_empty() {
        content_types = DEFAULT_CONTENT_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    let flag = |field: &str| match resp {
        Some(r) => plain_bool(r, field),
        None => plain_bool(c, field),
    };
    let mut uncompressible_response_codes = Vec::new();
    for (i, v) in resp
        .map(|r| list(r, "uncompressible_response_codes"))
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        match v {
            Value::U32(n) if (200..600).contains(n) => {
                uncompressible_response_codes.push(*n as u16)
            }
            other => {
                return Err(ConfigError::at(
                    format!("{path}.response_direction_config.uncompressible_response_codes[{i}]"),
                    format!("{other:?}: must be a status code from 200 to 599"),
                ))
            }
        }
    }
    Ok(CompressorConfig {
        name: string(lib, "name"),
        library,
        enabled,
        min_content_length,
        content_types,
        disable_on_etag_header: flag("disable_on_etag_header"),
        weaken_etag_on_compress: resp.is_some_and(|r| plain_bool(r, "weaken_etag_on_compress")),
        remove_accept_encoding_header: flag("remove_accept_encoding_header"),
        uncompressible_response_codes,
        choose_first: plain_bool(c, "choose_first"),
    })
}

/// `compressor_library`: gzip, brotli or zstd with Envoy's defaults.
fn library(lib: &DynamicMessage, path: &str) -> Result<CompressorLibrary, ConfigError> {
    let tpath = format!("{path}.typed_config");
    let Some(any) = msg(lib, "typed_config") else {
        return Err(ConfigError::at(tpath, "required"));
    };
    let m = unpack_any(any).map_err(|e| ConfigError::at(tpath.clone(), e))?;
    let wrapped = |field: &str| msg(&m, field).map(u32_value);
    let chunk_size = |at: &str| -> Result<u32, ConfigError> {
        match wrapped("chunk_size") {
            None => Ok(4096),
            Some(n) if (4096..=65536).contains(&n) => Ok(n),
            Some(n) => Err(ConfigError::at(
                format!("{at}.chunk_size"),
                format!("{n}: must be from 4096 to 65536"),
            )),
        }
    };
    let enum_number = |field: &str| match m.get_field_by_name(field).as_deref() {
        Some(Value::EnumNumber(n)) => *n,
        _ => 0,
    };
    let range = |field: &str, default: u32, lo: u32, hi: u32| -> Result<u32, ConfigError> {
        match wrapped(field) {
            None => Ok(default),
            Some(n) if (lo..=hi).contains(&n) => Ok(n),
            Some(n) => Err(ConfigError::at(
                format!("{tpath}.{field}"),
                format!("{n}: must be from {lo} to {hi}"),
            )),
        }
    };
    match m.descriptor().full_name() {
        GZIP => {
            // DEFAULT_COMPRESSION is zlib's default level, 6.
            let level = match enum_number("compression_level") {
                0 => 6,
                n => n as u32,
            };
            Ok(CompressorLibrary::Gzip {
                level,
                window_bits: range("window_bits", 12, 9, 15)? as u8,
                chunk_size: chunk_size(&tpath)?,
            })
        }
        BROTLI => Ok(CompressorLibrary::Brotli {
            quality: range("quality", 3, 0, 11)?,
            window_bits: range("window_bits", 18, 10, 24)?,
            input_block_bits: range("input_block_bits", 24, 16, 24)?,
            // DEFAULT and GENERIC are brotli's generic mode.
            mode: match enum_number("encoder_mode") {
                2 => 1,
                3 => 2,
                _ => 0,
            },
            disable_literal_context_modeling: plain_bool(&m, "disable_literal_context_modeling"),
            chunk_size: chunk_size(&tpath)?,
        }),
        ZSTD => {
            let level = match wrapped("compression_level") {
                None => 3,
                Some(n) if n <= 22 => n as i32,
                Some(n) => {
                    return Err(ConfigError::at(
                        format!("{tpath}.compression_level"),
                        format!("{n}: zstd's levels go up to 22"),
                    ))
                }
            };
            Ok(CompressorLibrary::Zstd {
                level,
                checksum: plain_bool(&m, "enable_checksum"),
                strategy: enum_number("strategy").max(0) as u32,
                chunk_size: chunk_size(&tpath)?,
            })
        }
        other => Err(ConfigError::at(
            tpath,
            format!("compressor library {other} is not supported by zerohop (gzip, brotli, zstd)"),
        )),
    }
}

/// `CompressorPerRoute`: `disabled: true`, or `overrides` whose `response_direction_config`
/// enables compression on the route (with its own `remove_accept_encoding_header`).
fn per_route(p: &DynamicMessage, path: &str, _: &Runtime) -> Result<FilterOverride, ConfigError> {
    if plain_bool(p, "disabled") {
        return Ok(FilterOverride::Compressor {
            enabled: Some(false),
            remove_accept_encoding_header: None,
        });
    }
    let Some(o) = msg(p, "overrides") else {
        return Err(ConfigError::at(
            path,
            "CompressorPerRoute needs disabled: true or overrides",
        ));
    };
    let Some(r) = msg(o, "response_direction_config") else {
        // Overrides without a response direction change nothing.
        return Ok(FilterOverride::Compressor {
            enabled: None,
            remove_accept_encoding_header: None,
        });
    };
    let remove = msg(r, "remove_accept_encoding_header").map(|v| plain_bool(v, "value"));
    Ok(FilterOverride::Compressor {
        enabled: Some(true),
        remove_accept_encoding_header: remove,
    })
}
