//! `request_mirror_policies`: a copy of a request sent, fire and forget, to another cluster,
//! as Envoy's shadowing: the host gets `-shadow` (before any port), the answer is read and
//! dropped, and nothing of it reaches the client or delays its response.
//!
//! The copy is its own task on the shard (holding the shard and the mirror cluster's plan,
//! so a new generation does not cut it off), with the route's timeout, the cluster's pool and
//! circuit breakers. Only a request whose body is in hand is mirrored (no body, or one a
//! filter buffered or that arrived with the head): a body that streams from the client is not
//! held back for a copy, and such a request is counted `upstream_rq_mirror_skipped`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerohop_proto::stats::{ClusterStat, Counter};

use crate::config::ClusterPlan;
use crate::error::{Kind, ProxyError};
use crate::http::body::{read_whole, within, BodyEnd};
use crate::shard::Shard;

/// `host` with `-shadow` before its port, as Envoy's `shadowAppendedHost`.
pub fn shadow_host(host: &[u8]) -> Vec<u8> {
    // A port follows the last ':' unless that is inside an IPv6 literal's brackets.
    let port_at = match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host[i..].contains(&b']') => Some(i),
        _ => None,
    };
    let (name, port) = host.split_at(port_at.unwrap_or(host.len()));
    let mut out = Vec::with_capacity(host.len() + 7);
    out.extend_from_slice(name);
    out.extend_from_slice(b"-shadow");
    out.extend_from_slice(port);
    out
}

/// Sends `head` (the whole request) to `cluster` on its own task.
pub fn spawn(
    shard: &Rc<Shard>,
    cluster: Arc<ClusterPlan>,
    head: Vec<u8>,
    method_head: bool,
    timeout: Option<Duration>,
) {
    shard.stats.inc(Counter::UpstreamRqMirrored);
    let shard = shard.clone();
    monoio::spawn(async move {
        if let Err(e) = send(&shard, &cluster, head, method_head, timeout).await {
            log::debug!("mirror to {:?}: {e}", cluster.cluster.name);
        }
    });
}

async fn send(
    shard: &Shard,
    cluster: &ClusterPlan,
    head: Vec<u8>,
    method_head: bool,
    timeout: Option<Duration>,
) -> Result<(), ProxyError> {
    let stats = shard.stats;
    let Some(endpoint) = shard.upstreams.pick(cluster, &shard.rng, None) else {
        stats.inc(Counter::UpstreamCxNoHealthyUpstream);
        return Err(Kind::NoHealthyUpstream.into());
    };
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let mut conn = shard
        .upstreams
        .http_connection(stats, cluster, endpoint, started, deadline, None)
        .await?;
    let (slot, limits) = (cluster.slot as usize, &cluster.breakers);
    let _in_flight = match shard
        .upstreams
        .breakers
        .request(slot, limits, cluster.charge(stats))
    {
        Ok(held) => held,
        Err(e) => {
            shard.upstreams.release_unused(conn, cluster);
            return Err(e);
        }
    };
    stats.inc(Counter::UpstreamRqTotal);
    stats.count(cluster.cluster.stats, ClusterStat::UpstreamRqTotal);
    let (sent, head) = conn.send_head(head).await;
    shard.pools.give_vec(head);
    sent?;
    let mut buf = shard.pools.take_vec();
    let mut timer = std::pin::pin!(monoio::time::sleep(Duration::from_secs(3600)));
    let method: &[u8] = if method_head { b"HEAD" } else { b"GET" };
    let max_headers = cluster.cluster.protocol.common().max_headers_count;
    let resp = conn
        .read_response(
            &mut buf,
            method,
            deadline,
            timer.as_mut(),
            max_headers,
            stats,
        )
        .await?;
    // The answer's body, read and dropped, so that the connection can be pooled again.
    buf.drain(..resp.len);
    let last = Cell::new(Instant::now());
    let read = read_whole(&conn.stream, &mut buf, resp.framing, u64::MAX, &last);
    let read = within(read, timer.as_mut(), &last, None, deadline).await;
    let clean = matches!(read, Some(Ok(_))) && buf.is_empty() && !resp.close;
    shard.pools.give_vec(buf);
    match read {
        Some(Ok(_)) if clean && resp.framing != crate::http::message::Framing::UntilClose => {
            shard.upstreams.release(conn, cluster, started);
            Ok(())
        }
        Some(Ok(_)) => Ok(()),
        Some(Err(BodyEnd::Source(_))) | Some(Err(_)) => Err(Kind::UpstreamClosed.into()),
        None => Err(Kind::UpstreamTimeout.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::shadow_host;

    #[test]
    fn shadow_goes_before_the_port() {
        let s = |h: &str| String::from_utf8(shadow_host(h.as_bytes())).unwrap();
        assert_eq!(s("example.com"), "example.com-shadow");
        assert_eq!(s("example.com:8080"), "example.com-shadow:8080");
        assert_eq!(s("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(s("[::1]"), "[::1]-shadow");
    }
}
