//! Exporting spans: one thread per collector (and service name), fed through a bounded
//! queue by the access-log drain, which never waits for it. Spans are batched as Envoy's
//! OpenTelemetry tracer batches them: a report when `min_flush_spans` are pending (5) and
//! on a timer (`flush_interval_ms`, 5 s), sent as an OTLP `ExportTraceServiceRequest` over
//! gRPC or HTTP with the collector's timeout. A collector that stalls holds its own thread
//! only: the queue fills, and further spans are dropped and counted
//! (`zerohop.tracing.spans_dropped`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use super::{Collector, Tracer, Transport};

/// Spans waiting for one exporter, at most (about 10 s of spans at 1,000 a second).
const QUEUE: usize = 16_384;
/// Spans a report takes beyond the `min_flush_spans` that started it, at most.
const MAX_BATCH: usize = 1_024;

/// Envoy's `tracing.opentelemetry.*` counters, and zerohop's drops (admin `/stats`).
#[derive(Debug)]
pub struct Counts {
    pub spans_sent: AtomicU64,
    pub timer_flushed: AtomicU64,
    pub http_reports_sent: AtomicU64,
    pub http_reports_success: AtomicU64,
    pub http_reports_failed: AtomicU64,
    /// Spans not exported: the exporter's queue was full, or the collector's cluster had
    /// no endpoint.
    pub spans_dropped: AtomicU64,
    /// Reports that failed (connection, timeout, or an error status).
    pub reports_failed: AtomicU64,
    /// Envoy's `tracing.zipkin.*`: spans handed to reports, reports the collector accepted
    /// (202) and reports it answered otherwise.
    pub zipkin_spans_sent: AtomicU64,
    pub zipkin_reports_sent: AtomicU64,
    pub zipkin_reports_dropped: AtomicU64,
    pub zipkin_timer_flushed: AtomicU64,
    /// A tracer was configured (the counters are shown from then on, as Envoy's exist
    /// once its tracer does).
    pub configured: std::sync::atomic::AtomicBool,
}

pub static COUNTS: Counts = Counts {
    spans_sent: AtomicU64::new(0),
    timer_flushed: AtomicU64::new(0),
    http_reports_sent: AtomicU64::new(0),
    http_reports_success: AtomicU64::new(0),
    http_reports_failed: AtomicU64::new(0),
    spans_dropped: AtomicU64::new(0),
    reports_failed: AtomicU64::new(0),
    zipkin_spans_sent: AtomicU64::new(0),
    zipkin_reports_sent: AtomicU64::new(0),
    zipkin_reports_dropped: AtomicU64::new(0),
    zipkin_timer_flushed: AtomicU64::new(0),
    configured: std::sync::atomic::AtomicBool::new(false),
};

/// What one exporter thread serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    collector: Collector,
    service_name: String,
    min_flush_spans: usize,
    flush_interval: Duration,
}

impl Key {
    fn of(tracer: &Tracer) -> Key {
        Key {
            collector: tracer.collector.clone(),
            service_name: tracer.service_name.clone(),
            min_flush_spans: tracer.min_flush_spans,
            flush_interval: tracer.flush_interval,
        }
    }
}

/// Which exporter thread serves `tracer`'s spans: a hash of what the thread is made of
/// (tracers with the same collector, service name and batching share one).
pub fn exporter_id(tracer: &Tracer) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    Key::of(tracer).hash(&mut h);
    h.finish()
}

/// A span on its way to the collector, in its tracer's form.
#[derive(Debug)]
pub enum Item {
    Otlp(Box<Span>),
    /// A Zipkin JSON v2 span object.
    Zipkin(String),
}

/// The drain thread's handles to the exporters it started, by [`Tracer::exporter`].
#[derive(Debug, Default)]
pub struct Exporters {
    queues: HashMap<u64, SyncSender<Item>>,
}

impl Exporters {
    /// Queues `span` for `tracer`'s collector (dropped and counted when the queue is full).
    pub fn submit(&mut self, tracer: &Tracer, span: Item) {
        if tracer.collector.address.is_none() {
            COUNTS.spans_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let id = tracer.exporter;
        let queue = match self.queues.get(&id) {
            Some(q) => q,
            None => match start(Key::of(tracer)) {
                Ok(q) => self.queues.entry(id).or_insert(q),
                Err(e) => {
                    log::error!("tracing: cannot start an exporter thread: {e}");
                    COUNTS.spans_dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        match queue.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                COUNTS.spans_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                COUNTS.spans_dropped.fetch_add(1, Ordering::Relaxed);
                self.queues.remove(&id);
            }
        }
    }
}

fn start(key: Key) -> std::io::Result<SyncSender<Item>> {
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("span-export".into())
        .spawn(move || run(key, rx))?;
    Ok(tx)
}

/// The exporter's loop: batch, flush on count and on the timer, for as long as the drain
/// holds the queue.
fn run(key: Key, rx: Receiver<Item>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("tracing: exporter runtime: {e}");
            return;
        }
    };
    let mut sender = Sender {
        key: &key,
        grpc: None,
        http: None,
    };
    let mut batch = Vec::with_capacity(key.min_flush_spans + MAX_BATCH);
    let mut next = Instant::now() + key.flush_interval;
    loop {
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(span) => {
                batch.push(span);
                if batch.len() >= key.min_flush_spans {
                    // What queued while the last report was out goes in this one.
                    batch.extend(rx.try_iter().take(MAX_BATCH));
                    let cap = batch.capacity();
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(cap));
                    rt.block_on(sender.flush(full));
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let timer = match key.collector.transport {
                    Transport::Zipkin { .. } => &COUNTS.zipkin_timer_flushed,
                    _ => &COUNTS.timer_flushed,
                };
                timer.fetch_add(1, Ordering::Relaxed);
                if !batch.is_empty() {
                    rt.block_on(sender.flush(std::mem::take(&mut batch)));
                }
                next = Instant::now() + key.flush_interval;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

struct Sender<'k> {
    key: &'k Key,
    grpc: Option<TraceServiceClient<Channel>>,
    /// The OTLP/HTTP connection, kept for the next report.
    http: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Sender<'_> {
    async fn flush(&mut self, items: Vec<Item>) {
        let n = items.len() as u64;
        let c = &self.key.collector;
        let Some(addr) = c.address else { return };
        if let Transport::Zipkin { host, path } = &c.transport {
            let mut body = Vec::with_capacity(items.len() * 900);
            body.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if let Item::Zipkin(json) = item {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(json.as_bytes());
                }
            }
            body.push(b']');
            COUNTS.zipkin_spans_sent.fetch_add(n, Ordering::Relaxed);
            let sent = tokio::time::timeout(
                c.timeout,
                self.post(addr, host, path, "application/json", body),
            )
            .await;
            let outcome = match sent {
                // Envoy counts a report sent when the collector accepted it (202).
                Ok(Ok(202)) => {
                    COUNTS.zipkin_reports_sent.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(Ok(status)) => {
                    COUNTS
                        .zipkin_reports_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    Err(format!("the collector answered {status}"))
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no answer within {:?}", c.timeout)),
            };
            if let Err(e) = outcome {
                self.http = None;
                COUNTS.reports_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "tracing: a Zipkin report of {n} spans to cluster {:?} ({addr}) failed: {e}",
                    c.cluster
                );
            }
            return;
        }
        let spans: Vec<Span> = items
            .into_iter()
            .filter_map(|i| match i {
                Item::Otlp(s) => Some(*s),
                Item::Zipkin(_) => None,
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(
                                self.key.service_name.clone(),
                            )),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        COUNTS.spans_sent.fetch_add(n, Ordering::Relaxed);
        let outcome = match &c.transport {
            Transport::Http { host, path } => {
                COUNTS.http_reports_sent.fetch_add(1, Ordering::Relaxed);
                let body = request.encode_to_vec();
                let post = self.post(addr, host, path, "application/x-protobuf", body);
                let sent = tokio::time::timeout(c.timeout, post).await;
                if !matches!(sent, Ok(Ok(_))) {
                    self.http = None;
                }
                match sent {
                    Ok(Ok(status)) => {
                        COUNTS.http_reports_success.fetch_add(1, Ordering::Relaxed);
                        if status == 200 {
                            Ok(())
                        } else {
                            Err(format!("the collector answered {status}"))
                        }
                    }
                    Ok(Err(e)) => {
                        COUNTS.http_reports_failed.fetch_add(1, Ordering::Relaxed);
                        Err(e)
                    }
                    Err(_) => {
                        COUNTS.http_reports_failed.fetch_add(1, Ordering::Relaxed);
                        Err(format!("no answer within {:?}", c.timeout))
                    }
                }
            }
            Transport::Zipkin { .. } => unreachable!("sent above"),
            Transport::Grpc { authority } => {
                let sent =
                    tokio::time::timeout(c.timeout, self.grpc_export(addr, authority, request))
                        .await;
                match sent {
                    Ok(r) => r,
                    Err(_) => {
                        self.grpc = None;
                        Err(format!("no answer within {:?}", c.timeout))
                    }
                }
            }
        };
        if let Err(e) = outcome {
            COUNTS.reports_failed.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "tracing: a report of {n} spans to cluster {:?} ({addr}) failed: {e}",
                c.cluster
            );
        }
    }

    async fn grpc_export(
        &mut self,
        addr: std::net::SocketAddr,
        authority: &str,
        request: ExportTraceServiceRequest,
    ) -> Result<(), String> {
        if self.grpc.is_none() {
            let origin: tonic::transport::Uri = format!("http://{authority}")
                .parse()
                .map_err(|e| format!("authority {authority:?}: {e}"))?;
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .origin(origin)
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            self.grpc = Some(TraceServiceClient::new(channel));
        }
        let client = self.grpc.as_mut().expect("connected above");
        match client.export(request).await {
            Ok(_) => Ok(()),
            Err(status) => {
                // A broken connection is made again for the next report.
                self.grpc = None;
                Err(status.to_string())
            }
        }
    }
}

impl Sender<'_> {
    /// One OTLP/HTTP report, on the kept connection (made again when it is gone); the
    /// answer's status.
    async fn post(
        &mut self,
        addr: std::net::SocketAddr,
        host: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<u16, String> {
        if self.http.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            self.http = Some(send);
        }
        let send = self.http.as_mut().expect("connected above");
        send.ready().await.map_err(|e| e.to_string())?;
        let req = hyper::Request::post(path)
            .header("host", host)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        // Read the answer whole so the connection can take the next report.
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}
