//! Connecting to an endpoint, within the cluster's `connect_timeout`.

use std::net::SocketAddr;

use monoio::net::TcpStream;
use zerohop_proto::stats::Counter;
use zerohop_proto::Cluster;

use crate::error::{Kind, ProxyError};
use crate::net::sys;
use crate::stats::ShardStats;

/// Connects to `addr`, counting the outcome (`upstream_cx_total`, `_connect_fail`,
/// `_connect_timeout`). The stream comes back non-blocking with TCP_NODELAY: connected
/// through the ring it would be blocking, and splice needs O_NONBLOCK on both ends. A
/// failure keeps refused, timed out and other causes apart.
pub async fn connect(
    stats: ShardStats,
    cluster: &Cluster,
    addr: SocketAddr,
) -> Result<TcpStream, ProxyError> {
    let connect = TcpStream::connect_addr(addr);
    let (counter, kind, why) = match monoio::time::timeout(cluster.connect_timeout, connect).await {
        Ok(Ok(s)) => {
            stats.inc(Counter::UpstreamCxTotal);
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
    log::debug!("connect to {addr} ({}): {why}", cluster.name);
    Err(ProxyError::new(kind))
}
