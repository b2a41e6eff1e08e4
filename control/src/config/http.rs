//! Compiles `envoy.filters.network.http_connection_manager` and its inline `route_config`
//! into [`HttpManager`]: Envoy's defaults filled in, names lower-cased where HTTP is
//! case-insensitive, regexes checked (the data plane compiles them again when it builds its
//! tables; a pattern that reaches it is known to be valid).

use std::collections::HashMap;
use std::time::Duration;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::*;

use super::compile::{
    as_msg, duration, enum_name, list, msg, plain_bool, string, u32_value, Names, Routes,
};
use super::filters;
use super::supported::{element_label, unpack_any};
use super::ConfigError;

/// Envoy's default route `timeout`.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// zerohop's default `request_headers_timeout` (Envoy leaves it disabled).
const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);

fn bool_value(m: &DynamicMessage, field: &str, default: bool) -> bool {
    match msg(m, field)
        .and_then(|w| w.get_field_by_name("value"))
        .as_deref()
    {
        Some(Value::Bool(b)) => *b,
        _ if m.has_field_by_name(field) => false,
        _ => default,
    }
}

/// A duration field: `default` when unset, `None` when set to 0 (disabled).
fn timeout(
    m: &DynamicMessage,
    field: &str,
    path: &str,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match msg(m, field) {
        Some(d) => Ok(Some(duration(d, &format!("{path}.{field}"))?).filter(|d| !d.is_zero())),
        None => Ok(default),
    }
}

fn check_regex(pattern: &str, path: String) -> Result<(), ConfigError> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| ConfigError::at(path, format!("invalid regex {pattern:?}: {e}")))
}

/// `RegexMatcher.regex`, checked.
fn regex_of(m: &DynamicMessage, path: &str) -> Result<String, ConfigError> {
    let pattern = string(m, "regex");
    check_regex(&pattern, format!("{path}.regex"))?;
    Ok(pattern)
}

/// The Istio filters that arrive wrapped in a `TypedStruct` and have no effect on traffic
/// zerohop serves (peer metadata exchange, ALPN override, Istio's own stats): accepted as
/// no-ops so that Istio's listeners load. Listed in the docs and in config_dump.
pub const ISTIO_NO_OPS: &[&str] = &["istio.metadata_exchange", "istio.alpn", "istio.stats"];

const TYPED_STRUCTS: &[&str] = &[
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// True for a network or HTTP filter that is one of [`ISTIO_NO_OPS`] carried as a TypedStruct.
pub(crate) fn istio_no_op(filter: &DynamicMessage) -> bool {
    let type_url = msg(filter, "typed_config").map(|a| string(a, "type_url"));
    ISTIO_NO_OPS.contains(&string(filter, "name").as_str())
        && type_url.is_some_and(|u| TYPED_STRUCTS.contains(&u.as_str()))
}

/// The type a filter's `typed_config` carries (inside a TypedStruct, the type it names).
fn filter_type(filter: &DynamicMessage) -> String {
    let Some(any) = msg(filter, "typed_config") else {
        return "(no typed_config)".into();
    };
    let mut url = string(any, "type_url");
    if TYPED_STRUCTS.contains(&url.as_str()) {
        if let Ok(ts) = unpack_any(any) {
            url = string(&ts, "type_url");
        }
    }
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

/// An HTTP filter marked `is_optional` whose type zerohop does not implement is skipped, as
/// Envoy does; any other unknown filter is refused.
pub(crate) fn optional_unknown(filter: &DynamicMessage) -> bool {
    plain_bool(filter, "is_optional") && filters::by_type(&filter_type(filter)).is_none()
}

pub(super) fn http_manager(
    hcm: &DynamicMessage,
    path: &str,
    clusters: &Names,
    routes: Routes,
) -> Result<HttpManager, ConfigError> {
    let stat_prefix = string(hcm, "stat_prefix");
    if stat_prefix.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.stat_prefix"),
            "http_connection_manager needs a stat_prefix",
        ));
    }
    let codec = match enum_name(hcm, "codec_type").as_str() {
        "AUTO" => CodecType::Auto,
        "HTTP1" => CodecType::Http1,
        other => {
            return Err(ConfigError::at(
                format!("{path}.codec_type"),
                format!("codec_type {other} is not supported by zerohop (supported: AUTO, HTTP1; HTTP/2 is not implemented yet)"),
            ))
        }
    };
    let http_filters = http_filters(hcm, &format!("{path}.http_filters"), &clusters.runtime)?;
    let max_kb = msg(hcm, "max_request_headers_kb").map_or(60, u32_value);
    if !(1..=8192).contains(&max_kb) {
        return Err(ConfigError::at(
            format!("{path}.max_request_headers_kb"),
            "must be between 1 and 8192",
        ));
    }
    let common = msg(hcm, "common_http_protocol_options");
    if common.is_some_and(|c| c.has_field_by_name("max_requests_per_connection")) {
        return Err(ConfigError::at(
            format!("{path}.common_http_protocol_options.max_requests_per_connection"),
            "not supported by zerohop on the connection manager (only on a cluster's HttpProtocolOptions)",
        ));
    }
    let max_headers_count = common
        .and_then(|c| msg(c, "max_headers_count"))
        .map_or(100, u32_value);
    if max_headers_count == 0 {
        return Err(ConfigError::at(
            format!("{path}.common_http_protocol_options.max_headers_count"),
            "must be at least 1",
        ));
    }
    let max_stream_duration = match common.and_then(|c| msg(c, "max_stream_duration")) {
        Some(d) => {
            let d = super::compile::duration(
                d,
                &format!("{path}.common_http_protocol_options.max_stream_duration"),
            )?;
            (!d.is_zero()).then_some(d)
        }
        None => None,
    };
    let idle_timeout = match common {
        Some(c) => timeout(
            c,
            "idle_timeout",
            &format!("{path}.common_http_protocol_options"),
            Some(DEFAULT_IDLE_TIMEOUT),
        )?,
        None => Some(DEFAULT_IDLE_TIMEOUT),
    };
    let route_config = match (msg(hcm, "route_config"), msg(hcm, "rds")) {
        (Some(rc), _) => route_config(rc, &format!("{path}.route_config"), clusters)?,
        (None, Some(rds)) => {
            let name = string(rds, "route_config_name");
            let rpath = format!("{path}.rds");
            super::compile::ads_source(
                msg(rds, "config_source"),
                &format!("{rpath}.config_source"),
                "RDS",
            )?;
            match routes {
                Routes::Static => {
                    return Err(ConfigError::at(
                        rpath,
                        "rds needs dynamic_resources.ads_config in the bootstrap",
                    ))
                }
                Routes::Rds(by_name) => match by_name.get(&name) {
                    Some(rc) => route_config(rc, &format!("RouteConfiguration({name})"), clusters)?,
                    None => RouteConfig {
                        name,
                        ..Default::default()
                    },
                },
            }
        }
        (None, None) => {
            return Err(ConfigError::at(
                path,
                "http_connection_manager needs route_config or rds",
            ))
        }
    };
    let upgrades = super::hcm_options::upgrade_configs(hcm, path)?;
    let (server_name, server_header) = super::hcm_options::server(hcm, path)?;
    let path_normalization = super::hcm_options::path_normalization(hcm, path)?;
    Ok(HttpManager {
        upgrades,
        server_name,
        server_header,
        path: path_normalization,
        suppress_envoy_headers: super::filters::router::suppress_envoy_headers(hcm),
        user_agent: bool_value(hcm, "add_user_agent", false).then(|| clusters.node.clone()),
        max_stream_duration,
        skip_xff_append: plain_bool(hcm, "skip_xff_append"),
        xff_num_trusted_hops: match hcm.get_field_by_name("xff_num_trusted_hops").as_deref() {
            Some(prost_reflect::Value::U32(n)) => *n,
            _ => 0,
        },
        preserve_external_request_id: plain_bool(hcm, "preserve_external_request_id"),
        stat_prefix,
        codec,
        max_request_headers_bytes: max_kb * 1024,
        max_headers_count,
        request_headers_timeout: timeout(
            hcm,
            "request_headers_timeout",
            path,
            Some(DEFAULT_REQUEST_HEADERS_TIMEOUT),
        )?,
        idle_timeout,
        stream_idle_timeout: timeout(
            hcm,
            "stream_idle_timeout",
            path,
            Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        )?,
        request_timeout: timeout(hcm, "request_timeout", path, None)?,
        generate_request_id: bool_value(hcm, "generate_request_id", true),
        use_remote_address: bool_value(hcm, "use_remote_address", false),
        http1: http1_options(hcm, path)?,
        http_filters,
        route_config,
    })
}

/// `http_protocol_options`: HTTP/1.0 acceptance, as Envoy's codec takes it (426 Upgrade
/// Required without `accept_http_10`).
fn http1_options(hcm: &DynamicMessage, path: &str) -> Result<Http1Options, ConfigError> {
    let Some(o) = msg(hcm, "http_protocol_options") else {
        return Ok(Http1Options::default());
    };
    let accept_http_10 = plain_bool(o, "accept_http_10");
    let default_host = Some(string(o, "default_host_for_http_10")).filter(|h| !h.is_empty());
    if default_host.is_some() && !accept_http_10 {
        return Err(ConfigError::at(
            format!("{path}.http_protocol_options.default_host_for_http_10"),
            "needs accept_http_10: true",
        ));
    }
    if let Some(h) = &default_host {
        if h.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError::at(
                format!("{path}.http_protocol_options.default_host_for_http_10"),
                format!("{h:?} is not a host"),
            ));
        }
    }
    Ok(Http1Options {
        accept_http_10,
        default_host_for_http_10: default_host,
    })
}

/// `http_filters`, compiled in order by the registry: Istio's no-ops and optional filters
/// zerohop lacks skipped, any other unknown filter refused, the router last and only last.
fn http_filters(
    hcm: &DynamicMessage,
    fpath: &str,
    rt: &super::runtime::Runtime,
) -> Result<Vec<HttpFilter>, ConfigError> {
    let mut out: Vec<HttpFilter> = Vec::new();
    let mut terminal_at: Option<(String, &str)> = None;
    for (i, f) in list(hcm, "http_filters").iter().enumerate() {
        let f = as_msg(f);
        if istio_no_op(f) || optional_unknown(f) {
            continue;
        }
        let at = format!("{fpath}{}", element_label(i, f));
        let name = string(f, "name");
        let ty = filter_type(f);
        let Some(kind) = filters::by_type(&ty) else {
            return Err(ConfigError::at(
                format!("{at}.typed_config"),
                format!("HTTP filter {name:?} of type {ty} is not supported by zerohop (supported: {}; a filter marked is_optional is skipped)", filters::names()),
            ));
        };
        if let Some((terminal, kind)) = &terminal_at {
            return Err(ConfigError::at(
                terminal.clone(),
                format!("{kind} must be the last HTTP filter"),
            ));
        }
        let any = msg(f, "typed_config").ok_or_else(|| {
            ConfigError::at(at.clone(), format!("{} needs a typed_config", kind.name))
        })?;
        let tpath = format!("{at}.typed_config");
        let config = unpack_any(any).map_err(|e| ConfigError::at(tpath.clone(), e))?;
        out.push(HttpFilter {
            name,
            config: (kind.compile)(&config, &tpath, rt)?,
        });
        if kind.terminal {
            terminal_at = Some((at, kind.name));
        }
    }
    if terminal_at.is_none() {
        return Err(ConfigError::at(
            fpath,
            "envoy.filters.http.router must be the last HTTP filter",
        ));
    }
    Ok(out)
}

const FILTER_CONFIG: &str = "envoy.config.route.v3.FilterConfig";

/// `typed_per_filter_config`: each entry's type names the filter kind (as in Envoy), its key
/// the `HttpFilter.name` it configures. `FilterConfig` wraps one, or disables the filter; an
/// entry marked `is_optional` whose type zerohop lacks is skipped.
fn per_filter(m: &DynamicMessage, path: &str) -> Result<Vec<PerFilterConfig>, ConfigError> {
    let field = "typed_per_filter_config";
    let Some(value) = m.get_field_by_name(field) else {
        return Ok(Vec::new());
    };
    let Value::Map(map) = value.as_ref() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (key, v) in map {
        let (prost_reflect::MapKey::String(name), Value::Message(any)) = (key, v) else {
            continue;
        };
        let at = format!("{path}.{field}[{name:?}]");
        let inner = unpack_any(any).map_err(|e| ConfigError::at(at.clone(), e))?;
        let config = if inner.descriptor().full_name() == FILTER_CONFIG {
            if plain_bool(&inner, "disabled") {
                Some(FilterOverride::Disabled)
            } else {
                match msg(&inner, "config") {
                    Some(_) if per_filter_optional_unknown(&inner) => None,
                    Some(c) => {
                        let cpath = format!("{at}.config");
                        let c = unpack_any(c).map_err(|e| ConfigError::at(cpath.clone(), e))?;
                        Some(compile_override(&c, &cpath)?)
                    }
                    None => {
                        return Err(ConfigError::at(
                            at,
                            "FilterConfig needs a config or disabled: true",
                        ))
                    }
                }
            }
        } else {
            Some(compile_override(&inner, &at)?)
        };
        if let Some(config) = config {
            out.push(PerFilterConfig {
                filter: name.clone(),
                config,
            });
        }
    }
    // The map has no order; the snapshot does (so that equal configs compare equal).
    out.sort_by(|a, b| a.filter.cmp(&b.filter));
    Ok(out)
}

fn compile_override(c: &DynamicMessage, path: &str) -> Result<FilterOverride, ConfigError> {
    let ty = c.descriptor().full_name().to_owned();
    match filters::by_per_route_type(&ty).and_then(|k| k.per_route.as_ref()) {
        Some(p) => (p.compile)(c, path),
        None => Err(ConfigError::at(
            path,
            format!("per-route configuration of type {ty} is not supported by zerohop"),
        )),
    }
}

/// A `FilterConfig` marked `is_optional` whose config zerohop cannot compile: skipped, as
/// Envoy skips it.
pub(crate) fn per_filter_optional_unknown(filter_config: &DynamicMessage) -> bool {
    if !plain_bool(filter_config, "is_optional") {
        return false;
    }
    let Some(any) = msg(filter_config, "config") else {
        return false;
    };
    let url = string(any, "type_url");
    let ty = url.rsplit('/').next().unwrap_or_default();
    filters::by_per_route_type(ty).is_none()
}

pub(crate) fn route_config(
    rc: &DynamicMessage,
    path: &str,
    clusters: &Names,
) -> Result<RouteConfig, ConfigError> {
    let mut virtual_hosts = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, vh) in list(rc, "virtual_hosts").iter().enumerate() {
        let vh = as_msg(vh);
        let p = format!("{path}.virtual_hosts{}", element_label(i, vh));
        let name = string(vh, "name");
        let mut domains = Vec::new();
        for (j, d) in list(vh, "domains").iter().enumerate() {
            let Value::String(d) = d else { continue };
            let d = d.to_ascii_lowercase();
            let dp = format!("{p}.domains[{j}]");
            let stars = d.matches('*').count();
            let valid = d == "*"
                || stars == 0
                || (stars == 1
                    && ((d.starts_with('*') && d.len() > 1) || (d.ends_with('*') && d.len() > 1)));
            if d.is_empty() || !valid {
                return Err(ConfigError::at(
                    dp,
                    format!("domain {d:?}: a wildcard may only be a whole prefix or suffix"),
                ));
            }
            if let Some(other) = seen.insert(d.clone(), name.clone()) {
                return Err(ConfigError::at(
                    dp,
                    format!("domain {d:?} is also in virtual host {other:?}"),
                ));
            }
            domains.push(d);
        }
        if domains.is_empty() {
            return Err(ConfigError::at(
                format!("{p}.domains"),
                "a virtual host needs at least one domain",
            ));
        }
        let mut routes = Vec::new();
        for (j, r) in list(vh, "routes").iter().enumerate() {
            let r = as_msg(r);
            routes.push(route(
                r,
                &format!("{p}.routes{}", element_label(j, r)),
                clusters,
            )?);
        }
        virtual_hosts.push(VirtualHost {
            name,
            domains,
            routes,
            headers: edits(vh, &p)?,
            per_filter: per_filter(vh, &p)?,
        });
    }
    Ok(RouteConfig {
        name: string(rc, "name"),
        virtual_hosts,
        headers: edits(rc, path)?,
        per_filter: per_filter(rc, path)?,
    })
}

/// A `RuntimeFractionalPercent`: `default_value`, unless the runtime has `runtime_key`.
fn runtime_fraction(
    rf: &DynamicMessage,
    path: &str,
    names: &Names,
) -> Result<Fraction, ConfigError> {
    let default = match msg(rf, "default_value") {
        Some(fp) => fractional_percent(fp, &format!("{path}.default_value"))?,
        None => {
            return Err(ConfigError::at(
                format!("{path}.default_value"),
                "required (Envoy refuses a runtime_fraction without it)",
            ))
        }
    };
    Ok(names.runtime.fraction(&string(rf, "runtime_key"), default))
}

/// `envoy.type.v3.FractionalPercent`.
pub(super) fn fractional_percent(fp: &DynamicMessage, path: &str) -> Result<Fraction, ConfigError> {
    let numerator = match fp.get_field_by_name("numerator").as_deref() {
        Some(Value::U32(n)) => *n,
        _ => 0,
    };
    let denominator = match fp.get_field_by_name("denominator").as_deref() {
        Some(Value::EnumNumber(0)) | None => 100,
        Some(Value::EnumNumber(1)) => 10_000,
        Some(Value::EnumNumber(2)) => 1_000_000,
        Some(other) => {
            return Err(ConfigError::at(
                format!("{path}.denominator"),
                format!("{other:?}: not HUNDRED, TEN_THOUSAND or MILLION"),
            ))
        }
    };
    Ok(Fraction {
        numerator,
        denominator,
    })
}

fn route(r: &DynamicMessage, path: &str, clusters: &Names) -> Result<Route, ConfigError> {
    let Some(m) = msg(r, "match") else {
        return Err(ConfigError::at(
            format!("{path}.match"),
            "a route needs a match",
        ));
    };
    let mp = format!("{path}.match");
    let path_match = if m.has_field_by_name("prefix") {
        PathMatch::Prefix(string(m, "prefix"))
    } else if m.has_field_by_name("path") {
        PathMatch::Path(string(m, "path"))
    } else if let Some(re) = msg(m, "safe_regex") {
        PathMatch::Regex(regex_of(re, &format!("{mp}.safe_regex"))?)
    } else {
        return Err(ConfigError::at(
            mp,
            "a route match needs prefix, path or safe_regex",
        ));
    };
    let mut headers = Vec::new();
    for (i, h) in list(m, "headers").iter().enumerate() {
        let h = as_msg(h);
        headers.push(header_matcher(
            h,
            &format!("{mp}.headers{}", element_label(i, h)),
        )?);
    }
    let mut query_parameters = Vec::new();
    for (i, q) in list(m, "query_parameters").iter().enumerate() {
        let q = as_msg(q);
        let qp = format!("{mp}.query_parameters{}", element_label(i, q));
        let rule = match msg(q, "string_match") {
            Some(sm) => Some(string_matcher(sm, &format!("{qp}.string_match"))?),
            None if msg(q, "present_match").is_some() || plain_bool(q, "present_match") => None,
            None => None,
        };
        query_parameters.push(QueryMatcher {
            name: string(q, "name"),
            rule,
        });
    }
    let runtime_fraction = match msg(m, "runtime_fraction") {
        Some(rf) => Some(runtime_fraction(
            rf,
            &format!("{mp}.runtime_fraction"),
            clusters,
        )?),
        None => None,
    };
    let matcher = RouteMatch {
        path: path_match,
        case_sensitive: bool_value(m, "case_sensitive", true),
        headers,
        query_parameters,
        runtime_fraction,
    };
    let action = if let Some(ra) = msg(r, "route") {
        RouteAction::Forward(forward(ra, &format!("{path}.route"), clusters)?)
    } else if let Some(dr) = msg(r, "direct_response") {
        let status = match dr.get_field_by_name("status").as_deref() {
            Some(Value::U32(s)) => *s,
            _ => 0,
        };
        if !(200..600).contains(&status) {
            return Err(ConfigError::at(
                format!("{path}.direct_response.status"),
                "must be between 200 and 599",
            ));
        }
        let body = msg(dr, "body")
            .map(|b| string(b, "inline_string"))
            .unwrap_or_default();
        RouteAction::Direct {
            status: status as u16,
            body,
        }
    } else if let Some(rd) = msg(r, "redirect") {
        RouteAction::Redirect(redirect(rd, &format!("{path}.redirect"))?)
    } else {
        return Err(ConfigError::at(
            path,
            "a route needs route, direct_response or redirect",
        ));
    };
    Ok(Route {
        name: string(r, "name"),
        matcher,
        action,
        headers: edits(r, path)?,
        per_filter: per_filter(r, path)?,
    })
}

fn forward(ra: &DynamicMessage, path: &str, clusters: &Names) -> Result<Forward, ConfigError> {
    let targets = super::compile::cluster_targets(ra, path, clusters, "a route action")?;
    let prefix_rewrite = ra
        .has_field_by_name("prefix_rewrite")
        .then(|| string(ra, "prefix_rewrite"));
    let regex_rewrite = match msg(ra, "regex_rewrite") {
        Some(rr) => {
            let rp = format!("{path}.regex_rewrite");
            let Some(pattern) = msg(rr, "pattern") else {
                return Err(ConfigError::at(
                    format!("{rp}.pattern"),
                    "regex_rewrite needs a pattern",
                ));
            };
            Some((
                regex_of(pattern, &format!("{rp}.pattern"))?,
                string(rr, "substitution"),
            ))
        }
        None => None,
    };
    if prefix_rewrite.is_some() && regex_rewrite.is_some() {
        return Err(ConfigError::at(
            path,
            "prefix_rewrite and regex_rewrite cannot both be set",
        ));
    }
    Ok(Forward {
        targets,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite: ra
            .has_field_by_name("host_rewrite_literal")
            .then(|| string(ra, "host_rewrite_literal")),
        timeout: timeout(ra, "timeout", path, Some(DEFAULT_ROUTE_TIMEOUT))?,
        upgrades: super::hcm_options::upgrade_configs(ra, path)?,
        mirrors: mirrors(ra, path, clusters)?,
    })
}

/// `request_mirror_policies`: a cluster each, a fraction read from the runtime.
fn mirrors(ra: &DynamicMessage, path: &str, clusters: &Names) -> Result<Vec<Mirror>, ConfigError> {
    let mut out = Vec::new();
    for (i, m) in list(ra, "request_mirror_policies").iter().enumerate() {
        let m = as_msg(m);
        let p = format!("{path}.request_mirror_policies[{i}]");
        let name = string(m, "cluster");
        let Some(cluster) = (!name.is_empty())
            .then(|| clusters.resolve(&name))
            .flatten()
        else {
            return Err(ConfigError::at(
                format!("{p}.cluster"),
                match name.is_empty() {
                    true => "a mirror policy needs a cluster".to_owned(),
                    false => format!("unknown cluster {name:?}"),
                },
            ));
        };
        let fraction = match msg(m, "runtime_fraction") {
            Some(rf) => Some(runtime_fraction(
                rf,
                &format!("{p}.runtime_fraction"),
                clusters,
            )?),
            None => None,
        };
        out.push(Mirror {
            cluster,
            fraction,
            shadow_suffix: !plain_bool(m, "disable_shadow_host_suffix_append"),
        });
    }
    Ok(out)
}

fn redirect(rd: &DynamicMessage, path: &str) -> Result<Redirect, ConfigError> {
    let scheme = if plain_bool(rd, "https_redirect") {
        Some("https".to_owned())
    } else {
        rd.has_field_by_name("scheme_redirect")
            .then(|| string(rd, "scheme_redirect").to_ascii_lowercase())
    };
    let port =
        match rd.get_field_by_name("port_redirect").as_deref() {
            Some(Value::U32(p)) if *p != 0 => Some(u16::try_from(*p).map_err(|_| {
                ConfigError::at(format!("{path}.port_redirect"), "port out of range")
            })?),
            _ => None,
        };
    let status = match enum_name(rd, "response_code").as_str() {
        "MOVED_PERMANENTLY" => 301,
        "FOUND" => 302,
        "SEE_OTHER" => 303,
        "TEMPORARY_REDIRECT" => 307,
        "PERMANENT_REDIRECT" => 308,
        other => {
            return Err(ConfigError::at(
                format!("{path}.response_code"),
                format!("unknown response_code {other}"),
            ))
        }
    };
    Ok(Redirect {
        scheme,
        host: rd
            .has_field_by_name("host_redirect")
            .then(|| string(rd, "host_redirect")),
        port,
        path: rd
            .has_field_by_name("path_redirect")
            .then(|| string(rd, "path_redirect")),
        prefix_rewrite: rd
            .has_field_by_name("prefix_rewrite")
            .then(|| string(rd, "prefix_rewrite")),
        status,
        strip_query: plain_bool(rd, "strip_query"),
    })
}

fn header_matcher(h: &DynamicMessage, path: &str) -> Result<HeaderMatcher, ConfigError> {
    let name = string(h, "name").to_ascii_lowercase();
    if name.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.name"),
            "a header matcher needs a name",
        ));
    }
    let exact = |v: String| StringRule::Exact {
        value: v,
        ignore_case: false,
    };
    let rule = if let Some(sm) = msg(h, "string_match") {
        string_matcher(sm, &format!("{path}.string_match"))?
    } else if h.has_field_by_name("exact_match") {
        exact(string(h, "exact_match"))
    } else if h.has_field_by_name("prefix_match") {
        StringRule::Prefix {
            value: string(h, "prefix_match"),
            ignore_case: false,
        }
    } else if h.has_field_by_name("suffix_match") {
        StringRule::Suffix {
            value: string(h, "suffix_match"),
            ignore_case: false,
        }
    } else if h.has_field_by_name("contains_match") {
        StringRule::Contains {
            value: string(h, "contains_match"),
            ignore_case: false,
        }
    } else if let Some(re) = msg(h, "safe_regex_match") {
        StringRule::Regex(regex_of(re, &format!("{path}.safe_regex_match"))?)
    } else if h.has_field_by_name("present_match") {
        StringRule::Present(plain_bool(h, "present_match"))
    } else {
        // No rule: the header must be present (Envoy).
        StringRule::Present(true)
    };
    Ok(HeaderMatcher {
        name,
        rule,
        invert: plain_bool(h, "invert_match"),
    })
}

fn string_matcher(sm: &DynamicMessage, path: &str) -> Result<StringRule, ConfigError> {
    let ignore_case = plain_bool(sm, "ignore_case");
    Ok(if sm.has_field_by_name("exact") {
        StringRule::Exact {
            value: string(sm, "exact"),
            ignore_case,
        }
    } else if sm.has_field_by_name("prefix") {
        StringRule::Prefix {
            value: string(sm, "prefix"),
            ignore_case,
        }
    } else if sm.has_field_by_name("suffix") {
        StringRule::Suffix {
            value: string(sm, "suffix"),
            ignore_case,
        }
    } else if sm.has_field_by_name("contains") {
        StringRule::Contains {
            value: string(sm, "contains"),
            ignore_case,
        }
    } else if let Some(re) = msg(sm, "safe_regex") {
        StringRule::Regex(regex_of(re, &format!("{path}.safe_regex"))?)
    } else {
        return Err(ConfigError::at(
            path,
            "a string matcher needs exact, prefix, suffix, contains or safe_regex",
        ));
    })
}

/// `request_headers_to_add` / `_remove` and the response pair, at one level.
fn edits(m: &DynamicMessage, path: &str) -> Result<HeaderEdits, ConfigError> {
    let adds = |field: &str| -> Result<Vec<HeaderAdd>, ConfigError> {
        let mut out = Vec::new();
        for (i, o) in list(m, field).iter().enumerate() {
            let o = as_msg(o);
            let p = format!("{path}.{field}[{i}]");
            let Some(h) = msg(o, "header") else {
                return Err(ConfigError::at(format!("{p}.header"), "needs a header"));
            };
            let name = string(h, "key").to_ascii_lowercase();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                return Err(ConfigError::at(
                    format!("{p}.header.key"),
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if name.starts_with(':') || name == "host" {
                return Err(ConfigError::at(
                    format!("{p}.header.key"),
                    format!("{name:?} cannot be modified"),
                ));
            }
            let value = string(h, "value");
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(ConfigError::at(
                    format!("{p}.header.value"),
                    "a header value cannot hold CR, LF or NUL",
                ));
            }
            let append = if o.has_field_by_name("append") {
                // The deprecated BoolValue: true appends, false overwrites.
                if bool_value(o, "append", true) {
                    AppendAction::AppendIfExistsOrAdd
                } else {
                    AppendAction::OverwriteIfExistsOrAdd
                }
            } else {
                match enum_name(o, "append_action").as_str() {
                    "APPEND_IF_EXISTS_OR_ADD" => AppendAction::AppendIfExistsOrAdd,
                    "ADD_IF_ABSENT" => AppendAction::AddIfAbsent,
                    "OVERWRITE_IF_EXISTS_OR_ADD" => AppendAction::OverwriteIfExistsOrAdd,
                    "OVERWRITE_IF_EXISTS" => AppendAction::OverwriteIfExists,
                    other => {
                        return Err(ConfigError::at(
                            format!("{p}.append_action"),
                            format!("unknown {other}"),
                        ))
                    }
                }
            };
            out.push(HeaderAdd {
                name,
                value,
                append,
            });
        }
        Ok(out)
    };
    let removes = |field: &str| -> Vec<String> {
        list(m, field)
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.to_ascii_lowercase()),
                _ => None,
            })
            .collect()
    };
    Ok(HeaderEdits {
        request_add: adds("request_headers_to_add")?,
        request_remove: removes("request_headers_to_remove"),
        response_add: adds("response_headers_to_add")?,
        response_remove: removes("response_headers_to_remove"),
    })
}
