//! The connection manager's HTTP filters, in their configured order, the router last.
//!
//! A filter acts in phases, like Envoy's decoder and encoder filters (the [`Filter`] trait;
//! each phase's default does nothing):
//!
//! - `on_request_headers`: the request head, after routing (filters see the route and its
//!   per-filter overrides). A filter may answer locally, or ask for the whole body before
//!   the request goes on ([`Decisions::buffer_body`]).
//! - `on_request_body`: the whole body, once it was buffered. Note that it is called only
//!   when some filter asked for the body: bodies otherwise stream (or splice) from the
//!   client to the upstream without passing through filters.
//! - `on_response_headers`: the response head, in reverse order, before it goes
//!   downstream.
//!
//! The router is not in this chain: it is the terminal step the stream runs after it
//! (`crate::router`). Dispatch is a `match` over the configured filter kinds, generated from
//! the [`registry!`] below, not a boxed trait object per request. A route may disable a
//! filter or give it a configuration of its own (`typed_per_filter_config`), resolved when
//! the route table was built.
//!
//! Adding a filter: its file here implementing [`Filter`], its line in the registry, and
//! its variant in the snapshot's `HttpFilterConfig`.

pub mod buffer;
pub mod compressor;
pub mod cors;
pub mod csrf;
pub mod fault;
pub mod local_ratelimit;
pub mod rbac;

use zerohop_proto::{CompressorConfig, FilterOverride, HttpFilter, HttpFilterConfig};

use crate::error::ProxyError;
use crate::http::message::{Framing, Request, Response};
use crate::route::Route;
use crate::stats::ShardStats;
use crate::upstream::lb::Rng;

/// What a phase decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Continue,
    /// Stop and answer the client with this error's local reply.
    Reply(ProxyError),
    /// Stop the chain: the decisions say what the stream answers.
    Stop,
}

/// What the request-headers phase asks of the stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Read the whole body (at most this many bytes, else 413) before the request goes on.
    pub buffer_body: Option<u32>,
    /// The upstream is not told what the client accepts (`accept-encoding` dropped).
    pub drop_accept_encoding: bool,
    /// A delay and/or an abort the fault filter injects.
    pub fault: Option<fault::Injected>,
    /// The local rate limit's reply to a request over its bucket.
    pub limited: Option<local_ratelimit::Limited>,
    /// RBAC denied the request: the policy that decided (`none` when none matched).
    pub rbac_denied: Option<String>,
    /// The CSRF filter refused the request's origin.
    pub csrf_denied: bool,
    /// The CORS filter's preflight answer, or the headers the response gets (boxed: rare,
    /// and the stream keeps it until its response).
    pub cors: Option<Box<cors::CorsOutcome>>,
}

/// What every phase sees of the request.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub req: &'a Request,
    pub route: Option<&'a Route>,
    pub stats: ShardStats,
    /// The shard's generator, for the filters' random draws.
    pub rng: &'a Rng,
    /// The request and its connection as access control sees them.
    pub subject: crate::rbac::Subject<'a>,
}

/// An HTTP filter: its configuration type and the phases it acts in.
pub trait Filter {
    type Config;

    fn on_request_headers(_cfg: &Self::Config, _ctx: &Ctx<'_>, _d: &mut Decisions) -> Status {
        Status::Continue
    }

    /// `framing` is how the body will be sent upstream; a filter may change it.
    fn on_request_body(
        _cfg: &Self::Config,
        _ctx: &Ctx<'_>,
        _body: &[u8],
        _framing: &mut Framing,
    ) -> Status {
        Status::Continue
    }

    fn on_response_headers(_cfg: &Self::Config, _ctx: &Ctx<'_>, _resp: &Response) -> Status {
        Status::Continue
    }
}

/// The filters this data plane runs: `Variant => Type` for each `HttpFilterConfig` variant
/// (the router excepted), generating each phase's dispatch.
macro_rules! registry {
    ($($variant:ident => $filter:ty,)*) => {
        fn request_headers(cfg: &HttpFilterConfig, ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
            match cfg {
                $(HttpFilterConfig::$variant(c) => <$filter>::on_request_headers(c, ctx, d),)*
                HttpFilterConfig::Router => Status::Continue,
            }
        }

        fn request_body(
            cfg: &HttpFilterConfig,
            ctx: &Ctx<'_>,
            body: &[u8],
            framing: &mut Framing,
        ) -> Status {
            match cfg {
                $(HttpFilterConfig::$variant(c) => <$filter>::on_request_body(c, ctx, body, framing),)*
                HttpFilterConfig::Router => Status::Continue,
            }
        }

        fn response_headers(cfg: &HttpFilterConfig, ctx: &Ctx<'_>, resp: &Response) -> Status {
            match cfg {
                $(HttpFilterConfig::$variant(c) => <$filter>::on_response_headers(c, ctx, resp),)*
                HttpFilterConfig::Router => Status::Continue,
            }
        }
    };
}

registry! {
    Buffer => buffer::Buffer,
    Compressor => compressor::Compressor,
    Fault => fault::Fault,
    LocalRateLimit => local_ratelimit::LocalRateLimit,
    Rbac => rbac::Rbac,
    Csrf => csrf::Csrf,
    Cors => cors::Cors,
}

/// The filters of one connection manager (the router excluded).
#[derive(Clone, Copy, Debug)]
pub struct Chain<'c> {
    filters: &'c [HttpFilter],
}

impl<'c> Chain<'c> {
    /// The chain of `filters`, whose last entry is the router.
    pub fn new(filters: &'c [HttpFilter]) -> Chain<'c> {
        let n = filters.len().saturating_sub(1);
        Chain {
            filters: &filters[..n],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Filter `i`'s configuration for this request: the route's override, its own, or
    /// `None` when the route disables it.
    fn config<'r>(&self, i: usize, route: Option<&'r Route>) -> Option<&'r HttpFilterConfig>
    where
        'c: 'r,
    {
        match route.and_then(|r| r.filter_override(i)) {
            Some(FilterOverride::Disabled) => None,
            Some(FilterOverride::Config(c)) => Some(c),
            // Resolved into `Config` when the route table was built.
            Some(FilterOverride::Compressor { .. }) | None => Some(&self.filters[i].config),
        }
    }

    /// Runs `phase` over the filters in `order`, stopping at the first that does not
    /// continue.
    fn run(
        &self,
        route: Option<&Route>,
        order: impl Iterator<Item = usize>,
        mut phase: impl FnMut(&HttpFilterConfig) -> Status,
    ) -> Status {
        for i in order {
            if let Some(cfg) = self.config(i, route) {
                let status = phase(cfg);
                if status != Status::Continue {
                    return status;
                }
            }
        }
        Status::Continue
    }

    pub fn on_request_headers(&self, ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
        self.run(ctx.route, 0..self.filters.len(), |cfg| {
            request_headers(cfg, ctx, d)
        })
    }

    /// The whole request body, read because a filter asked; `framing` is how it will be
    /// sent upstream, which a filter may change.
    pub fn on_request_body(&self, ctx: &Ctx<'_>, body: &[u8], framing: &mut Framing) -> Status {
        self.run(ctx.route, 0..self.filters.len(), |cfg| {
            request_body(cfg, ctx, body, framing)
        })
    }

    /// The chain's compressor filters on this route, in order, when it has any (a filter
    /// the route disables with `FilterConfig.disabled` is not in the chain for it).
    pub fn compressors<'r>(&self, route: Option<&'r Route>) -> Option<Vec<&'r CompressorConfig>>
    where
        'c: 'r,
    {
        let is = |c: &HttpFilterConfig| matches!(c, HttpFilterConfig::Compressor(_));
        if !self.filters.iter().any(|f| is(&f.config)) {
            return None;
        }
        let list = (0..self.filters.len())
            .filter_map(|i| match self.config(i, route) {
                Some(HttpFilterConfig::Compressor(c)) => Some(c),
                _ => None,
            })
            .collect();
        Some(list)
    }

    /// The response head, filters in reverse order.
    pub fn on_response_headers(&self, ctx: &Ctx<'_>, resp: &Response) -> Status {
        self.run(ctx.route, (0..self.filters.len()).rev(), |cfg| {
            response_headers(cfg, ctx, resp)
        })
    }
}
