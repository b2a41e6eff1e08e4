//! The HTTP/1.1 client side of an exchange: the request head out through the ring, the
//! response head in, parsed by the codec's sans-I/O parser under the same framing rules as
//! requests. Errors say whether the request may be tried again (see [`crate::error`]).

use std::ops::Range;
use std::pin::Pin;
use std::time::Instant;

use monoio::time::Sleep;
use zerohop_proto::stats::Counter;

use super::UpstreamConn;
use crate::error::{Kind, ProxyError};
use crate::http::message::{has_token, Response};
use crate::http1::head::{self, Limits};
use crate::http1::server::READ_CHUNK;
use crate::net::ring;
use crate::stats::ShardStats;

/// Response heads larger than this are refused (502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Sends a request head (and whatever body bytes were appended to it) and gives the buffer
/// back. A failure is [`Kind::UpstreamClosed`]: retryable when the connection was reused.
pub async fn send(conn: &mut UpstreamConn, out: Vec<u8>) -> (Result<(), ProxyError>, Vec<u8>) {
    let (r, out) = conn.stream.send(out).await;
    (r.map_err(|_| Kind::UpstreamClosed.into()), out)
}

/// Reads the response head into `buf` (which keeps what follows it: the start of the body),
/// within `deadline`. 1xx interim responses other than 101 are dropped (`Expect:
/// 100-continue` was answered by zerohop). Header names are lower-cased in place.
pub async fn read_response(
    conn: &mut UpstreamConn,
    buf: &mut Vec<u8>,
    method: &[u8],
    deadline: Option<Instant>,
    timer: Pin<&mut Sleep>,
    max_headers: u32,
    stats: ShardStats,
) -> Result<Response, ProxyError> {
    let limits = Limits {
        max_head_bytes: MAX_RESPONSE_HEAD,
        max_headers: max_headers as usize,
    };
    let mut timer = timer;
    loop {
        match head::parse_response(buf, &limits, method) {
            Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                buf.drain(..h.len);
                continue;
            }
            Ok(Some(h)) => {
                for x in &h.headers {
                    buf[x.name.clone()].make_ascii_lowercase();
                }
                let connection: Vec<Range<usize>> = h
                    .headers
                    .iter()
                    .filter(|x| &buf[x.name.clone()] == b"connection")
                    .map(|x| x.value.clone())
                    .collect();
                let close = h.minor_version == 0 || has_token(buf, &connection, b"close");
                let reason = reason_range(&buf[..h.len]);
                return Ok(Response {
                    status: h.status,
                    reason,
                    framing: h.framing,
                    len: h.len,
                    close,
                    connection,
                    headers: h.headers,
                });
            }
            Ok(None) => {}
            Err(e) => {
                stats.inc(Counter::UpstreamRespMalformed);
                log::debug!(
                    "malformed upstream response from {}: {e:?}",
                    conn.key.endpoint
                );
                return Err(Kind::MalformedResponse.into());
            }
        }
        match conn
            .stream
            .recv(buf, READ_CHUNK, deadline, timer.as_mut())
            .await
        {
            ring::Recv::Read(_) => {}
            ring::Recv::TimedOut => return Err(Kind::UpstreamTimeout.into()),
            ring::Recv::Closed | ring::Recv::Failed(_) => return Err(Kind::UpstreamClosed.into()),
        }
    }
}

/// Where the reason phrase of the status line at the start of `head` is.
fn reason_range(head: &[u8]) -> Option<Range<usize>> {
    let reason = crate::http1::encode::reason_phrase(head)?;
    let start = reason.as_ptr() as usize - head.as_ptr() as usize;
    Some(start..start + reason.len())
}
