//! The gRPC stream to the ADS server, over TCP or a Unix socket, with HTTP/2 keepalive.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};

use super::client::{Client, Pending, Request};
use super::wire::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, DELTA_PATH,
    STREAM_PATH,
};
use super::Driver;
use crate::config::{AdsApi, AdsTarget};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// gRPC keepalive: a PING every 30 s, the connection dropped if one goes unanswered 10 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(target: &AdsTarget) -> anyhow::Result<Channel> {
    let endpoint = |uri: String| -> anyhow::Result<Endpoint> {
        Ok(Endpoint::from_shared(uri)?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true))
    };
    Ok(match target {
        AdsTarget::Tcp(addr) => endpoint(format!("http://{addr}"))?.connect().await?,
        AdsTarget::Unix(path) => {
            let path = path.clone();
            endpoint("http://localhost".into())?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(s))
                    }
                }))
                .await?
        }
    })
}

/// One stream, from connect until it fails or the server ends it. `Ok(true)` when the
/// server sent at least one response (the backoff starts again from its base).
pub(super) async fn session(
    target: &AdsTarget,
    api: AdsApi,
    d: &mut Driver,
) -> anyhow::Result<bool> {
    let channel = connect(target).await?;
    match api {
        AdsApi::Sotw => {
            stream::<DiscoveryRequest, DiscoveryResponse>(
                channel,
                STREAM_PATH,
                d,
                |r| match r {
                    Request::Sotw(r) => r,
                    Request::Delta(_) => unreachable!("a SotW client makes SotW requests"),
                },
                Client::sotw,
            )
            .await
        }
        AdsApi::Delta => {
            stream::<DeltaDiscoveryRequest, DeltaDiscoveryResponse>(
                channel,
                DELTA_PATH,
                d,
                |r| match r {
                    Request::Delta(r) => r,
                    Request::Sotw(_) => unreachable!("a delta client makes delta requests"),
                },
                Client::delta,
            )
            .await
        }
    }
}

async fn stream<Q, S>(
    channel: Channel,
    path: &'static str,
    d: &mut Driver,
    unwrap: fn(Request) -> Q,
    apply: fn(&mut Client, S) -> Result<Pending, Box<Request>>,
) -> anyhow::Result<bool>
where
    Q: prost::Message + Send + Sync + 'static,
    S: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let (tx, rx) = mpsc::unbounded_channel::<Q>();
    for r in d.client.connected() {
        let _ = tx.send(unwrap(r));
    }
    let codec = tonic_prost::ProstCodec::<Q, S>::default();
    let response = grpc
        .streaming(
            tonic::Request::new(UnboundedReceiverStream::new(rx)),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?;
    {
        let mut st = d.stats.lock().expect("xds stats");
        st.connected = true;
        st.stream_connects += 1;
    }
    log::info!("ADS stream open ({path})");
    let mut inbound = response.into_inner();
    let mut got = false;
    loop {
        let deadline = d.pending_deadline();
        tokio::select! {
            m = inbound.message() => {
                let Some(resp) = m? else { return Ok(got) };
                got = true;
                let out = match apply(&mut d.client, resp) {
                    Ok(p) => d.settle(p).await,
                    Err(nack) => vec![*nack],
                };
                for r in out {
                    let _ = tx.send(unwrap(r));
                }
            }
            _ = super::sleep_until(deadline) => d.initial_timeout().await,
        }
    }
}
