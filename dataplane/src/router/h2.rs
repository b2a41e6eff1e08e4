//! An attempt over HTTP/2: a stream on a multiplexed connection (`upstream::http2`), the
//! request as HEADERS (and DATA, and the client's trailers), the response head awaited within
//! the attempt's deadline. Dropping the attempt resets the stream (CANCEL).

use std::pin::Pin;

use bytes::Bytes;
use monoio::time::Sleep;
use zerohop_proto::stats::{ClusterStat, Counter};
use zerohop_proto::Http2Options;

use super::attempt::{Answer, Attempt, Try};
use super::{Failed, Outgoing, RequestBody};
use crate::error::{Kind, ProxyError};
use crate::http::downstream::{BodySink, Downstream};
use crate::http::info::StreamInfo;
use crate::http::message::{Framing, HeaderSource, RequestOut};
use crate::route::retry::Failure;
use crate::upstream::hosts::Outcome;
use crate::upstream::http2::response_head;
use crate::upstream::UpstreamSide;

/// Sends the request of `out` (`request` and `headers`, as the router made them) on a stream
/// to the attempt's endpoint, and waits for the response head.
#[allow(clippy::too_many_arguments)] // Reason: the attempt, the request's parts, the stream's timer.
pub async fn attempt<D: Downstream>(
    t: &Try<'_, '_>,
    opts: &Http2Options,
    out: &mut Outgoing<'_, D>,
    request: &RequestOut<'_>,
    headers: &impl HeaderSource,
    info: &mut StreamInfo<'_>,
    mut timer: Pin<&mut Sleep>,
) -> Attempt {
    let (shard, cluster) = (t.shard, t.cluster);
    let stats = shard.stats;
    let stream = shard
        .upstreams
        .h2_stream(stats, cluster, t.endpoint, opts, t.deadline, t.server_name)
        .await;
    let stream = match stream {
        Ok(s) => s,
        // Its connection went away before the stream could start: nothing was sent.
        Err(e) if e.kind == Kind::UpstreamClosed => {
            return unsent(e, Outcome::Reset);
        }
        Err(e) => return super::attempt::connect_failed(e),
    };
    let (slot, limits) = (cluster.slot as usize, &cluster.breakers);
    let in_flight = match shard
        .upstreams
        .breakers
        .request(slot, limits, cluster.charge(stats))
    {
        Ok(held) => held,
        Err(e) => return Attempt::Fatal(e),
    };
    stats.inc(Counter::UpstreamRqTotal);
    stats.count(cluster.cluster.stats, ClusterStat::UpstreamRqTotal);
    let try_deadline = t.try_deadline();
    let Some(head) = request_head(request, headers) else {
        return Attempt::Fatal(Kind::MalformedRequest("invalid request for HTTP/2").into());
    };
    let bodiless = match &out.body {
        RequestBody::None => true,
        RequestBody::Buffered(b) => b.is_empty(),
        RequestBody::Stream(_) => false,
    };
    let mut send = stream.send;
    let (response, mut body) = match send.send_request(head, bodiless) {
        Ok(sent) => sent,
        Err(e) => {
            log::debug!("HTTP/2 upstream {}: {e}", t.endpoint);
            return unsent(Kind::UpstreamClosed.into(), Outcome::Reset);
        }
    };
    match &mut out.body {
        RequestBody::Buffered(b) if !b.is_empty() => {
            let data = Bytes::copy_from_slice(b);
            if crate::http2::body::send_data(&mut body, data, true)
                .await
                .is_err()
            {
                return unsent(Kind::UpstreamReset.into(), Outcome::Reset);
            }
        }
        RequestBody::Stream(streamed) => {
            match streamed
                .relay_to(BodySink::H2(&mut body), timer.as_mut())
                .await
            {
                Ok(n) => info.bytes_received += n,
                Err(e) => return Attempt::Fatal(e),
            }
        }
        _ => {}
    }
    let answer = match try_deadline {
        Some(d) => match monoio::time::timeout_at(d.into(), response).await {
            Ok(r) => r,
            Err(_) => {
                let e = Kind::UpstreamTimeout.into();
                return super::attempt::response_failed(t, e, try_deadline, stream.reused, false);
            }
        },
        None => response.await,
    };
    match answer {
        Ok(resp) => {
            let (parts, recv) = resp.into_parts();
            let mut buf = shard.pools.take_vec();
            let head_only = out.req.method() == b"HEAD";
            let resp = response_head(&parts, recv.is_end_stream(), head_only, &mut buf);
            Attempt::Answered(Answer {
                abandon: None,
                resp,
                buf,
                up: UpstreamSide::H2 {
                    recv,
                    slot: stream.slot,
                },
                in_flight,
            })
        }
        Err(e) => {
            log::debug!("HTTP/2 upstream {}: {e}", t.endpoint);
            let refused = e.reason() == Some(h2::Reason::REFUSED_STREAM) || e.is_go_away();
            let kind = match (refused, e.is_reset()) {
                (true, _) => Kind::UpstreamRefusedStream,
                (false, true) => Kind::UpstreamReset,
                (false, false) => Kind::UpstreamClosed,
            };
            // A refused stream was never processed, but as Envoy's router, only a retry
            // policy sends it again (`refused-stream`, `reset-before-request`, `reset`): no
            // replay of the pool's own.
            let reused = stream.reused && !refused;
            super::attempt::response_failed(t, kind.into(), try_deadline, reused, false)
        }
    }
}

/// A stream that never carried the request.
fn unsent(error: ProxyError, outcome: Outcome) -> Attempt {
    let failed = Failed {
        error,
        failure: Some(Failure::Reset { sent: false }),
        reused: true,
        answered: false,
    };
    Attempt::Failed(failed, outcome)
}

/// The request as HTTP/2 HEADERS: `:authority` from the host, the connection-specific
/// fields HTTP/2 forbids left out (`te` but for `trailers`), a declared length kept. `None`
/// when the method, authority or path cannot be HTTP/2's.
fn request_head(r: &RequestOut<'_>, headers: &impl HeaderSource) -> Option<http::Request<()>> {
    let mut target = Vec::with_capacity(r.path.len() + r.query.map_or(0, |q| q.len() + 1));
    target.extend_from_slice(r.path);
    if let Some(q) = r.query {
        target.push(b'?');
        target.extend_from_slice(q);
    }
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(r.authority)
        .path_and_query(target)
        .build()
        .ok()?;
    let mut req = http::Request::new(());
    *req.method_mut() = http::Method::from_bytes(r.method).ok()?;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    let map = req.headers_mut();
    headers.for_each(|n, v| {
        let forbidden = matches!(
            n,
            b"connection"
                | b"keep-alive"
                | b"proxy-connection"
                | b"transfer-encoding"
                | b"upgrade"
                | b"host"
                | b"content-length"
        ) || (n == b"te" && !v.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        if forbidden {
            return;
        }
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n),
            http::HeaderValue::from_bytes(v),
        ) {
            map.append(n, v);
        }
    });
    if let Framing::Length(n) = r.framing {
        map.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
    }
    Some(req)
}
