//! Request and response heads as the layers above the codecs see them, whatever the codec.
//!
//! A head is byte ranges into one buffer that holds its bytes (header names lower-cased):
//! the HTTP/1.1 codec hands over the head as received, without copying a header into a
//! string; another codec fills the same shape. The connection manager, the filters and the
//! router read heads only through these types.

use std::ops::Range;

/// How the body that follows a head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// A length not known in advance: chunked in HTTP/1.1 (RFC 9112 section 7.1).
    Chunked,
    /// A response body that runs to the end of the connection.
    UntilClose,
}

/// A header field: its lower-cased name and its value, as ranges of the head's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// The protocol a request arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    /// HTTP/2: its own framing, no connection-level headers.
    Http2,
}

/// A request head.
#[derive(Debug)]
pub struct Request {
    /// The head's bytes; every range below indexes it.
    pub raw: Vec<u8>,
    pub method: Range<usize>,
    /// The path without the query; empty for an absolute-form target without one ("/").
    pub path: Range<usize>,
    pub query: Option<Range<usize>>,
    /// The Host header, or an absolute-form target's authority (empty for HTTP/1.0 without).
    pub host: Range<usize>,
    /// Every header but Host, in order, hop-by-hop ones included (routing may look at them).
    pub headers: Vec<Header>,
    pub framing: Framing,
    pub version: Version,
    /// The client wants the connection closed after this exchange.
    pub close: bool,
    pub expect_continue: bool,
    /// The `Upgrade` value when the client asked to switch protocols.
    pub upgrade: Option<Range<usize>>,
    /// The values of its `Connection` header(s): hop-by-hop header names among their tokens.
    pub connection: Vec<Range<usize>>,
}

impl Request {
    /// The same request with another path (normalized by the connection manager): the new
    /// path is appended to a copy of the head's bytes, every other range unchanged.
    pub fn with_path(&self, path: &str) -> Request {
        let mut raw = Vec::with_capacity(self.raw.len() + path.len());
        raw.extend_from_slice(&self.raw);
        let start = raw.len();
        raw.extend_from_slice(path.as_bytes());
        Request {
            path: start..raw.len(),
            raw,
            method: self.method.clone(),
            query: self.query.clone(),
            host: self.host.clone(),
            headers: self.headers.clone(),
            framing: self.framing,
            version: self.version,
            close: self.close,
            expect_continue: self.expect_continue,
            upgrade: self.upgrade.clone(),
            connection: self.connection.clone(),
        }
    }

    /// A part the codec checked is UTF-8.
    pub fn text(&self, r: &Range<usize>) -> &str {
        std::str::from_utf8(&self.raw[r.clone()]).unwrap_or_default()
    }

    pub fn method(&self) -> &[u8] {
        &self.raw[self.method.clone()]
    }

    pub fn path(&self) -> &str {
        match self.text(&self.path) {
            "" => "/",
            p => p,
        }
    }

    /// The path and its query as sent (`:path`): both codecs lay the query out right after
    /// the path and its `?`.
    pub fn path_and_query(&self) -> &str {
        match &self.query {
            Some(q) if q.start == self.path.end + 1 => match self.text(&(self.path.start..q.end)) {
                "" => "/",
                p => p,
            },
            _ => self.path(),
        }
    }

    pub fn query(&self) -> Option<&str> {
        self.query.as_ref().map(|q| self.text(q))
    }

    pub fn host(&self) -> &str {
        self.text(&self.host)
    }

    /// The first value of a header (by lower-case name), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let h = self
            .headers
            .iter()
            .find(|h| &self.raw[h.name.clone()] == name.as_bytes())?;
        std::str::from_utf8(&self.raw[h.value.clone()]).ok()
    }

    /// Whether the client's `Connection` header names `name` (to be dropped as hop-by-hop).
    pub fn named(&self, name: &[u8]) -> bool {
        has_token(&self.raw, &self.connection, name)
    }
}

/// A response head; its ranges index the buffer the upstream codec received it into.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The reason phrase, if the status line had one.
    pub reason: Option<Range<usize>>,
    pub framing: Framing,
    /// The head's length in the buffer: body bytes that arrived with it follow.
    pub len: usize,
    /// The upstream closes the connection after this response.
    pub close: bool,
    /// The values of its `Connection` header(s).
    pub connection: Vec<Range<usize>>,
    /// Names lower-cased in place.
    pub headers: Vec<Header>,
}

/// Headers to be written out, produced on demand (lower-case names), so that a codec
/// writes them straight into its output without an intermediate list. Dispatched
/// statically: a codec's head writer is compiled for each source, and the per-header
/// callback inlines into it.
pub trait HeaderSource {
    fn for_each(&self, f: impl FnMut(&[u8], &[u8]));
}

/// A request as it goes upstream, before its headers.
#[derive(Clone, Copy, Debug)]
pub struct RequestOut<'a> {
    pub method: &'a [u8],
    /// The path (rewritten, or as received; never empty) and the query.
    pub path: &'a [u8],
    pub query: Option<&'a [u8]>,
    pub authority: &'a [u8],
    pub framing: Framing,
    /// The protocol the client asked to switch to, passed on.
    pub upgrade: Option<&'a [u8]>,
}

/// Whether a `content-type` is gRPC's as Envoy tells it: `application/grpc`, or
/// `application/grpc+<codec>` (not gRPC-Web).
pub fn is_grpc_content_type(ct: &str) -> bool {
    let ct = ct.as_bytes();
    ct.len() >= 16
        && ct[..16].eq_ignore_ascii_case(b"application/grpc")
        && matches!(ct.get(16), None | Some(b'+') | Some(b';'))
}

/// The comma-separated tokens of a header value, trimmed (compare them case-insensitively).
pub fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Whether any token of the header values at `ranges` (in `raw`) is `token`.
pub fn has_token(raw: &[u8], ranges: &[Range<usize>], token: &[u8]) -> bool {
    ranges
        .iter()
        .any(|r| tokens(&raw[r.clone()]).any(|t| t.eq_ignore_ascii_case(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_connection_headers() {
        let raw = b"keep-alive, Upgrade ,,x-a";
        let t: Vec<&[u8]> = tokens(raw).collect();
        assert_eq!(t, [&b"keep-alive"[..], b"Upgrade", b"x-a"]);
        // Two header values: "keep-alive, Upgrade " and ",x-a".
        let values = [0..20, 21..raw.len()];
        assert!(has_token(raw, &values, b"upgrade"));
        assert!(has_token(raw, &values, b"x-a"));
        assert!(!has_token(raw, &values, b"close"));
    }
}
