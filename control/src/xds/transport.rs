//! The gRPC streams to the ADS and SDS servers, over TCP or a Unix socket, with HTTP/2
//! keepalive. A stream's task only moves messages: the loop in [`super`] owns the client.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};

use super::client::{Request, StreamId};
use super::wire::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, DELTA_PATH,
    SDS_DELTA_PATH, SDS_STREAM_PATH, STREAM_PATH,
};
use super::Event;
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

/// A stream's task, for ever: connect, hand the loop every response, and reconnect with
/// backoff when the stream ends.
pub(super) async fn run_stream(
    sid: StreamId,
    target: AdsTarget,
    api: AdsApi,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut failures = 0u32;
    loop {
        let outcome = session(&sid, &target, api, &events).await;
        if events.send(Event::Closed(sid.clone())).is_err() {
            return;
        }
        match &outcome {
            Ok(true) => failures = 0,
            Ok(false) | Err(_) => failures = failures.saturating_add(1),
        }
        match outcome {
            Err(e) => log::warn!(
                "xDS stream {sid:?} to {target:?}: {e}; the last good configuration keeps serving"
            ),
            Ok(_) => {
                log::warn!("xDS stream {sid:?} to {target:?} closed by the server; reconnecting")
            }
        }
        tokio::time::sleep(super::backoff(failures)).await;
    }
}

/// One stream, from connect until it fails or the server ends it. `Ok(true)` when the
/// server sent at least one response (the backoff starts again from its base).
async fn session(
    sid: &StreamId,
    target: &AdsTarget,
    api: AdsApi,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<bool> {
    let channel = connect(target).await?;
    let ads = *sid == StreamId::Ads;
    match api {
        AdsApi::Sotw => {
            let path = if ads { STREAM_PATH } else { SDS_STREAM_PATH };
            stream::<DiscoveryRequest, DiscoveryResponse>(
                channel,
                path,
                sid,
                events,
                |r| match r {
                    Request::Sotw(r) => r,
                    Request::Delta(_) => unreachable!("a SotW client makes SotW requests"),
                },
                Event::Sotw,
            )
            .await
        }
        AdsApi::Delta => {
            let path = if ads { DELTA_PATH } else { SDS_DELTA_PATH };
            stream::<DeltaDiscoveryRequest, DeltaDiscoveryResponse>(
                channel,
                path,
                sid,
                events,
                |r| match r {
                    Request::Delta(r) => r,
                    Request::Sotw(_) => unreachable!("a delta client makes delta requests"),
                },
                Event::Delta,
            )
            .await
        }
    }
}

async fn stream<Q, S>(
    channel: Channel,
    path: &'static str,
    sid: &StreamId,
    events: &mpsc::UnboundedSender<Event>,
    unwrap: fn(Request) -> Q,
    wrap: fn(StreamId, S) -> Event,
) -> anyhow::Result<bool>
where
    Q: prost::Message + Send + Sync + 'static,
    S: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let (tx, rx) = mpsc::unbounded_channel::<Request>();
    // The loop queues the first requests at once; the stream sends them as it opens.
    events.send(Event::Open(sid.clone(), tx))?;
    let codec = tonic_prost::ProstCodec::<Q, S>::default();
    let response = grpc
        .streaming(
            tonic::Request::new(UnboundedReceiverStream::new(rx).map(unwrap)),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?;
    log::info!("xDS stream open ({path})");
    let mut inbound = response.into_inner();
    let mut got = false;
    while let Some(resp) = inbound.message().await? {
        got = true;
        events.send(wrap(sid.clone(), resp))?;
    }
    Ok(got)
}
