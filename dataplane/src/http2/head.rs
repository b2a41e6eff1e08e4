//! HTTP/2 heads to and from the codec-neutral types, sans-I/O.
//!
//! A request's pseudo-headers and fields (already HPACK-decoded and checked by `h2`) are laid
//! out in one buffer as the HTTP/1.1 codec's heads are, so the connection manager, filters
//! and router read an HTTP/2 request exactly as an HTTP/1.1 one. On the way a request is
//! held to what an HTTP/1.1 upstream can carry safely: no control characters in a value,
//! names that are tokens, cookies joined into one field (RFC 9113 section 8.2.3).
//! Responses go the other way: the connection-specific fields HTTP/2 forbids are dropped.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

use crate::http::downstream::{LocalBody, ResponseHead};
use crate::http::message::{Framing, Header, HeaderSource, Request, Version};

/// Why a request head was refused (the stream is reset with PROTOCOL_ERROR).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// A name or value an HTTP/1.1 upstream could be misled by.
    InvalidField,
    /// More fields than `max_headers_count`.
    TooManyHeaders,
    /// `content-length` is not a number.
    InvalidContentLength,
    /// CONNECT (extended or not): no tunnels over HTTP/2 yet.
    Connect,
}

/// Lays `parts` out as a [`Request`]. `end_stream`: the HEADERS frame ended the stream (no
/// body follows).
pub fn request(
    parts: &http::request::Parts,
    end_stream: bool,
    max_headers: usize,
) -> Result<Request, Refused> {
    if parts.method == http::Method::CONNECT {
        return Err(Refused::Connect);
    }
    if parts.headers.len() > max_headers {
        return Err(Refused::TooManyHeaders);
    }
    let mut raw = Vec::with_capacity(256);
    let put = |raw: &mut Vec<u8>, b: &[u8]| -> Range<usize> {
        let start = raw.len();
        raw.extend_from_slice(b);
        start..raw.len()
    };
    let method = put(&mut raw, parts.method.as_str().as_bytes());
    let path = put(&mut raw, parts.uri.path().as_bytes());
    let query = parts.uri.query().map(|q| put(&mut raw, q.as_bytes()));
    if !clean(&raw[path.start..]) {
        return Err(Refused::InvalidField);
    }
    // `:authority`, else `host` (RFC 9113 section 8.3.1).
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str().as_bytes(),
        None => parts
            .headers
            .get(http::header::HOST)
            .map_or(&b""[..], |h| h.as_bytes()),
    };
    if !clean(authority) {
        return Err(Refused::InvalidField);
    }
    let host = put(&mut raw, authority);
    let mut headers = Vec::with_capacity(parts.headers.len());
    let mut cookies: Vec<u8> = Vec::new();
    let mut content_length = None;
    let mut expect_continue = false;
    for (name, value) in &parts.headers {
        let v = value.as_bytes();
        if !clean(v) {
            return Err(Refused::InvalidField);
        }
        match name.as_str() {
            "host" => continue,
            "cookie" => {
                // Crumbs joined into one field, in order, as an HTTP/1.1 server expects.
                if !cookies.is_empty() {
                    cookies.extend_from_slice(b"; ");
                }
                cookies.extend_from_slice(v);
                continue;
            }
            "content-length" => {
                let n = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or(Refused::InvalidContentLength)?;
                content_length = Some(n);
            }
            "expect" => expect_continue = v.eq_ignore_ascii_case(b"100-continue"),
            _ => {}
        }
        let name = put(&mut raw, name.as_str().as_bytes());
        let value = put(&mut raw, v);
        headers.push(Header { name, value });
    }
    if !cookies.is_empty() {
        let name = put(&mut raw, b"cookie");
        let value = put(&mut raw, &cookies);
        headers.push(Header { name, value });
    }
    let framing = match (end_stream, content_length) {
        (true, _) => Framing::Empty,
        (false, Some(0)) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
        // A body of unknown length: chunked to an HTTP/1.1 upstream.
        (false, None) => Framing::Chunked,
    };
    Ok(Request {
        raw,
        method,
        path,
        query,
        host,
        headers,
        framing,
        version: Version::Http2,
        close: false,
        expect_continue: expect_continue && !end_stream,
        upgrade: None,
        connection: Vec::new(),
    })
}

/// No control characters but tab (CR, LF and NUL above all): what HTTP/1.1 cannot frame.
fn clean(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Fields HTTP/2 forbids in a message (RFC 9113 section 8.2.2).
fn connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// The HTTP/2 response for `head` (its fields; the status line's reason is HTTP/1.1's
/// alone). A field that is not valid HTTP/2 is left out.
pub fn response(head: &ResponseHead<'_>) -> http::Response<()> {
    let mut resp = http::Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let map = resp.headers_mut();
    head.headers.for_each(|n, v| push(map, n, v));
    match head.framing {
        Framing::Length(n) => {
            map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        _ => {
            if let Some(cl) = head.content_length {
                push(map, b"content-length", cl);
            }
        }
    }
    resp
}

/// A local reply's head and body.
pub fn local_response(
    status: u16,
    body: LocalBody<'_>,
    extra: &[(&[u8], Cow<'_, [u8]>)],
) -> (http::Response<()>, Bytes) {
    let mut resp = http::Response::new(());
    let status = match body {
        LocalBody::Grpc { .. } => 200,
        _ => status,
    };
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let map = resp.headers_mut();
    let body = match body {
        // An empty one ends the stream with the head, without a length (as Envoy's).
        LocalBody::Text("") => Bytes::new(),
        // Trailers-only: the status in the head, which ends the stream.
        LocalBody::Grpc {
            status: code,
            message,
        } => {
            push(map, b"content-type", b"application/grpc");
            map.insert("grpc-status", HeaderValue::from(u16::from(code)));
            if !message.is_empty() {
                push(map, b"grpc-message", message.as_bytes());
            }
            Bytes::new()
        }
        LocalBody::Text(t) => {
            push(map, b"content-type", b"text/plain");
            map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(t.len()));
            Bytes::copy_from_slice(t.as_bytes())
        }
        LocalBody::Encoded(b) => Bytes::copy_from_slice(b),
    };
    for (n, v) in extra {
        push(map, n, v);
    }
    (resp, body)
}

fn push(map: &mut http::HeaderMap, name: &[u8], value: &[u8]) {
    if connection_specific(name) || name == b"te" {
        return;
    }
    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
        map.append(n, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(build: http::request::Builder) -> http::request::Parts {
        build.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_request_reads_as_an_http1_one() {
        let p = parts(
            http::Request::builder()
                .method("POST")
                .uri("http://example.com:8080/a/b?x=1")
                .header("x-a", "1")
                .header("cookie", "a=1")
                .header("content-length", "5")
                .header("cookie", "b=2"),
        );
        let r = request(&p, false, 100).unwrap();
        assert_eq!(r.method(), b"POST");
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query(), Some("x=1"));
        assert_eq!(r.host(), "example.com:8080");
        assert_eq!(r.header("x-a"), Some("1"));
        assert_eq!(r.header("cookie"), Some("a=1; b=2"));
        assert_eq!(r.framing, Framing::Length(5));
        assert_eq!(r.version, Version::Http2);
    }

    #[test]
    fn framing_follows_end_stream_and_content_length() {
        let p = parts(http::Request::builder().uri("http://h/"));
        assert_eq!(request(&p, true, 100).unwrap().framing, Framing::Empty);
        assert_eq!(request(&p, false, 100).unwrap().framing, Framing::Chunked);
        let bad = parts(
            http::Request::builder()
                .uri("http://h/")
                .header("content-length", "x"),
        );
        assert_eq!(
            request(&bad, false, 100).unwrap_err(),
            Refused::InvalidContentLength
        );
    }

    #[test]
    fn host_header_when_no_authority_and_limits() {
        let p = parts(
            http::Request::builder()
                .uri("/p")
                .header("host", "h.example"),
        );
        let r = request(&p, true, 100).unwrap();
        assert_eq!(r.host(), "h.example");
        assert!(r.header("host").is_none());
        let many = parts(
            http::Request::builder()
                .uri("/p")
                .header("a", "1")
                .header("b", "2"),
        );
        assert_eq!(
            request(&many, true, 1).unwrap_err(),
            Refused::TooManyHeaders
        );
        let connect = parts(http::Request::builder().method("CONNECT").uri("h:443"));
        assert_eq!(request(&connect, true, 100).unwrap_err(), Refused::Connect);
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(clean(b"a\tb"));
        assert!(!clean(b"a\r\nx-injected: 1"));
        assert!(!clean(b"a\0"));
    }

    #[test]
    fn local_replies_carry_length_and_type() {
        let (r, b) = local_response(404, LocalBody::Text("nope"), &[(b"x-a", b"1"[..].into())]);
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-length"], "4");
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(&b[..], b"nope");
        let (r, _) = local_response(
            200,
            LocalBody::Text(""),
            &[(b"connection", b"close"[..].into())],
        );
        assert!(r.headers().get("content-type").is_none());
        assert!(r.headers().get("content-length").is_none());
        assert!(r.headers().get("connection").is_none());
    }
}
