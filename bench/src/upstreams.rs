//! Trivial upstreams the benchmarks put behind each target: a TCP echo, a sink, and an HTTP
//! server that answers HTTP/1.1 and h2c (prior knowledge, told apart by the connection
//! preface) with a fixed body. Each runs on one thread, pinned to the load CPU.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use crate::load::{pin, runtime};

/// Binds `addr` (port 0 for any) and serves with `serve` on a new pinned thread.
fn spawn<F, Fut>(addr: SocketAddr, core: Option<core_affinity::CoreId>, serve: F) -> SocketAddr
where
    F: Fn(monoio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        pin(core);
        runtime().block_on(async move {
            let l = monoio::net::TcpListener::from_std(l).unwrap();
            while let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                monoio::spawn(serve(s));
            }
        });
    });
    addr
}

fn any_port() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// An echo upstream (one task per connection).
pub fn echo_server(core: Option<core_affinity::CoreId>) -> SocketAddr {
    echo_server_on(any_port(), core)
}

pub fn echo_server_on(addr: SocketAddr, core: Option<core_affinity::CoreId>) -> SocketAddr {
    spawn(addr, core, |mut s| async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (r, b) = s.read(buf).await;
            let n = match r {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            let (r, b) = s.write_all(monoio::buf::IoBuf::slice(b, 0..n)).await;
            buf = b.into_inner();
            if r.is_err() {
                return;
            }
        }
    })
}

/// A sink upstream: reads and discards, a thread per connection.
pub fn sink_server(core: Option<core_affinity::CoreId>) -> SocketAddr {
    let l = TcpListener::bind(any_port()).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                pin(core);
                let mut s = s;
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP server answering every request with 200 and `body_size` bytes: HTTP/1.1
/// (keep-alive unless the client says close) and h2c with prior knowledge.
pub fn http_server(core: Option<core_affinity::CoreId>, body_size: usize) -> SocketAddr {
    http_server_on(any_port(), core, body_size)
}

/// [`http_server`] with a body of English-like text (words from a fixed list in a
/// pseudo-random order: compresses about as well as prose, 3-4x with gzip), for the
/// compression benchmark.
pub fn http_text_server(core: Option<core_affinity::CoreId>, body_size: usize) -> SocketAddr {
    const TEXT: &str = "the proxy sends each request to an upstream host and returns its response \
        while counting bytes per connection mesh service latency shard buffer header route cluster";
    let words: Vec<&str> = TEXT.split_whitespace().collect();
    let mut text = Vec::with_capacity(body_size + 16);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while text.len() < body_size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        text.push(if x.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    text.truncate(body_size);
    let body = Bytes::from(text);
    spawn(any_port(), core, move |s| serve_http(s, body.clone()))
}

pub fn http_server_on(
    addr: SocketAddr,
    core: Option<core_affinity::CoreId>,
    body_size: usize,
) -> SocketAddr {
    let body = Bytes::from(vec![b'x'; body_size]);
    spawn(addr, core, move |s| serve_http(s, body.clone()))
}

async fn serve_http(mut s: monoio::net::TcpStream, body: Bytes) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    // Enough bytes to tell the protocols apart.
    while buf.len() < PREFACE.len() && PREFACE.starts_with(&buf) {
        let len = buf.len();
        let cap = buf.capacity();
        let (r, b) = s.read(buf.slice_mut(len..cap)).await;
        buf = b.into_inner();
        if !matches!(r, Ok(n) if n > 0) {
            return;
        }
    }
    if buf.starts_with(PREFACE) {
        serve_h2(s, buf, body).await
    } else {
        serve_http1(s, buf, body).await
    }
}

async fn serve_http1(mut s: monoio::net::TcpStream, mut buf: Vec<u8>, body: Bytes) {
    let head_ok = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    );
    loop {
        // Parse one request head from what has arrived.
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut length = 0usize;
                    let mut close = req.version == Some(0);
                    let mut chunked = false;
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = true;
                        }
                    }
                    Some((n, length, close, chunked))
                }
                Ok(httparse::Status::Partial) => None,
                Err(_) => return,
            }
        };
        let Some((head, length, close, chunked)) = parsed else {
            if buf.len() > 64 * 1024 || !read_more(&mut s, &mut buf).await {
                return;
            }
            continue;
        };
        // The request body, discarded (a chunked one: an exporter's report).
        let end = if chunked {
            match chunked_end(&mut s, &mut buf, head).await {
                Some(end) => end,
                None => return,
            }
        } else {
            while buf.len() < head + length {
                if !read_more(&mut s, &mut buf).await {
                    return;
                }
            }
            head + length
        };
        buf.drain(..end);
        let mut out = Vec::with_capacity(head_ok.len() + 24 + body.len());
        out.extend_from_slice(head_ok.as_bytes());
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        let (r, _) = s.write_all(out).await;
        if r.is_err() || close {
            return;
        }
    }
}

/// Where a chunked body that starts at `at` ends (reading until it has), without trailers.
async fn chunked_end(
    s: &mut monoio::net::TcpStream,
    buf: &mut Vec<u8>,
    mut at: usize,
) -> Option<usize> {
    loop {
        let line = loop {
            if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if !read_more(s, buf).await {
                return None;
            }
        };
        let text = std::str::from_utf8(&buf[at..at + line]).ok()?;
        let size = usize::from_str_radix(text.split(';').next()?.trim(), 16).ok()?;
        // The size line, the data and its CRLF (the last chunk: the final CRLF).
        let need = at + line + 2 + size + 2;
        while buf.len() < need {
            if !read_more(s, buf).await {
                return None;
            }
        }
        at = need;
        if size == 0 {
            return Some(at);
        }
    }
}

async fn read_more(s: &mut monoio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    if buf.len() == buf.capacity() {
        buf.reserve(buf.capacity().max(4096));
    }
    let len = buf.len();
    let cap = buf.capacity();
    let (r, b) = s.read(std::mem::take(buf).slice_mut(len..cap)).await;
    *buf = b.into_inner();
    matches!(r, Ok(n) if n > 0)
}

async fn serve_h2(s: monoio::net::TcpStream, already: Vec<u8>, body: Bytes) {
    let io = Prefixed {
        prefix: Bytes::from(already),
        inner: monoio_compat::StreamWrapper::new(s),
    };
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let body = body.clone();
        monoio::spawn(async move {
            let mut incoming = req.into_body();
            while let Some(Ok(chunk)) = incoming.data().await {
                let _ = incoming.flow_control().release_capacity(chunk.len());
            }
            let response = http::Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .header("content-length", body.len())
                .body(())
                .expect("static response");
            let Ok(mut stream) = respond.send_response(response, body.is_empty()) else {
                return;
            };
            if !body.is_empty() {
                let _ = stream.send_data(body, true);
            }
        });
    }
}

/// A stream whose first bytes were already read (to sniff the protocol).
struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
