//! `envoy.config.rbac.v3.RBAC`, for the HTTP filter (`filters/rbac.rs`) and the network
//! filter (`listener.rs`): policies of permissions and principals compiled into the
//! snapshot's trees. String matchers are exact, prefix, suffix or contains: a regular
//! expression is refused with its path (the data plane matches the trees as they are,
//! compiling nothing per request), as are conditions, metadata and filter-state matchers.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use zerohop_proto::*;

use super::compile::*;
use super::ConfigError;

/// `rules` or `shadow_rules`.
pub(crate) fn rules(m: &DynamicMessage, path: &str) -> Result<RbacRules, ConfigError> {
    let action = match enum_name(m, "action").as_str() {
        "ALLOW" => RbacAction::Allow,
        "DENY" => RbacAction::Deny,
        "LOG" => RbacAction::Log,
        other => {
            return Err(ConfigError::at(
                format!("{path}.action"),
                format!("action {other} is not supported (ALLOW, DENY, LOG)"),
            ))
        }
    };
    let mut policies = Vec::new();
    if let Some(Value::Map(map)) = m.get_field_by_name("policies").as_deref() {
        for (k, v) in map {
            let name = match k {
                prost_reflect::MapKey::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            let Value::Message(p) = v else { continue };
            let ppath = format!("{path}.policies[{name}]");
            let permissions = list(p, "permissions")
                .iter()
                .enumerate()
                .map(|(i, x)| permission(as_msg(x), &format!("{ppath}.permissions[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let principals = list(p, "principals")
                .iter()
                .enumerate()
                .map(|(i, x)| principal(as_msg(x), &format!("{ppath}.principals[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            if permissions.is_empty() || principals.is_empty() {
                return Err(ConfigError::at(
                    ppath,
                    "a policy needs at least one permission and one principal",
                ));
            }
            policies.push((
                name,
                RbacPolicy {
                    permissions,
                    principals,
                },
            ));
        }
    }
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(RbacRules { action, policies })
}

/// The one field of a `oneof rule` / `oneof identifier` that is set.
fn which(m: &DynamicMessage, path: &str) -> Result<String, ConfigError> {
    let set: Vec<String> = m
        .descriptor()
        .fields()
        .filter(|f| m.has_field(f))
        .map(|f| f.name().to_owned())
        .collect();
    match &set[..] {
        [one] => Ok(one.clone()),
        _ => Err(ConfigError::at(path, "exactly one rule must be set")),
    }
}

fn no_regex(rule: StringRule, path: &str) -> Result<StringRule, ConfigError> {
    match rule {
        StringRule::Regex(_) => Err(ConfigError::at(
            format!("{path}.safe_regex"),
            "regular expressions are not supported in RBAC matchers (exact, prefix, suffix, contains)",
        )),
        r => Ok(r),
    }
}

fn string_rule(m: &DynamicMessage, path: &str) -> Result<StringRule, ConfigError> {
    no_regex(super::route::string_matcher(m, path)?, path)
}

fn header(m: &DynamicMessage, path: &str) -> Result<HeaderMatcher, ConfigError> {
    let h = super::route::header_matcher(m, path)?;
    let rule = no_regex(h.rule, path)?;
    Ok(HeaderMatcher { rule, ..h })
}

/// `PathMatcher.path`.
fn url_path(m: &DynamicMessage, path: &str) -> Result<StringRule, ConfigError> {
    match msg(m, "path") {
        Some(p) => string_rule(p, &format!("{path}.path")),
        None => Err(ConfigError::at(path, "a path matcher needs path")),
    }
}

fn port(v: u32, path: &str) -> Result<u16, ConfigError> {
    u16::try_from(v)
        .map_err(|_| ConfigError::at(path, format!("port {v} is out of range 0..=65535")))
}

fn permission(m: &DynamicMessage, path: &str) -> Result<Permission, ConfigError> {
    let field = which(m, path)?;
    let at = format!("{path}.{field}");
    let sub = || msg(m, &field).expect("the set field");
    Ok(match field.as_str() {
        "any" => Permission::Any,
        "and_rules" | "or_rules" => {
            let rules = list(sub(), "rules")
                .iter()
                .enumerate()
                .map(|(i, r)| permission(as_msg(r), &format!("{at}.rules[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            match field == "and_rules" {
                true => Permission::And(rules),
                false => Permission::Or(rules),
            }
        }
        "not_rule" => Permission::Not(Box::new(permission(sub(), &at)?)),
        "header" => Permission::Header(header(sub(), &at)?),
        "url_path" => Permission::UrlPath(url_path(sub(), &at)?),
        "destination_ip" => Permission::DestinationIp(super::listener::cidr(sub(), &at)?),
        "destination_port" => {
            let v = match m.get_field_by_name("destination_port").as_deref() {
                Some(Value::U32(v)) => *v,
                _ => 0,
            };
            Permission::DestinationPort(port(v, &at)?)
        }
        "destination_port_range" => {
            let r = sub();
            let get = |f: &str| match r.get_field_by_name(f).as_deref() {
                Some(Value::I32(v)) => *v,
                _ => 0,
            };
            let (start, end) = (get("start"), get("end"));
            let conv = |v: i32, f: &str| {
                u16::try_from(v).map_err(|_| {
                    ConfigError::at(format!("{at}.{f}"), format!("{v} is not a port"))
                })
            };
            Permission::DestinationPortRange(conv(start, "start")?, conv(end, "end")?)
        }
        "requested_server_name" => Permission::RequestedServerName(string_rule(sub(), &at)?),
        other => {
            return Err(ConfigError::at(
                at,
                format!("permission {other} is not supported by zerohop (any, and_rules, or_rules, not_rule, header, url_path, destination_ip, destination_port, destination_port_range, requested_server_name)"),
            ))
        }
    })
}

fn principal(m: &DynamicMessage, path: &str) -> Result<Principal, ConfigError> {
    let field = which(m, path)?;
    let at = format!("{path}.{field}");
    let sub = || msg(m, &field).expect("the set field");
    Ok(match field.as_str() {
        "any" => Principal::Any,
        "and_ids" | "or_ids" => {
            let ids = list(sub(), "ids")
                .iter()
                .enumerate()
                .map(|(i, r)| principal(as_msg(r), &format!("{at}.ids[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            match field == "and_ids" {
                true => Principal::And(ids),
                false => Principal::Or(ids),
            }
        }
        "not_id" => Principal::Not(Box::new(principal(sub(), &at)?)),
        "authenticated" => Principal::Authenticated(match msg(sub(), "principal_name") {
            Some(n) => Some(string_rule(n, &format!("{at}.principal_name"))?),
            None => None,
        }),
        "direct_remote_ip" => Principal::DirectRemoteIp(super::listener::cidr(sub(), &at)?),
        "remote_ip" => Principal::RemoteIp(super::listener::cidr(sub(), &at)?),
        "header" => Principal::Header(header(sub(), &at)?),
        "url_path" => Principal::UrlPath(url_path(sub(), &at)?),
        other => {
            return Err(ConfigError::at(
                at,
                format!("principal {other} is not supported by zerohop (any, and_ids, or_ids, not_id, authenticated, direct_remote_ip, remote_ip, header, url_path)"),
            ))
        }
    })
}
