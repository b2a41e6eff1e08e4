//! `envoy.filters.http.cors`, as Envoy 1.40's: for a request with an `origin` under a route
//! that forwards (not a direct response or redirect) whose merged `CorsPolicy` is enabled, the origin is checked against
//! `allow_origin_string_match` (counted `cors.origin_valid` / `origin_invalid`). A preflight
//! (`OPTIONS` with `access-control-request-method`) is answered here, 200 with the policy's
//! `access-control-allow-*` headers (`*` in `allow_methods` / `allow_headers` echoes the
//! request's), unless the origin is not allowed and `forward_not_matching_preflights` (the
//! default) sends it on. Any other response to an allowed origin gets
//! `access-control-allow-origin`, `-allow-credentials` and `-expose-headers`.
//! `shadow_enabled` only counts.

use zerohop_proto::stats::Counter;
use zerohop_proto::{CorsPolicy, Fraction};

use super::{Ctx, Decisions, Filter, Status};
use crate::route::string_matches;

#[derive(Debug)]
pub struct Cors;

/// What the CORS filter does to the stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CorsOutcome {
    /// Answer the preflight with 200 and these headers.
    pub preflight: bool,
    /// Headers the response gets (and the preflight's answer, first).
    pub headers: Vec<(&'static str, String)>,
}

impl Filter for Cors {
    type Config = CorsPolicy;

    fn on_request_headers(cfg: &CorsPolicy, ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
        // Envoy's filter acts only on a route that forwards (a direct response or a
        // redirect has no route entry).
        let forwards = ctx
            .route
            .is_some_and(|r| matches!(r.action, crate::route::Action::Forward { .. }));
        if !cfg.present || !forwards {
            return Status::Continue;
        }
        let draw = |f: Fraction| {
            f.numerator > 0
                && ctx.rng.next_u64() % u64::from(f.denominator.max(1)) < u64::from(f.numerator)
        };
        let enabled = draw(cfg.enabled);
        if !enabled && !draw(cfg.shadow) {
            return Status::Continue;
        }
        let req = ctx.req;
        let Some(origin) = req.header("origin").filter(|o| !o.is_empty()) else {
            return Status::Continue;
        };
        // A rule matching `*` became a rule matching every origin when the route table
        // was built (`route::merge_cors`).
        let allowed = cfg
            .allow_origins
            .iter()
            .any(|r| string_matches(r, Some(origin)));
        ctx.stats.inc(match allowed {
            true => Counter::CorsOriginValid,
            false => Counter::CorsOriginInvalid,
        });
        if !enabled {
            return Status::Continue;
        }
        let mut out = CorsOutcome::default();
        let preflight = req.method() == b"OPTIONS"
            && req
                .header("access-control-request-method")
                .is_some_and(|m| !m.is_empty());
        if preflight && (allowed || !cfg.forward_not_matching_preflights.unwrap_or(true)) {
            out.preflight = true;
            if allowed {
                out.headers
                    .push(("access-control-allow-origin", origin.to_owned()));
            }
            if cfg.allow_credentials == Some(true) {
                out.headers
                    .push(("access-control-allow-credentials", "true".into()));
            }
            let echo = |configured: &Option<String>, asked: &str| match configured.as_deref() {
                Some("*") => Some(req.header(asked).unwrap_or("").to_owned()),
                Some(v) => Some(v.to_owned()),
                None => None,
            };
            if let Some(v) = echo(&cfg.allow_methods, "access-control-request-method") {
                out.headers.push(("access-control-allow-methods", v));
            }
            if let Some(v) = echo(&cfg.allow_headers, "access-control-request-headers") {
                out.headers.push(("access-control-allow-headers", v));
            }
            if let Some(v) = &cfg.max_age {
                out.headers.push(("access-control-max-age", v.clone()));
            }
            if cfg.allow_private_network_access == Some(true)
                && req.header("access-control-request-private-network") == Some("true")
            {
                out.headers
                    .push(("access-control-allow-private-network", "true".into()));
            }
        }
        // The response side (the preflight's answer passes it too, as Envoy's encoder
        // filter sees the reply it made): an allowed origin's headers.
        if allowed {
            let mut set = |name: &'static str, value: String| {
                out.headers.retain(|(n, _)| *n != name);
                out.headers.push((name, value));
            };
            set("access-control-allow-origin", origin.to_owned());
            if cfg.allow_credentials == Some(true) {
                set("access-control-allow-credentials", "true".into());
            }
            if let Some(v) = &cfg.expose_headers {
                set("access-control-expose-headers", v.clone());
            }
        }
        let stop = out.preflight;
        d.cors = Some(Box::new(out));
        match stop {
            true => Status::Stop,
            false => Status::Continue,
        }
    }
}
