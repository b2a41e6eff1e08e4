//! Connecting to an endpoint, within the cluster's `connect_timeout`: TCP, then the TLS
//! handshake when the cluster's transport socket is TLS (as Envoy's connect timeout, it
//! covers both).

use std::net::SocketAddr;
use std::time::Instant;

use monoio::net::TcpStream;
use zerohop_proto::stats::{ClusterHist, ClusterStat, Counter};
use zerohop_proto::Cluster;

use crate::config::ClusterPlan;
use crate::error::{Kind, ProxyError};
use crate::net::sys;
use crate::net::transport::Sock;
use crate::stats::ShardStats;

/// The host of an authority (`host`, `host:port`, `[v6]:port`), as Envoy parses it for
/// `auto_sni`.
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The pool key's transport: 0 for plain TCP, else the TLS context's id, mixed with the
/// request's server name when `auto_sni` / `auto_san_validation` make connections differ
/// by it (a connection made for one name never serves another, as Envoy's pools).
pub fn transport_id(plan: &ClusterPlan, server_name: Option<&str>) -> u64 {
    let Some(tls) = &plan.tls else { return 0 };
    match server_name {
        None => tls.id,
        Some(name) => {
            use std::hash::{Hash, Hasher};
            let mut h = crate::fasthash::FastHasher::default();
            tls.id.hash(&mut h);
            name.hash(&mut h);
            h.finish() | 1
        }
    }
}

/// Connects to `addr` of `plan`'s cluster with its transport socket. `server_name` is the
/// request's host under `auto_sni` / `auto_san_validation`.
pub async fn connect(
    stats: ShardStats,
    plan: &ClusterPlan,
    addr: SocketAddr,
    server_name: Option<&str>,
) -> Result<Sock, ProxyError> {
    let started = Instant::now();
    let tcp = connect_tcp(stats, &plan.cluster, addr).await?;
    let Some(tls) = &plan.tls else {
        return Ok(Sock::Plain(tcp));
    };
    let auto = plan.cluster.protocol.common().auto_sni.as_ref();
    // `auto_sni`: the request's host, unless it is an IP address (Envoy sends none then).
    let auto_name = server_name
        .filter(|_| auto.is_some_and(|a| a.sni))
        .filter(|h| h.parse::<std::net::IpAddr>().is_err())
        .and_then(|h| rustls_pki_types::ServerName::try_from(h.to_owned()).ok());
    let name = auto_name
        .or_else(|| tls.sni.clone())
        .unwrap_or_else(|| rustls_pki_types::ServerName::IpAddress(addr.ip().into()));
    let conn = rustls::ClientConnection::new(tls.config.clone(), name).map_err(|e| {
        log::warn!("TLS to {addr} ({}): {e}", plan.cluster.name);
        ProxyError::new(Kind::ConnectFailed)
    })?;
    let deadline = started + plan.cluster.connect_timeout;
    let mut done = crate::tls::TlsStream::handshake(tcp, conn, Some(deadline)).await;
    // `auto_san_validation`: the certificate must be valid for the request's host.
    if let (Ok(s), Some(host), true) = (&done, server_name, auto.is_some_and(|a| a.san_validation))
    {
        if !s.peer_valid_for(host) {
            done = Err(crate::tls::HandshakeError::Tls(
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ),
            ));
        }
    }
    crate::tls::count_handshake(stats, true, zerohop_proto::StatScope::NONE, done.as_ref());
    match done {
        Ok(s) => Ok(Sock::Tls(Box::new(s))),
        Err(e) => {
            log::debug!(
                "TLS handshake with {addr} ({}) failed: {e}",
                plan.cluster.name
            );
            Err(ProxyError::new(Kind::ConnectFailed))
        }
    }
}

/// Connects to `addr`, counting the outcome (`upstream_cx_total`, `_connect_fail`,
/// `_connect_timeout`). The stream comes back non-blocking with TCP_NODELAY: connected
/// through the ring it would be blocking, and splice needs O_NONBLOCK on both ends. A
/// failure keeps refused, timed out and other causes apart.
async fn connect_tcp(
    stats: ShardStats,
    cluster: &Cluster,
    addr: SocketAddr,
) -> Result<TcpStream, ProxyError> {
    let connect = TcpStream::connect_addr(addr);
    let started = Instant::now();
    // Envoy counts a cluster's connection when it is made, before it connects.
    let scope = cluster.stats;
    stats.count(scope, ClusterStat::UpstreamCxTotal);
    let (counter, kind, why) = match monoio::time::timeout(cluster.connect_timeout, connect).await {
        Ok(Ok(s)) => {
            stats.inc(Counter::UpstreamCxTotal);
            stats.record_ms(
                scope,
                ClusterHist::UpstreamCxConnectMs,
                crate::stats::ms_since(started),
            );
            let _ = s.set_nodelay(true);
            match sys::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&s)) {
                Ok(()) => return Ok(s),
                Err(e) => (
                    Counter::UpstreamCxConnectFail,
                    Kind::ConnectFailed,
                    format!("O_NONBLOCK: {e}"),
                ),
            }
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => (
            Counter::UpstreamCxConnectFail,
            Kind::ConnectRefused,
            e.to_string(),
        ),
        Ok(Err(e)) => (
            Counter::UpstreamCxConnectFail,
            Kind::ConnectFailed,
            e.to_string(),
        ),
        Err(_) => (
            Counter::UpstreamCxConnectTimeout,
            Kind::ConnectTimeout,
            "timed out".to_owned(),
        ),
    };
    stats.inc(counter);
    stats.count(
        scope,
        match counter {
            Counter::UpstreamCxConnectTimeout => ClusterStat::UpstreamCxConnectTimeout,
            _ => ClusterStat::UpstreamCxConnectFail,
        },
    );
    log::debug!("connect to {addr} ({}): {why}", cluster.name);
    Err(ProxyError::new(kind))
}
