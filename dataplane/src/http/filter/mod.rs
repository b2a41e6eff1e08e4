//! The connection manager's HTTP filters, in their configured order, the router last.
//!
//! A filter acts in phases, like Envoy's decoder and encoder filters:
//!
//! - [`on_request_headers`](Chain::on_request_headers): the request head, after routing
//!   (filters see the route and its per-filter overrides). A filter may answer locally, or
//!   ask for the whole body before the request goes on ([`Decisions::buffer_body`]).
//! - [`on_request_body`](Chain::on_request_body): the whole body, once it was buffered.
//!   Note that it is called only when some filter asked for the body: bodies otherwise
//!   stream (or splice) from the client to the upstream without passing through filters.
//! - [`on_response_headers`](Chain::on_response_headers): the response head, in reverse
//!   order, before it goes downstream.
//!
//! Each phase has a default that does nothing; a filter implements the ones it needs. The
//! router is not in this chain: it is the terminal step the stream runs after it
//! (`crate::router`). Dispatch is a `match` over the configured filter kinds, not a boxed
//! trait object per request. A route may disable a filter or override its configuration
//! (`typed_per_filter_config`), resolved when the route table was built.
//!
//! Adding a filter: its file here, its variant in `HttpFilterConfig` (proto), its arm in
//! each phase it implements below.

pub mod buffer;

use zerohop_proto::{FilterOverride, HttpFilter, HttpFilterConfig};

use crate::error::ProxyError;
use crate::http::message::{Framing, Request, Response};
use crate::route::Route;
use crate::stats::ShardStats;

/// What a phase decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Continue,
    /// Stop and answer the client with this error's local reply.
    Reply(ProxyError),
}

/// What the request-headers phase asks of the stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Read the whole body (at most this many bytes, else 413) before the request goes on.
    pub buffer_body: Option<u32>,
}

/// What every phase sees of the request.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub req: &'a Request,
    pub route: Option<&'a Route>,
    pub stats: ShardStats,
}

/// A filter's configuration for this request: the route's override, or its own.
enum Effective<'c> {
    Disabled,
    Config(&'c HttpFilterConfig),
    Buffer(&'c zerohop_proto::BufferConfig),
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

    fn effective<'r>(&self, i: usize, route: Option<&'r Route>) -> Effective<'r>
    where
        'c: 'r,
    {
        match route.and_then(|r| r.filter_override(i)) {
            Some(FilterOverride::Disabled) => Effective::Disabled,
            Some(FilterOverride::Buffer(b)) => Effective::Buffer(b),
            None => Effective::Config(&self.filters[i].config),
        }
    }

    pub fn on_request_headers(&self, ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
        for i in 0..self.filters.len() {
            let status = match self.effective(i, ctx.route) {
                Effective::Disabled => Status::Continue,
                Effective::Buffer(b) | Effective::Config(HttpFilterConfig::Buffer(b)) => {
                    buffer::on_request_headers(b, ctx, d)
                }
                Effective::Config(HttpFilterConfig::Router) => Status::Continue,
            };
            if status != Status::Continue {
                return status;
            }
        }
        Status::Continue
    }

    /// The whole request body, read because a filter asked; `framing` is how it will be
    /// sent upstream, which a filter may change.
    pub fn on_request_body(&self, ctx: &Ctx<'_>, body: &[u8], framing: &mut Framing) -> Status {
        for i in 0..self.filters.len() {
            let status = match self.effective(i, ctx.route) {
                Effective::Disabled => Status::Continue,
                Effective::Buffer(_) | Effective::Config(HttpFilterConfig::Buffer(_)) => {
                    buffer::on_request_body(body, framing)
                }
                Effective::Config(HttpFilterConfig::Router) => Status::Continue,
            };
            if status != Status::Continue {
                return status;
            }
        }
        Status::Continue
    }

    /// The response head, filters in reverse order.
    pub fn on_response_headers(&self, ctx: &Ctx<'_>, _resp: &Response) -> Status {
        for i in (0..self.filters.len()).rev() {
            let status = match self.effective(i, ctx.route) {
                // The buffer filter leaves responses alone (the default of this phase).
                Effective::Disabled | Effective::Buffer(_) | Effective::Config(_) => {
                    Status::Continue
                }
            };
            if status != Status::Continue {
                return status;
            }
        }
        Status::Continue
    }
}
