//! The upstream layer: per-shard cluster state, endpoint choice, connection pools and
//! connects, and the HTTP/1.1 client side of an exchange. The router and the tcp_proxy use
//! it; it knows nothing of the downstream codec.
//!
//! Cluster configuration comes from the generation in use ([`ClusterPlan`]); what must
//! outlive a generation lives here, per shard: the load balancers' state by cluster slot
//! ([`lb::LbStates`]) and the idle connections by endpoint, protocol and transport
//! ([`pool::UpstreamPool`]).

pub mod breaker;
pub mod connect;
pub mod h1;
pub mod hosts;
pub mod http2;
pub mod lb;
pub mod pool;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use monoio::time::Sleep;
use zerohop_proto::stats::{ClusterStat, Counter};

use crate::config::ClusterPlan;
use crate::error::{Kind, ProxyError};
use crate::stats::ShardStats;
use breaker::{Breakers, Held};
use lb::{LbStates, Rng};
use pool::{PoolKey, Protocol, UpstreamPool};

/// A shard's upstream state.
#[derive(Debug, Default)]
pub struct Upstreams {
    pub lb: LbStates,
    pub pool: UpstreamPool,
    /// HTTP/2 clusters' multiplexed connections.
    pub h2: http2::H2Pool,
    pub breakers: Breakers,
}

/// The upstream side of an exchange whose response head has arrived: where its body is.
#[derive(Debug)]
pub enum UpstreamSide {
    H1(UpstreamConn),
    /// An HTTP/2 stream, and its place on its connection.
    H2 {
        recv: ::h2::RecvStream,
        slot: http2::StreamSlot,
    },
}

/// An upstream connection serving one exchange.
#[derive(Debug)]
pub struct UpstreamConn {
    pub stream: crate::net::transport::Sock,
    pub key: PoolKey,
    /// Requests it served before this one.
    pub served: u32,
    /// It came from the pool (a failure before any response byte may then be retried).
    pub reused: bool,
    /// Its place in the cluster's connection breaker.
    pub held: Held,
}

impl UpstreamConn {
    // The methods below hand back the protocol's own future rather than await it in one of
    // their own: one async level less to poll on every completion.

    /// Sends a request head (and body bytes already appended to it); gives the buffer back.
    pub fn send_head(
        &mut self,
        out: Vec<u8>,
    ) -> impl Future<Output = (Result<(), ProxyError>, Vec<u8>)> + '_ {
        h1::send(self, out)
    }

    /// Relays a request body that streams from the client (its timeouts on `timer`).
    pub fn send_body<'a, 'b: 'a, D: crate::http::downstream::Downstream>(
        &'a mut self,
        body: &'a mut crate::http::body::StreamedBody<'b, D>,
        timer: Pin<&'a mut Sleep>,
    ) -> impl Future<Output = Result<u64, ProxyError>> + use<'a, 'b, D> {
        body.relay_to(crate::http::downstream::BodySink::H1(&self.stream), timer)
    }

    /// Reads the response head (see [`h1::read_response`]).
    pub fn read_response<'a>(
        &'a mut self,
        buf: &'a mut Vec<u8>,
        method: &'a [u8],
        deadline: Option<Instant>,
        timer: Pin<&'a mut Sleep>,
        max_headers: u32,
        stats: ShardStats,
    ) -> impl Future<Output = Result<crate::http::message::Response, ProxyError>> + 'a {
        h1::read_response(self, buf, method, deadline, timer, max_headers, stats)
    }
}

/// Writes the HTTP/1.1 request head `r` (an HTTP/2 cluster's requests go as HEADERS,
/// [`crate::router`]'s `h2`).
pub fn encode_request(
    out: &mut Vec<u8>,
    r: &crate::http::message::RequestOut<'_>,
    headers: &impl crate::http::message::HeaderSource,
) {
    crate::http1::encode::request_head(out, r, headers)
}

impl Upstreams {
    /// A place in `cluster`'s connection breaker for a tcp_proxy connection. Full, it is the
    /// overflow (counted): the tcp_proxy closes the client, as Envoy's.
    pub fn connection_slot(
        &self,
        stats: ShardStats,
        cluster: &ClusterPlan,
    ) -> Result<Held, ProxyError> {
        let slot = cluster.slot as usize;
        let limits = &cluster.breakers;
        self.breakers
            .connection_strict(slot, limits, cluster.charge(stats))
    }

    /// An endpoint of `cluster` for the next request or connection; `None` when it has none.
    pub fn pick(
        &self,
        cluster: &ClusterPlan,
        rng: &Rng,
        hash: Option<lb::hash::HashKey>,
    ) -> Option<SocketAddr> {
        self.lb
            .pick(cluster.slot, &cluster.lb, cluster.lb_version, rng, hash)
            .map(|i| cluster.cluster.endpoints[i].address)
    }

    /// [`Upstreams::pick`] for a request: the endpoint, its index, and on a least-request
    /// cluster its count in flight (until the guard drops). An endpoint that is out
    /// (ejected by the outlier detector, failing its health checks, unhealthy by EDS) is
    /// passed over for the balancer's next pick, as many times as the cluster has
    /// endpoints; below the cluster's healthy panic threshold that is ignored (Envoy's
    /// panic mode routes to all hosts), and with none left, there is none.
    pub fn pick_request(
        &self,
        cluster: &ClusterPlan,
        rng: &Rng,
        hash: Option<lb::hash::HashKey>,
    ) -> Option<(SocketAddr, (usize, Option<lb::Active>))> {
        let pick = || {
            self.lb
                .pick(cluster.slot, &cluster.lb, cluster.lb_version, rng, hash)
        };
        let mut i = pick()?;
        if let Some(hosts) = &cluster.hosts {
            hosts.note_traffic();
            if hosts.enforced() {
                let mut tries = cluster.cluster.endpoints.len();
                while hosts.unavailable(i) {
                    if tries == 0 {
                        // Every host out with a panic threshold of 0: no healthy host, as
                        // Envoy's. (Otherwise unlucky draws keep the last pick.)
                        if hosts.all_out() {
                            return None;
                        }
                        break;
                    }
                    tries -= 1;
                    i = pick()?;
                }
            }
        }
        let active = self.lb.track(cluster.slot, &cluster.lb, i);
        Some((cluster.cluster.endpoints[i].address, (i, active)))
    }

    /// A connection to `endpoint` for an HTTP request: the most recently used pooled one,
    /// else a new one. With the cluster's connection breaker full, the request waits
    /// (pending) for a connection to come back or close, until `deadline` (the route
    /// timeout); see [`breaker`].
    pub async fn http_connection(
        &self,
        stats: ShardStats,
        cluster: &ClusterPlan,
        endpoint: SocketAddr,
        now: Instant,
        deadline: Option<Instant>,
        server_name: Option<&str>,
    ) -> Result<UpstreamConn, ProxyError> {
        let key = PoolKey {
            endpoint,
            protocol: Protocol::Http1,
            transport: connect::transport_id(cluster, server_name),
        };
        if let Some(c) = self.pooled(stats, key, now) {
            return Ok(c);
        }
        let held = match self
            .connection_place(stats, cluster, deadline, || {
                self.pooled(stats, key, Instant::now())
            })
            .await?
        {
            Ok(held) => held,
            Err(pooled) => return Ok(pooled),
        };
        // Boxed: a connect carries a timer of its own, which would otherwise make every
        // request's future larger (and cache-line aligned) for what pooling makes rare.
        let stream = Box::pin(connect::connect(stats, cluster, endpoint, server_name)).await?;
        stats.count(cluster.cluster.stats, ClusterStat::UpstreamCxHttp1Total);
        Ok(UpstreamConn {
            stream,
            key,
            served: 0,
            reused: false,
            held,
        })
    }

    /// A place in `cluster`'s connection breaker for a new connection. A request waiting for
    /// one is pending (counted, under `max_pending_requests`); full, it waits for one of the
    /// cluster's connections to close, until `deadline`, and each time one does, `reuse` may
    /// find a connection that became available instead (`Err` with it).
    async fn connection_place<T>(
        &self,
        stats: ShardStats,
        cluster: &ClusterPlan,
        deadline: Option<Instant>,
        mut reuse: impl FnMut() -> Option<T>,
    ) -> Result<Result<Held, T>, ProxyError> {
        let (slot, limits) = (cluster.slot as usize, &cluster.breakers);
        // Pending until it has a connection, as Envoy counts it.
        let _pending = self.breakers.pending(slot, limits, cluster.charge(stats))?;
        loop {
            let freed = match self
                .breakers
                .connection(slot, limits, cluster.charge(stats))
            {
                Ok(held) => return Ok(Ok(held)),
                Err(freed) => freed,
            };
            match deadline {
                Some(d) => monoio::time::timeout_at(d.into(), freed)
                    .await
                    .map_err(|_| ProxyError::from(Kind::UpstreamTimeout))?,
                None => freed.await,
            }
            if let Some(c) = reuse() {
                return Ok(Err(c));
            }
        }
    }

    /// A stream to `endpoint` of HTTP/2 `cluster`: on a connection with room for it, else on
    /// a new one (under the connection breaker, as [`Upstreams::http_connection`]). The
    /// sender is ready for the stream when this returns, within `deadline`.
    pub async fn h2_stream(
        &self,
        stats: ShardStats,
        cluster: &ClusterPlan,
        endpoint: SocketAddr,
        opts: &zerohop_proto::Http2Options,
        deadline: Option<Instant>,
        server_name: Option<&str>,
    ) -> Result<http2::H2Stream, ProxyError> {
        let key = PoolKey {
            endpoint,
            protocol: Protocol::Http2,
            transport: connect::transport_id(cluster, server_name),
        };
        let common = cluster.cluster.protocol.common();
        let max_requests = common.max_requests_per_connection;
        let find = || self.h2.find(&key, opts, max_requests);
        let stream = match find() {
            Some(c) => {
                stats.inc(Counter::UpstreamCxReused);
                c.take(true)
            }
            None => match self
                .connection_place(stats, cluster, deadline, find)
                .await?
            {
                Err(c) => c.take(true),
                Ok(held) => {
                    let connect = connect::connect(stats, cluster, endpoint, server_name);
                    let tcp = Box::pin(connect).await?;
                    stats.count(cluster.cluster.stats, ClusterStat::UpstreamCxHttp2Total);
                    let conn = http2::handshake(
                        stats,
                        &self.h2,
                        key,
                        tcp,
                        opts,
                        common.idle_timeout,
                        held,
                    );
                    Box::pin(conn).await?.take(false)
                }
            },
        };
        let http2::H2Stream { send, slot, reused } = stream;
        let ready = send.ready();
        let send = match deadline {
            Some(d) => monoio::time::timeout_at(d.into(), ready)
                .await
                .map_err(|_| ProxyError::from(Kind::UpstreamTimeout))?,
            None => ready.await,
        };
        // A connection that went away under it: as a pooled connection found closed.
        let send = send.map_err(|e| {
            log::debug!("HTTP/2 upstream {endpoint}: {e}");
            ProxyError::from(Kind::UpstreamClosed)
        })?;
        Ok(http2::H2Stream { send, slot, reused })
    }

    fn pooled(&self, stats: ShardStats, key: PoolKey, now: Instant) -> Option<UpstreamConn> {
        let (stream, served, held) = self.pool.checkout(&key, now)?;
        stats.inc(Counter::UpstreamCxReused);
        Some(UpstreamConn {
            stream,
            key,
            served,
            reused: true,
            held,
        })
    }

    /// Gives back a connection no request was sent on.
    pub fn release_unused(&self, conn: UpstreamConn, cluster: &ClusterPlan) {
        let served = conn.served;
        self.checkin(conn, cluster, Instant::now(), served);
    }

    /// Returns a connection after a complete, delimited exchange, unless it has served the
    /// cluster's `max_requests_per_connection`; `since` stamps its idle time.
    pub fn release(&self, conn: UpstreamConn, cluster: &ClusterPlan, since: Instant) {
        let served = conn.served + 1;
        self.checkin(conn, cluster, since, served);
    }

    fn checkin(&self, conn: UpstreamConn, cluster: &ClusterPlan, since: Instant, served: u32) {
        let options = cluster.cluster.protocol.common();
        if options
            .max_requests_per_connection
            .is_some_and(|max| served >= max)
        {
            return;
        }
        self.pool.checkin(
            conn.key,
            conn.stream,
            since,
            served,
            options.idle_timeout,
            conn.held,
        );
        self.breakers.returned(cluster.slot as usize);
    }
}
