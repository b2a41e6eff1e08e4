//! `envoy.filters.http.buffer`: the whole request body before the request goes on, at most
//! `max_request_bytes`, sent upstream with a `content-length` (a chunked body decoded, its
//! trailers dropped), as Envoy's buffer filter populates the length. It leaves responses
//! alone.

use zerohop_proto::stats::Counter;
use zerohop_proto::BufferConfig;

use super::{Ctx, Decisions, Filter, Status};
use crate::error::{Kind, ProxyError};
use crate::http::message::Framing;

#[derive(Debug)]
pub struct Buffer;

impl Filter for Buffer {
    type Config = BufferConfig;

    /// A declared length over the limit is refused before the body is asked for (no `100
    /// Continue`) or read; otherwise the body is to be buffered.
    fn on_request_headers(cfg: &BufferConfig, ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
        let max = cfg.max_request_bytes;
        match ctx.req.framing {
            Framing::Empty | Framing::UntilClose => Status::Continue,
            Framing::Length(n) if n > u64::from(max) => {
                ctx.stats.inc(Counter::DownstreamRqTooLarge);
                Status::Reply(ProxyError::new(Kind::PayloadTooLarge))
            }
            Framing::Length(_) | Framing::Chunked => {
                d.buffer_body = Some(d.buffer_body.map_or(max, |m| m.min(max)));
                Status::Continue
            }
        }
    }

    /// The whole body arrived: it goes on with its length.
    fn on_request_body(
        _cfg: &BufferConfig,
        _ctx: &Ctx<'_>,
        body: &[u8],
        framing: &mut Framing,
    ) -> Status {
        *framing = Framing::Length(body.len() as u64);
        Status::Continue
    }
}
