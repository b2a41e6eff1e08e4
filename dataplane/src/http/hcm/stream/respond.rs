//! The response side of a stream: the upstream's head through the filters' response-headers
//! phase (and the compressors' decision) and out, then its body, relayed or compressed.

use super::*;
use crate::http::downstream::BodySource;
use crate::upstream::UpstreamSide;
use zerohop_proto::stats::ClusterHist;

impl<D: Downstream> Stream<'_, D> {
    /// The upstream answered: its head through the response-headers phase and out, then
    /// its body. Returns whether the downstream connection stays open.
    #[allow(clippy::too_many_arguments)] // Reason: the stream's parts, borrowed separately.
    pub(super) async fn respond(
        &mut self,
        route: &Route,
        req: &Request,
        ex: Exchange<'_>,
        info: &mut StreamInfo<'_>,
        (ctx, chain): (&filter::Ctx<'_>, &Chain<'_>),
        filter_headers: &[(&'static str, String)],
    ) -> bool {
        let Exchange {
            mut resp,
            buf: mut ubuf,
            conn: mut up,
            cluster,
            deadline,
            max_at,
            // Held (in the cluster's request breaker, and counted in flight to the endpoint)
            // until the response is relayed.
            request: _in_flight,
            active: _active,
        } = ex;
        let shard = self.shard;
        let stats = shard.stats;
        if let Status::Reply(e) = chain.on_response_headers(ctx, &resp) {
            shard.pools.give_vec(ubuf);
            return self.fail(e, info).await;
        }
        info.response_code = Some(resp.status);
        info.response_code_details = "via_upstream";
        let edits = route.edits_responses.then_some(&route.edits[..]);

        // 101 to an Upgrade request: the answer is relayed, then the connection tunnelled.
        let upgrade = resp.status == 101 && req.upgrade.is_some();
        // The compressor filters (when the chain has any): a compressed body goes out in a
        // framing of unknown length, through its encoder.
        let (coding, mut encoder) = self.coding(chain, ctx, &resp, &ubuf, upgrade);
        // An HTTP/1.0 client cannot take chunks: the body goes to it decoded, delimited by the
        // connection's end.
        let http10 = req.version == Version::Http10;
        let dechunk = http10 && resp.framing == Framing::Chunked;
        let framing_out = match (&encoder, dechunk) {
            (Some(_), false) if !http10 => Framing::Chunked,
            (Some(_), _) | (None, true) => Framing::UntilClose,
            (None, false) => resp.framing,
        };
        let close = req.close || self.draining.fired() || framing_out == Framing::UntilClose;
        // A small body (up to 64 KiB) is read whole and goes out with the head, in one send.
        let small = match (&up, upgrade || encoder.is_some()) {
            (UpstreamSide::H1(up), false) => {
                body::read_small(
                    &up.stream,
                    &mut ubuf,
                    resp.len,
                    resp.framing,
                    SMALL_BODY,
                    deadline,
                    self.timer.as_mut(),
                )
                .await
            }
            // An HTTP/2 upstream's body comes in DATA frames, relayed as they arrive.
            _ => Ok(false),
        };
        let body_len = match small {
            Ok(true) => {
                let Framing::Length(n) = resp.framing else {
                    unreachable!("read_small reads Content-Length bodies")
                };
                n as usize
            }
            Ok(false) => 0,
            Err(mut e) => {
                shard.pools.give_vec(ubuf);
                if e.kind == Kind::UpstreamTimeout && router::max_duration_reached(max_at) {
                    e = Kind::MaxStreamDuration.into();
                }
                stats.inc(match e.kind {
                    Kind::UpstreamTimeout => Counter::UpstreamRqTimeout,
                    Kind::MaxStreamDuration => Counter::DownstreamRqMaxDurationReached,
                    _ => Counter::UpstreamRqReset,
                });
                if e.kind == Kind::MaxStreamDuration {
                    stats.count(
                        self.http.manager.stats,
                        HttpStat::DownstreamRqMaxDurationReached,
                    );
                }
                // The head was not sent yet: the client gets a local reply.
                return match e.kind {
                    Kind::UpstreamClosed => {
                        info.flags.insert(e.response_flag());
                        self.reply(
                            502,
                            "upstream reset before the response body completed",
                            info,
                        )
                        .await
                    }
                    _ => self.fail(e, info).await,
                };
            }
        };
        let sent = {
            // A bodiless response's declared length (HEAD, 304) is forwarded as sent.
            let content_length = match resp.framing {
                Framing::Empty if !upgrade => resp
                    .headers
                    .iter()
                    .find(|h| &ubuf[h.name.clone()] == b"content-length")
                    .map(|h| &ubuf[h.value.clone()]),
                _ => None,
            };
            let date = self.shard.http_date();
            let mut digits = [0u8; 20];
            let service_time = info
                .upstream_service_time
                .filter(|_| !self.http.manager.suppress_envoy_headers)
                .map(|t| decimal(t.as_millis() as u64, &mut digits).len())
                .map(|n| &digits[digits.len() - n..]);
            let mut attempt_digits = [0u8; 20];
            let attempts = match &route.action {
                Action::Forward { forward, .. } if forward.attempt_count_downstream => {
                    Some(decimal(u64::from(info.attempts), &mut attempt_digits))
                }
                _ => None,
            };
            let headers = ResponseHeaders {
                attempts,
                resp: &resp,
                raw: &ubuf[..resp.len],
                upgrade,
                edits,
                server: &self.http.manager,
                date: &date,
                service_time,
                coding: coding.as_ref(),
                filter_headers,
            };
            let spec = &self.http.manager.access_log;
            if spec.upstream_local {
                if let UpstreamSide::H1(up) = &up {
                    info.upstream_local = up.stream.tcp().local_addr().ok();
                }
            }
            if spec.enabled() {
                let mut n = [0u8; 20];
                let length = match framing_out {
                    Framing::Length(len) => Some(decimal(len, &mut n)),
                    _ => content_length,
                };
                super::super::access::capture_response(spec, &headers, length, info);
            }
            let head = ResponseHead {
                status: resp.status,
                reason: resp.reason.clone().map(|r| &ubuf[r]),
                headers: &headers,
                framing: framing_out,
                content_length,
                after: match (upgrade, close) {
                    (true, _) => ConnectionAfter::Upgrade,
                    (false, true) => ConnectionAfter::Close,
                    (false, false) => ConnectionAfter::KeepAlive,
                },
            };
            if let (true, UpstreamSide::H1(up)) = (upgrade, &up) {
                stats.inc(Counter::UpgradesTotal);
                stats.count(self.http.manager.stats, HttpStat::DownstreamCxUpgradesTotal);
                count_status(shard, 101);
                let idle = self.http.manager.stream_idle_timeout;
                let early = &ubuf[resp.len..];
                self.down
                    .upgrade(shard, &head, early, &up.stream, idle)
                    .await;
                shard.pools.give_vec(ubuf);
                return false;
            }
            let body = &ubuf[resp.len..resp.len + body_len];
            self.down.send_response(shard, &head, body).await
        };
        count_status(shard, resp.status);
        ubuf.drain(..resp.len + body_len);
        if body_len > 0 {
            resp.framing = Framing::Empty;
        }
        let Ok(out_len) = sent else {
            shard.pools.give_vec(ubuf);
            info.flags
                .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            return false;
        };
        stats.add(Counter::DownstreamCxTxBytes, out_len);
        info.bytes_sent += out_len;
        info.body_sent += body_len as u64;

        // The body, under the route timeout (until the whole response has been relayed, as
        // Envoy's) and the stream idle timeout.
        let wait = Wait {
            timer: self.timer.as_mut(),
            idle: self.http.manager.stream_idle_timeout,
            deadline,
        };
        let mut moved = 0;
        let from = match &mut up {
            UpstreamSide::H1(up) => BodySource::H1 {
                stream: &up.stream,
                buf: &mut ubuf,
                framing: resp.framing,
            },
            UpstreamSide::H2 { recv, .. } => BodySource::H2 {
                recv,
                framing: framing_out,
            },
        };
        let end = match &mut encoder {
            // Boxed: the compressing relay's state stays off the common path's future.
            Some(coder) => {
                let (enc, max) = &mut **coder;
                Box::pin(
                    self.down
                        .relay_encoded_response_body(shard, from, enc, *max, wait, &mut moved),
                )
                .await
            }
            None => {
                self.down
                    .relay_response_body(shard, from, wait, &mut moved)
                    .await
            }
        };
        info.bytes_sent += moved;
        info.body_sent += moved;
        let leftover = !ubuf.is_empty();
        shard.pools.give_vec(ubuf);
        match end {
            BodyEnd::Done => {
                // The whole response is in: `upstream_rq_time` (from the request's arrival).
                stats.record_ms(
                    cluster.cluster.stats,
                    ClusterHist::UpstreamRqTime,
                    crate::stats::ms_since(info.start),
                );
                // Only after a complete, delimited exchange (an HTTP/2 stream's place goes
                // back as it drops).
                if let UpstreamSide::H1(up) = up {
                    if !resp.close && !leftover && resp.framing != Framing::UntilClose {
                        shard.upstreams.release(up, cluster, info.start);
                    }
                }
                !close
            }
            BodyEnd::Source(_) | BodyEnd::TimedOut => {
                // Too late for a status: the client sees the connection reset.
                let timed_out = end == BodyEnd::TimedOut;
                let by_max = timed_out && router::max_duration_reached(max_at);
                stats.inc(match (timed_out, by_max) {
                    (true, true) => Counter::DownstreamRqMaxDurationReached,
                    (true, false) => Counter::UpstreamRqTimeout,
                    (false, _) => Counter::UpstreamRqReset,
                });
                if by_max {
                    stats.count(
                        self.http.manager.stats,
                        HttpStat::DownstreamRqMaxDurationReached,
                    );
                }
                info.flags.insert(match (timed_out, by_max) {
                    (true, true) => ResponseFlags::DURATION_TIMEOUT,
                    (true, false) => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                    (false, _) => ResponseFlags::UPSTREAM_REMOTE_RESET,
                });
                self.down.reset();
                false
            }
            BodyEnd::Sink => {
                info.flags
                    .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
                false
            }
        }
    }

    /// What the chain's compressor filters make of this response, and the encoder of the
    /// one that compresses it (with its chunk size). Without compressors: nothing, at the
    /// cost of one scan of the chain.
    fn coding<'c>(
        &self,
        chain: &Chain<'c>,
        ctx: &filter::Ctx<'c>,
        resp: &Response,
        ubuf: &[u8],
        upgrade: bool,
    ) -> (Option<Coding<'c>>, Option<Box<(Encoder, usize)>>) {
        let Some(compressors) = chain.compressors(ctx.route) else {
            return (None, None);
        };
        let raw = &ubuf[..resp.len];
        let mut coding = filter::compressor::negotiate(&compressors, ctx, resp, raw, upgrade);
        let encoder = coding
            .compress
            .and_then(|cfg| match Encoder::new(&cfg.library) {
                Ok(e) => Some(Box::new((e, filter::compressor::chunk_size(&cfg.library)))),
                Err(e) => {
                    log::warn!(
                        "compressor {:?}: {e}; the response goes uncompressed",
                        cfg.name
                    );
                    None
                }
            });
        if encoder.is_none() {
            coding.compress = None;
        }
        (Some(coding), encoder)
    }
}
