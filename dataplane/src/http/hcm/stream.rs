//! One request, from its parsed head to the last byte of its response.
//!
//! The life of a stream, in the order of the code:
//!
//! 1. route it (`route::RouteTable`), so the filters see the route;
//! 2. the filter chain's request-headers phase (a local reply, or a request to buffer the
//!    body); `100 Continue` if the client waits for it and the body will be read; the body
//!    phase when a filter asked for the body;
//! 3. the router: a local answer for a direct response, a redirect or no route, else
//!    [`router::forward`] to an upstream, which returns the response head;
//! 4. the response-headers phase, the response head out through the codec, the body relayed,
//!    the upstream connection returned to the pool after a complete exchange.
//!
//! Errors are [`ProxyError`]s; one that occurs before anything was sent downstream becomes
//! its local reply. Everything it records about the request goes into its [`StreamInfo`].

use std::borrow::Cow;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use monoio::time::Sleep;
use zerohop_proto::stats::{Counter, HttpStat};
use zerohop_proto::Redirect;

use super::path::Verdict;
use crate::config::{Generation, HttpPlan};
use crate::error::{Fault, Kind, ProxyError};
use crate::http::body::{self, BodyEnd, StreamedBody};
use crate::http::downstream::{ConnectionAfter, Downstream, LocalBody, ResponseHead, Wait};
use crate::http::filter::compressor::{Coding, Encoder};
use crate::http::filter::{self, Chain, Decisions, Status};
use crate::http::hcm::headers::{RequestHeaders, ResponseHeaders};
use crate::http::info::{ResponseFlags, StreamInfo};
use crate::http::message::{Framing, Request, Response, Version};
use crate::route::{apply_edits, Action, HeaderList, Request as RouteRequest, Route};
use crate::router::{self, Exchange, Outgoing, RequestBody};
use crate::shard::stop::Stop;
use crate::shard::Shard;

/// Bodies up to this size are read whole and sent with their head.
const SMALL_BODY: u64 = 64 * 1024;

/// What a stream works with: its shard, its generation's connection manager, and its
/// downstream side (the codec it speaks through, behind [`Downstream`]).
pub struct Stream<'a, D> {
    /// Counted (`Rc`): a mirrored request's task takes its own reference.
    pub shard: &'a Rc<Shard>,
    pub gen: &'a Generation,
    /// The generation's holder (a mirrored request's task keeps its cluster alive).
    pub cfg: &'a Rc<crate::shard::config::ShardConfig>,
    pub http: &'a HttpPlan,
    pub down: &'a mut D,
    /// The connection's timer: the route timeout runs on it while the response head is read.
    pub timer: Pin<&'a mut Sleep>,
    /// `x-forwarded-for`'s entry for this client.
    pub peer_ip: Option<&'a str>,
    /// The client's own address.
    pub peer: Option<std::net::IpAddr>,
    /// The client connection is TLS (`x-forwarded-proto: https`).
    pub tls: bool,
    /// What the connection's listener filters and handshake learnt (RBAC reads it).
    pub facts: &'a crate::conn::Facts,
    /// Fired when the listener drains: answers then carry `connection: close`.
    pub draining: &'a Stop,
    /// The request as received: a local reply to a gRPC request (`content-type:
    /// application/grpc...`) is gRPC-shaped, as Envoy's, and the content type is looked up
    /// only when there is a local reply to shape.
    pub request: &'a Request,
    /// Tracing: the stream's decision and span context, once routed.
    pub trace: Option<super::trace::Trace>,
}

impl<D> std::fmt::Debug for Stream<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("generation", &self.gen.number)
            .finish_non_exhaustive()
    }
}

impl<'a, D: Downstream> Stream<'a, D> {
    /// Counts `s` in the connection manager's `http.<stat_prefix>.*`.
    fn hstat(&self, s: HttpStat) {
        self.shard.stats.count(self.http.manager.stats, s);
    }

    /// Serves `req`, recording what happened in `info`; returns whether the connection
    /// stays open for the next request.
    pub async fn serve(mut self, req: &Request, info: &mut StreamInfo<'a>) -> bool {
        self.shard.stats.inc(Counter::DownstreamRqTotal);
        let http: &'a HttpPlan = self.http;
        // The path as the connection manager normalizes it, before anything reads it.
        let normalized;
        let req = match super::path::normalize(req.path(), &http.manager.path) {
            Verdict::Keep => req,
            Verdict::Rewrite(p) => {
                normalized = req.with_path(&p);
                &normalized
            }
            Verdict::Reject => {
                // Envoy closes the connection after it.
                self.shard
                    .stats
                    .inc(Counter::DownstreamRqFailedPathNormalization);
                self.hstat(HttpStat::DownstreamRqFailedPathNormalization);
                info.response_code_details = "path_normalization_failed";
                return self.local(400, "", &[], true, info).await;
            }
            Verdict::Redirect(p) => {
                self.shard
                    .stats
                    .inc(Counter::DownstreamRqRedirectedWithNormalizedPath);
                self.hstat(HttpStat::DownstreamRqRedirectedWithNormalizedPath);
                info.response_code_details = "path_normalization_failed";
                let location = match req.query() {
                    Some(q) => format!("{p}?{q}"),
                    None => p,
                };
                let extra = [(&b"location"[..], Cow::Owned(location.into_bytes()))];
                let close = req.close || req.framing != Framing::Empty;
                return self.local(307, "", &extra, close, info).await;
            }
        };
        let route = {
            let headers = |n: &str| req.header(n);
            let r = RouteRequest {
                host: req.host(),
                path: req.path(),
                query: req.query(),
                header: &headers,
                random: match http.routes.draws() {
                    true => self.shard.rng.next_u64(),
                    false => 0,
                },
            };
            http.routes.route(&r).map(|(_, route)| route)
        };
        info.route_name = route.map(|r| r.name.as_str());
        if let Some(spec) = &http.manager.tracing {
            self.trace = Some(self.start_trace(spec, req, route, info));
        }
        // An upgrade neither the route nor the connection manager enables: 403, before any
        // filter runs (Envoy refuses it when it builds the stream's filter chain).
        if let Some(token) = req.upgrade.as_ref().map(|r| &req.raw[r.clone()]) {
            let per_route = match route.map(|r| &r.action) {
                Some(Action::Forward { forward, .. }) => &forward.upgrades[..],
                _ => &[],
            };
            if !super::upgrade_allowed(token, per_route, &http.manager.upgrades) {
                // Envoy closes the connection after it.
                self.shard.stats.inc(Counter::DownstreamRqWsOnNonWsRoute);
                self.hstat(HttpStat::DownstreamRqWsOnNonWsRoute);
                info.response_code_details = "upgrade_failed";
                return self.local(403, "", &[], true, info).await;
            }
        }
        // A local answer to a request with a body closes the connection: the body is not read.
        let close_after_local = req.close || req.framing != Framing::Empty || self.draining.fired();

        // The filters' request-headers phase.
        let chain = Chain::new(&http.manager.http_filters);
        let hcm = &http.manager;
        // What access control reads; the trusted client address is worked out only if a
        // policy asks for it (no header lookup per request otherwise).
        let ctx = filter::Ctx {
            req,
            route,
            stats: self.shard.stats,
            rng: &self.shard.rng,
            subject: crate::rbac::Subject {
                peer: self.peer,
                xff: Some((hcm.use_remote_address, hcm.xff_num_trusted_hops)),
                local: self.facts.local(),
                sni: self.facts.server_name.as_deref(),
                peer_names: self.facts.peer_names.as_deref(),
                request: Some(req),
            },
        };
        let mut decisions = Decisions::default();
        if let Status::Reply(e) = chain.on_request_headers(&ctx, &mut decisions) {
            return self.fail(e, info).await;
        }
        // The CORS filter: a preflight answered here; else the headers the response gets.
        let cors = decisions.cors.take();
        if let Some(cors) = cors.as_ref().filter(|c| c.preflight) {
            info.response_code_details = "cors_response";
            let extra = header_list(&cors.headers);
            return self.local(200, "", &extra, close_after_local, info).await;
        }
        if decisions.csrf_denied {
            info.response_code_details = "csrf_origin_mismatch";
            return self
                .local(403, "Invalid origin", &[], close_after_local, info)
                .await;
        }
        if let Some(policy) = decisions.rbac_denied.take() {
            log::debug!("RBAC: access denied (policy {policy})");
            info.response_code_details = "rbac_access_denied_matched_policy";
            return self
                .local(403, "RBAC: access denied", &[], close_after_local, info)
                .await;
        }
        if let Some(limited) = decisions.limited.take() {
            info.flags.insert(ResponseFlags::RATE_LIMITED);
            info.response_code_details = "local_rate_limited";
            let extra = header_list(&limited.headers);
            return self
                .local(
                    limited.status,
                    "local_rate_limited",
                    &extra,
                    close_after_local,
                    info,
                )
                .await;
        }
        // A fault injected: active until the stream ends; its delay waited out here (the
        // route timeout starts after it, as Envoy's router starts after the fault filter),
        // then its abort answered.
        let _active = decisions
            .fault
            .as_ref()
            .map(|_| ActiveFault(self.shard.stats));
        let mut routed_at = info.start;
        if let Some(fault) = decisions.fault.take() {
            if let Some(d) = fault.delay {
                info.flags.insert(ResponseFlags::DELAY_INJECTED);
                monoio::time::sleep(d).await;
                routed_at = Instant::now();
            }
            if let Some((status, body)) = fault.abort {
                self.shard.stats.inc(Counter::FaultAbortsInjected);
                info.flags.insert(ResponseFlags::FAULT_INJECTED);
                info.response_code_details = "fault_filter_abort";
                return self
                    .local(status, &body, &[], close_after_local, info)
                    .await;
            }
        }
        let mut framing = req.framing;
        let mut buffered = None;
        if let Some(max) = decisions.buffer_body {
            // A client waiting for `100 Continue` gets it now (Envoy's default: zerohop
            // answers it rather than the upstream); a streamed body gets it when the
            // upstream is ready for the body.
            if req.expect_continue && self.down.send_continue().await.is_err() {
                return false;
            }
            let body = match self.buffer_body(req, max, info).await {
                Ok(b) => b,
                Err(e) => return self.fail(e, info).await,
            };
            if let Status::Reply(e) = chain.on_request_body(&ctx, &body, &mut framing) {
                return self.fail(e, info).await;
            }
            buffered = Some(body);
        }

        // The router.
        let Some(route) = route else {
            self.shard.stats.inc(Counter::RouteNotFound);
            self.hstat(HttpStat::NoRoute);
            let e = ProxyError::new(Kind::NoRoute);
            info.flags.insert(e.response_flag());
            info.response_code_details = e.details();
            // HTTP/1.0 keeps no connection past a local error (as Envoy's codec).
            let close = close_after_local || req.version == Version::Http10;
            return self.local(404, "", &[], close, info).await;
        };
        match &route.action {
            Action::Direct { status, body } => {
                info.response_code_details = "direct_response";
                self.hstat(HttpStat::RqDirectResponse);
                let extra = response_edits(route, Vec::new());
                let (status, close) = (*status, close_after_local);
                let filters = Some((&chain, &ctx));
                self.local_coded(status, body, &extra, close, filters, info)
                    .await
            }
            Action::Redirect(rd) => {
                info.response_code_details = "direct_response";
                self.hstat(HttpStat::RqRedirect);
                let location = redirect_location(rd, route, req);
                let extra =
                    response_edits(route, vec![(b"location", location.into_bytes().into())]);
                self.local(rd.status, "", &extra, close_after_local, info)
                    .await
            }
            Action::Forward { forward, .. } => {
                let (shard, gen) = (self.shard, self.gen);
                let hcm = &http.manager;
                let mut peer_text = [0u8; 45];
                let external = match hcm.use_remote_address {
                    true => {
                        external_address(req, self.peer, hcm.xff_num_trusted_hops, &mut peer_text)
                    }
                    false => None,
                };
                let mut headers =
                    self.request_headers(req, route.edits_requests.then_some(&route.edits[..]));
                headers.external_address = external;
                headers.drop_accept_encoding = decisions.drop_accept_encoding;
                if hcm.tracing.as_ref().is_some_and(|t| t.egress) {
                    // An egress span's operation goes on for the next hop's span.
                    let d = route.decorator.as_ref().filter(|d| d.propagate);
                    headers.operation = d.map(|d| d.operation.as_str());
                }
                let max_at = hcm.max_stream_duration.map(|d| info.start + d);
                let peer_addr = self.peer;
                // A body that a retry could send again, or a mirror copy, is held (as Envoy
                // buffers it) when its length is known and within the buffer limit;
                // otherwise it streams, and is neither retried nor copied.
                let copies = forward.retry.is_some() || !forward.mirrors.is_empty();
                if copies && buffered.is_none() && req.framing != Framing::Empty {
                    buffered = self.down.take_received_body(req.framing, SMALL_BODY);
                    info.bytes_received += buffered.as_ref().map_or(0, |b| b.len() as u64);
                    match req.framing {
                        _ if buffered.is_some() => {}
                        Framing::Length(n) if n <= u64::from(forward.buffer_limit) => {
                            if req.expect_continue && self.down.send_continue().await.is_err() {
                                return false;
                            }
                            match self.buffer_body(req, forward.buffer_limit, info).await {
                                Ok(b) => buffered = Some(b),
                                Err(e) => return self.fail(e, info).await,
                            }
                        }
                        _ => shard.stats.inc(Counter::RetryOrShadowAbandoned),
                    }
                }
                let with_body = |body| Outgoing {
                    max_at,
                    peer: peer_addr,
                    ..outgoing(req, route, forward, &headers, framing, body, routed_at)
                };
                let (exchange, complete) = match whole_body(self.down, buffered, req, info) {
                    // The whole request is in hand: while the upstream answers, the client is
                    // watched, and its leaving abandons the upstream request (as Envoy resets
                    // the stream of a closed downstream connection). Otherwise a chain of
                    // requests whose clients have gone (a cluster that loops back to its own
                    // listener) would outlive them.
                    Some(body) => {
                        if !info.request_captured {
                            info.request_done = Some(Instant::now());
                        }
                        let mut out = with_body(body);
                        let forwarded = std::pin::pin!(router::forward(
                            shard,
                            gen,
                            &mut out,
                            info,
                            self.timer.as_mut()
                        ));
                        let gone = std::pin::pin!(self.down.closed(shard));
                        let exchange = monoio::select! {
                            // The exchange first: no random pick on the hot path.
                            biased;
                            ex = forwarded => ex,
                            _ = gone => {
                                shard.stats.inc(Counter::DownstreamCxDestroyRemoteActiveRq);
                                shard.stats.count(http.manager.stats, HttpStat::DownstreamCxDestroyRemoteActiveRq);
                                Err(Kind::DownstreamClosed.into())
                            }
                        };
                        (exchange, true)
                    }
                    None => {
                        let mut out = with_body(streamed_body(shard, self.down, http, req));
                        let exchange =
                            router::forward(shard, gen, &mut out, info, self.timer.as_mut()).await;
                        let complete = out.body.complete();
                        if complete && !info.request_captured {
                            // The body went up whole before the answer came (an upper bound).
                            info.request_done = Some(Instant::now());
                        }
                        (exchange, complete)
                    }
                };
                if !info.request_captured {
                    // The access log sees the request as forwarded, as Envoy's.
                    let spec = &hcm.access_log;
                    let forwarded = super::headers::WithContext(&headers);
                    super::access::capture_request(spec, req, self.tls, &forwarded, info);
                }
                match exchange {
                    Ok(ex) => {
                        // From the request's start: routing before the send is
                        // microseconds, and one clock read fewer per request.
                        info.upstream_service_time = Some(info.start.elapsed());
                        let filter_headers = cors.as_ref().map_or(&[][..], |c| &c.headers);
                        self.respond(route, req, ex, info, (&ctx, &chain), filter_headers)
                            .await
                    }
                    // The upstream failed a request that was read whole: as Envoy, the
                    // client's connection is kept (unless it asked otherwise).
                    Err(e) if e.fault != Fault::Downstream && complete => {
                        let close = req.close || req.version == Version::Http10;
                        self.fail_then(e, close, info).await
                    }
                    Err(e) => self.fail(e, info).await,
                }
            }
        }
    }

    /// The request's headers as the connection manager sends them on (`edits`: the
    /// route's, when it edits requests).
    fn request_headers<'r>(
        &self,
        req: &'r Request,
        edits: Option<&'r [zerohop_proto::HeaderEdits]>,
    ) -> RequestHeaders<'r>
    where
        'a: 'r,
    {
        let hcm = &self.http.manager;
        let peer_ip = self.peer_ip;
        let mut headers = RequestHeaders::new(
            req,
            peer_ip.filter(|_| hcm.use_remote_address && !hcm.skip_xff_append),
            hcm.use_remote_address,
            hcm.generate_request_id.then_some(&self.shard.rng),
            edits,
        );
        headers.suppress_envoy_headers = hcm.suppress_envoy_headers;
        headers.replace_request_id = hcm.use_remote_address && !hcm.preserve_external_request_id;
        headers.user_agent = hcm.user_agent.as_ref();
        headers.tls = self.tls;
        headers.trace = self.trace;
        headers.drop_operation = hcm.tracing.as_ref().is_some_and(|t| !t.egress);
        headers
    }

    /// Reads the whole request body for a filter that asked for it, under `request_timeout`
    /// and `stream_idle_timeout`: at most `max` bytes, else 413.
    async fn buffer_body(
        &mut self,
        req: &Request,
        max: u32,
        info: &mut StreamInfo<'_>,
    ) -> Result<Vec<u8>, ProxyError> {
        let hcm = &self.http.manager;
        let wait = Wait {
            timer: self.timer.as_mut(),
            idle: hcm.stream_idle_timeout,
            deadline: hcm.request_timeout.map(|t| Instant::now() + t),
        };
        let read = self.down.read_body(req.framing, u64::from(max), wait).await;
        match read {
            Ok(body) => {
                info.bytes_received += body.len() as u64;
                Ok(body)
            }
            Err(BodyEnd::Sink) => {
                self.shard.stats.inc(Counter::DownstreamRqTooLarge);
                self.hstat(HttpStat::DownstreamRqTooLarge);
                Err(Kind::PayloadTooLarge.into())
            }
            Err(BodyEnd::Source(Some(_))) => {
                self.shard.stats.inc(Counter::DownstreamRqMalformed);
                Err(Kind::MalformedBody.into())
            }
            Err(BodyEnd::Source(None)) => Err(Kind::DownstreamClosed.into()),
            Err(BodyEnd::TimedOut | BodyEnd::Done) => Err(Kind::RequestTimeout.into()),
        }
    }

    /// Ends the stream with `e`'s local reply (then closes), or just closes when the
    /// client is gone.
    async fn fail(&mut self, e: ProxyError, info: &mut StreamInfo<'_>) -> bool {
        self.fail_then(e, true, info).await
    }

    /// Ends the stream with `e`'s local reply, closing the connection after it if `close`;
    /// returns whether the connection stays open.
    async fn fail_then(&mut self, e: ProxyError, close: bool, info: &mut StreamInfo<'_>) -> bool {
        info.flags.insert(e.response_flag());
        info.response_code_details = e.details();
        log::debug!("request failed: {e}");
        match e.local_reply() {
            Some((status, body)) => self.local(status, body, &[], close, info).await,
            None => false,
        }
    }

    /// A local reply that closes the connection.
    async fn reply(&mut self, status: u16, body: &str, info: &mut StreamInfo<'_>) -> bool {
        self.local(status, body, &[], true, info).await;
        false
    }

    /// A response zerohop makes itself. Returns whether the connection stays open.
    async fn local(
        &mut self,
        status: u16,
        body: &str,
        extra: &[(&[u8], Cow<'_, [u8]>)],
        close: bool,
        info: &mut StreamInfo<'_>,
    ) -> bool {
        self.local_coded(status, body, extra, close, None, info)
            .await
    }

    /// [`Self::local`], through the chain's compressors when `filters` gives them (a
    /// `direct_response`, which Envoy's encoder filters see).
    async fn local_coded(
        &mut self,
        status: u16,
        body: &str,
        extra: &[(&[u8], Cow<'_, [u8]>)],
        close: bool,
        filters: Option<(&Chain<'_>, &filter::Ctx<'_>)>,
        info: &mut StreamInfo<'_>,
    ) -> bool {
        let close = close || self.draining.fired();
        count_status(self.shard, status);
        info.response_code = Some(status);
        // Only a chain with compressors may change the headers (and so needs a copy).
        let mut changed = None;
        let encoded = filters.and_then(|(chain, ctx)| {
            let compressors = chain.compressors(ctx.route)?;
            let list = changed.insert(extra.to_vec());
            filter::compressor::local_body(&compressors, ctx, status, body, list)
        });
        let extra = changed.as_deref().unwrap_or(extra);
        let date = self.shard.http_date();
        let mut with = super::headers::local_headers(&self.http.manager, &date);
        with.extend(extra.iter().map(|(n, v)| (*n, Cow::Borrowed(&v[..]))));
        let grpc = self
            .request
            .header("content-type")
            .is_some_and(crate::http::message::is_grpc_content_type);
        let body = match (&encoded, grpc) {
            (_, true) => LocalBody::Grpc {
                status: crate::http::downstream::grpc_status(status),
                message: body,
            },
            (Some(b), false) => LocalBody::Encoded(b),
            (None, false) => LocalBody::Text(body),
        };
        let spec = &self.http.manager.access_log;
        if !info.request_captured {
            // The request as the connection manager had made it (x-request-id, x-forwarded-*).
            let headers = self.request_headers(self.request, None);
            let made = super::headers::WithContext(&headers);
            super::access::capture_request(spec, self.request, self.tls, &made, info);
        }
        if spec.enabled() {
            let mut digits = [0u8; 20];
            let len = match &body {
                // Envoy's codec adds `content-length: 0` after the log has its headers.
                LocalBody::Text(t) if !t.is_empty() => Some(decimal(t.len() as u64, &mut digits)),
                LocalBody::Text(_) => None,
                LocalBody::Encoded(_) | LocalBody::Grpc { .. } => None,
            };
            let mut with = with.clone();
            if matches!(&body, LocalBody::Text(t) if !t.is_empty()) {
                with.push((b"content-type", Cow::Borrowed(b"text/plain")));
            }
            let pairs = crate::accesslog::Pairs(&with);
            super::access::capture_response(spec, &pairs, len, info);
        }
        info.body_sent += match &body {
            LocalBody::Text(t) => t.len() as u64,
            LocalBody::Encoded(b) => b.len() as u64,
            LocalBody::Grpc { .. } => 0,
        };
        let sent = self.down.local_reply(status, body, &with, close).await;
        sent && !close
    }
}

/// The request on its way upstream, its framing that of the body it carries.
fn outgoing<'o, D>(
    req: &'o Request,
    route: &'o Route,
    forward: &'o zerohop_proto::Forward,
    headers: &'o RequestHeaders<'o>,
    framing: Framing,
    body: RequestBody<'o, D>,
    started: Instant,
) -> Outgoing<'o, D> {
    Outgoing {
        req,
        route,
        forward,
        headers,
        framing: match &body {
            RequestBody::Buffered(b) => Framing::Length(b.len() as u64),
            _ => framing,
        },
        body,
        max_at: None,
        started,
        peer: None,
    }
}

/// Counts a fault active while it lives (the stream's, from injection to its end).
struct ActiveFault(crate::stats::ShardStats);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.0.dec(Counter::FaultActiveFaults);
    }
}

/// The request body when all of it is already in hand: none, buffered by a filter, or small
/// and arrived with the head. `None` when it must stream from the client ([`streamed_body`]).
fn whole_body<'b, D: Downstream>(
    down: &mut D,
    buffered: Option<Vec<u8>>,
    req: &Request,
    info: &mut StreamInfo<'_>,
) -> Option<RequestBody<'b, D>> {
    if let Some(b) = buffered {
        return Some(RequestBody::Buffered(b));
    }
    if matches!(req.framing, Framing::Empty | Framing::UntilClose) {
        return Some(RequestBody::None);
    }
    let body = down.take_received_body(req.framing, SMALL_BODY)?;
    info.bytes_received += body.len() as u64;
    Some(RequestBody::Buffered(body))
}

/// The request body streamed from the client, once [`whole_body`] has found it is not
/// all here.
fn streamed_body<'b, D: Downstream>(
    shard: &'b Shard,
    down: &'b mut D,
    http: &HttpPlan,
    req: &Request,
) -> RequestBody<'b, D> {
    RequestBody::Stream(StreamedBody {
        shard,
        down,
        framing: req.framing,
        expect_continue: req.expect_continue,
        request_timeout: http.manager.request_timeout,
        stream_idle_timeout: http.manager.stream_idle_timeout,
        done: false,
    })
}

fn response_edits<'r>(route: &'r Route, mut headers: HeaderList<'r>) -> HeaderList<'r> {
    apply_edits(&mut headers, &route.edits, true);
    headers
}

/// `downstream_rq_<N>xx`.
pub fn count_status(shard: &Shard, status: u16) {
    shard.stats.inc(match status {
        100..=199 => Counter::DownstreamRq1xx,
        200..=299 => Counter::DownstreamRq2xx,
        300..=399 => Counter::DownstreamRq3xx,
        400..=499 => Counter::DownstreamRq4xx,
        _ => Counter::DownstreamRq5xx,
    });
}

/// `Location` for a redirect: each part from the action, or else from the request.
fn redirect_location(rd: &Redirect, route: &Route, req: &Request) -> String {
    let scheme = rd.scheme.as_deref().unwrap_or("http");
    // Host and port of the request (an IPv6 literal keeps its brackets).
    let (req_host, req_port) = match req.host().rsplit_once(':') {
        Some((h, p))
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            (h, Some(p))
        }
        _ => (req.host(), None),
    };
    let host = rd.host.as_deref().unwrap_or(req_host);
    let port = match (rd.port, req_port) {
        (Some(p), _) => Some(p.to_string()),
        // A new scheme or host drops the request's port (Envoy).
        (None, Some(p)) if rd.scheme.is_none() && rd.host.is_none() => Some(p.to_owned()),
        _ => None,
    };
    let path = if let Some(p) = &rd.path {
        p.clone()
    } else if let Some(pr) = &rd.prefix_rewrite {
        route.replace_prefix(req.path(), pr)
    } else {
        req.path().to_owned()
    };
    let mut loc = format!("{scheme}://{host}");
    if let Some(p) = port {
        loc.push(':');
        loc.push_str(&p);
    }
    loc.push_str(&path);
    if !rd.strip_query && rd.path.as_deref().is_none_or(|p| !p.contains('?')) {
        if let Some(q) = req.query() {
            loc.push('?');
            loc.push_str(q);
        }
    }
    loc
}

/// `n` in decimal, written at the end of `buf` (no allocation on the request path).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The client's address as Envoy's connection manager trusts it with `use_remote_address`:
/// the peer, or with `xff_num_trusted_hops` N the Nth entry from the right of the client's
/// `x-forwarded-for` (the peer when it has fewer). The peer's text is written into `buf`:
/// nothing is allocated per request.
fn external_address<'a>(
    req: &'a Request,
    peer: Option<std::net::IpAddr>,
    hops: u32,
    buf: &'a mut [u8; 45],
) -> Option<&'a str> {
    if hops > 0 {
        if let Some(xff) = req.header("x-forwarded-for") {
            let n = xff.split(',').count();
            if let Some(i) = n.checked_sub(hops as usize) {
                return xff.split(',').nth(i).map(str::trim);
            }
        }
    }
    let mut out = &mut buf[..];
    std::io::Write::write_fmt(&mut out, format_args!("{}", peer?)).ok()?;
    let written = 45 - out.len();
    std::str::from_utf8(&buf[..written]).ok()
}

mod respond;
mod tracing;

/// Headers a filter asked for, as a local reply takes them.
fn header_list<N: AsRef<str>>(headers: &[(N, String)]) -> Vec<(&[u8], Cow<'_, [u8]>)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_ref().as_bytes(), v.as_bytes().into()))
        .collect()
}

#[cfg(test)]
mod decimal_tests {
    #[test]
    fn decimal_writes_every_digit() {
        let mut buf = [0u8; 20];
        for n in [0u64, 7, 10, 15000, u64::MAX] {
            assert_eq!(super::decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
