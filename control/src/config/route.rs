//! A route configuration (inline in a connection manager, or by RDS) compiled into
//! [`RouteConfig`]: virtual hosts by domain, route matchers, actions (forward with rewrites,
//! timeouts, upgrades and mirrors; direct responses; redirects) and header edits, with the
//! runtime read where a field names a `runtime_key`.

use std::collections::HashMap;

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::*;

use super::compile::{as_msg, enum_name, list, msg, plain_bool, string, u32_value, Names};
use super::http::{bool_value, per_filter, regex_of, timeout, DEFAULT_ROUTE_TIMEOUT};
use super::retry::retry_policy;
use super::supported::element_label;
use super::ConfigError;

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
                (vh, &p),
                clusters,
            )?);
        }
        virtual_hosts.push(VirtualHost {
            name,
            domains,
            routes,
            headers: edits(vh, &p)?,
            per_filter: per_filter(vh, &p, &clusters.runtime)?,
        });
    }
    Ok(RouteConfig {
        name: string(rc, "name"),
        virtual_hosts,
        headers: edits(rc, path)?,
        per_filter: per_filter(rc, path, &clusters.runtime)?,
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
pub(crate) fn fractional_percent(fp: &DynamicMessage, path: &str) -> Result<Fraction, ConfigError> {
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

fn route(
    r: &DynamicMessage,
    path: &str,
    vh: (&DynamicMessage, &str),
    clusters: &Names,
) -> Result<Route, ConfigError> {
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
        grpc: m.has_field_by_name("grpc"),
    };
    let action = if let Some(ra) = msg(r, "route") {
        let mut f = forward(ra, &format!("{path}.route"), clusters)?;
        retries(&mut f, (r, path), (ra, &format!("{path}.route")), vh)?;
        RouteAction::Forward(f)
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
        let body = match msg(dr, "body") {
            Some(b) => {
                let bpath = format!("{path}.direct_response.body");
                let bytes = super::tls::data_source(b, &bpath)?;
                String::from_utf8(bytes)
                    .map_err(|_| ConfigError::at(bpath, "a direct response body is text (UTF-8)"))?
            }
            None => String::new(),
        };
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
        per_filter: per_filter(r, path, &clusters.runtime)?,
        decorator: super::tracing::decorator(r, path)?,
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
        retry: None,
        hash_policy: hash_policy(ra, path)?,
        buffer_limit: DEFAULT_BUFFER_LIMIT,
        attempt_count_upstream: false,
        attempt_count_downstream: false,
    })
}

/// `hash_policy`: headers, cookies (without `ttl`: zerohop sets no cookie), the source IP
/// and query parameters; `filter_state` is refused by name.
fn hash_policy(ra: &DynamicMessage, path: &str) -> Result<Vec<HashPolicy>, ConfigError> {
    let mut out = Vec::new();
    for (i, h) in list(ra, "hash_policy").iter().enumerate() {
        let h = as_msg(h);
        let hp = format!("{path}.hash_policy[{i}]");
        let named = |m: &DynamicMessage, field: &str, at: String| match string(m, field) {
            n if n.is_empty() => Err(ConfigError::at(format!("{at}.{field}"), "required")),
            n => Ok(n),
        };
        let on = if let Some(m) = msg(h, "header") {
            HashOn::Header(named(m, "header_name", format!("{hp}.header"))?.to_ascii_lowercase())
        } else if let Some(m) = msg(h, "cookie") {
            HashOn::Cookie(named(m, "name", format!("{hp}.cookie"))?)
        } else if let Some(m) = msg(h, "connection_properties") {
            if !plain_bool(m, "source_ip") {
                return Err(ConfigError::at(
                    format!("{hp}.connection_properties.source_ip"),
                    "must be true",
                ));
            }
            HashOn::SourceIp
        } else if let Some(m) = msg(h, "query_parameter") {
            HashOn::QueryParameter(named(m, "name", format!("{hp}.query_parameter"))?)
        } else {
            return Err(ConfigError::at(
                hp,
                "a hash policy needs header, cookie, connection_properties or query_parameter",
            ));
        };
        out.push(HashPolicy {
            on,
            terminal: plain_bool(h, "terminal"),
        });
    }
    Ok(out)
}

/// Envoy's default `per_connection_buffer_limit_bytes` (a listener field zerohop does not
/// take): the bound on a request body held for retries.
const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;

/// The retry policy (the route action's, else the virtual host's), the buffer limit for
/// retries (the route's, else the virtual host's) and the virtual host's attempt-count
/// headers.
fn retries(
    f: &mut Forward,
    (r, rpath): (&DynamicMessage, &str),
    (ra, rapath): (&DynamicMessage, &str),
    (vh, vpath): (&DynamicMessage, &str),
) -> Result<(), ConfigError> {
    f.retry = match (msg(ra, "retry_policy"), msg(vh, "retry_policy")) {
        (Some(p), _) => Some(retry_policy(p, &format!("{rapath}.retry_policy"))?),
        (None, Some(p)) => Some(retry_policy(p, &format!("{vpath}.retry_policy"))?),
        (None, None) => None,
    }
    .map(Box::new);
    let limit = |m: &DynamicMessage, path: &str| -> Result<Option<u32>, ConfigError> {
        if let Some(v) = msg(m, "request_body_buffer_limit") {
            if m.has_field_by_name("per_request_buffer_limit_bytes") {
                return Err(ConfigError::at(
                    format!("{path}.request_body_buffer_limit"),
                    "only one of per_request_buffer_limit_bytes and request_body_buffer_limit may be set",
                ));
            }
            let n = match v.get_field_by_name("value").as_deref() {
                Some(Value::U64(n)) => *n,
                _ => 0,
            };
            return Ok(Some(n.min(u64::from(u32::MAX)) as u32));
        }
        Ok(
            msg(m, "per_request_buffer_limit_bytes")
                .map(|v| u32_value(v).min(DEFAULT_BUFFER_LIMIT)),
        )
    };
    f.buffer_limit = match limit(r, rpath)? {
        Some(n) => n,
        None => limit(vh, vpath)?.unwrap_or(DEFAULT_BUFFER_LIMIT),
    };
    f.attempt_count_upstream = plain_bool(vh, "include_request_attempt_count");
    f.attempt_count_downstream = plain_bool(vh, "include_attempt_count_in_response");
    Ok(())
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

pub(crate) fn header_matcher(h: &DynamicMessage, path: &str) -> Result<HeaderMatcher, ConfigError> {
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

pub(crate) fn string_matcher(sm: &DynamicMessage, path: &str) -> Result<StringRule, ConfigError> {
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
/// `field`'s `HeaderValueOption`s: names checked and lower-cased, values without CR, LF or
/// NUL, Envoy's append semantics.
pub(crate) fn header_adds(
    m: &DynamicMessage,
    field: &str,
    path: &str,
) -> Result<Vec<HeaderAdd>, ConfigError> {
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
}

fn edits(m: &DynamicMessage, path: &str) -> Result<HeaderEdits, ConfigError> {
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
        request_add: header_adds(m, "request_headers_to_add", path)?,
        request_remove: removes("request_headers_to_remove"),
        response_add: header_adds(m, "response_headers_to_add", path)?,
        response_remove: removes("response_headers_to_remove"),
    })
}
