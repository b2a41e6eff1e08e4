//! Writing HTTP/1.1 heads: request and response lines, header lines, the framing header, and
//! the small formatting pieces they need. Sans-I/O: everything appends to a byte vector.

use std::borrow::Cow;

use crate::http::downstream::{ConnectionAfter, LocalBody};
use crate::http::message::{Framing, HeaderSource, RequestOut, Version};

/// A `name: value` line.
pub fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `name: value` lines.
pub fn write_headers(out: &mut Vec<u8>, headers: &[(&[u8], Cow<'_, [u8]>)]) {
    for (n, v) in headers {
        write_header(out, n, v);
    }
}

/// The header that delimits a body framed as `framing` (none for the others).
pub fn write_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
}

/// An upstream request head: request line, `host`, the headers (an upgrade request's
/// `Connection` among them), the framing header, and the upgrade the client asked for.
pub fn request_head(out: &mut Vec<u8>, r: &RequestOut<'_>, headers: &impl HeaderSource) {
    out.extend_from_slice(r.method);
    out.push(b' ');
    out.extend_from_slice(r.path);
    if let Some(q) = r.query {
        out.push(b'?');
        out.extend_from_slice(q);
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(r.authority);
    out.extend_from_slice(b"\r\n");
    headers.for_each(|n, v| write_header(out, n, v));
    write_framing(out, r.framing);
    if let Some(u) = r.upgrade {
        out.extend_from_slice(b"upgrade: ");
        out.extend_from_slice(u);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response head relayed downstream: status line (the upstream's reason phrase, else the
/// standard one), the headers, then the framing header, `content_length` for a bodiless
/// response that declared one (HEAD, 304), and the connection header. To an HTTP/1.0 client
/// the status line says HTTP/1.0 and a kept connection says `connection: keep-alive`, as
/// Envoy's codec answers.
#[allow(clippy::too_many_arguments)] // Reason: the parts of a status line and head.
pub fn response_head(
    out: &mut Vec<u8>,
    version: Version,
    status: u16,
    reason: Option<&[u8]>,
    headers: &impl HeaderSource,
    framing: Framing,
    content_length: Option<&[u8]>,
    connection: ConnectionAfter,
) {
    status_line(
        out,
        version,
        status,
        reason.unwrap_or(default_reason(status).as_bytes()),
    );
    headers.for_each(|n, v| write_header(out, n, v));
    match (framing, content_length) {
        (Framing::Empty, Some(n)) => write_header(out, b"content-length", n),
        (framing, _) => write_framing(out, framing),
    }
    connection_header(out, version, connection);
    out.extend_from_slice(b"\r\n");
}

fn connection_header(out: &mut Vec<u8>, version: Version, connection: ConnectionAfter) {
    match (connection, version) {
        (ConnectionAfter::Upgrade, _) => out.extend_from_slice(b"connection: upgrade\r\n"),
        (ConnectionAfter::Close, _) => out.extend_from_slice(b"connection: close\r\n"),
        (ConnectionAfter::KeepAlive, Version::Http10) => {
            out.extend_from_slice(b"connection: keep-alive\r\n")
        }
        // (HTTP/2 is never written by this codec.)
        (ConnectionAfter::KeepAlive, Version::Http11 | Version::Http2) => {}
    }
}

/// `HTTP/1.1 <status> <reason>\r\n` (or HTTP/1.0).
pub fn status_line(out: &mut Vec<u8>, version: Version, status: u16, reason: &[u8]) {
    out.extend_from_slice(match version {
        Version::Http11 | Version::Http2 => b"HTTP/1.1 ",
        Version::Http10 => b"HTTP/1.0 ",
    });
    match status {
        // Every status a parsed head or zerohop gives has three digits.
        100..=999 => out.extend_from_slice(&[
            b'0' + (status / 100) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
            b' ',
        ]),
        _ => {
            push_decimal(out, u64::from(status));
            out.push(b' ');
        }
    }
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The reason phrase of a status line, if it has one.
pub fn reason_phrase(raw: &[u8]) -> Option<&[u8]> {
    let line = raw.split(|&b| b == b'\r').next()?;
    let mut parts = line.splitn(3, |&b| b == b' ');
    parts.next()?;
    parts.next()?;
    let reason = parts.next()?;
    (!reason.is_empty()).then_some(reason)
}

pub fn default_reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A whole response zerohop makes itself: status line, `content-type: text/plain` when
/// there is a body, its length, `extra` headers, `connection: close` when asked, the body.
pub fn local_response(
    version: Version,
    status: u16,
    body: LocalBody<'_>,
    extra: &[(&[u8], Cow<'_, [u8]>)],
    close: bool,
) -> Vec<u8> {
    let (bytes, framing) = match body {
        LocalBody::Text(t) => (t.as_bytes(), Framing::Length(t.len() as u64)),
        // A compressed body: chunked, or (HTTP/1.0) delimited by the close.
        LocalBody::Encoded(b) if version == Version::Http11 => (b, Framing::Chunked),
        LocalBody::Encoded(b) => (b, Framing::UntilClose),
        LocalBody::Grpc { .. } => (&b""[..], Framing::Length(0)),
    };
    let close = close || framing == Framing::UntilClose;
    let mut out = Vec::with_capacity(128 + bytes.len());
    let status = match body {
        LocalBody::Grpc { .. } => 200,
        _ => status,
    };
    status_line(&mut out, version, status, default_reason(status).as_bytes());
    if !bytes.is_empty() {
        out.extend_from_slice(b"content-type: text/plain\r\n");
    }
    if let LocalBody::Grpc { status, message } = body {
        out.extend_from_slice(b"content-type: application/grpc\r\n");
        write_header(&mut out, b"grpc-status", status.to_string().as_bytes());
        if !message.is_empty() {
            write_header(&mut out, b"grpc-message", message.as_bytes());
        }
    }
    write_framing(&mut out, framing);
    write_headers(&mut out, extra);
    let connection = match close {
        true => ConnectionAfter::Close,
        false => ConnectionAfter::KeepAlive,
    };
    connection_header(&mut out, version, connection);
    out.extend_from_slice(b"\r\n");
    match framing {
        Framing::Chunked => {
            crate::http::filter::compressor::chunk_into(bytes, usize::MAX, &mut out);
            out.extend_from_slice(b"0\r\n\r\n");
        }
        _ => out.extend_from_slice(bytes),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        for s in [100, 200, 404, 599, 999, 42, 1000] {
            let mut out = Vec::new();
            status_line(&mut out, Version::Http11, s, b"R");
            assert_eq!(out, format!("HTTP/1.1 {s} R\r\n").as_bytes());
        }
    }

    #[test]
    fn decimals_and_reasons() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 100, u64::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        assert_eq!(
            reason_phrase(b"HTTP/1.1 200 All Good\r\n"),
            Some(&b"All Good"[..])
        );
        assert_eq!(reason_phrase(b"HTTP/1.1 200\r\n"), None);
    }

    #[test]
    fn a_local_response_is_delimited() {
        let r = local_response(
            Version::Http11,
            404,
            LocalBody::Text(""),
            &[(b"x-a", Cow::Borrowed(b"1"))],
            true,
        );
        assert_eq!(
            r,
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-a: 1\r\nconnection: close\r\n\r\n"
        );
        let r = local_response(
            Version::Http11,
            503,
            LocalBody::Text("no healthy upstream"),
            &[],
            false,
        );
        assert!(r.ends_with(b"content-length: 19\r\n\r\nno healthy upstream"));
        let r = local_response(Version::Http10, 200, LocalBody::Text(""), &[], false);
        assert_eq!(
            r,
            b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n"
        );
    }
}
