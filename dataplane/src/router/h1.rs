//! An attempt over HTTP/1.1: a pooled (or new) connection, the head (and a small body) in one
//! send, a streamed body relayed, the response head read within the attempt's deadline.

use std::pin::Pin;

use monoio::time::Sleep;
use zerohop_proto::stats::{ClusterStat, Counter};

use super::attempt::{AbandonGuard, Answer, Attempt, Try};
use super::{Failed, Outgoing, RequestBody};
use crate::http::downstream::Downstream;
use crate::http::info::StreamInfo;
use crate::route::retry::Failure;
use crate::upstream::hosts::Outcome;
use crate::upstream::UpstreamSide;

/// Sends `head` (the encoded request head, with a buffered body appended) and the body of
/// `out`, and reads the response head.
pub async fn attempt<D: Downstream>(
    t: &Try<'_, '_>,
    out: &mut Outgoing<'_, D>,
    head: &mut Vec<u8>,
    info: &mut StreamInfo<'_>,
    mut timer: Pin<&mut Sleep>,
) -> Attempt {
    let (shard, cluster) = (t.shard, t.cluster);
    let stats = shard.stats;
    let connected = shard
        .upstreams
        .http_connection(
            stats,
            cluster,
            t.endpoint,
            t.started,
            t.deadline,
            t.server_name,
        )
        .await;
    let mut conn = match connected {
        Ok(c) => c,
        Err(e) => return super::attempt::connect_failed(e),
    };
    // The request breaker is asked once the request has a connection, as Envoy's pool asks
    // it when it attaches a stream; full, the connection goes back unused.
    let (slot, limits) = (cluster.slot as usize, &cluster.breakers);
    let in_flight = match shard
        .upstreams
        .breakers
        .request(slot, limits, cluster.charge(stats))
    {
        Ok(held) => held,
        Err(e) => {
            shard.upstreams.release_unused(conn, cluster);
            return Attempt::Fatal(e);
        }
    };
    stats.inc(Counter::UpstreamRqTotal);
    stats.count(cluster.cluster.stats, ClusterStat::UpstreamRqTotal);
    let try_deadline = t.try_deadline();
    // Declared after `conn`, so dropped before it: if this future is dropped mid-exchange
    // (the client left), the upstream sees the end at once instead of after the ring has
    // cancelled the pending receive and closed the socket, two loop turns later. A chain of
    // proxies looping back to themselves then unwinds faster than it can regrow.
    let abandon = AbandonGuard(std::os::fd::AsRawFd::as_raw_fd(&conn.stream));
    let (sent, back) = conn.send_head(std::mem::take(head)).await;
    *head = back;
    if let Err(e) = sent {
        let reused = conn.reused;
        return Attempt::Failed(
            Failed {
                error: e,
                failure: Some(Failure::Reset { sent: false }),
                reused,
                answered: false,
            },
            Outcome::Reset,
        );
    }
    if let RequestBody::Stream(body) = &mut out.body {
        match conn.send_body(body, timer.as_mut()).await {
            Ok(n) => info.bytes_received += n,
            Err(e) => return Attempt::Fatal(e),
        }
    }
    let mut buf = shard.pools.take_vec();
    let max_headers = cluster.cluster.protocol.common().max_headers_count;
    let read = conn
        .read_response(
            &mut buf,
            out.req.method(),
            try_deadline,
            timer.as_mut(),
            max_headers,
            stats,
        )
        .await;
    match read {
        Ok(resp) => Attempt::Answered(Answer {
            abandon: Some(abandon),
            resp,
            buf,
            up: UpstreamSide::H1(conn),
            in_flight,
        }),
        Err(e) => {
            let answered = !buf.is_empty();
            shard.pools.give_vec(buf);
            let reused = conn.reused;
            super::attempt::response_failed(t, e, try_deadline, reused, answered)
        }
    }
}
