//! `access_log` on the HTTP connection manager and on tcp_proxy: each entry's logger
//! (`envoy.access_loggers.file`, `.stdout`, `.stderr`), format and filter, compiled into a
//! [`LoggerSet`] that control registers and the snapshot names (see `crate::accesslog`).

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::accesslog::{AccessLogSpec, ResponseFlags};

use super::compile::{as_msg, enum_name, list, msg, plain_bool, string};
use super::runtime::Runtime;
use super::supported::{element_label, unpack_any};
use super::ConfigError;
use crate::accesslog::filter::{Cmp, Filter};
use crate::accesslog::format::{Captures, Format, JsonValue, Template, Which, DEFAULT_FORMAT};
use crate::accesslog::sink::Sink;
use crate::accesslog::{Logger, LoggerSet};

/// The fields zerohop implements of the access-log messages: file, stdout and stderr
/// loggers, their formats and filters.
pub(super) const FIELDS: &[(&str, &[&str])] = &[
    (
        "envoy.config.accesslog.v3.AccessLog",
        &["name", "filter", "typed_config"],
    ),
    (
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        &[
            "path",
            "log_format",
            "format",
            "json_format",
            "typed_json_format",
        ],
    ),
    (
        "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        &["log_format"],
    ),
    (
        "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
        &["log_format"],
    ),
    (
        "envoy.config.core.v3.SubstitutionFormatString",
        &[
            "text_format",
            "text_format_source",
            "json_format",
            "omit_empty_values",
        ],
    ),
    (
        "envoy.config.accesslog.v3.AccessLogFilter",
        &[
            "status_code_filter",
            "duration_filter",
            "not_health_check_filter",
            "runtime_filter",
            "and_filter",
            "or_filter",
            "response_flag_filter",
        ],
    ),
    (
        "envoy.config.accesslog.v3.StatusCodeFilter",
        &["comparison"],
    ),
    ("envoy.config.accesslog.v3.DurationFilter", &["comparison"]),
    ("envoy.config.accesslog.v3.NotHealthCheckFilter", &[]),
    (
        "envoy.config.accesslog.v3.RuntimeFilter",
        &[
            "runtime_key",
            "percent_sampled",
            "use_independent_randomness",
        ],
    ),
    ("envoy.config.accesslog.v3.AndFilter", &["filters"]),
    ("envoy.config.accesslog.v3.OrFilter", &["filters"]),
    ("envoy.config.accesslog.v3.ResponseFlagFilter", &["flags"]),
    (
        "envoy.config.accesslog.v3.ComparisonFilter",
        &["op", "value"],
    ),
    (
        "envoy.config.core.v3.RuntimeUInt32",
        &["default_value", "runtime_key"],
    ),
];

const FILE: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// `m.access_log` compiled and registered; the spec the snapshot carries (disabled when
/// the list is empty).
pub(super) fn access_logs(
    m: &DynamicMessage,
    path: &str,
    runtime: &Runtime,
) -> Result<AccessLogSpec, ConfigError> {
    Ok(logger_set(m, path, runtime)?.register())
}

/// `m.access_log` compiled, not yet registered (the connection manager adds its tracer).
pub(super) fn logger_set(
    m: &DynamicMessage,
    path: &str,
    runtime: &Runtime,
) -> Result<LoggerSet, ConfigError> {
    let mut set = LoggerSet::default();
    for (i, v) in list(m, "access_log").iter().enumerate() {
        let al = as_msg(v);
        let at = format!("{path}.access_log{}", element_label(i, al));
        let logger = logger(al, &at, runtime, &mut set.captures)?;
        set.loggers.push(logger);
    }
    Ok(set)
}

fn logger(
    al: &DynamicMessage,
    path: &str,
    runtime: &Runtime,
    captures: &mut Captures,
) -> Result<Logger, ConfigError> {
    let Some(any) = msg(al, "typed_config") else {
        return Err(ConfigError::at(
            path,
            "an access log needs typed_config (envoy.access_loggers.file, .stdout or .stderr)",
        ));
    };
    let at = format!("{path}.typed_config");
    let cfg = unpack_any(any).map_err(|e| ConfigError::at(&at, e))?;
    let (sink, format) = match cfg.descriptor().full_name() {
        FILE => {
            let p = string(&cfg, "path");
            if p.is_empty() {
                return Err(ConfigError::at(format!("{at}.path"), "must not be empty"));
            }
            let sink = Sink::file(&p);
            sink.check()
                .map_err(|e| ConfigError::at(format!("{at}.path"), e))?;
            (sink, file_format(&cfg, &at, captures)?)
        }
        STDOUT | STDERR => {
            let sink = match cfg.descriptor().full_name() {
                STDOUT => Sink::Stdout,
                _ => Sink::Stderr,
            };
            let format = match msg(&cfg, "log_format") {
                Some(f) => substitution(f, &format!("{at}.log_format"), captures)?,
                None => default_format(captures),
            };
            (sink, format)
        }
        other => {
            return Err(ConfigError::at(
                at,
                format!("access logger {other} is not supported by zerohop (file, stdout, stderr)"),
            ))
        }
    };
    let filter = match msg(al, "filter") {
        Some(f) => Some(filter(f, &format!("{path}.filter"), runtime, captures)?),
        None => None,
    };
    Ok(Logger {
        filter,
        format,
        sink,
    })
}

fn default_format(captures: &mut Captures) -> Format {
    Format::Text {
        template: Template::parse(DEFAULT_FORMAT, captures).expect("the default format parses"),
        omit_empty: false,
    }
}

/// `FileAccessLog`'s format: `log_format`, or the deprecated `format` / `json_format` /
/// `typed_json_format`, or Envoy's default.
fn file_format(
    cfg: &DynamicMessage,
    at: &str,
    captures: &mut Captures,
) -> Result<Format, ConfigError> {
    if let Some(f) = msg(cfg, "log_format") {
        return substitution(f, &format!("{at}.log_format"), captures);
    }
    if cfg.has_field_by_name("format") {
        let text = string(cfg, "format");
        return text_format(&text, &format!("{at}.format"), false, captures);
    }
    for field in ["json_format", "typed_json_format"] {
        if let Some(s) = msg(cfg, field) {
            return json_format(s, &format!("{at}.{field}"), false, captures);
        }
    }
    Ok(default_format(captures))
}

/// `SubstitutionFormatString`.
fn substitution(
    f: &DynamicMessage,
    at: &str,
    captures: &mut Captures,
) -> Result<Format, ConfigError> {
    let omit = plain_bool(f, "omit_empty_values");
    if let Some(src) = msg(f, "text_format_source") {
        let bytes = super::tls::data_source(src, &format!("{at}.text_format_source"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::at(format!("{at}.text_format_source"), "is not UTF-8"))?;
        return text_format(&text, &format!("{at}.text_format_source"), omit, captures);
    }
    if f.has_field_by_name("text_format") {
        let text = string(f, "text_format");
        return text_format(&text, &format!("{at}.text_format"), omit, captures);
    }
    if let Some(s) = msg(f, "json_format") {
        return json_format(s, &format!("{at}.json_format"), omit, captures);
    }
    Err(ConfigError::at(
        at,
        "needs text_format_source, text_format or json_format",
    ))
}

fn text_format(
    text: &str,
    at: &str,
    omit_empty: bool,
    captures: &mut Captures,
) -> Result<Format, ConfigError> {
    let template = Template::parse(text, captures).map_err(|e| ConfigError::at(at, e))?;
    Ok(Format::Text {
        template,
        omit_empty,
    })
}

fn json_format(
    s: &DynamicMessage,
    at: &str,
    omit_empty: bool,
    captures: &mut Captures,
) -> Result<Format, ConfigError> {
    let json = serde::Serialize::serialize(s, serde_json::value::Serializer)
        .map_err(|e| ConfigError::at(at, e.to_string()))?;
    let object = JsonValue::parse(&json, captures).map_err(|e| ConfigError::at(at, e))?;
    Ok(Format::Json { object, omit_empty })
}

/// `AccessLogFilter`.
fn filter(
    f: &DynamicMessage,
    at: &str,
    runtime: &Runtime,
    captures: &mut Captures,
) -> Result<Filter, ConfigError> {
    let Some((field, value)) = f.fields().next() else {
        return Err(ConfigError::at(
            at,
            "an access log filter needs one of its kinds",
        ));
    };
    let name = field.name().to_string();
    let here = format!("{at}.{name}");
    let Value::Message(inner) = value else {
        return Err(ConfigError::at(here, "is not a message"));
    };
    Ok(match name.as_str() {
        "status_code_filter" => {
            let (op, v) = comparison(inner, &here, runtime)?;
            Filter::Status(op, v)
        }
        "duration_filter" => {
            let (op, v) = comparison(inner, &here, runtime)?;
            Filter::Duration(op, v)
        }
        "not_health_check_filter" => Filter::NotHealthCheck,
        "runtime_filter" => {
            let default = match msg(inner, "percent_sampled") {
                Some(p) => super::route::fractional_percent(p, &format!("{here}.percent_sampled"))?,
                None => zerohop_proto::Fraction {
                    numerator: 0,
                    denominator: 100,
                },
            };
            let frac = runtime.fraction(&string(inner, "runtime_key"), default);
            let request_id = match plain_bool(inner, "use_independent_randomness") {
                true => None,
                false => Some(
                    captures
                        .slot(Which::Request, "x-request-id")
                        .map_err(|e| ConfigError::at(&here, e))?,
                ),
            };
            Filter::Runtime {
                numerator: u64::from(frac.numerator),
                denominator: u64::from(frac.denominator),
                request_id,
            }
        }
        "response_flag_filter" => {
            let mut mask = 0;
            for (i, v) in list(inner, "flags").iter().enumerate() {
                let Value::String(s) = v else { continue };
                let flag = ResponseFlags::from_short_name(s).ok_or_else(|| {
                    ConfigError::at(
                        format!("{here}.flags[{i}]"),
                        format!("{s:?} is not one of Envoy's response flags"),
                    )
                })?;
                mask |= flag.bits();
            }
            Filter::Flags(mask)
        }
        "and_filter" | "or_filter" => {
            let subs = list(inner, "filters")
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    filter(
                        as_msg(v),
                        &format!("{here}.filters[{i}]"),
                        runtime,
                        captures,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            if subs.len() < 2 {
                return Err(ConfigError::at(
                    format!("{here}.filters"),
                    "needs at least two filters",
                ));
            }
            match name.as_str() {
                "and_filter" => Filter::And(subs),
                _ => Filter::Or(subs),
            }
        }
        other => {
            return Err(ConfigError::at(
                here,
                format!("access log filter {other} is not supported by zerohop"),
            ))
        }
    })
}

/// `ComparisonFilter`: its operator and value (the runtime's when `runtime_key` is set).
fn comparison(f: &DynamicMessage, at: &str, runtime: &Runtime) -> Result<(Cmp, u64), ConfigError> {
    let c = msg(f, "comparison")
        .ok_or_else(|| ConfigError::at(format!("{at}.comparison"), "is required"))?;
    let op = match enum_name(c, "op").as_str() {
        "EQ" | "" => Cmp::Eq,
        "GE" => Cmp::Ge,
        "LE" => Cmp::Le,
        "NE" => Cmp::Ne,
        other => {
            return Err(ConfigError::at(
                format!("{at}.comparison.op"),
                format!("{other} is not a comparison"),
            ))
        }
    };
    let value = msg(c, "value")
        .ok_or_else(|| ConfigError::at(format!("{at}.comparison.value"), "is required"))?;
    let default = match value.get_field_by_name("default_value").as_deref() {
        Some(Value::U32(n)) => u64::from(*n),
        _ => 0,
    };
    Ok((op, runtime.integer(&string(value, "runtime_key"), default)))
}
