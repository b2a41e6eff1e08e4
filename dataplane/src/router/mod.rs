//! The router: the terminal step of the HTTP filter chain. It takes a routed request to its
//! upstream: a target cluster of the route (by weight), an endpoint (the cluster's load
//! balancer), a connection (pooled, or new), the request head and body out, the response
//! head back. It knows neither the downstream codec nor the pool's internals: it speaks to
//! the upstream layer, reads the request through codec-neutral types, and takes a streamed
//! request body from whatever [`Downstream`] the stream has.
//!
//! Retries are decided by the [`RetryState`]: the route's retry policy (its conditions on
//! responses and failures, retries, per-try timeout, back-off, host predicate), and the
//! pool's own replay of a bodiless request that met a pooled connection the upstream had
//! closed (nothing reached the application).

mod attempt;
mod h1;
mod h2;
mod hash;
pub mod mirror;
mod retry;

use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::time::Sleep;
use zerohop_proto::stats::{ClusterStat, Counter};
use zerohop_proto::{Forward, UpstreamProtocol};

use crate::config::{ClusterPlan, Generation};
use crate::error::{Kind, ProxyError};
use crate::http::body::StreamedBody;
use crate::http::downstream::Downstream;
use crate::http::hcm::headers::RequestHeaders;
use crate::http::info::StreamInfo;
use crate::http::message::HeaderSource;
use crate::http::message::{Framing, Request, RequestOut, Response};
use crate::route::{Action, Route};
use crate::shard::Shard;
use crate::stats::ShardStats;
use crate::upstream::hosts::Outcome;
use crate::upstream::lb::hash::HashKey;
use crate::upstream::lb::LbStates;
use crate::upstream::UpstreamSide;
pub use retry::{Decision, Failed, RetryState};

/// What follows the request head.
#[derive(Debug)]
pub enum RequestBody<'a, D> {
    /// Nothing.
    None,
    /// These bytes, already read (a filter buffered the body, or it was small and had
    /// arrived with the head): sent in the same write as the head.
    Buffered(Vec<u8>),
    /// Streamed from the client connection as it arrives.
    Stream(StreamedBody<'a, D>),
}

impl<D> RequestBody<'_, D> {
    /// Whether all of the body has been read from the client (nothing of it is left on
    /// the connection).
    pub fn complete(&self) -> bool {
        match self {
            RequestBody::None | RequestBody::Buffered(_) => true,
            RequestBody::Stream(s) => s.done,
        }
    }
}

/// A request on its way upstream.
/// The request headers the router adds after the connection manager's, as Envoy's router
/// does unless `suppress_envoy_headers`: `x-envoy-expected-rq-timeout-ms` (the route's
/// timeout), and `x-envoy-original-path` / `x-envoy-original-host` when the route rewrote
/// them. A client's copies of these are replaced.
struct RouterHeaders<'a> {
    inner: &'a RequestHeaders<'a>,
    on: bool,
    timeout_ms: Option<&'a str>,
    original_path: Option<String>,
    original_host: Option<&'a [u8]>,
    /// `x-envoy-attempt-count` (the virtual host's `include_request_attempt_count`; set
    /// whether or not Envoy's other headers are suppressed, as Envoy's).
    attempt: Option<u32>,
}

impl HeaderSource for RouterHeaders<'_> {
    fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        match self.attempt {
            None => self.envoy_headers(&mut f),
            Some(n) => {
                let mut digits = [0u8; 20];
                let n = crate::http::hcm::decimal(u64::from(n), &mut digits);
                self.envoy_headers(|name, v| {
                    if name != b"x-envoy-attempt-count" {
                        f(name, v)
                    }
                });
                f(b"x-envoy-attempt-count", n);
            }
        }
        // The span's context last, as Envoy's upstream request injects it.
        self.inner.trace_context(f);
    }
}

impl RouterHeaders<'_> {
    /// The headers without the attempt count.
    fn envoy_headers(&self, mut f: impl FnMut(&[u8], &[u8])) {
        if !self.on {
            return self.inner.for_each(f);
        }
        let own: [(&[u8], Option<&[u8]>); 3] = [
            (
                b"x-envoy-expected-rq-timeout-ms",
                self.timeout_ms.map(str::as_bytes),
            ),
            (
                b"x-envoy-original-path",
                self.original_path.as_deref().map(str::as_bytes),
            ),
            (b"x-envoy-original-host", self.original_host),
        ];
        self.inner.for_each(|n, v| {
            let replaced =
                n.starts_with(b"x-envoy-") && own.iter().any(|(o, set)| set.is_some() && *o == n);
            if !replaced {
                f(n, v)
            }
        });
        for (n, v) in own {
            if let Some(v) = v {
                f(n, v);
            }
        }
    }
}

pub struct Outgoing<'a, D> {
    pub req: &'a Request,
    pub route: &'a Route,
    pub forward: &'a Forward,
    pub headers: &'a RequestHeaders<'a>,
    /// How the body goes upstream (a buffering filter may have changed it).
    pub framing: Framing,
    pub body: RequestBody<'a, D>,
    /// When the connection manager's `max_stream_duration` ends the stream.
    pub max_at: Option<Instant>,
    /// When the router took the request (the route timeout runs from here): the request's
    /// start, or the end of an injected delay.
    pub started: Instant,
    /// The client's address (for a `source_ip` hash policy).
    pub peer: Option<std::net::IpAddr>,
}

/// The earlier of two optional deadlines.
pub fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a timeout that fired was `max_stream_duration`'s rather than the route's.
pub fn max_duration_reached(max_at: Option<Instant>) -> bool {
    max_at.is_some_and(|m| Instant::now() >= m)
}

impl<D> std::fmt::Debug for Outgoing<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("route", &self.route.name)
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

/// The upstream's answer: its head, the bytes received so far (the head, then the start of
/// the body), the connection to relay the rest from, and the deadline it runs under.
#[derive(Debug)]
pub struct Exchange<'g> {
    pub resp: Response,
    pub buf: Vec<u8>,
    pub conn: UpstreamSide,
    pub cluster: &'g ClusterPlan,
    /// The route timeout (or `max_stream_duration`, when that ends first): until the whole
    /// response has been relayed, as Envoy's.
    pub deadline: Option<Instant>,
    /// When `max_stream_duration` ends the stream (which of the two a timeout was).
    pub max_at: Option<Instant>,
    /// The request's place in the cluster's request breaker, until the response is relayed.
    pub request: crate::upstream::breaker::Held,
    /// Its count in flight to the endpoint (least request), until then too.
    pub active: Option<crate::upstream::lb::Active>,
}

/// Each of the route's mirror policies that draws this request: a copy of it (host with
/// `-shadow`) to the mirror cluster, on its own task. A body that streams from the client is
/// not held back for a copy: such a request is not mirrored (counted).
fn mirror_all<D>(
    shard: &Rc<Shard>,
    gen: &Generation,
    out: &Outgoing<'_, D>,
    request: &RequestOut<'_>,
    headers: &impl HeaderSource,
) {
    for m in &out.forward.mirrors {
        if let Some(f) = m.fraction {
            let d = u64::from(f.denominator).max(1);
            if shard.rng.next_u64() % d >= u64::from(f.numerator) {
                continue;
            }
        }
        let body: &[u8] = match &out.body {
            RequestBody::None => b"",
            RequestBody::Buffered(b) => b,
            RequestBody::Stream(_) => {
                shard.stats.inc(Counter::UpstreamRqMirrorSkipped);
                continue;
            }
        };
        let Some(plan) = gen.clusters.get(m.cluster.0 as usize) else {
            continue;
        };
        // Mirrors go out over HTTP/1.1 only (not done for HTTP/2 clusters yet).
        if !matches!(plan.cluster.protocol, UpstreamProtocol::Http1(_)) {
            shard.stats.inc(Counter::UpstreamRqMirrorSkipped);
            continue;
        }
        let host = match m.shadow_suffix {
            true => mirror::shadow_host(request.authority),
            false => request.authority.to_vec(),
        };
        let copy = RequestOut {
            authority: &host,
            ..*request
        };
        let mut head = shard.pools.take_vec();
        crate::upstream::encode_request(&mut head, &copy, headers);
        head.extend_from_slice(body);
        let is_head = request.method == b"HEAD";
        mirror::spawn(shard, plan.clone(), head, is_head, out.forward.timeout);
    }
}

use attempt::{Answer, Attempt, Try};

/// How one attempt ended, when it did not end the request.
enum Next {
    /// It failed.
    Failed(Failed),
    /// Its response is retried after this back-off.
    Again(Duration),
}

/// Sends `out` to an endpoint of the route's cluster and reads the response head, attempt
/// after attempt as the retry policy allows.
pub async fn forward<'g, D: Downstream>(
    shard: &Rc<Shard>,
    gen: &'g Generation,
    out: &mut Outgoing<'_, D>,
    info: &mut StreamInfo<'g>,
    mut timer: Pin<&mut Sleep>,
) -> Result<Exchange<'g>, ProxyError> {
    let Action::Forward {
        pick,
        timeout_ms,
        retry: plan,
        ..
    } = &out.route.action
    else {
        unreachable!("forward() is called for forwarding routes")
    };
    let stats = shard.stats;
    let cluster: &'g ClusterPlan = gen.pick_target(&out.forward.targets, pick, &shard.rng);
    let cs = cluster.cluster.stats;
    info.upstream_cluster = Some(&cluster.cluster.name);
    // The request's hash, only for a hashing balancer and a route that says what to hash.
    let hash = match LbStates::hashes(&cluster.lb) && !out.forward.hash_policy.is_empty() {
        true => hash::request_hash(&out.forward.hash_policy, out.req, out.peer),
        false => None,
    };
    let Some((mut endpoint, (mut index, mut active))) =
        shard
            .upstreams
            .pick_request(cluster, &shard.rng, hash.map(HashKey::new))
    else {
        stats.inc(Counter::UpstreamCxNoHealthyUpstream);
        stats.count(cs, ClusterStat::UpstreamCxNoneHealthy);
        stats.cluster_code(cs, 503);
        return Err(Kind::NoHealthyUpstream.into());
    };
    let started = out.started;
    // The route timeout, or the stream's `max_stream_duration` when that ends first.
    let deadline = earlier(out.forward.timeout.map(|t| started + t), out.max_at);
    let max_at = out.max_at;
    let timed_out = |stats: ShardStats| match max_duration_reached(max_at) {
        true => stats.inc(Counter::DownstreamRqMaxDurationReached),
        false => {
            stats.inc(Counter::UpstreamRqTimeout);
            stats.count(cs, ClusterStat::UpstreamRqTimeout);
        }
    };

    // The head is built once (again for each attempt only to count attempts in it).
    let mut head = shard.pools.take_vec();
    head.reserve(out.req.raw.len() + 128);
    let rewritten = match out.route.rewrites_path() {
        true => out.route.rewrite_path(out.req.path(), None),
        false => None,
    };
    let raw = &out.req.raw[..];
    let path = match &rewritten {
        Some(p) => p.as_bytes(),
        None => match &raw[out.req.path.clone()] {
            b"" => b"/",
            p => p,
        },
    };
    let request = RequestOut {
        method: out.req.method(),
        path,
        query: out.req.query.as_ref().map(|q| &raw[q.clone()]),
        authority: match &out.forward.host_rewrite {
            Some(h) => h.as_bytes(),
            None => &raw[out.req.host.clone()],
        },
        framing: out.framing,
        upgrade: out.req.upgrade.as_ref().map(|u| &raw[u.clone()]),
    };
    let original_path = match (&rewritten, out.req.query()) {
        (None, _) => None,
        (Some(_), None) => Some(out.req.path().to_owned()),
        (Some(_), Some(q)) => Some(format!("{}?{q}", out.req.path())),
    };
    let mut own = RouterHeaders {
        inner: out.headers,
        on: !out.headers.suppress_envoy_headers,
        timeout_ms: timeout_ms.as_deref(),
        original_path,
        original_host: out
            .forward
            .host_rewrite
            .as_ref()
            .map(|_| &raw[out.req.host.clone()]),
        attempt: out.forward.attempt_count_upstream.then_some(1),
    };
    // An HTTP/1.1 cluster's head; an HTTP/2 one's goes as HEADERS, made by its attempt.
    let http1 = matches!(cluster.cluster.protocol, UpstreamProtocol::Http1(_));
    if http1 {
        crate::upstream::encode_request(&mut head, &request, &own);
        if let RequestBody::Buffered(b) = &out.body {
            head.extend_from_slice(b);
        }
    }
    if !out.forward.mirrors.is_empty() {
        mirror_all(shard, gen, out, &request, &own);
    }

    // `auto_sni` / `auto_san_validation`: the host the request goes with (or the override
    // header's, when the request has it), without its port.
    let server_name = cluster
        .cluster
        .protocol
        .common()
        .auto_sni
        .as_ref()
        .and_then(|a| {
            let overridden = a.header.as_deref().and_then(|h| out.req.header(h));
            let value = match overridden.filter(|v| !v.is_empty()) {
                Some(v) => v,
                None => std::str::from_utf8(request.authority).ok()?,
            };
            Some(crate::upstream::connect::host_of(value))
        })
        .filter(|h| !h.is_empty());
    let mut retry = RetryState::new(plan.as_deref(), out.req, &out.body);
    retry.scope = cs;
    let per_try = plan.as_ref().and_then(|p| p.policy.per_try_timeout);
    let (slot, limits) = (cluster.slot as usize, &cluster.breakers);
    let breakers = &shard.upstreams.breakers;
    // What each attempt came to, for the outlier detector of its host.
    let report = |i: usize, o: Outcome| {
        if let Some(od) = &cluster.hosts {
            od.report(i, o, stats, &shard.rng);
        }
    };
    let result = 'request: loop {
        info.attempts += 1;
        info.upstream_host = Some(endpoint);
        retry.tried(endpoint);
        let attempt = Try {
            shard,
            cluster,
            endpoint,
            started,
            deadline,
            per_try,
            server_name,
        };
        let attempted = match &cluster.cluster.protocol {
            UpstreamProtocol::Http1(_) => {
                h1::attempt(&attempt, out, &mut head, info, timer.as_mut()).await
            }
            // Boxed: its state (a stream, a handshake) would otherwise make every request's
            // future larger, HTTP/1.1's too.
            UpstreamProtocol::Http2(_, opts) => {
                let attempt =
                    h2::attempt(&attempt, opts, out, &request, &own, info, timer.as_mut());
                Box::pin(attempt).await
            }
        };
        let next = match attempted {
            Attempt::Fatal(e) => {
                // Only a wait for a connection ends in the route timeout here.
                if e.kind == Kind::UpstreamTimeout {
                    timed_out(stats);
                }
                break 'request Err(e);
            }
            Attempt::Failed(failed, outcome) => {
                report(index, outcome);
                info.failure_reason = failed.error.transport_failure_reason();
                Next::Failed(failed)
            }
            Attempt::Answered(answer) => {
                report(index, Outcome::Status(answer.resp.status));
                let header = |n: &str| response_header(&answer.resp, &answer.buf, n);
                let breaker = || breakers.retry(slot, limits, cluster.charge(stats));
                match retry.on_response(answer.resp.status, header, stats, &shard.rng, breaker) {
                    // The response is dropped with its connection (or stream), as Envoy
                    // resets the upstream stream.
                    Decision::Retry(wait) => {
                        let Answer { buf, .. } = answer;
                        shard.pools.give_vec(buf);
                        Next::Again(wait)
                    }
                    Decision::No | Decision::Replay => {
                        stats.cluster_code(cs, answer.resp.status);
                        let Answer {
                            abandon,
                            resp,
                            buf,
                            up,
                            in_flight,
                        } = answer;
                        std::mem::forget(abandon);
                        break 'request Ok(Exchange {
                            resp,
                            buf,
                            conn: up,
                            cluster,
                            deadline,
                            max_at: out.max_at,
                            request: in_flight,
                            active: active.take(),
                        });
                    }
                }
            }
        };
        let wait = match next {
            Next::Again(wait) => wait,
            Next::Failed(failed) => {
                let breaker = || breakers.retry(slot, limits, cluster.charge(stats));
                let decision = retry.on_failure(&failed, stats, &shard.rng, breaker);
                let mut e = failed.error;
                if decision != Decision::Replay {
                    match e.kind {
                        Kind::UpstreamTimeout => timed_out(stats),
                        Kind::UpstreamClosed | Kind::UpstreamReset => {
                            stats.inc(Counter::UpstreamRqReset)
                        }
                        _ => {}
                    }
                }
                match decision {
                    Decision::Replay => continue,
                    Decision::Retry(wait) => wait,
                    Decision::No => {
                        e.retried = retry.retries > 0;
                        break Err(e);
                    }
                }
            }
        };
        // The back-off, within the route timeout.
        if let Some(d) = deadline.filter(|d| Instant::now() + wait >= *d) {
            monoio::time::sleep_until(d.into()).await;
            timed_out(stats);
            break Err(Kind::UpstreamTimeout.into());
        }
        if !wait.is_zero() {
            monoio::time::sleep(wait).await;
        }
        // A hashing balancer asked again for another host is told which attempt it is (the
        // ring walks on, Maglev varies the hash, as Envoy's).
        let picked = retry.pick_again(|attempt| {
            let key = hash.map(|hash| HashKey { hash, attempt });
            shard.upstreams.pick_request(cluster, &shard.rng, key)
        });
        match picked {
            Some((host, (i, now_active))) => (endpoint, index, active) = (host, i, now_active),
            None => {
                stats.inc(Counter::UpstreamCxNoHealthyUpstream);
                stats.count(cs, ClusterStat::UpstreamCxNoneHealthy);
                break Err(Kind::NoHealthyUpstream.into());
            }
        }
        if let Some(n) = own.attempt.as_mut() {
            *n += 1;
        }
        if own.attempt.is_some() && http1 {
            head.clear();
            crate::upstream::encode_request(&mut head, &request, &own);
            if let RequestBody::Buffered(b) = &out.body {
                head.extend_from_slice(b);
            }
        }
    };
    shard.pools.give_vec(head);
    // A request that ends in a local reply for its upstream's failure is charged its code
    // (503, 504), as Envoy's router charges an upstream abort.
    if let Err(e) = &result {
        if e.fault != crate::error::Fault::Downstream {
            if let Some((code, _)) = e.local_reply() {
                stats.cluster_code(cs, code);
            }
        }
    }
    result.map_err(|e| match e.kind {
        Kind::UpstreamTimeout if max_duration_reached(out.max_at) => Kind::MaxStreamDuration.into(),
        _ => e,
    })
}

/// The first value of a response header (by lower-case name), if it is UTF-8.
fn response_header<'b>(resp: &Response, buf: &'b [u8], name: &str) -> Option<&'b str> {
    let h = resp
        .headers
        .iter()
        .find(|h| &buf[h.name.clone()] == name.as_bytes())?;
    std::str::from_utf8(&buf[h.value.clone()]).ok()
}
