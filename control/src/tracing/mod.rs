//! Tracing, control's side: a connection manager's [`Tracer`] (compiled from
//! `HttpConnectionManager.tracing` with `envoy.tracers.opentelemetry`) turns the record of
//! a sampled stream into an OTLP span with Envoy's name, kind and tags, and hands it to the
//! collector's exporter ([`export`]), which batches and sends it. The shards only decide,
//! propagate and record ids (`dataplane/src/http/hcm/trace.rs`); the access-log drain
//! thread calls [`Tracer::span`], and a slow or dead collector costs dropped spans
//! (counted), never a request.

pub mod export;
mod zipkin;

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use zerohop_proto::accesslog::{Record, ResponseFlags};
use zerohop_proto::tracing::SpanIds;

/// Where a tracer's spans go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Collector {
    pub cluster: String,
    /// The cluster's endpoint (`None`: not known yet, spans are dropped and counted).
    pub address: Option<std::net::SocketAddr>,
    /// A report's deadline.
    pub timeout: Duration,
    pub transport: Transport,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// OTLP/gRPC, `TraceService/Export`, with this `:authority`.
    Grpc { authority: String },
    /// OTLP/HTTP (protobuf), POSTed to `path` with this `Host`.
    Http { host: String, path: String },
    /// Zipkin's JSON v2, POSTed to `path` with this `Host`.
    Zipkin { host: String, path: String },
}

/// A Zipkin tracer's own: the spans' `localEndpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zipkin {
    /// The bootstrap's `node.cluster`.
    pub service: String,
    /// The host's address, as Envoy's local address (its first non-loopback IPv4).
    pub local_ip: Option<std::net::Ipv4Addr>,
}

/// The host's first non-loopback IPv4 address.
pub fn local_ipv4() -> Option<std::net::Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|i| Some(i.address?.as_sockaddr_in()?.ip()))
        .map(std::net::Ipv4Addr::from)
        .find(|ip| !ip.is_loopback())
}

/// One of `custom_tags`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomTag {
    pub tag: String,
    pub value: TagValue,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagValue {
    /// `literal`, and `environment` (read when the config was compiled).
    Literal(String),
    /// `request_header`: the header's captured value, else `default` (no tag without one).
    Header { slot: u8, default: Option<String> },
}

/// The record slots of the request headers a span's name and tags read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    pub request_id: u8,
    pub path: u8,
    pub authority: u8,
    pub method: u8,
    pub user_agent: u8,
    pub downstream_cluster: u8,
    pub client_trace_id: u8,
    pub tracestate: u8,
    pub decorator: u8,
    pub forwarded_proto: u8,
    pub original_path: u8,
}

/// A connection manager's tracer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracer {
    /// The resource's `service.name` (OpenTelemetry).
    pub service_name: String,
    /// A Zipkin tracer (B3, JSON v2), else OpenTelemetry.
    pub zipkin: Option<Zipkin>,
    pub collector: Collector,
    pub custom_tags: Vec<CustomTag>,
    /// `max_path_tag_length`: `http.url` is cut there.
    pub max_path: usize,
    /// The bootstrap's `node.id` (the `node_id` tag).
    pub node_id: String,
    pub slots: Slots,
    /// `tracing.opentelemetry.min_flush_spans` / `flush_interval_ms` (runtime).
    pub min_flush_spans: usize,
    pub flush_interval: Duration,
    /// Its exporter thread ([`export::exporter_id`]).
    pub exporter: u64,
}

impl Tracer {
    /// The span of a stream's record, when the record carries a sampled one, in the
    /// tracer's form.
    pub fn span(&self, rec: &Record<'_>) -> Option<export::Item> {
        let ids = rec.span.filter(|s| s.sampled())?;
        let (name, tags) = self.name_and_tags(rec, &ids);
        Some(match &self.zipkin {
            Some(z) => export::Item::Zipkin(zipkin::span(z, rec, &ids, &name, &tags)),
            None => export::Item::Otlp(Box::new(self.otlp(rec, &ids, name, tags))),
        })
    }

    /// The span's name and Envoy's tags (an empty value is left out by Zipkin's tracer).
    fn name_and_tags(&self, rec: &Record<'_>, ids: &SpanIds) -> (String, Vec<(String, String)>) {
        let header = |slot: u8| rec.header(slot).map(|v| String::from_utf8_lossy(v));
        let s = &self.slots;
        let authority = header(s.authority).unwrap_or_default();
        let name = match (ids.egress(), header(s.decorator)) {
            // An ingress span takes the operation the caller's proxy propagated.
            (_, Some(op)) if !op.is_empty() => op.into_owned(),
            _ if !rec.operation.is_empty() => rec.operation.to_owned(),
            // Zipkin's spans are named by the host.
            _ if self.zipkin.is_some() => authority.clone().into_owned(),
            (true, _) => format!("egress {authority}"),
            (false, _) => "ingress".to_owned(),
        };
        let mut tags: Vec<(String, String)> = Vec::with_capacity(24);
        let zipkin = self.zipkin.is_some();
        let mut tag = |k: &str, v: String| {
            if zipkin && v.is_empty() {
                return;
            }
            match tags.iter_mut().find(|(n, _)| n == k) {
                Some(t) => t.1 = v,
                None => tags.push((k.to_owned(), v)),
            }
        };
        tag("node_id", self.node_id.clone());
        tag("zone", String::new());
        if let Some(id) = header(s.request_id) {
            tag("guid:x-request-id", id.into_owned());
        }
        let scheme = header(s.forwarded_proto).unwrap_or_default();
        let path = header(s.original_path)
            .or_else(|| header(s.path))
            .unwrap_or_default();
        let mut url = format!("{scheme}://{authority}{path}");
        if url.len() > self.max_path {
            let mut cut = self.max_path;
            while !url.is_char_boundary(cut) {
                cut -= 1;
            }
            url.truncate(cut);
        }
        tag("http.url", url);
        tag(
            "http.method",
            header(s.method).unwrap_or_default().into_owned(),
        );
        let or_dash =
            |v: Option<std::borrow::Cow<'_, str>>| v.map_or("-".into(), |v| v.into_owned());
        tag("downstream_cluster", or_dash(header(s.downstream_cluster)));
        tag("user_agent", or_dash(header(s.user_agent)));
        tag(
            "http.protocol",
            rec.protocol.as_str().unwrap_or("-").to_owned(),
        );
        if let Some(peer) = rec.downstream_remote {
            tag("peer.address", peer.ip().to_string());
        }
        if let Some(id) = header(s.client_trace_id) {
            tag("guid:x-client-trace-id", id.into_owned());
        }
        tag("request_size", rec.bytes_received.to_string());
        tag("response_size", rec.bytes_sent.to_string());
        tag("component", "proxy".into());
        if rec.upstream_host.is_some() {
            tag("upstream_cluster", rec.upstream_cluster.to_owned());
            tag("upstream_cluster.name", rec.upstream_cluster.to_owned());
        }
        tag("http.status_code", rec.response_code.to_string());
        tag(
            "response_flags",
            ResponseFlags::from_bits(rec.flags).short_names(),
        );
        if rec.response_code == 0 || rec.response_code >= 500 {
            tag("error", "true".into());
        }
        for c in &self.custom_tags {
            match &c.value {
                TagValue::Literal(v) => tag(&c.tag, v.clone()),
                TagValue::Header { slot, default } => {
                    let v = header(*slot).map(|v| v.into_owned());
                    if let Some(v) = v.or_else(|| default.clone()) {
                        tag(&c.tag, v);
                    }
                }
            }
        }
        (name, tags)
    }

    /// The OTLP span.
    fn otlp(
        &self,
        rec: &Record<'_>,
        ids: &SpanIds,
        name: String,
        tags: Vec<(String, String)>,
    ) -> Span {
        let mut trace_id = Vec::with_capacity(16);
        trace_id.extend_from_slice(&ids.trace_hi.to_be_bytes());
        trace_id.extend_from_slice(&ids.trace_lo.to_be_bytes());
        let tracestate = rec.header(self.slots.tracestate).unwrap_or_default();
        Span {
            trace_id,
            span_id: ids.span.to_be_bytes().to_vec(),
            trace_state: String::from_utf8_lossy(tracestate).into_owned(),
            parent_span_id: match ids.parent {
                0 => Vec::new(),
                p => p.to_be_bytes().to_vec(),
            },
            name,
            kind: if ids.egress() {
                SpanKind::Client
            } else {
                SpanKind::Server
            } as i32,
            start_time_unix_nano: rec.start_unix_ns,
            end_time_unix_nano: rec.start_unix_ns + rec.duration_ns,
            attributes: tags
                .into_iter()
                .map(|(key, v)| KeyValue {
                    key,
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(v)),
                    }),
                    ..Default::default()
                })
                .collect(),
            // OpenTelemetry's HTTP conventions, as Envoy's tracer sets them: an error status
            // for a 5xx, and for a 4xx too on a client span.
            status: {
                let code = rec.response_code;
                let error = code == 0 || code >= 500 || (ids.egress() && code >= 400);
                error.then(|| Status {
                    code: status::StatusCode::Error as i32,
                    ..Default::default()
                })
            },
            ..Default::default()
        }
    }
}
