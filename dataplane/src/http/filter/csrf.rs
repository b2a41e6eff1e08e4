//! `envoy.filters.http.csrf`: a mutating request (POST, PUT, DELETE, PATCH) whose source
//! origin is missing, or is neither the request's own host nor one of `additional_origins`,
//! is answered 403 `Invalid origin` when `filter_enabled` draws it; `shadow_enabled` only
//! counts. The source origin is the host and port of `origin` when the request has one (`null`
//! counts as missing; a value that is not an absolute URL is compared as it is), else of
//! `referer`, as Envoy 1.40 reads them (checked against it header by header). Counters as
//! Envoy's `csrf.missing_source_origin`, `request_invalid`, `request_valid` (a request is
//! counted once).

use zerohop_proto::stats::Counter;
use zerohop_proto::{CsrfConfig, Fraction};

use super::{Ctx, Decisions, Filter, Status};
use crate::route::string_matches;

#[derive(Debug)]
pub struct Csrf;

/// The host and port of an absolute URL: what follows `scheme://`, up to the path; a value
/// that is not one is taken as it is.
fn host_and_port(v: &str) -> &str {
    match v.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() && !rest.is_empty() => {
            rest.split(['/', '?', '#']).next().unwrap_or(rest)
        }
        _ => v,
    }
}

impl Filter for Csrf {
    type Config = CsrfConfig;

    fn on_request_headers(cfg: &CsrfConfig, ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
        let draw = |f: Fraction| {
            f.numerator > 0
                && ctx.rng.next_u64() % u64::from(f.denominator.max(1)) < u64::from(f.numerator)
        };
        let enforced = draw(cfg.enabled);
        if !enforced && !draw(cfg.shadow) {
            return Status::Continue;
        }
        let req = ctx.req;
        if !matches!(req.method(), b"POST" | b"PUT" | b"DELETE" | b"PATCH") {
            return Status::Continue;
        }
        let source = match req.header("origin").filter(|o| !o.is_empty()) {
            Some("null") => "",
            Some(origin) => host_and_port(origin),
            None => req.header("referer").map_or("", host_and_port),
        };
        let target = req.host();
        let allowed = !source.is_empty()
            && (source == target
                || cfg
                    .additional_origins
                    .iter()
                    .any(|r| string_matches(r, Some(source))));
        if allowed {
            ctx.stats.inc(Counter::CsrfRequestValid);
            return Status::Continue;
        }
        ctx.stats.inc(match source.is_empty() {
            true => Counter::CsrfMissingSourceOrigin,
            false => Counter::CsrfRequestInvalid,
        });
        if !enforced {
            return Status::Continue;
        }
        d.csrf_denied = true;
        Status::Stop
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_lose_scheme_and_path() {
        use super::host_and_port;
        assert_eq!(
            host_and_port("https://a.example:8443/x?y"),
            "a.example:8443"
        );
        assert_eq!(host_and_port("http://a.example"), "a.example");
        assert_eq!(host_and_port("a.example:80"), "a.example:80");
    }
}
