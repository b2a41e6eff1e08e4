//! Request and response heads, parsed with httparse and then held to RFC 9112's framing rules,
//! which httparse alone does not enforce: a message whose body length is ambiguous is never
//! forwarded. Sans-I/O: bytes in, a verdict out.

use std::mem::MaybeUninit;
use std::ops::Range;

/// Envoy's defaults: `max_request_headers_kb` 60, `max_headers_count` 100.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: 60 * 1024,
            max_headers: 100,
        }
    }
}

pub use crate::http::message::{Framing, Header};

/// Why a head was refused. The sender's fault in every case; none is retryable as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 400, naming the rule that was broken.
    Malformed(&'static str),
    /// 501: a transfer coding other than `chunked` alone, which zerohop does not implement
    /// (RFC 9112 section 6.1); Envoy's codec refuses the same.
    UnsupportedTransferCoding,
    /// 431: the head is larger than `max_head_bytes`, or has more than `max_headers` fields.
    TooLarge,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::UnsupportedTransferCoding => 501,
            HeadError::TooLarge => 431,
        }
    }
}

/// A parsed request head; the ranges index the buffer it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<Header>,
    pub framing: Framing,
    /// The head's length in the buffer, final CRLF included.
    pub len: usize,
}

fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn header_ranges(buf: &[u8], headers: &[httparse::Header<'_>]) -> Vec<Header> {
    headers
        .iter()
        .map(|h| Header {
            name: range_of(buf, h.name.as_bytes()),
            value: range_of(buf, h.value),
        })
        .collect()
}

/// Where the head ends (after its empty line), once it has all arrived. Refuses bare LF and
/// bare CR anywhere in it, and obs-fold.
///
/// The usual case, a whole head that breaks no rule, is one substring search and one
/// branch-free pass the compiler vectorises; anything else (a partial head, an oversized
/// one, a broken rule) goes to [`head_end_exact`], which names the first rule broken.
fn head_end(buf: &[u8], limits: &Limits) -> Result<Option<usize>, HeadError> {
    // Built once: `memmem::find` would build a searcher for the needle on every call
    // (about 400 instructions, twice per proxied request).
    static EMPTY_LINE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    if !buf.starts_with(b"\r\n") {
        if let Some(end) = EMPTY_LINE.find(buf).map(|i| i + 4) {
            if end - 2 < limits.max_head_bytes && line_endings_clean(&buf[..end]) {
                return Ok(Some(end));
            }
        }
    }
    head_end_exact(buf, limits)
}

/// The fast and the exact head-end scans of `buf`, which must agree (the fuzz target
/// `http1_head` checks it on every input).
#[doc(hidden)]
pub fn head_end_both(buf: &[u8], limits: &Limits) -> [Result<Option<usize>, HeadError>; 2] {
    [head_end(buf, limits), head_end_exact(buf, limits)]
}

/// Whether `head` (which ends with CRLF CRLF) has no bare LF, no bare CR and no obs-fold.
fn line_endings_clean(head: &[u8]) -> bool {
    let n = head.len();
    let (x, y, z) = (&head[..n - 2], &head[1..n - 1], &head[2..]);
    // For each position: y is a bare LF, x a bare CR, or z starts a folded line.
    let bad = x.iter().zip(y).zip(z).fold(false, |bad, ((&x, &y), &z)| {
        let crlf = (x == b'\r') & (y == b'\n');
        bad | ((y == b'\n') & (x != b'\r'))
            | ((x == b'\r') & (y != b'\n'))
            | (crlf & ((z == b' ') | (z == b'\t')))
    });
    !bad && head[0] != b'\n'
}

/// [`head_end`], one CR or LF at a time (memchr), reporting the first rule broken.
fn head_end_exact(buf: &[u8], limits: &Limits) -> Result<Option<usize>, HeadError> {
    let mut line_start = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', buf) {
        if i >= limits.max_head_bytes {
            return Err(HeadError::TooLarge);
        }
        if buf[i] == b'\n' {
            // Every LF is consumed as part of a CRLF below; one met here is bare.
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(HeadError::Malformed("bare LF in the head"));
            }
            continue;
        }
        let Some(&next) = buf.get(i + 1) else {
            return Ok(None);
        };
        if next != b'\n' {
            return Err(HeadError::Malformed("bare CR in the head"));
        }
        if i == line_start {
            // The empty line. (An empty first line is refused by the parser.)
            return Ok(Some(i + 2));
        }
        line_start = i + 2;
        if matches!(buf.get(line_start), Some(b' ' | b'\t')) {
            return Err(HeadError::Malformed(
                "obs-fold (a header line starting with whitespace)",
            ));
        }
    }
    if buf.len() > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    Ok(None)
}

/// Header slots kept on the stack (uninitialised: they cost nothing until parsed into); a
/// larger `max_headers` is allocated per parse.
const STACK_HEADERS: usize = 256;

type Slot<'b> = MaybeUninit<httparse::Header<'b>>;

fn header_storage<'s, 'b>(
    stack: &'s mut [Slot<'b>; STACK_HEADERS],
    heap: &'s mut Vec<Slot<'b>>,
    n: usize,
) -> &'s mut [Slot<'b>] {
    if n <= STACK_HEADERS {
        &mut stack[..n]
    } else {
        heap.resize_with(n, MaybeUninit::uninit);
        heap
    }
}

/// Parses a request head at the start of `buf`: `Ok(None)` until it has all arrived.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    let Some(end) = head_end(buf, limits)? else {
        return Ok(None);
    };
    let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let mut req = httparse::Request::new(&mut []);
    let slots = header_storage(&mut stack, &mut heap, limits.max_headers);
    match req.parse_with_uninit_headers(&buf[..end], slots) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(HeadError::Malformed("request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::HeaderName) => {
            return Err(HeadError::Malformed("invalid character in a header name"))
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(HeadError::Malformed("invalid character in a header value"))
        }
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("HTTP version")),
        Err(httparse::Error::Token) => return Err(HeadError::Malformed("method")),
        Err(_) => return Err(HeadError::Malformed("request line")),
    }
    let minor_version = req.version.unwrap_or(1);
    let framing = body_framing(req.headers, minor_version, None)?;
    Ok(Some(RequestHead {
        method: range_of(buf, req.method.unwrap_or("").as_bytes()),
        target: range_of(buf, req.path.unwrap_or("").as_bytes()),
        minor_version,
        headers: header_ranges(buf, req.headers),
        framing,
        len: end,
    }))
}

/// A response head's status and framing (`request_method` decides HEAD and CONNECT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub minor_version: u8,
    pub headers: Vec<Header>,
    pub framing: Framing,
    pub len: usize,
}

/// Parses a response head from an upstream, under the same framing rules as requests.
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    request_method: &[u8],
) -> Result<Option<ResponseHead>, HeadError> {
    let Some(end) = head_end(buf, limits)? else {
        return Ok(None);
    };
    let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let mut resp = httparse::Response::new(&mut []);
    let slots = header_storage(&mut stack, &mut heap, limits.max_headers);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        &buf[..end],
        slots,
    ) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(HeadError::Malformed("response head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::HeaderName) => {
            return Err(HeadError::Malformed("invalid character in a header name"))
        }
        Err(_) => return Err(HeadError::Malformed("status line")),
    }
    let status = resp.code.unwrap_or(0);
    let minor_version = resp.version.unwrap_or(1);
    let no_body = request_method == b"HEAD"
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (request_method == b"CONNECT" && (200..300).contains(&status));
    let framing = body_framing(resp.headers, minor_version, Some(no_body))?;
    Ok(Some(ResponseHead {
        status,
        minor_version,
        headers: header_ranges(buf, resp.headers),
        framing,
        len: end,
    }))
}

/// RFC 9112 section 6.3. `response` is `Some(no_body)` for a response.
fn body_framing(
    headers: &[httparse::Header<'_>],
    minor_version: u8,
    response: Option<bool>,
) -> Result<Framing, HeadError> {
    let mut length: Option<u64> = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut has_te = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            // A list (`5, 5`) or repeated fields must all carry the same value.
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(HeadError::Malformed("invalid Content-Length"));
                }
                let n: u64 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(HeadError::Malformed("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Malformed("differing Content-Length values"));
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            for c in h.value.split(|&b| b == b',') {
                let c = c.trim_ascii();
                if !c.is_empty() {
                    codings.push(c);
                }
            }
        }
    }
    if has_te {
        if length.is_some() {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if minor_version == 0 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 message",
            ));
        }
        // `chunked` alone, in one field or several: anything else would be passed on with
        // a coding zerohop did not apply or remove (`gzip, chunked` read as plain chunked
        // hands gzip bytes on as the body).
        if !matches!(&codings[..], [c] if c.eq_ignore_ascii_case(b"chunked")) {
            return Err(HeadError::UnsupportedTransferCoding);
        }
    }
    Ok(match response {
        Some(true) => Framing::Empty,
        _ if has_te => Framing::Chunked,
        _ => match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None if response == Some(false) => Framing::UntilClose,
            None => Framing::Empty,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path gives the exact scanner's answer: on heads, every truncation of them,
    /// and every one-byte change to CR, LF, SP, HT or a letter at every position.
    #[test]
    fn fast_head_end_agrees_with_the_exact_scan() {
        let heads: [&[u8]; 4] = [
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nbody",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ];
        let limits = [
            Limits::default(),
            Limits {
                max_head_bytes: 20,
                max_headers: 100,
            },
        ];
        let mut checked = 0;
        for head in heads {
            let mut cases: Vec<Vec<u8>> = (0..=head.len()).map(|n| head[..n].to_vec()).collect();
            for i in 0..head.len() {
                for b in [b'\r', b'\n', b' ', b'\t', b'a'] {
                    let mut m = head.to_vec();
                    m[i] = b;
                    cases.push(m);
                }
            }
            for case in &cases {
                for l in &limits {
                    assert_eq!(
                        head_end(case, l),
                        head_end_exact(case, l),
                        "{:?}",
                        String::from_utf8_lossy(case)
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000);
    }

    fn req(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(s.as_bytes(), &Limits::default())
    }

    fn refused(s: &str) -> &'static str {
        match req(s) {
            Err(HeadError::Malformed(why)) => why,
            other => panic!("{s:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn a_plain_request_and_its_framing() {
        let h = req("GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nrest")
            .unwrap()
            .unwrap();
        let buf = b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(&buf[h.target.clone()], b"/a?b");
        assert_eq!(&buf[h.headers[0].value.clone()], b"x");
        assert_eq!((h.framing, h.len), (Framing::Empty, buf.len() - 4));
        let post = req("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(post.framing, Framing::Length(5));
        let ch = req("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(ch.framing, Framing::Chunked);
        assert_eq!(req("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None), "incomplete");
        assert_eq!(req("GET / HTTP/1.1\r\nHost: x\r"), Ok(None), "incomplete");
    }

    /// Any coding but `chunked` alone is 501, as Envoy's codec answers: zerohop would
    /// otherwise pass on bytes in a coding it neither applied nor removed.
    #[test]
    fn transfer_codings_other_than_chunked_are_not_implemented() {
        for codings in [
            "gzip, chunked",
            "chunked, gzip",
            "gzip",
            "identity",
            "chunked, chunked",
            "chunked\r\nTransfer-Encoding: chunked",
            "gzip\r\nTransfer-Encoding: chunked",
        ] {
            let head = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {codings}\r\n\r\n");
            assert_eq!(
                req(&head),
                Err(HeadError::UnsupportedTransferCoding),
                "{codings}"
            );
            let resp = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {codings}\r\n\r\n");
            let l = Limits::default();
            assert_eq!(
                parse_response(resp.as_bytes(), &l, b"GET"),
                Err(HeadError::UnsupportedTransferCoding),
                "{codings}"
            );
        }
        assert_eq!(HeadError::UnsupportedTransferCoding.status(), 501);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "both Content-Length and Transfer-Encoding"
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            "differing Content-Length values"
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n"),
            "differing Content-Length values"
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"),
            "invalid Content-Length"
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"),
            "invalid Content-Length"
        );
        assert_eq!(
            refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "Transfer-Encoding in an HTTP/1.0 message"
        );
        assert_eq!(
            refused("GET / HTTP/1.1\nHost: x\r\n\r\n"),
            "bare LF in the head"
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nHost: x\n\r\n"),
            "bare LF in the head"
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n"),
            "bare CR in the head"
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"),
            "obs-fold (a header line starting with whitespace)"
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nBad Name: a\r\n\r\n"),
            "invalid character in a header name"
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            "invalid character in a header name"
        );
    }

    #[test]
    fn limits_give_431() {
        let tight = Limits {
            max_head_bytes: 64,
            max_headers: 2,
        };
        let many = "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert_eq!(
            parse_request(many.as_bytes(), &tight),
            Err(HeadError::TooLarge)
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
        assert_eq!(
            parse_request(long.as_bytes(), &tight),
            Err(HeadError::TooLarge)
        );
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn response_framing() {
        let l = Limits::default();
        let r = |s: &str, m: &[u8]| {
            parse_response(s.as_bytes(), &l, m)
                .unwrap()
                .unwrap()
                .framing
        };
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", b"GET"),
            Framing::Length(7)
        );
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", b"HEAD"),
            Framing::Empty
        );
        assert_eq!(r("HTTP/1.1 204 No Content\r\n\r\n", b"GET"), Framing::Empty);
        assert_eq!(r("HTTP/1.1 200 OK\r\n\r\n", b"GET"), Framing::UntilClose);
        assert_eq!(
            r(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"GET"
            ),
            Framing::Chunked
        );
        let bad = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            &l,
            b"GET",
        );
        assert_eq!(
            bad,
            Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding"
            ))
        );
    }
}
