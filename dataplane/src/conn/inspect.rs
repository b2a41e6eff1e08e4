//! The listener filters: `envoy.filters.listener.http_inspector` (which HTTP a new
//! plaintext connection speaks, from its first bytes, for
//! `filter_chain_match.application_protocols`) and `envoy.filters.listener.tls_inspector`
//! (a ClientHello's SNI and ALPN, for `server_names`, `transport_protocol: tls` and
//! `application_protocols`).
//!
//! As Envoy's: the HTTP/2 connection preface gives `h2c`; a request line ending in
//! `HTTP/1.1` gives `http/1.1`, any other HTTP version `http/1.0`; bytes that cannot start a
//! request line give nothing (the connection goes on, unlabelled). Up to 64 KiB are
//! inspected; a request line longer than that closes the connection. The bytes are peeked,
//! not consumed: the chosen chain reads them as if nothing had looked.

use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::net::sys;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Envoy's `MAX_INSPECT_SIZE`.
const MAX_INSPECT: usize = 64 * 1024;

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// This application protocol.
    Protocol(&'static str),
    /// Not HTTP (or not a request): no protocol.
    NotHttp,
    /// Too few bytes to tell.
    More,
}

/// Classifies the bytes a connection started with (sans-I/O).
pub fn classify(data: &[u8]) -> Verdict {
    let n = data.len().min(H2_PREFACE.len());
    if data[..n] == H2_PREFACE[..n] {
        return match data.len() >= H2_PREFACE.len() {
            true => Verdict::Protocol("h2c"),
            false => Verdict::More,
        };
    }
    let line_end = data.iter().position(|&b| b == b'\n');
    let line = match line_end {
        Some(i) => &data[..i],
        None => data,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() && line_end.is_some() || data.first().is_some_and(|&b| b == b'\r') {
        return Verdict::NotHttp;
    }
    // method SP target SP HTTP/d.d
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if !method.iter().all(is_token) {
        return Verdict::NotHttp;
    }
    let Some(target) = parts.next() else {
        return match line_end {
            None => Verdict::More,
            Some(_) => Verdict::NotHttp,
        };
    };
    if target.iter().any(|&b| b.is_ascii_control() || b == b' ') || method.is_empty() {
        return Verdict::NotHttp;
    }
    let Some(version) = parts.next() else {
        return match line_end {
            None => Verdict::More,
            Some(_) => Verdict::NotHttp,
        };
    };
    let complete = line_end.is_some();
    let want = b"HTTP/";
    if !complete {
        let k = version.len().min(want.len());
        return match version[..k] == want[..k] && version.len() <= 8 {
            true => Verdict::More,
            false => Verdict::NotHttp,
        };
    }
    match version {
        b"HTTP/1.1" => Verdict::Protocol("http/1.1"),
        [b'H', b'T', b'T', b'P', b'/', d1, b'.', d2]
            if d1.is_ascii_digit() && d2.is_ascii_digit() =>
        {
            Verdict::Protocol("http/1.0")
        }
        _ => Verdict::NotHttp,
    }
}

/// Why inspection ended the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum InspectError {
    /// The client closed (or reset) before the bytes told.
    Closed,
    /// `listener_filters_timeout` passed.
    Timeout,
    /// 64 KiB without the end of a request line.
    TooLong,
}

/// Peeks at `stream` until its first bytes tell, or `timeout` passes. Readiness stays set
/// while peeked bytes wait, so a line that arrives in pieces is peeked again after a short,
/// growing pause (1 ms doubling to 64 ms), not in a busy loop; most request lines come in
/// the first segment.
pub async fn http(
    stream: &TcpStream,
    timeout: Option<Duration>,
) -> Result<Option<&'static str>, InspectError> {
    peek_for(stream, timeout, |data| match classify(data) {
        Verdict::Protocol(p) => Some(Some(p)),
        Verdict::NotHttp => Some(None),
        Verdict::More => None,
    })
    .await
}

/// What `envoy.filters.listener.tls_inspector` learns from a ClientHello.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// SNI, lower-cased.
    pub server_name: Option<String>,
    /// ALPN, in the client's order.
    pub alpn: Vec<String>,
}

/// Reads a ClientHello from the first bytes (sans-I/O): `Some(Some)` when they are one,
/// `Some(None)` when they are not TLS, `None` when more bytes are needed. rustls parses it.
pub fn client_hello(data: &[u8]) -> Option<Option<Hello>> {
    // A TLS handshake record, as Envoy's inspector checks first.
    if data.first().is_some_and(|&b| b != 0x16) {
        return Some(None);
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = data;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Some(None),
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let h = accepted.client_hello();
            Some(Some(Hello {
                server_name: h.server_name().map(str::to_ascii_lowercase),
                alpn: h
                    .alpn()
                    .map(|a| a.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
                    .unwrap_or_default(),
            }))
        }
        Ok(None) => None,
        Err(_) => Some(None),
    }
}

/// `envoy.filters.listener.tls_inspector`: the ClientHello's server name and ALPN, if the
/// connection starts with one (peeked, not consumed; up to 64 KiB, as Envoy's
/// `max_client_hello_size`).
pub async fn tls(
    stream: &TcpStream,
    timeout: Option<Duration>,
) -> Result<Option<Hello>, InspectError> {
    peek_for(stream, timeout, client_hello).await
}

/// Peeks at `stream` until `decide` returns an answer from its first bytes, or `timeout`
/// passes (see [`http`]).
async fn peek_for<T>(
    stream: &TcpStream,
    timeout: Option<Duration>,
    mut decide: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, InspectError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let fd = std::os::fd::AsRawFd::as_raw_fd(stream);
    let mut buf = vec![0u8; 8 * 1024];
    let mut pause = Duration::from_millis(1);
    let mut seen = 0;
    loop {
        let ready = async {
            if seen > 0 {
                monoio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(64));
            }
            stream.readable(false).await
        };
        let ready = match deadline {
            Some(d) => monoio::time::timeout_at(d.into(), ready)
                .await
                .map_err(|_| InspectError::Timeout)?,
            None => ready.await,
        };
        ready.map_err(|_| InspectError::Closed)?;
        let n = match sys::peek(fd, &mut buf) {
            Ok(0) => return Err(InspectError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(InspectError::Closed),
        };
        match decide(&buf[..n]) {
            Some(answer) => return Ok(answer),
            None if n == MAX_INSPECT => return Err(InspectError::TooLong),
            None => {
                if n == buf.len() {
                    buf.resize((buf.len() * 2).min(MAX_INSPECT), 0);
                }
                seen = n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_the_protocol() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nhost: a\r\n"),
            Verdict::Protocol("http/1.1")
        );
        assert_eq!(
            classify(b"POST /x?y HTTP/1.0\r\n"),
            Verdict::Protocol("http/1.0")
        );
        assert_eq!(classify(b"GET / HTTP/2.0\n"), Verdict::Protocol("http/1.0"));
        assert_eq!(classify(H2_PREFACE), Verdict::Protocol("h2c"));
        assert_eq!(classify(&H2_PREFACE[..10]), Verdict::More);
        assert_eq!(classify(b"GET /long/path"), Verdict::More);
        assert_eq!(classify(b"GET / HT"), Verdict::More);
        assert_eq!(classify(b"GET / HTTP/1.1"), Verdict::More);
        assert_eq!(classify(b"hello\n"), Verdict::NotHttp);
        assert_eq!(classify(b"\r\nGET / HTTP/1.1\r\n"), Verdict::NotHttp);
        assert_eq!(classify(b"GET / SMTP/1.0\r\n"), Verdict::NotHttp);
        assert_eq!(classify(b"GET / XTTP"), Verdict::NotHttp);
        assert_eq!(classify(b"GE(T / HTTP/1.1\r\n"), Verdict::NotHttp);
        assert_eq!(
            classify(b"\x16\x03\x01\x02\x00"),
            Verdict::NotHttp,
            "a TLS record"
        );
    }
}
