//! The connection manager's header policy, the same for every codec: hop-by-hop headers
//! dropped both ways (RFC 9110 section 7.6.1, and any header the `Connection` header names),
//! `x-forwarded-for` / `x-forwarded-proto` and `x-request-id` as Envoy sets them, and the
//! route's header edits. Each is a [`HeaderSource`] a codec writes straight out.

use std::borrow::Cow;

use zerohop_proto::{HeaderEdits, HttpManager, LocalNode, ServerHeader};

use crate::http::filter::compressor::{Coding, Etag};
use crate::http::message::{has_token, HeaderSource, Request, Response};
use crate::route::{apply_edits, HeaderList};
use crate::upstream::lb::Rng;

/// Headers that describe one hop (RFC 9110 section 7.6.1), never forwarded as such.
pub const HOP_BY_HOP: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// Envoy's own request headers a client may not set: removed from every request that is
/// not internal (under Envoy's default `internal_address_config`, every request), as
/// Envoy's `cleanInternalHeaders` does; `x-envoy-internal` is removed too (Envoy sets it only
/// on internal requests), and `x-forwarded-client-cert` (Envoy's default
/// `forward_client_cert_details: SANITIZE`; zerohop has no client certificates to forward).
const INTERNAL_ONLY: &[&[u8]] = &[
    b"x-envoy-internal",
    b"x-envoy-retriable-status-codes",
    b"x-envoy-retriable-header-names",
    b"x-envoy-retry-on",
    b"x-envoy-retry-grpc-on",
    b"x-envoy-max-retries",
    b"x-envoy-upstream-alt-stat-name",
    b"x-envoy-upstream-rq-timeout-ms",
    b"x-envoy-upstream-rq-per-try-timeout-ms",
    b"x-envoy-upstream-rq-timeout-alt-response",
    b"x-envoy-expected-rq-timeout-ms",
    b"x-envoy-force-trace",
    b"x-envoy-ip-tags",
    b"x-envoy-original-url",
    b"x-envoy-hedge-on-per-try-timeout",
];

/// Removed too from an edge request (`use_remote_address`), as Envoy's.
const EDGE_ONLY: &[&[u8]] = &[
    b"x-envoy-decorator-operation",
    b"x-envoy-downstream-service-cluster",
    b"x-envoy-downstream-service-node",
];

/// Whether a client's header `n` is one Envoy removes before the request goes on.
fn sanitized(n: &[u8], edge: bool) -> bool {
    match n.strip_prefix(b"x-") {
        Some(rest) if rest.starts_with(b"envoy-") => {
            INTERNAL_ONLY.contains(&n) || (edge && EDGE_ONLY.contains(&n))
        }
        Some(b"forwarded-client-cert") => true,
        _ => false,
    }
}

/// The request's headers as they go upstream, before route edits, in order: the client's
/// end-to-end ones (hop-by-hop headers and any named in `Connection` dropped; an upgrade
/// request keeps its `Connection` header and what it names, as Envoy's), then what
/// the connection manager adds. `x-forwarded-for` / `-proto` as Envoy: with
/// `use_remote_address` the peer is appended to the first `x-forwarded-for` (or added) and
/// the scheme set; without, they pass through, the scheme added if absent. With
/// `generate_request_id`, a request the client sent without `x-request-id` gets one (made
/// only then, from the shard's generator).
#[derive(Debug)]
pub struct RequestHeaders<'r> {
    pub req: &'r Request,
    /// The downstream peer for `x-forwarded-for` (only with `use_remote_address`, and not
    /// with `skip_xff_append`).
    pub peer: Option<&'r str>,
    pub use_remote_address: bool,
    /// The generator for a missing `x-request-id` (`None`: do not add one).
    pub request_id: Option<&'r Rng>,
    /// The route's edits, most specific level first, when any edits requests.
    pub edits: Option<&'r [HeaderEdits]>,
    /// The router's `suppress_envoy_headers` (read by the router, which adds its own).
    pub suppress_envoy_headers: bool,
    /// `x-envoy-external-address` (with `use_remote_address`): the client's address as the
    /// connection manager trusts it.
    pub external_address: Option<&'r str>,
    /// A client's `x-request-id` is replaced (`use_remote_address` without
    /// `preserve_external_request_id`).
    pub replace_request_id: bool,
    /// `accept-encoding` is not forwarded (the compressor's `remove_accept_encoding_header`).
    pub drop_accept_encoding: bool,
    /// `add_user_agent`: `x-envoy-downstream-service-cluster` / `-node` set, and
    /// `user-agent` when the client sent none (or an empty one), as Envoy's.
    pub user_agent: Option<&'r LocalNode>,
    /// The client connection is TLS: the scheme the connection manager sets is `https`.
    pub tls: bool,
    /// Tracing: the `x-request-id` (when tracing made or marked it) and the context the
    /// request carries on (`traceparent`, in place of the client's).
    pub trace: Option<super::trace::Trace>,
    /// An egress span's decorator operation, propagated in `x-envoy-decorator-operation`.
    pub operation: Option<&'r str>,
    /// An ingress span took the caller's `x-envoy-decorator-operation` (not forwarded).
    pub drop_operation: bool,
    id: std::cell::OnceCell<[u8; 36]>,
}

impl<'r> RequestHeaders<'r> {
    pub fn new(
        req: &'r Request,
        peer: Option<&'r str>,
        use_remote_address: bool,
        request_id: Option<&'r Rng>,
        edits: Option<&'r [HeaderEdits]>,
    ) -> Self {
        RequestHeaders {
            req,
            peer,
            use_remote_address,
            request_id,
            edits,
            suppress_envoy_headers: false,
            external_address: None,
            replace_request_id: false,
            drop_accept_encoding: false,
            user_agent: None,
            tls: false,
            trace: None,
            operation: None,
            drop_operation: false,
            id: std::cell::OnceCell::new(),
        }
    }
}

impl RequestHeaders<'_> {
    fn each<'a>(&'a self, mut emit: impl FnMut(&'a [u8], Cow<'a, [u8]>)) {
        let req = self.req;
        let raw = &req.raw[..];
        let (mut xff_seen, mut xfp_seen, mut id_seen) = (false, false, false);
        let mut ua_seen = false;
        let trace_id = self.trace.as_ref().and_then(|t| t.request_id.as_ref());
        // The context headers the span is written in replace the client's.
        let context = self
            .trace
            .as_ref()
            .filter(|t| t.span.is_some())
            .map(|t| t.format);
        for h in &req.headers {
            let n = &raw[h.name.clone()];
            let v = &raw[h.value.clone()];
            // An upgrade request keeps its `Connection` header and the headers it names, as
            // Envoy forwards them (`upgrade` itself is written by the codec).
            let upgrade = req.upgrade.is_some();
            // `te` goes on as `te: trailers` when it names trailers (gRPC needs it), as
            // Envoy sanitizes it; otherwise it is dropped with the other hop-by-hop headers.
            if n == b"te" {
                if crate::http::message::tokens(v).any(|t| t.eq_ignore_ascii_case(b"trailers")) {
                    emit(n, Cow::Borrowed(b"trailers"));
                }
                continue;
            }
            let hop = (HOP_BY_HOP.contains(&n) && !(upgrade && n == b"connection"))
                || sanitized(n, self.use_remote_address)
                || (self.external_address.is_some() && n == b"x-envoy-external-address")
                || ((self.replace_request_id || trace_id.is_some()) && n == b"x-request-id")
                || context.is_some_and(|f| f.writes(n))
                || ((self.operation.is_some() || self.drop_operation)
                    && n == b"x-envoy-decorator-operation")
                || (self.drop_accept_encoding && n == b"accept-encoding")
                || self.user_agent.is_some_and(|u| {
                    n == b"x-envoy-downstream-service-cluster"
                        || (n == b"x-envoy-downstream-service-node" && !u.id.is_empty())
                        || (n == b"user-agent" && v.is_empty())
                })
                || n == b"content-length"
                || (req.expect_continue && n == b"expect")
                || (!upgrade && !req.connection.is_empty() && req.named(n));
            if hop {
                continue;
            }
            match n {
                b"x-forwarded-for" if !xff_seen => {
                    xff_seen = true;
                    if let Some(ip) = self.peer {
                        // Envoy's separator.
                        let mut joined = Vec::with_capacity(v.len() + 1 + ip.len());
                        joined.extend_from_slice(v);
                        joined.push(b',');
                        joined.extend_from_slice(ip.as_bytes());
                        emit(n, Cow::Owned(joined));
                        continue;
                    }
                }
                b"x-forwarded-proto" => {
                    xfp_seen = true;
                    if self.use_remote_address {
                        continue;
                    }
                }
                b"x-request-id" => id_seen = true,
                b"user-agent" => ua_seen = true,
                _ => {}
            }
            emit(n, Cow::Borrowed(v));
        }
        if let (Some(ip), false) = (self.peer, xff_seen) {
            emit(b"x-forwarded-for", Cow::Borrowed(ip.as_bytes()));
        }
        // Every request is external under Envoy's default `internal_address_config`.
        if let Some(ip) = self.external_address {
            emit(b"x-envoy-external-address", Cow::Borrowed(ip.as_bytes()));
        }
        if self.use_remote_address || !xfp_seen {
            let scheme: &[u8] = if self.tls { b"https" } else { b"http" };
            emit(b"x-forwarded-proto", Cow::Borrowed(scheme));
        }
        if let Some(u) = self.user_agent {
            let cluster = Cow::Borrowed(u.cluster.as_bytes());
            emit(b"x-envoy-downstream-service-cluster", cluster.clone());
            if !ua_seen {
                emit(b"user-agent", cluster);
            }
            if !u.id.is_empty() {
                emit(
                    b"x-envoy-downstream-service-node",
                    Cow::Borrowed(u.id.as_bytes()),
                );
            }
        }
        if let Some(id) = trace_id {
            emit(b"x-request-id", Cow::Borrowed(id));
        } else if let (Some(rng), false) = (self.request_id, id_seen) {
            let id = self.id.get_or_init(|| {
                let mut id = [0u8; 36];
                write_request_id(rng, &mut id);
                id
            });
            emit(b"x-request-id", Cow::Borrowed(id));
        }
        if let Some(op) = self.operation {
            emit(b"x-envoy-decorator-operation", Cow::Borrowed(op.as_bytes()));
        }
    }

    /// The span's context, as Envoy's upstream request injects it after every other
    /// header ([`super::trace::Trace::context`]). Nothing without a span.
    pub fn trace_context(&self, f: impl FnMut(&[u8], &[u8])) {
        if let Some(t) = &self.trace {
            let state = self.req.header("tracestate").unwrap_or("");
            t.context(state.as_bytes(), f);
        }
    }
}

/// A request's headers as they went upstream with the span's context (what Envoy's
/// access log and tracer read: the header map the router injected into).
#[derive(Debug)]
pub struct WithContext<'h, 'r>(pub &'h RequestHeaders<'r>);

impl HeaderSource for WithContext<'_, '_> {
    fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        self.0.for_each(&mut f);
        self.0.trace_context(f);
    }
}

impl HeaderSource for RequestHeaders<'_> {
    fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        match self.edits {
            // Nothing to edit: straight out, no list.
            None => self.each(|n, v| f(n, &v)),
            Some(edits) => {
                let mut list: HeaderList = Vec::with_capacity(self.req.headers.len() + 3);
                self.each(|n, v| list.push((n, v)));
                apply_edits(&mut list, edits, false);
                for (n, v) in &list {
                    f(n, v);
                }
            }
        }
    }
}

/// A response's headers as they go downstream: hop-by-hop ones dropped (but `upgrade` kept
/// when switching protocols), `content-length` left to the codec's framing, `server` as the
/// connection manager's `server_header_transformation` says, and the route's response edits
/// when it has any.
#[derive(Debug)]
pub struct ResponseHeaders<'r> {
    pub resp: &'r Response,
    /// The buffer the response head was received into.
    pub raw: &'r [u8],
    pub upgrade: bool,
    pub edits: Option<&'r [HeaderEdits]>,
    pub server: &'r HttpManager,
    /// `date`, set over the upstream's as Envoy's connection manager sets it.
    pub date: &'r [u8],
    /// `x-envoy-upstream-service-time`, in ms (`None` when suppressed).
    pub service_time: Option<&'r [u8]>,
    /// `x-envoy-attempt-count` (the virtual host's `include_attempt_count_in_response`).
    pub attempts: Option<&'r [u8]>,
    /// What the compressor filters do to the head (`content-encoding`, `vary`, `etag`).
    pub coding: Option<&'r Coding<'r>>,
    /// Headers the filters set (the CORS filter's), replacing the upstream's of those names.
    pub filter_headers: &'r [(&'static str, String)],
}

impl ResponseHeaders<'_> {
    /// The upstream's headers that go on (its `server` too unless overwritten); returns
    /// whether a `server` header was among them.
    fn each<'a>(&'a self, mut emit: impl FnMut(&'a [u8], Cow<'a, [u8]>)) -> bool {
        let (resp, raw) = (self.resp, self.raw);
        let mut vary_seen = false;
        let overwrite = self.server.server_header == ServerHeader::Overwrite;
        let mut server_kept = false;
        for h in &resp.headers {
            let n = &raw[h.name.clone()];
            if n == b"server" {
                if overwrite {
                    continue;
                }
                server_kept = true;
            }
            if n == b"date"
                || (!self.filter_headers.is_empty()
                    && self.filter_headers.iter().any(|(f, _)| f.as_bytes() == n))
                || (self.service_time.is_some() && n == b"x-envoy-upstream-service-time")
                || (self.attempts.is_some() && n == b"x-envoy-attempt-count")
            {
                continue;
            }
            let keep = n != b"content-length"
                && ((self.upgrade && n == b"upgrade")
                    || (!HOP_BY_HOP.contains(&n)
                        && (resp.connection.is_empty() || !has_token(raw, &resp.connection, n))));
            if !keep {
                continue;
            }
            let v = &raw[h.value.clone()];
            match (self.coding, n) {
                (Some(c), b"vary") if c.vary => {
                    vary_seen = true;
                    let listed = v
                        .split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"accept-encoding"));
                    if !listed {
                        let mut joined = v.to_vec();
                        joined.extend_from_slice(b", Accept-Encoding");
                        emit(n, Cow::Owned(joined));
                        continue;
                    }
                }
                (Some(c), b"etag") if c.compress.is_some() => match c.etag {
                    Etag::Remove => continue,
                    Etag::Weaken => {
                        let mut weak = b"W/".to_vec();
                        weak.extend_from_slice(v);
                        emit(n, Cow::Owned(weak));
                        continue;
                    }
                    Etag::Keep => {}
                },
                _ => {}
            }
            emit(n, Cow::Borrowed(v));
        }
        if let Some(c) = self.coding {
            if c.vary && !vary_seen {
                emit(b"vary", Cow::Borrowed(b"Accept-Encoding"));
            }
            if let Some(cfg) = c.compress {
                emit(
                    b"content-encoding",
                    Cow::Borrowed(cfg.library.encoding().as_bytes()),
                );
            }
        }
        for (n, v) in self.filter_headers {
            emit(n.as_bytes(), Cow::Borrowed(v.as_bytes()));
        }
        emit(b"date", Cow::Borrowed(self.date));
        if let Some(t) = self.service_time {
            emit(b"x-envoy-upstream-service-time", Cow::Borrowed(t));
        }
        if let Some(n) = self.attempts {
            emit(b"x-envoy-attempt-count", Cow::Borrowed(n));
        }
        server_kept
    }

    /// `server: server_name`, last, as Envoy's connection manager sets it after the route's
    /// edits: always under `OVERWRITE`, when none is left under `APPEND_IF_ABSENT`.
    fn server(&self, present: bool, mut f: impl FnMut(&[u8], &[u8])) {
        let add = match self.server.server_header {
            ServerHeader::Overwrite => true,
            ServerHeader::AppendIfAbsent => !present,
            ServerHeader::PassThrough => false,
        };
        if add {
            f(b"server", self.server.server_name.as_bytes());
        }
    }
}

impl HeaderSource for ResponseHeaders<'_> {
    fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        match self.edits {
            None => {
                let present = self.each(|n, v| f(n, &v));
                self.server(present, f);
            }
            Some(edits) => {
                let mut list: HeaderList = Vec::with_capacity(self.resp.headers.len() + 2);
                self.each(|n, v| list.push((n, v)));
                apply_edits(&mut list, edits, true);
                if self.server.server_header == ServerHeader::Overwrite {
                    list.retain(|(n, _)| *n != b"server");
                }
                let present = list.iter().any(|(n, _)| *n == b"server");
                for (n, v) in &list {
                    f(n, v);
                }
                self.server(present, f);
            }
        }
    }
}

/// The headers of a response zerohop makes itself, beside its own: `date`, and `server`
/// unless `PASS_THROUGH`.
pub fn local_headers<'m>(
    m: &'m HttpManager,
    date: &[u8; 29],
) -> Vec<(&'static [u8], Cow<'m, [u8]>)> {
    let mut out = vec![(&b"date"[..], Cow::Owned(date.to_vec()))];
    if m.server_header != ServerHeader::PassThrough {
        out.push((&b"server"[..], Cow::Borrowed(m.server_name.as_bytes())));
    }
    out
}

/// The host's address for `x-forwarded-for` in place of a loopback peer, as Envoy's
/// local_info has it (see `net::sys::local_address`), looked up once.
pub fn local_address() -> std::net::IpAddr {
    static LOCAL: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();
    *LOCAL.get_or_init(crate::net::sys::local_address)
}

/// A random (version 4) UUID from the shard's generator, in its text form.
pub fn write_request_id(rng: &Rng, out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    /// Where each byte's two hex digits go, around the dashes of 8-4-4-4-12.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0xc << 60)) | (0x8 << 60); // variant 10
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    for (byte, at) in bytes.into_iter().zip(AT) {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
    }
    for dash in [8, 13, 18, 23] {
        out[dash] = b'-';
    }
}

#[cfg(test)]
pub(crate) mod tests;
