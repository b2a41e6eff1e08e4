//! A connection manager's route table, compiled once per process from the snapshot's
//! `RouteConfig` (and reused by later generations while it is unchanged): virtual hosts by
//! domain (exact, then the longest `*.suffix`, then the longest `prefix.*`, then `*`, as
//! Envoy orders them), routes in order with their path, header and query matchers (regexes
//! compiled here, never on the request path), each route's header edits merged with its
//! virtual host's and the route configuration's, and its per-filter overrides resolved to
//! the connection manager's filter list, most specific level first.

pub mod retry;

use std::borrow::Cow;
use std::collections::HashMap;

use regex::Regex;
use zerohop_proto::{
    AppendAction, FilterOverride, Forward, HeaderAdd, HeaderEdits, HttpFilter, HttpFilterConfig,
    PathMatch, PerFilterConfig, Redirect, RouteAction, RouteConfig, StringRule,
};

use crate::fasthash::FastHash;
use crate::upstream::lb::WeightedPick;
use retry::RetryPlan;

/// What a matched route does, with everything the request path needs precompiled.
// Reason: a route table holds a few of these, built once per generation and never moved on
// the request path; boxing the forward action would add a pointer chase per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    Forward {
        forward: Forward,
        pick: WeightedPick,
        regex_rewrite: Option<(Regex, String)>,
        /// The retry policy, its header matchers compiled.
        retry: Option<Box<RetryPlan>>,
        /// `x-envoy-expected-rq-timeout-ms`: the route's timeout in ms, made once.
        timeout_ms: Option<String>,
    },
    Direct {
        status: u16,
        body: String,
    },
    Redirect(Redirect),
}

#[derive(Debug)]
enum PathMatcher {
    Prefix(String),
    Path(String),
    Regex(Regex),
}

/// A compiled `StringMatcher` (route and header matches, certificate SAN matchers).
#[derive(Debug)]
pub enum Rule {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(Regex),
    Present(bool),
}

impl Rule {
    pub fn compile(r: &StringRule) -> Result<Rule, regex::Error> {
        let lower = |v: &str, ic: bool| {
            if ic {
                v.to_ascii_lowercase()
            } else {
                v.to_owned()
            }
        };
        Ok(match r {
            StringRule::Exact { value, ignore_case } => {
                Rule::Exact(lower(value, *ignore_case), *ignore_case)
            }
            StringRule::Prefix { value, ignore_case } => {
                Rule::Prefix(lower(value, *ignore_case), *ignore_case)
            }
            StringRule::Suffix { value, ignore_case } => {
                Rule::Suffix(lower(value, *ignore_case), *ignore_case)
            }
            StringRule::Contains { value, ignore_case } => {
                Rule::Contains(lower(value, *ignore_case), *ignore_case)
            }
            StringRule::Regex(p) => Rule::Regex(full(p)?),
            StringRule::Present(p) => Rule::Present(*p),
        })
    }

    /// `value` is `None` when the header (or parameter) is absent.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let Some(v) = value else {
            return matches!(self, Rule::Present(false));
        };
        // Case-insensitive rules hold their value lower-cased and compare byte-wise, without
        // copying the request's value.
        match self {
            Rule::Exact(want, ic) => eq(v.as_bytes(), want.as_bytes(), *ic),
            Rule::Prefix(want, ic) => starts_with(v, want, *ic),
            Rule::Suffix(want, ic) => {
                v.len() >= want.len()
                    && eq(&v.as_bytes()[v.len() - want.len()..], want.as_bytes(), *ic)
            }
            Rule::Contains(want, true) => {
                want.is_empty()
                    || v.as_bytes()
                        .windows(want.len())
                        .any(|w| w.eq_ignore_ascii_case(want.as_bytes()))
            }
            Rule::Contains(want, false) => v.contains(want.as_str()),
            Rule::Regex(re) => re.is_match(v),
            Rule::Present(p) => *p,
        }
    }
}

fn eq(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn starts_with(v: &str, prefix: &str, ignore_case: bool) -> bool {
    v.len() >= prefix.len()
        && eq(
            &v.as_bytes()[..prefix.len()],
            prefix.as_bytes(),
            ignore_case,
        )
}

/// A header matcher (`HeaderMatcher`), compiled: routes match request headers with it, and
/// retry policies request and response headers.
#[derive(Debug)]
pub struct HeaderRule {
    name: String,
    rule: Rule,
    invert: bool,
}

impl HeaderRule {
    pub fn compile(m: &zerohop_proto::HeaderMatcher) -> Result<HeaderRule, regex::Error> {
        Ok(HeaderRule {
            name: m.name.clone(),
            rule: Rule::compile(&m.rule)?,
            invert: m.invert,
        })
    }

    /// Whether the headers `header` looks up (first value by lower-case name) match.
    pub fn matches<'h>(&self, header: impl Fn(&str) -> Option<&'h str>) -> bool {
        self.rule.matches(header(&self.name)) != self.invert
    }
}

/// Whether the headers `header` looks up match `m`, evaluated from the snapshot's form
/// without compiling it (no allocation; a regex rule, rare outside routes, is compiled for
/// the call).
pub fn header_matches<'h>(
    m: &zerohop_proto::HeaderMatcher,
    header: impl Fn(&str) -> Option<&'h str>,
) -> bool {
    string_matches(&m.rule, header(&m.name)) != m.invert
}

/// Whether `v` (`None`: absent) satisfies `rule`, from the snapshot's form (see
/// [`header_matches`]).
pub fn string_matches(rule: &StringRule, v: Option<&str>) -> bool {
    match (rule, v) {
        (StringRule::Present(p), v) => v.is_some() == *p,
        (_, None) => false,
        (StringRule::Exact { value, ignore_case }, Some(v)) => {
            eq(v.as_bytes(), value.as_bytes(), *ignore_case)
        }
        (StringRule::Prefix { value, ignore_case }, Some(v)) => starts_with(v, value, *ignore_case),
        (StringRule::Suffix { value, ignore_case }, Some(v)) => {
            v.len() >= value.len()
                && eq(
                    &v.as_bytes()[v.len() - value.len()..],
                    value.as_bytes(),
                    *ignore_case,
                )
        }
        (StringRule::Contains { value, ignore_case }, Some(v)) => {
            value.is_empty()
                || v.as_bytes()
                    .windows(value.len())
                    .any(|w| eq(w, value.as_bytes(), *ignore_case))
        }
        (StringRule::Regex(p), Some(v)) => REGEXES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if !cache.contains_key(p) {
                if cache.len() >= REGEX_CACHE {
                    cache.clear();
                }
                let Ok(re) = full(p) else { return false };
                cache.insert(p.clone(), re);
            }
            cache[p].is_match(v)
        }),
    }
}

/// How many patterns [`string_matches`] keeps compiled per shard. They come from the
/// configuration (a filter's string matchers), so the set is small and each is compiled
/// once per shard, not per request.
const REGEX_CACHE: usize = 256;

thread_local! {
    static REGEXES: std::cell::RefCell<HashMap<String, Regex>> = Default::default();
}

/// Envoy's regex matchers match the whole value.
fn full(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    path: PathMatcher,
    case_sensitive: bool,
    headers: Vec<HeaderRule>,
    query: Vec<(String, Option<Rule>)>,
    /// `runtime_fraction` (numerator, denominator): matches when the request's random draw
    /// modulo the denominator falls below the numerator, as Envoy's `featureEnabled`.
    fraction: Option<(u64, u64)>,
    /// `match.grpc`: only gRPC requests.
    grpc: bool,
    pub action: Action,
    /// Route, then virtual host, then route configuration level: applied in that order.
    pub edits: Vec<HeaderEdits>,
    /// Whether any level adds or removes request headers (else the upstream head is written
    /// without the edit pass).
    pub edits_requests: bool,
    /// The same for response headers.
    pub edits_responses: bool,
    /// Per HTTP filter of the connection manager (by index), the override of the most
    /// specific level that names it.
    per_filter: Box<[Option<FilterOverride>]>,
    /// `decorator` (tracing): the span's name on this route.
    pub decorator: Option<zerohop_proto::tracing::Decorator>,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    routes: Vec<Route>,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// What it was compiled from, to reuse it for a later generation that has the same.
    source: RouteConfig,
    filter_names: Vec<String>,
    exact: HashMap<String, usize, FastHash>,
    /// `*.foo.com` as ".foo.com", longest first.
    suffixes: Vec<(String, usize)>,
    /// `foo.*` as "foo.", longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    vhosts: Vec<VirtualHost>,
    /// Some route has a `runtime_fraction`: requests need a random draw to be routed.
    draws: bool,
}

/// The request attributes routing looks at.
pub struct Request<'a> {
    /// The Host header (or `:authority`), as sent.
    pub host: &'a str,
    /// The path without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Header lookup by lower-case name (first value).
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    /// The stream's random draw, for `runtime_fraction` (one per request, shared by every
    /// route it is tried against, as Envoy's; 0 when the table [`RouteTable::draws`] not).
    pub random: u64,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("host", &self.host)
            .field("path", &self.path)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl RouteTable {
    /// Compiles `rc` for a connection manager whose HTTP filters are `filters`.
    pub fn build(rc: RouteConfig, filters: &[HttpFilter]) -> Result<RouteTable, regex::Error> {
        let mut t = RouteTable {
            filter_names: filters.iter().map(|f| f.name.clone()).collect(),
            ..RouteTable::default()
        };
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                if d == "*" {
                    t.any = Some(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    t.suffixes.push((suffix.to_owned(), i));
                } else if let Some(prefix) = d.strip_suffix('*') {
                    t.prefixes.push((prefix.to_owned(), i));
                } else {
                    t.exact.insert(d.clone(), i);
                }
            }
            let mut routes = Vec::with_capacity(vh.routes.len());
            for r in &vh.routes {
                let m = &r.matcher;
                let lower = |p: &str| {
                    if m.case_sensitive {
                        p.to_owned()
                    } else {
                        p.to_ascii_lowercase()
                    }
                };
                let path = match &m.path {
                    PathMatch::Prefix(p) => PathMatcher::Prefix(lower(p)),
                    PathMatch::Path(p) => PathMatcher::Path(lower(p)),
                    PathMatch::Regex(p) => PathMatcher::Regex(full(p)?),
                };
                let headers = m
                    .headers
                    .iter()
                    .map(HeaderRule::compile)
                    .collect::<Result<_, regex::Error>>()?;
                let query = m
                    .query_parameters
                    .iter()
                    .map(|q| {
                        Ok((
                            q.name.clone(),
                            q.rule.as_ref().map(Rule::compile).transpose()?,
                        ))
                    })
                    .collect::<Result<_, regex::Error>>()?;
                let action = match &r.action {
                    RouteAction::Forward(f) => Action::Forward {
                        pick: WeightedPick::new(f.targets.iter().map(|t| t.weight)),
                        retry: f
                            .retry
                            .as_deref()
                            .map(RetryPlan::compile)
                            .transpose()?
                            .map(Box::new),
                        regex_rewrite: match &f.regex_rewrite {
                            Some((p, sub)) => Some((Regex::new(p)?, re2_substitution(sub))),
                            None => None,
                        },
                        // The per-try timeout when the retry policy has one, as Envoy's.
                        timeout_ms: f
                            .retry
                            .as_ref()
                            .and_then(|r| r.per_try_timeout)
                            .or(f.timeout)
                            .filter(|t| !t.is_zero())
                            .map(|t| t.as_millis().to_string()),
                        forward: f.clone(),
                    },
                    RouteAction::Direct { status, body } => Action::Direct {
                        status: *status,
                        body: body.clone(),
                    },
                    RouteAction::Redirect(rd) => Action::Redirect(rd.clone()),
                };
                let levels = [r.headers.clone(), vh.headers.clone(), rc.headers.clone()];
                let per_filter = filters
                    .iter()
                    .map(|f| {
                        let mut levels = [&r.per_filter, &vh.per_filter, &rc.per_filter]
                            .into_iter()
                            .filter_map(|level| override_for(level, &f.name));
                        match &f.config {
                            HttpFilterConfig::Cors(_) => merge_cors(levels),
                            own => levels.next().map(|o| resolve_override(o, own)),
                        }
                    })
                    .collect();
                t.draws |= m.runtime_fraction.is_some();
                routes.push(Route {
                    name: r.name.clone(),
                    path,
                    case_sensitive: m.case_sensitive,
                    headers,
                    query,
                    fraction: m
                        .runtime_fraction
                        .map(|f| (u64::from(f.numerator), u64::from(f.denominator).max(1))),
                    grpc: m.grpc,
                    action,
                    edits_requests: levels.iter().any(HeaderEdits::edits_requests),
                    edits_responses: levels.iter().any(HeaderEdits::edits_responses),
                    edits: Vec::from(levels),
                    per_filter,
                    decorator: r.decorator.clone(),
                });
            }
            t.vhosts.push(VirtualHost {
                name: vh.name.clone(),
                routes,
            });
        }
        t.suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        t.prefixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        t.source = rc;
        Ok(t)
    }

    /// Whether this table is what [`build`](Self::build) makes of `rc` and `filters`.
    pub fn compiled_from(&self, rc: &RouteConfig, filters: &[HttpFilter]) -> bool {
        self.source == *rc
            && self.filter_names.len() == filters.len()
            && self
                .filter_names
                .iter()
                .zip(filters)
                .all(|(n, f)| *n == f.name)
    }

    /// The route configuration's name.
    pub fn name(&self) -> &str {
        &self.source.name
    }

    /// The virtual host for `host` (compared case-insensitively, port included, as Envoy).
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        // Domains are stored lower-case; a host that already is needs no copy.
        let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        let i = self
            .exact
            .get(host.as_ref())
            .copied()
            // A wildcard stands for at least one character.
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|x| x.1)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|x| x.1)
            })
            .or(self.any)?;
        Some(&self.vhosts[i])
    }

    /// Whether routing reads [`Request::random`] (some route has a `runtime_fraction`); a
    /// table without one routes on 0.
    pub fn draws(&self) -> bool {
        self.draws
    }

    pub fn route<'t>(&'t self, req: &Request<'_>) -> Option<(&'t VirtualHost, &'t Route)> {
        let vh = self.virtual_host(req.host)?;
        vh.routes.iter().find(|r| r.matches(req)).map(|r| (vh, r))
    }
}

impl Route {
    fn matches(&self, req: &Request<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatcher::Regex(re) => re.is_match(req.path),
            PathMatcher::Prefix(p) => starts_with(req.path, p, !self.case_sensitive),
            PathMatcher::Path(p) => eq(req.path.as_bytes(), p.as_bytes(), !self.case_sensitive),
        };
        path_ok
            && (!self.grpc
                || (req.header)("content-type")
                    .is_some_and(crate::http::message::is_grpc_content_type))
            && self.fraction.is_none_or(|(n, d)| req.random % d < n)
            && self.headers.iter().all(|h| h.matches(req.header))
            && self.query.iter().all(|(name, rule)| {
                let value = query_value(req.query, name);
                match rule {
                    None => value.is_some(),
                    Some(r) => r.matches(value),
                }
            })
    }

    /// The path (and query) sent upstream: `prefix_rewrite` replaces the matched prefix (the
    /// whole path for a `path` match), `regex_rewrite` every match of its pattern in the
    /// path; the query is kept.
    pub fn rewrite_path(&self, path: &str, query: Option<&str>) -> Option<String> {
        if !self.rewrites_path() {
            return None;
        }
        let Action::Forward {
            forward,
            regex_rewrite,
            ..
        } = &self.action
        else {
            return None;
        };
        let new_path = if let Some(rw) = &forward.prefix_rewrite {
            self.replace_prefix(path, rw)
        } else if let Some((re, sub)) = regex_rewrite {
            re.replace_all(path, sub.as_str()).into_owned()
        } else {
            return None;
        };
        Some(match query {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        })
    }
}

/// The override `level` has for the filter called `name`.
fn override_for(level: &[PerFilterConfig], name: &str) -> Option<FilterOverride> {
    level
        .iter()
        .find(|p| p.filter == name)
        .map(|p| p.config.clone())
}

/// The CORS policies of a route's levels (most specific first) as Envoy's CORS filter reads
/// them: each field from the first level that sets it, `filter_enabled` and
/// `shadow_enabled` from the first policy. A route that disables the filter disables it.
fn merge_cors(mut levels: impl Iterator<Item = FilterOverride>) -> Option<FilterOverride> {
    let first = levels.next()?;
    let FilterOverride::Config(HttpFilterConfig::Cors(mut merged)) = first else {
        return Some(first);
    };
    for o in levels {
        let FilterOverride::Config(HttpFilterConfig::Cors(p)) = o else {
            continue;
        };
        if merged.allow_origins.is_empty() {
            merged.allow_origins = p.allow_origins;
        }
        let fill = |a: &mut Option<String>, b: Option<String>| {
            if a.is_none() {
                *a = b;
            }
        };
        fill(&mut merged.allow_methods, p.allow_methods);
        fill(&mut merged.allow_headers, p.allow_headers);
        fill(&mut merged.expose_headers, p.expose_headers);
        fill(&mut merged.max_age, p.max_age);
        merged.allow_credentials = merged.allow_credentials.or(p.allow_credentials);
        merged.allow_private_network_access = merged
            .allow_private_network_access
            .or(p.allow_private_network_access);
        merged.forward_not_matching_preflights = merged
            .forward_not_matching_preflights
            .or(p.forward_not_matching_preflights);
    }
    // Envoy allows every origin when a matcher matches `*`: decided here, once, as a rule
    // that matches any origin, rather than tried on each request.
    if merged
        .allow_origins
        .iter()
        .any(|r| string_matches(r, Some("*")))
    {
        merged.allow_origins = vec![StringRule::Prefix {
            value: String::new(),
            ignore_case: false,
        }];
    }
    Some(FilterOverride::Config(HttpFilterConfig::Cors(merged)))
}

/// An override that amends the filter's own configuration (`CompressorPerRoute.overrides`)
/// becomes the amended configuration, once, when the table is built.
fn resolve_override(o: FilterOverride, own: &HttpFilterConfig) -> FilterOverride {
    match (o, own) {
        (
            FilterOverride::Compressor {
                enabled,
                remove_accept_encoding_header,
            },
            HttpFilterConfig::Compressor(c),
        ) => {
            let mut c = c.clone();
            if let Some(e) = enabled {
                c.enabled = e;
            }
            if let Some(r) = remove_accept_encoding_header {
                c.remove_accept_encoding_header = r;
            }
            FilterOverride::Config(HttpFilterConfig::Compressor(c))
        }
        (o, _) => o,
    }
}

impl Route {
    /// The route's override for the connection manager's HTTP filter number `filter`.
    pub fn filter_override(&self, filter: usize) -> Option<&FilterOverride> {
        self.per_filter.get(filter).and_then(Option::as_ref)
    }

    /// Whether [`Route::rewrite_path`] changes the path.
    pub fn rewrites_path(&self) -> bool {
        matches!(
            &self.action,
            Action::Forward { forward, regex_rewrite, .. }
                if forward.prefix_rewrite.is_some() || regex_rewrite.is_some()
        )
    }

    /// `path` with the part this route matched (its prefix; the whole path for a `path` or
    /// regex match) replaced by `rewrite`.
    pub fn replace_prefix(&self, path: &str, rewrite: &str) -> String {
        let matched = match &self.path {
            PathMatcher::Prefix(p) => p.len(),
            _ => path.len(),
        };
        let rest = path.get(matched.min(path.len())..).unwrap_or("");
        // Rewriting "/prefix/" to "/" must not produce "//rest".
        if rewrite.ends_with('/') && rest.starts_with('/') {
            format!("{rewrite}{}", &rest[1..])
        } else {
            format!("{rewrite}{rest}")
        }
    }
}

/// RE2 substitutions name groups `\1`; the regex crate's are `${1}`.
fn re2_substitution(sub: &str) -> String {
    let mut out = String::with_capacity(sub.len());
    let mut chars = sub.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

/// The first value of query parameter `name` (not percent-decoded, as Envoy compares).
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// A header list under edit: lower-case names, and values as received or made for this
/// message. Everything is borrowed (from the message's own bytes or the route's compiled
/// edits) except a value zerohop computed.
pub type HeaderList<'a> = Vec<(&'a [u8], Cow<'a, [u8]>)>;

/// Applies header edits to a header list, most specific level first.
pub fn apply_edits<'a>(headers: &mut HeaderList<'a>, levels: &'a [HeaderEdits], response: bool) {
    for e in levels {
        let (remove, add): (&[String], &[HeaderAdd]) = if response {
            (&e.response_remove, &e.response_add)
        } else {
            (&e.request_remove, &e.request_add)
        };
        if !remove.is_empty() {
            headers.retain(|(n, _)| !remove.iter().any(|r| r.as_bytes() == *n));
        }
        for a in add {
            let name = a.name.as_bytes();
            let exists = headers.iter().any(|(n, _)| *n == name);
            let value = Cow::Borrowed(a.value.as_bytes());
            match a.append {
                AppendAction::AppendIfExistsOrAdd => headers.push((name, value)),
                AppendAction::AddIfAbsent if !exists => headers.push((name, value)),
                AppendAction::OverwriteIfExistsOrAdd => {
                    headers.retain(|(n, _)| *n != name);
                    headers.push((name, value));
                }
                AppendAction::OverwriteIfExists if exists => {
                    headers.retain(|(n, _)| *n != name);
                    headers.push((name, value));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
