//! One request/response exchange per protocol, from the client side: a TCP echo of `size`
//! bytes, an HTTP/1.1 request (keep-alive or a new connection each time), an h2c stream.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::Failure;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// Write `size` bytes, read `size` bytes back, on a persistent connection.
    Tcp,
    /// HTTP/1.1 over persistent connections, one request at a time on each.
    Http1,
    /// HTTP/1.1 with `Connection: close`: a new connection per request.
    Http1Close,
    /// HTTP/2 with prior knowledge, `streams` concurrent requests per connection.
    H2c,
    /// HTTP/1.1 over persistent TLS 1.3 connections (ALPN http/1.1), trusting the CA given
    /// to [`trust`].
    Https,
    /// HTTPS with `Connection: close`: a new TLS connection per request, each a full
    /// handshake (the client keeps no session).
    HttpsFull,
    /// HTTPS with `Connection: close`, each new connection resuming the session of an
    /// earlier one (TLS 1.3 tickets, from the client's session cache).
    HttpsResumed,
}

impl Proto {
    /// A new connection per request.
    pub fn closes(self) -> bool {
        matches!(
            self,
            Proto::Http1Close | Proto::HttpsFull | Proto::HttpsResumed
        )
    }

    /// Over TLS.
    pub fn tls(self) -> bool {
        matches!(self, Proto::Https | Proto::HttpsFull | Proto::HttpsResumed)
    }
}

/// The TLS client configurations of a run: sessions kept (resumption), and none kept.
static TRUST: std::sync::OnceLock<[std::sync::Arc<rustls::ClientConfig>; 2]> =
    std::sync::OnceLock::new();

/// Sets the CA the `Https` client trusts (once per process).
pub fn trust(ca_der: Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.into()).expect("the bench CA");
    #[allow(deprecated)] // Reason: ring, as the proxy's; post-quantum groups are not measured.
    let mut provider = rustls::crypto::ring::default_provider();
    // X25519 first, as browsers and curl offer it (ring's list starts with P-384).
    provider.kx_groups = vec![
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
    ];
    let provider = std::sync::Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut full = config.clone();
    full.resumption = rustls::client::Resumption::disabled();
    let _ = TRUST.set([std::sync::Arc::new(config), std::sync::Arc::new(full)]);
}

type TlsStream = tokio_rustls::client::TlsStream<monoio_compat::StreamWrapper<TcpStream>>;

/// An HTTP/1.1 connection's socket: plain, or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Proto {
    pub fn parse(s: &str) -> Result<Proto, String> {
        Ok(match s {
            "tcp" => Proto::Tcp,
            "http1" => Proto::Http1,
            "http1-close" => Proto::Http1Close,
            "h2c" => Proto::H2c,
            "https" => Proto::Https,
            "https-full" => Proto::HttpsFull,
            "https-resumed" => Proto::HttpsResumed,
            _ => {
                return Err(format!(
                    "unknown protocol {s:?} (tcp, http1, http1-close, h2c, https, https-full, https-resumed)"
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Http1 => "http1",
            Proto::Http1Close => "http1-close",
            Proto::H2c => "h2c",
            Proto::Https => "https",
            Proto::HttpsFull => "https-full",
            Proto::HttpsResumed => "https-resumed",
        }
    }
}

/// What every exchange of a run sends.
pub struct Request {
    pub addr: SocketAddr,
    pub authority: String,
    pub path: String,
    /// TCP: bytes each way. HTTP: the request body (a POST when non-zero, else a GET).
    pub size: usize,
    /// HTTP/1.1: the whole request, head and body.
    wire: Vec<u8>,
    body: Bytes,
}

impl Request {
    pub fn new(
        proto: Proto,
        addr: SocketAddr,
        authority: String,
        path: String,
        size: usize,
        headers: &[(String, String)],
    ) -> Request {
        let method = if size > 0 { "POST" } else { "GET" };
        let mut wire = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: zerohop-bench\r\n"
        );
        for (n, v) in headers {
            wire.push_str(&format!("{n}: {v}\r\n"));
        }
        if size > 0 {
            wire.push_str(&format!("Content-Length: {size}\r\n"));
        }
        if proto.closes() {
            wire.push_str("Connection: close\r\n");
        }
        wire.push_str("\r\n");
        let mut wire = wire.into_bytes();
        wire.resize(wire.len() + size, b'z');
        Request {
            addr,
            authority,
            path,
            size,
            wire,
            body: Bytes::from(vec![b'z'; size]),
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let s = TcpStream::connect_addr(addr)
        .await
        .map_err(|_| Failure::Connect)?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// A persistent TCP connection exchanging fixed-size messages with an echo server.
pub struct TcpConn {
    s: TcpStream,
    out: Vec<u8>,
    back: Vec<u8>,
}

impl TcpConn {
    pub async fn open(req: &Request) -> Result<TcpConn, Failure> {
        Ok(TcpConn {
            s: connect(req.addr).await?,
            out: vec![0x5a; req.size.max(1)],
            back: vec![0; req.size.max(1)],
        })
    }

    pub async fn exchange(&mut self) -> Result<u16, Failure> {
        let (r, out) = self.s.write_all(std::mem::take(&mut self.out)).await;
        self.out = out;
        r.map_err(|_| Failure::Write)?;
        let (r, back) = self.s.read_exact(std::mem::take(&mut self.back)).await;
        self.back = back;
        match r {
            Ok(_) => Ok(0),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Failure::Closed),
            Err(_) => Err(Failure::Read),
        }
    }
}

/// An HTTP/1.1 connection: writes the request, reads one whole response.
pub struct Http1Conn {
    s: Stream,
    wire: Vec<u8>,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    at: usize,
}

const MAX_LINE: usize = 64 * 1024;

impl Http1Conn {
    pub async fn open(req: &Request, proto: Proto) -> Result<Http1Conn, Failure> {
        let tcp = connect(req.addr).await?;
        let s = match proto.tls() {
            false => Stream::Plain(tcp),
            true => {
                let configs = TRUST.get().expect("gen::client::trust before a TLS run");
                let config = configs[usize::from(proto == Proto::HttpsFull)].clone();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let io = monoio_compat::StreamWrapper::new(tcp);
                let s = tokio_rustls::TlsConnector::from(config)
                    .connect(name, io)
                    .await
                    .map_err(|_| Failure::Connect)?;
                Stream::Tls(Box::new(s))
            }
        };
        Ok(Http1Conn {
            s,
            wire: req.wire.clone(),
            buf: Vec::with_capacity(64 * 1024),
            at: 0,
        })
    }

    /// One request and its response: the status, and whether the connection may be reused.
    pub async fn exchange(&mut self) -> Result<(u16, bool), Failure> {
        match &mut self.s {
            Stream::Plain(s) => {
                let (r, wire) = s.write_all(std::mem::take(&mut self.wire)).await;
                self.wire = wire;
                r.map_err(|_| Failure::Write)?;
            }
            Stream::Tls(t) => {
                use tokio::io::AsyncWriteExt;
                t.write_all(&self.wire).await.map_err(|_| Failure::Write)?;
                t.flush().await.map_err(|_| Failure::Write)?;
            }
        }
        loop {
            let (status, reuse) = self.response().await?;
            // 1xx (100 Continue, 103 Early Hints) precede the final response.
            if !(100..200).contains(&status) {
                return Ok((status, reuse));
            }
        }
    }

    /// Reads more bytes into `buf`; `Closed` at end of stream.
    async fn fill(&mut self) -> Result<(), Failure> {
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.buf.len() == self.buf.capacity() {
            self.buf.drain(..self.at);
            self.at = 0;
            if self.buf.len() == self.buf.capacity() {
                self.buf.reserve(self.buf.capacity());
            }
        }
        let len = self.buf.len();
        let cap = self.buf.capacity();
        let r = match &mut self.s {
            Stream::Plain(s) => {
                let (r, slice) = s
                    .read(std::mem::take(&mut self.buf).slice_mut(len..cap))
                    .await;
                self.buf = slice.into_inner();
                r
            }
            Stream::Tls(t) => {
                use tokio::io::AsyncReadExt;
                self.buf.resize(cap, 0);
                let r = t.read(&mut self.buf[len..]).await;
                self.buf.truncate(len + *r.as_ref().unwrap_or(&0));
                r
            }
        };
        match r {
            Ok(0) => Err(Failure::Closed),
            Ok(_) => Ok(()),
            Err(_) => Err(Failure::Read),
        }
    }

    async fn response(&mut self) -> Result<(u16, bool), Failure> {
        let (status, head_len, body, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[self.at..]) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let (body, close) = framing(status, resp.headers)?;
                    break (status, n, body, close);
                }
                Ok(httparse::Status::Partial) if self.buf.len() - self.at < MAX_LINE => {
                    self.fill().await?
                }
                _ => return Err(Failure::Protocol),
            }
        };
        self.at += head_len;
        match body {
            Body::None => {}
            Body::Length(n) => self.skip(n).await?,
            Body::Chunked => loop {
                let line = self.line().await?;
                let hex = line.split(|&b| b == b';').next().unwrap_or(&[]);
                let size = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
                    .ok_or(Failure::Protocol)?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                self.skip(size).await?;
                if !self.line().await?.is_empty() {
                    return Err(Failure::Protocol);
                }
            },
            Body::UntilClose => loop {
                self.at = self.buf.len();
                match self.fill().await {
                    Ok(()) => {}
                    Err(Failure::Closed) => break,
                    Err(e) => return Err(e),
                }
            },
        }
        Ok((status, !close && body != Body::UntilClose))
    }

    async fn skip(&mut self, mut n: u64) -> Result<(), Failure> {
        loop {
            let have = (self.buf.len() - self.at) as u64;
            if have >= n {
                self.at += n as usize;
                return Ok(());
            }
            n -= have;
            self.at = self.buf.len();
            self.fill().await?;
        }
    }

    /// The next CRLF-terminated line, without the CRLF.
    async fn line(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            let rest = &self.buf[self.at..];
            if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                let line = rest[..i].to_vec();
                self.at += i + 2;
                return Ok(line);
            }
            if rest.len() >= MAX_LINE {
                return Err(Failure::Protocol);
            }
            self.fill().await?;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// How the response body is delimited (RFC 9112 section 6.3), and `Connection: close`.
fn framing(status: u16, headers: &[httparse::Header<'_>]) -> Result<(Body, bool), Failure> {
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for h in headers {
        let value = std::str::from_utf8(h.value).map_err(|_| Failure::Protocol)?;
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.trim().parse().map_err(|_| Failure::Protocol)?;
            if length.is_some_and(|l| l != n) {
                return Err(Failure::Protocol);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Body::None
    } else if chunked {
        Body::Chunked
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    Ok((body, close))
}

type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), h2::Error>>>>;

/// An h2c connection shared by the workers assigned to it.
///
/// With one stream per connection its single worker drives the connection itself, polled
/// beside its request (`inline`); with several, the connection runs as its own task. Inline
/// saves a task hop per response (~3.5 us measured against h2load), which would otherwise be
/// counted as the target's latency.
#[derive(Default)]
pub struct H2Slot {
    send: std::cell::RefCell<Option<h2::client::SendRequest<Bytes>>>,
    driver: std::cell::RefCell<Option<Driver>>,
    inline: bool,
}

impl H2Slot {
    pub fn new(inline: bool) -> H2Slot {
        H2Slot {
            inline,
            ..H2Slot::default()
        }
    }

    async fn sender(&self, req: &Request) -> Result<h2::client::SendRequest<Bytes>, Failure> {
        if let Some(s) = self.send.borrow().clone() {
            return Ok(s);
        }
        let io = monoio_compat::StreamWrapper::new(connect(req.addr).await?);
        let (send, conn) = h2::client::handshake(io)
            .await
            .map_err(|_| Failure::Connect)?;
        if self.inline {
            *self.driver.borrow_mut() = Some(Box::pin(conn));
        } else {
            monoio::spawn(async move {
                let _ = conn.await;
            });
        }
        *self.send.borrow_mut() = Some(send.clone());
        Ok(send)
    }

    /// Forgets the connection after an error, so the next request opens a new one.
    pub fn reset(&self) {
        self.send.borrow_mut().take();
        self.driver.borrow_mut().take();
    }

    pub async fn exchange(self: &Rc<Self>, req: &Request) -> Result<u16, Failure> {
        let send = self.sender(req).await?;
        let work = request(send, req);
        let Some(mut driver) = self.driver.borrow_mut().take() else {
            return work.await;
        };
        let mut work = std::pin::pin!(work);
        monoio::select! {
            r = &mut work => {
                *self.driver.borrow_mut() = Some(driver);
                r
            }
            end = &mut driver => {
                self.reset();
                Err(end.map_or_else(h2_failure, |()| Failure::Closed))
            }
        }
    }
}

async fn request(send: h2::client::SendRequest<Bytes>, req: &Request) -> Result<u16, Failure> {
    let mut send = send.ready().await.map_err(h2_failure)?;
    let request = http::Request::builder()
        .method(if req.size > 0 { "POST" } else { "GET" })
        .uri(format!("http://{}{}", req.authority, req.path))
        .header("user-agent", "zerohop-bench")
        .body(())
        .map_err(|_| Failure::Protocol)?;
    let (response, mut stream) = send
        .send_request(request, req.size == 0)
        .map_err(h2_failure)?;
    if req.size > 0 {
        stream
            .send_data(req.body.clone(), true)
            .map_err(h2_failure)?;
    }
    let response = response.await.map_err(h2_failure)?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(h2_failure)?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}

fn h2_failure(e: h2::Error) -> Failure {
    if e.is_io() {
        Failure::Read
    } else {
        Failure::Protocol
    }
}
