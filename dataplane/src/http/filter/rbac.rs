//! `envoy.filters.http.rbac`: the request and its connection checked against the policies
//! (`crate::rbac`). Denied: 403 `RBAC: access denied`, the chain stopped. `shadow_rules` are
//! evaluated and counted only. Counters as Envoy's `http.<prefix>.rbac.*`.

use zerohop_proto::stats::Counter;
use zerohop_proto::RbacConfig;

use super::{Ctx, Decisions, Filter, Status};
use crate::rbac::evaluate;

#[derive(Debug)]
pub struct Rbac;

impl Filter for Rbac {
    type Config = RbacConfig;

    fn on_request_headers(cfg: &RbacConfig, ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
        let s = ctx.subject;
        if let Some(shadow) = &cfg.shadow {
            ctx.stats.inc(match evaluate(shadow, &s).allowed {
                true => Counter::RbacShadowAllowed,
                false => Counter::RbacShadowDenied,
            });
        }
        let Some(rules) = &cfg.rules else {
            return Status::Continue;
        };
        let v = evaluate(rules, &s);
        if v.allowed {
            ctx.stats.inc(Counter::RbacAllowed);
            return Status::Continue;
        }
        ctx.stats.inc(Counter::RbacDenied);
        d.rbac_denied = Some(v.policy.unwrap_or("none").to_owned());
        Status::Stop
    }
}
