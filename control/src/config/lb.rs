//! A cluster's `lb_policy` and its settings, checked as Envoy checks them.

use prost_reflect::{DynamicMessage, Value};
use zerohop_proto::LbPolicy;

use super::compile::{enum_name, msg};
use super::ConfigError;

/// `lb_policy` with `ring_hash_lb_config` / `maglev_lb_config`.
pub(super) fn lb_policy(c: &DynamicMessage, path: &str) -> Result<LbPolicy, ConfigError> {
    let u64_of = |m: &DynamicMessage, field: &str| {
        msg(m, field).and_then(|w| match w.get_field_by_name("value").as_deref() {
            Some(Value::U64(n)) => Some(*n),
            _ => None,
        })
    };
    let policy = match enum_name(c, "lb_policy").as_str() {
        "ROUND_ROBIN" => LbPolicy::RoundRobin,
        "RANDOM" => LbPolicy::Random,
        "RING_HASH" => {
            let cfg = msg(c, "ring_hash_lb_config");
            let at = format!("{path}.ring_hash_lb_config");
            let min = cfg.and_then(|m| u64_of(m, "minimum_ring_size")).unwrap_or(1024);
            let max = cfg
                .and_then(|m| u64_of(m, "maximum_ring_size"))
                .unwrap_or(8 * 1024 * 1024);
            if min > 8 * 1024 * 1024 || max > 8 * 1024 * 1024 {
                return Err(ConfigError::at(at, "ring sizes are at most 8M (8388608)"));
            }
            if min > max {
                return Err(ConfigError::at(
                    format!("{at}.minimum_ring_size"),
                    format!("{min} is larger than maximum_ring_size {max}"),
                ));
            }
            if let Some(m) = cfg {
                if !matches!(m.get_field_by_name("hash_function").as_deref(), None | Some(Value::EnumNumber(0))) {
                    return Err(ConfigError::at(
                        format!("{at}.hash_function"),
                        "only XX_HASH is supported by zerohop",
                    ));
                }
            }
            LbPolicy::RingHash {
                min_ring_size: min,
                max_ring_size: max,
            }
        }
        "LEAST_REQUEST" => {
            let cfg = msg(c, "least_request_lb_config");
            let at = format!("{path}.least_request_lb_config");
            let choice_count = match cfg.and_then(|m| msg(m, "choice_count")) {
                Some(w) => match w.get_field_by_name("value").as_deref() {
                    Some(Value::U32(n)) if *n >= 2 => *n,
                    other => {
                        return Err(ConfigError::at(
                            format!("{at}.choice_count"),
                            format!("{other:?}: must be at least 2"),
                        ))
                    }
                },
                None => 2,
            };
            // A RuntimeDouble: its default value (a cluster compiles before the runtime is
            // consulted; a runtime value for its key is not read).
            let bias = match cfg.and_then(|m| msg(m, "active_request_bias")) {
                Some(rd) => match rd.get_field_by_name("default_value").as_deref() {
                    Some(Value::F64(v)) if *v >= 0.0 => *v,
                    None => 0.0,
                    other => {
                        return Err(ConfigError::at(
                            format!("{at}.active_request_bias.default_value"),
                            format!("{other:?}: must not be negative"),
                        ))
                    }
                },
                None => 1.0,
            };
            LbPolicy::LeastRequest {
                choice_count,
                active_request_bias: bias.to_bits(),
            }
        }
        "MAGLEV" => {
            let table_size = msg(c, "maglev_lb_config")
                .and_then(|m| u64_of(m, "table_size"))
                .unwrap_or(65537);
            let prime = table_size >= 2 && (2..).take_while(|d| d * d <= table_size).all(|d| !table_size.is_multiple_of(d));
            if !prime || table_size > 5_000_011 {
                return Err(ConfigError::at(
                    format!("{path}.maglev_lb_config.table_size"),
                    format!("{table_size}: must be a prime number at most 5000011"),
                ));
            }
            LbPolicy::Maglev { table_size }
        }
        other => {
            return Err(ConfigError::at(
                format!("{path}.lb_policy"),
                format!("lb_policy {other} is not supported by zerohop (supported: ROUND_ROBIN, RANDOM, LEAST_REQUEST, RING_HASH, MAGLEV)"),
            ))
        }
    };
    let stray = [
        ("ring_hash_lb_config", "RING_HASH"),
        ("maglev_lb_config", "MAGLEV"),
    ];
    for (field, wants) in stray {
        let policy_is = matches!(
            (&policy, wants),
            (LbPolicy::RingHash { .. }, "RING_HASH")
                | (LbPolicy::Maglev { .. }, "MAGLEV")
                | (LbPolicy::LeastRequest { .. }, "LEAST_REQUEST")
        );
        if msg(c, field).is_some() && !policy_is {
            return Err(ConfigError::at(
                format!("{path}.{field}"),
                format!("applies only with lb_policy {wants}"),
            ));
        }
    }
    Ok(policy)
}
