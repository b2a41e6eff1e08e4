//! The connection manager serves a stream through any codec. A scripted codec that is not
//! HTTP/1.1 (requests handed over as parsed heads, the response recorded as a head and
//! bytes) drives the same connection manager, filters, router and upstream layer as the
//! HTTP/1.1 codec does, through `http::downstream::Downstream` alone. This is the check
//! that a second codec (HTTP/2) is additive: nothing below the connection manager changes
//! for it. The upstream is a real HTTP/1.1 server on 127.0.0.1.

mod support;

use std::borrow::Cow;
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::http::{fixture, upstream};
use zerohop::config::{Latest, Slots, Terminal};
use zerohop::conn::Facts;
use zerohop::http::body::{read_whole, BodyEnd};
use zerohop::http::downstream::{
    BodySink, BodySource, ConnectionAfter, Downstream, LocalBody, ResponseHead, Wait,
};
use zerohop::http::filter::compressor::Encoder;
use zerohop::http::hcm::Connection;
use zerohop::http::message::{Framing, Header, HeaderSource, Request, Version};
use zerohop::net::pump::send_all;
use zerohop::shard::listeners::BoundListener;
use zerohop::shard::Shard;
use zerohop_proto::stats::Counter;

/// What the scripted codec was asked to send.
#[derive(Debug, Default)]
struct Sent {
    status: Option<u16>,
    headers: Vec<(String, String)>,
    framing: Option<Framing>,
    after: Option<ConnectionAfter>,
    body: Vec<u8>,
    local: Option<(u16, String, bool)>,
    continued: bool,
    reset: bool,
}

/// A downstream that is not HTTP/1.1: its request body is given whole, and whatever the
/// connection manager sends is recorded.
struct Scripted {
    last: Cell<Instant>,
    /// The request body, not yet "received" unless `arrived`.
    body: Vec<u8>,
    arrived: bool,
    sent: Sent,
}

impl Scripted {
    fn new(body: &[u8], arrived: bool) -> Scripted {
        Scripted {
            last: Cell::new(Instant::now()),
            body: body.to_vec(),
            arrived,
            sent: Sent::default(),
        }
    }
}

impl Downstream for Scripted {
    fn last_activity(&self) -> &Cell<Instant> {
        &self.last
    }

    async fn send_continue(&mut self) -> io::Result<()> {
        self.sent.continued = true;
        Ok(())
    }

    fn take_received_body(&mut self, framing: Framing, max: u64) -> Option<Vec<u8>> {
        let fits = matches!(framing, Framing::Length(n) if n <= max);
        (self.arrived && fits).then(|| std::mem::take(&mut self.body))
    }

    async fn read_body(
        &mut self,
        _framing: Framing,
        max: u64,
        _wait: Wait<'_>,
    ) -> Result<Vec<u8>, BodyEnd> {
        match self.body.len() as u64 > max {
            true => Err(BodyEnd::Sink),
            false => Ok(std::mem::take(&mut self.body)),
        }
    }

    async fn relay_request_body(
        &mut self,
        _shard: &Shard,
        framing: Framing,
        to: BodySink<'_>,
        _wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        // The script's upstreams speak HTTP/1.1.
        let BodySink::H1(to) = to else {
            return BodyEnd::Sink;
        };
        // The codec writes the body in the framing the upstream head declared.
        let wire = match framing {
            Framing::Chunked => {
                let mut w = Vec::new();
                for part in self.body.chunks(5) {
                    w.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    w.extend_from_slice(part);
                    w.extend_from_slice(b"\r\n");
                }
                w.extend_from_slice(b"0\r\n\r\n");
                w
            }
            _ => self.body.clone(),
        };
        *moved = self.body.len() as u64;
        match send_all(to, &wire).await {
            Ok(()) => BodyEnd::Done,
            Err(_) => BodyEnd::Sink,
        }
    }

    async fn send_response(
        &mut self,
        _shard: &Shard,
        head: &ResponseHead<'_>,
        body: &[u8],
    ) -> io::Result<u64> {
        self.sent.status = Some(head.status);
        head.headers.for_each(|n, v| {
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            self.sent.headers.push((s(n), s(v)));
        });
        self.sent.framing = Some(head.framing);
        self.sent.after = Some(head.after);
        self.sent.body.extend_from_slice(body);
        Ok(body.len() as u64)
    }

    async fn relay_response_body(
        &mut self,
        _shard: &Shard,
        from: BodySource<'_>,
        _wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        let BodySource::H1 {
            stream: from,
            buf,
            framing,
        } = from
        else {
            return BodyEnd::Source(None);
        };
        match read_whole(from, buf, framing, u64::MAX, &self.last).await {
            Ok(b) => {
                *moved += b.len() as u64;
                self.sent.body.extend_from_slice(&b);
                BodyEnd::Done
            }
            Err(e) => e,
        }
    }

    async fn relay_encoded_response_body(
        &mut self,
        _shard: &Shard,
        from: BodySource<'_>,
        enc: &mut Encoder,
        _max: usize,
        _wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        let BodySource::H1 {
            stream: from,
            buf,
            framing,
        } = from
        else {
            return BodyEnd::Source(None);
        };
        match read_whole(from, buf, framing, u64::MAX, &self.last).await {
            Ok(b) => {
                let mut out = Vec::new();
                enc.push(&b, true, &mut out).unwrap();
                *moved += out.len() as u64;
                self.sent.body.extend_from_slice(&out);
                BodyEnd::Done
            }
            Err(e) => e,
        }
    }

    async fn upgrade(
        &mut self,
        _shard: &Shard,
        head: &ResponseHead<'_>,
        _early: &[u8],
        _up: &zerohop::net::transport::Sock,
        _idle: Option<Duration>,
    ) -> bool {
        self.sent.status = Some(head.status);
        false
    }

    async fn local_reply(
        &mut self,
        status: u16,
        body: LocalBody<'_>,
        _extra: &[(&[u8], Cow<'_, [u8]>)],
        close: bool,
    ) -> bool {
        let body = match body {
            LocalBody::Text(t) => t.to_owned(),
            LocalBody::Encoded(b) => format!("{} encoded bytes", b.len()),
            LocalBody::Grpc { status, message } => format!("grpc-status {status}: {message}"),
        };
        self.sent.local = Some((status, body, close));
        true
    }

    fn reset(&mut self) {
        self.sent.reset = true;
    }

    async fn closed(&self, _shard: &zerohop::shard::Shard) {
        // A scripted client never goes away.
        std::future::pending().await
    }
}

/// A parsed request head, laid out as a codec lays one out: ranges into one buffer.
fn request(
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    framing: Framing,
) -> Request {
    let mut raw = Vec::new();
    let mut put = |s: &str| {
        let start = raw.len();
        raw.extend_from_slice(s.as_bytes());
        start..raw.len()
    };
    let method = put(method);
    let host = put(host);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (put(p), Some(put(q))),
        None => (put(target), None),
    };
    let headers = headers
        .iter()
        .map(|(n, v)| Header {
            name: put(n),
            value: put(v),
        })
        .collect();
    Request {
        raw,
        method,
        path,
        query,
        host,
        headers,
        framing,
        version: Version::Http11,
        close: false,
        expect_continue: false,
        upgrade: None,
        connection: Vec::new(),
    }
}

/// Runs `test` on a runtime with a detached shard serving the HTTP fixture, given the
/// fixture's connection manager as a `Connection`.
fn with_manager(yaml: &str, test: impl AsyncFnOnce(&Rc<Shard>, &Connection, &'static [AtomicU64])) {
    let counters: &'static [AtomicU64] =
        Vec::leak((0..Counter::ALL.len()).map(|_| AtomicU64::new(0)).collect());
    let built = zerohop_control::config::load(yaml, zerohop_control::config::Format::Yaml)
        .expect("a valid config");
    let generation = Slots::default().build(1, built.snapshot).expect("builds");
    let latest: &'static Latest = Box::leak(Box::new(Latest::new(Arc::new(generation))));
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async move {
        let shard = Rc::new(Shard::detached(0, latest, counters));
        shard.maybe_reload();
        let cfg = shard.config();
        let plan = &cfg.listeners[0];
        let Terminal::Http(http) = &plan.chains[0].terminal else {
            panic!("the fixture's listener is an HTTP connection manager");
        };
        let listener = BoundListener::new(plan.name.clone(), "127.0.0.1:0".parse().unwrap());
        let peer = Some("10.1.2.3:4567".parse().unwrap());
        let conn = Connection::new(cfg.clone(), listener, http.clone(), Facts::default(), peer);
        test(&shard, &conn, counters).await;
    });
}

/// Serves `req` through a scripted codec whose request body is `body` (already received
/// with the head when `arrived`); returns whether the connection stays open and what the
/// connection manager sent.
async fn exchange(
    shard: &Rc<Shard>,
    conn: &Connection,
    req: &Request,
    body: &[u8],
    arrived: bool,
) -> (bool, Sent) {
    let mut down = Scripted::new(body, arrived);
    let mut timer = std::pin::pin!(monoio::time::sleep(Duration::from_secs(3600)));
    let keep = conn
        .serve(shard, &mut down, timer.as_mut(), req, Instant::now())
        .await;
    (keep, down.sent)
}

impl Sent {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The response body as text: the test upstream's description of the request it saw.
    fn echo(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[test]
fn a_second_codec_drives_the_same_manager_filters_router_and_upstream() {
    let (a, b) = (upstream("a"), upstream("b"));
    let yaml = fixture(a.addr, b.addr);
    with_manager(&yaml, async |shard, conn, counters| {
        let count = |c: Counter| counters[c.index()].load(std::sync::atomic::Ordering::Relaxed);

        // Routed (prefix rewrite), the header policy applied, the response relayed.
        let req = request(
            "GET",
            "api.example.com",
            "/v1/users?id=3",
            &[],
            Framing::Empty,
        );
        let (keep, sent) = exchange(shard, conn, &req, b"", true).await;
        assert!(keep, "kept open");
        assert_eq!(sent.status, Some(200));
        assert_eq!(sent.after, Some(ConnectionAfter::KeepAlive));
        assert_eq!(sent.header("x-upstream"), Some("a"));
        assert_eq!(
            sent.header("x-proxied-by"),
            Some("mesh"),
            "route config edit"
        );
        let echo = sent.echo();
        assert!(echo.starts_with("GET /users?id=3 HTTP/1.1\n"), "{echo}");
        assert!(echo.contains("x-request-id: "), "{echo}");
        assert!(echo.contains("x-forwarded-for: 10.1.2.3\n"), "{echo}");

        // A body that streams (no length known in advance) goes upstream through the
        // codec's relay, chunked; the upstream saw every byte.
        let payload = b"hello from a codec that is not HTTP/1.1";
        let req = request(
            "POST",
            "x.example.com",
            "/upload",
            &[("content-type", "text/plain")],
            Framing::Chunked,
        );
        let (keep, sent) = exchange(shard, conn, &req, payload, false).await;
        assert!(keep);
        assert_eq!(sent.header("x-upstream"), Some("b"));
        let echo = sent.echo();
        assert!(echo.contains("host: rewritten.internal"), "{echo}");
        assert!(
            echo.contains(&format!("body-bytes: {}\n", payload.len())),
            "{echo}"
        );

        // A complete small body the codec already has goes with the head.
        let req = request(
            "PUT",
            "api.example.com",
            "/v1/x",
            &[],
            Framing::Length(payload.len() as u64),
        );
        let (keep, sent) = exchange(shard, conn, &req, payload, true).await;
        assert!(keep);
        let echo = sent.echo();
        assert!(
            echo.contains(&format!("content-length: {}", payload.len())),
            "{echo}"
        );

        // A chunked upstream response reaches the codec decoded, through its relay.
        let req = request(
            "GET",
            "api.example.com",
            "/v1/chunked-response",
            &[],
            Framing::Empty,
        );
        let (keep, sent) = exchange(shard, conn, &req, b"", true).await;
        assert!(keep);
        assert_eq!(sent.framing, Some(Framing::Chunked));
        let echo = sent.echo();
        assert!(
            echo.starts_with("GET /chunked-response HTTP/1.1\n"),
            "{echo}"
        );

        // Local answers come back as local replies, whatever the codec.
        let req = request("GET", "nowhere.test", "/direct", &[], Framing::Empty);
        let (_, sent) = exchange(shard, conn, &req, b"", true).await;
        assert_eq!(sent.local.as_ref().map(|l| l.0), Some(200));
        let req = request(
            "GET",
            "api.example.com",
            "/nothing-here",
            &[],
            Framing::Empty,
        );
        let (_, sent) = exchange(shard, conn, &req, b"", true).await;
        assert_eq!(sent.local.as_ref().map(|l| l.0), Some(404));

        assert_eq!(count(Counter::DownstreamRqTotal), 6);
        assert_eq!(count(Counter::DownstreamRq2xx), 5);
        assert_eq!(count(Counter::DownstreamRq4xx), 1);
        assert_eq!(count(Counter::RouteNotFound), 1);
    });
}
