//! The connection manager's access log: at a logged stream's end, its record (what
//! [`StreamInfo`] holds, the connection's addresses, the headers the loggers name) into the
//! shard's ring. Control formats it.

use std::time::Instant;

use zerohop_proto::accesslog::{AccessLogSpec, Protocol, Record, RecordKind, RESPONSE_SLOTS};

use super::Connection;
use crate::accesslog::{capture, Pairs};
use crate::http::info::StreamInfo;
use crate::http::message::{HeaderSource, Request, Version};
use crate::shard::Shard;

/// A request's pseudo-headers (as Envoy's header map holds them), then `rest`.
#[derive(Debug)]
pub struct WithPseudo<'a, H> {
    pub req: &'a Request,
    pub tls: bool,
    pub rest: &'a H,
}

impl<H: HeaderSource> HeaderSource for WithPseudo<'_, H> {
    fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        let req = self.req;
        f(b":method", req.method());
        let path = match &req.query {
            // The path Envoy holds keeps its query.
            Some(q) => &req.raw[req.path.start..q.end],
            None => &req.raw[req.path.clone()],
        };
        f(b":path", if path.is_empty() { b"/" } else { path });
        if !req.host.is_empty() {
            f(b":authority", &req.raw[req.host.clone()]);
        }
        f(b":scheme", if self.tls { b"https" } else { b"http" });
        self.rest.for_each(f);
    }
}

/// A request's headers as received.
struct Received<'a>(&'a Request);

impl HeaderSource for Received<'_> {
    fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        let raw = &self.0.raw;
        for h in &self.0.headers {
            f(&raw[h.name.clone()], &raw[h.value.clone()]);
        }
    }
}

/// Takes the request headers `spec` names from `headers` (the request as forwarded).
pub fn capture_request(
    spec: &AccessLogSpec,
    req: &Request,
    tls: bool,
    headers: &impl HeaderSource,
    info: &mut StreamInfo<'_>,
) {
    if !spec.request_headers.is_empty() {
        let view = WithPseudo {
            req,
            tls,
            rest: headers,
        };
        capture(&spec.request_headers, 0, &view, &mut info.log_headers);
        // The codec writes the length itself; the request still has it.
        if let crate::http::message::Framing::Length(n) = req.framing {
            let mut digits = [0u8; 20];
            let n = super::decimal(n, &mut digits);
            let pair = [(&b"content-length"[..], n)];
            capture(
                &spec.request_headers,
                0,
                &Pairs(&pair),
                &mut info.log_headers,
            );
        }
    }
    info.request_captured = true;
}

/// Takes the response headers `spec` names from a response going out.
pub fn capture_response(
    spec: &AccessLogSpec,
    headers: &impl HeaderSource,
    content_length: Option<&[u8]>,
    info: &mut StreamInfo<'_>,
) {
    if spec.response_headers.is_empty() {
        return;
    }
    capture(
        &spec.response_headers,
        RESPONSE_SLOTS,
        headers,
        &mut info.log_headers,
    );
    if let Some(n) = content_length {
        capture(
            &spec.response_headers,
            RESPONSE_SLOTS,
            &Pairs(&[(&b"content-length"[..], n)]),
            &mut info.log_headers,
        );
    }
}

impl Connection {
    /// The stream is over: its record into the shard's ring.
    pub(super) fn log_stream(
        &self,
        shard: &Shard,
        req: &Request,
        info: &mut StreamInfo<'_>,
        spec: &AccessLogSpec,
    ) {
        if !info.request_captured {
            capture_request(spec, req, self.tls, &Received(req), info);
        }
        let end = Instant::now();
        let start = info.start;
        let since = |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;
        let request_done = match info.request_done {
            Some(t) => Some(since(t)),
            None if req.framing == crate::http::message::Framing::Empty => Some(0),
            None => None,
        };
        let id = match self.id.get() {
            0 => {
                let id = shard.log.connection_id();
                self.id.set(id);
                id
            }
            id => id,
        };
        let flags: u32 = info.flags.bits();
        let rec = Record {
            kind: RecordKind::Http,
            protocol: match req.version {
                Version::Http10 => Protocol::Http10,
                Version::Http11 => Protocol::Http11,
                Version::Http2 => Protocol::Http2,
            },
            response_code: info.response_code.unwrap_or(0),
            flags,
            log_id: spec.id,
            start_unix_ns: shard.log.unix_ns(start),
            duration_ns: since(end),
            request_duration_ns: request_done,
            response_duration_ns: info.upstream_service_time.map(|d| d.as_nanos() as u64),
            bytes_received: info.bytes_received.saturating_sub(info.head_received),
            bytes_sent: info.body_sent,
            connection_id: id,
            attempts: info.attempts,
            downstream_remote: self.facts.peer(),
            downstream_local: self.facts.local(),
            upstream_host: info.upstream_host,
            upstream_local: info.upstream_local,
            route_name: info.route_name.unwrap_or(""),
            upstream_cluster: info.upstream_cluster.unwrap_or(""),
            details: info.response_code_details,
            sni: self.facts.server_name.as_deref().unwrap_or(""),
            failure_reason: info.failure_reason,
            span: info.span,
            operation: info.operation,
            headers: &info.log_headers,
        };
        shard.log.push(&rec);
    }
}
