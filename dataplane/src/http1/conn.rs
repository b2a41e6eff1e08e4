//! The HTTP/1.1 connection shell: one client connection, one request at a time.
//!
//! It owns the socket (through [`ServerConn`]) and the connection's one timer, waits for
//! each request head under the connection manager's limits and timeouts, and hands each
//! request to the codec-neutral [`Connection`] as a stream whose downstream side is the
//! connection itself.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use zerohop_proto::stats::Counter;
use zerohop_proto::CodecType;

use super::head::Limits;
use super::server::{far_future, Incoming, ServerConn};
use crate::config::HttpPlan;
use crate::conn::{Accepted, Tracked};
use crate::http::downstream::{Downstream, LocalBody};
use crate::http::hcm::Connection;
use crate::shard::config::ShardConfig;
use crate::shard::listeners::BoundListener;
use crate::shard::Shard;

/// Serves one downstream HTTP/1.1 connection whose filter chain ends in the connection
/// manager `http`, of generation `cfg`.
pub async fn serve(
    cfg: Rc<ShardConfig>,
    listener: Rc<BoundListener>,
    http: Arc<HttpPlan>,
    accepted: Accepted,
) {
    let (mut conn, stream, guard) = Connection::accept(cfg, &listener, http, accepted);
    let shard: &Rc<Shard> = guard.shard();
    // Only the downstream socket is registered for the drain deadline: upstream
    // connections change per request (idle ones belong to the shard's pool), and shutting
    // the downstream one ends whatever exchange is in flight.
    let fd = stream.as_raw_fd();
    let _tracked = Tracked::new(&listener, [fd, fd]);
    let mut down = ServerConn::new(stream);
    // The one timer every wait of this connection moves to its own deadline: usually a
    // cheap extension of an entry already in the timer wheel.
    let mut timer = std::pin::pin!(monoio::time::sleep_until(far_future().into()));
    // `codec_type: AUTO`: a connection that opens with the HTTP/2 preface is HTTP/2's. The
    // HTTP/1.1 parser refuses the preface's request line (version 2.0), so the check costs
    // nothing on an HTTP/1.1 connection.
    let mut first = conn.manager().codec == CodecType::Auto;
    if !first {
        guard.codec(false);
    }
    loop {
        let hcm = conn.manager();
        let limits = Limits {
            max_head_bytes: hcm.max_request_headers_bytes as usize,
            max_headers: hcm.max_headers_count as usize,
        };
        let incoming = down
            .read_request(
                timer.as_mut(),
                &limits,
                &hcm.http1,
                hcm.idle_timeout,
                hcm.request_headers_timeout,
                || conn.draining(),
                shard.stats,
            )
            .await;
        let req = match incoming {
            Ok(Incoming::Request(r)) => r,
            Ok(Incoming::Closed) => return,
            Ok(Incoming::Idle) => {
                shard.stats.inc(Counter::IdleTimeout);
                return;
            }
            Err(_) if first && down.buf.starts_with(crate::http2::PREFACE_START) => {
                guard.codec(true);
                let early = std::mem::take(&mut down.buf);
                return crate::http2::conn::run(shard, conn, down.stream, early).await;
            }
            Err(e) => {
                guard.codec(false);
                if let Some((status, why)) = conn.refused(shard, &e) {
                    let date = shard.http_date();
                    let extra = crate::http::hcm::headers::local_headers(hcm, &date);
                    down.local_reply(status, LocalBody::Text(why), &extra, true)
                        .await;
                }
                return;
            }
        };
        if first {
            guard.codec(false);
        }
        first = false;
        conn.begin_stream(shard, Some(down.stream.tcp()));
        let started = down.last.get();
        // Boxed: its state machine is what the connection holds only while a request is
        // served; inline, every idle connection would carry its ~3.5 KiB (and the task
        // grew to 9 KiB: `zerohop-bench idle-http`), for one small allocation per request.
        let keep = Box::pin(conn.serve(shard, &mut down, timer.as_mut(), &req, started)).await;
        down.head = req.raw; // its allocation serves the next request
        if !keep {
            return;
        }
    }
}
