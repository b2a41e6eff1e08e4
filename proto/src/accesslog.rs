//! Access-log records: what a shard pushes into its ring ([`crate::shm::LogRing`]) when a
//! logged stream or connection ends, and what control decodes, filters and formats.
//!
//! A record carries the facts Envoy's command operators print (times, bytes, codes,
//! flags, addresses, names) and the values of just the headers the loggers' formats and
//! filters name, which control listed in the [`AccessLogSpec`] it compiled. No formatting
//! and no string building happens on the shard: the record is a few fixed fields and
//! length-prefixed byte strings.
//!
//! ```text
//! record  := len:u32 kind:u8 protocol:u8 code:u16 flags:u32 log_id:u64 start_unix_ns:u64
//!            duration_ns:u64 request_duration_ns:u64 response_duration_ns:u64
//!            bytes_received:u64 bytes_sent:u64 connection_id:u64 attempts:u32
//!            span addr{4} str{6} headers_len:u16 (slot:u8 len:u16 value){*}
//! span    := 0 | 1 trace_hi:u64 trace_lo:u64 span:u64 parent:u64 flags:u8
//! addr    := 0 | 4 ip:[4] port:u16 | 6 ip:[16] port:u16
//! str     := len:u16 utf8
//! ```
//!
//! All integers little-endian; `u64::MAX` is "not recorded" for the two durations. The
//! decoder treats its input as untrusted (it crossed shared memory): every length is checked
//! against what remains, strings must be UTF-8, and a record that fails is skipped whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Envoy's response flags (`%RESPONSE_FLAGS%`), as a bit set in Envoy's own order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseFlags(u32);

macro_rules! flags {
    ($($name:ident = $bit:expr, $short:literal;)*) => {
        impl ResponseFlags {
            $(pub const $name: ResponseFlags = ResponseFlags(1 << $bit);)*
            const SHORT: &'static [(ResponseFlags, &'static str)] = &[$((ResponseFlags::$name, $short)),*];
        }
    };
}

flags! {
    FAILED_LOCAL_HEALTH_CHECK = 0, "LH";
    NO_HEALTHY_UPSTREAM = 1, "UH";
    UPSTREAM_REQUEST_TIMEOUT = 2, "UT";
    LOCAL_RESET = 3, "LR";
    UPSTREAM_REMOTE_RESET = 4, "UR";
    UPSTREAM_CONNECTION_FAILURE = 5, "UF";
    UPSTREAM_CONNECTION_TERMINATION = 6, "UC";
    UPSTREAM_OVERFLOW = 7, "UO";
    NO_ROUTE_FOUND = 8, "NR";
    DELAY_INJECTED = 9, "DI";
    FAULT_INJECTED = 10, "FI";
    RATE_LIMITED = 11, "RL";
    UNAUTHORIZED_EXTERNAL_SERVICE = 12, "UAEX";
    RATE_LIMIT_SERVICE_ERROR = 13, "RLSE";
    DOWNSTREAM_CONNECTION_TERMINATION = 14, "DC";
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 15, "URX";
    STREAM_IDLE_TIMEOUT = 16, "SI";
    INVALID_ENVOY_REQUEST_HEADERS = 17, "IH";
    DOWNSTREAM_PROTOCOL_ERROR = 18, "DPE";
    UPSTREAM_MAX_STREAM_DURATION_REACHED = 19, "UMSDR";
    RESPONSE_FROM_CACHE_FILTER = 20, "RFCF";
    NO_FILTER_CONFIG_FOUND = 21, "NFCF";
    DURATION_TIMEOUT = 22, "DT";
    UPSTREAM_PROTOCOL_ERROR = 23, "UPE";
    NO_CLUSTER_FOUND = 24, "NC";
    OVERLOAD_MANAGER = 25, "OM";
    DNS_RESOLUTION_FAILED = 26, "DF";
    DROP_OVERLOAD = 27, "DO";
    DOWNSTREAM_REMOTE_RESET = 28, "DR";
}

impl ResponseFlags {
    pub const fn empty() -> ResponseFlags {
        ResponseFlags(0)
    }

    /// The bit set (bit `n` is Envoy's `n`th flag), as an access-log record carries it.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// The flag of Envoy's short name (`UF`, `URX`, ...).
    pub fn from_short_name(name: &str) -> Option<ResponseFlags> {
        Self::SHORT
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(f, _)| *f)
    }

    pub fn from_bits(bits: u32) -> ResponseFlags {
        ResponseFlags(bits)
    }

    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    /// As `%RESPONSE_FLAGS%` prints them: short names joined by commas, `-` when none.
    pub fn short_names(self) -> String {
        if self.0 == 0 {
            return "-".into();
        }
        let names: Vec<&str> = Self::SHORT
            .iter()
            .filter(|(f, _)| self.contains(*f))
            .map(|(_, n)| *n)
            .collect();
        names.join(",")
    }
}

/// A connection manager's or TCP proxy's access logs as the shards see them: which logger
/// set control formats the records with, and which headers each record must carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogSpec {
    /// Names the compiled logger set in control; 0: no access log (nothing is recorded).
    pub id: u64,
    /// Request headers (lower case; `:method`, `:path`, `:authority`, `:scheme` for the
    /// request line) whose values the record carries, at slots 0..
    pub request_headers: Vec<String>,
    /// Response headers, at slots [`RESPONSE_SLOTS`]..
    pub response_headers: Vec<String>,
    /// Response trailers, at slots [`TRAILER_SLOTS`]..
    pub response_trailers: Vec<String>,
    /// A format prints `%UPSTREAM_LOCAL_ADDRESS%` (read from the socket only then).
    pub upstream_local: bool,
    /// The set has access loggers: every stream is recorded. Without, the set only traces
    /// and just sampled streams are.
    pub every_stream: bool,
}

/// The first slot of a response header, and of a trailer; each list holds at most
/// [`MAX_HEADERS`].
pub const RESPONSE_SLOTS: u8 = 64;
pub const TRAILER_SLOTS: u8 = 128;
pub const MAX_HEADERS: usize = 64;

impl AccessLogSpec {
    pub fn enabled(&self) -> bool {
        self.id != 0
    }
}

/// What the record is of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An HTTP stream (the connection manager's access log).
    #[default]
    Http = 1,
    /// A TCP proxy connection.
    Tcp = 2,
}

/// `%PROTOCOL%`'s values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Protocol {
    #[default]
    None = 0,
    Http10 = 10,
    Http11 = 11,
    Http2 = 20,
}

impl Protocol {
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Protocol::None => None,
            Protocol::Http10 => Some("HTTP/1.0"),
            Protocol::Http11 => Some("HTTP/1.1"),
            Protocol::Http2 => Some("HTTP/2"),
        }
    }
}

/// One access-log record (see the module's layout).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordKind,
    pub protocol: Protocol,
    /// 0: no response was sent.
    pub response_code: u16,
    /// Envoy's response flags, as the data plane's bit set (bit `n` in Envoy's order).
    pub flags: u32,
    pub log_id: u64,
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    pub request_duration_ns: Option<u64>,
    pub response_duration_ns: Option<u64>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub connection_id: u64,
    pub attempts: u32,
    /// The span the stream made (with tracing).
    pub span: Option<crate::tracing::SpanIds>,
    pub downstream_remote: Option<SocketAddr>,
    pub downstream_local: Option<SocketAddr>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_local: Option<SocketAddr>,
    pub route_name: &'a str,
    pub upstream_cluster: &'a str,
    pub details: &'a str,
    pub sni: &'a str,
    pub failure_reason: &'a str,
    /// The route's decorator operation (with tracing).
    pub operation: &'a str,
    /// The captured headers: `(slot, value)` entries, see [`push_header`] and [`Headers`].
    pub headers: &'a [u8],
}

/// Appends one captured header to a record's header block (a value longer than 65,535
/// bytes is cut there).
pub fn push_header(block: &mut Vec<u8>, slot: u8, value: &[u8]) {
    let v = &value[..value.len().min(u16::MAX as usize)];
    block.push(slot);
    block.extend_from_slice(&(v.len() as u16).to_le_bytes());
    block.extend_from_slice(v);
}

/// A record's captured headers, as `(slot, value)`.
#[derive(Clone, Copy, Debug)]
pub struct Headers<'a>(&'a [u8]);

impl<'a> Iterator for Headers<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let (&slot, rest) = self.0.split_first()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = u16::from_le_bytes(*len) as usize;
        let value = rest.get(..len)?;
        self.0 = &rest[len..];
        Some((slot, value))
    }
}

impl<'a> Record<'a> {
    /// The captured headers.
    pub fn headers(&self) -> Headers<'a> {
        Headers(self.headers)
    }

    /// The value captured at `slot`, if any.
    pub fn header(&self, slot: u8) -> Option<&'a [u8]> {
        self.headers().find(|(s, _)| *s == slot).map(|(_, v)| v)
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(self.kind as u8);
        out.push(self.protocol as u8);
        out.extend_from_slice(&self.response_code.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        for n in [
            self.log_id,
            self.start_unix_ns,
            self.duration_ns,
            self.request_duration_ns.unwrap_or(u64::MAX),
            self.response_duration_ns.unwrap_or(u64::MAX),
            self.bytes_received,
            self.bytes_sent,
            self.connection_id,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.attempts.to_le_bytes());
        match &self.span {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                for n in [s.trace_hi, s.trace_lo, s.span, s.parent] {
                    out.extend_from_slice(&n.to_le_bytes());
                }
                out.push(s.flags);
            }
        }
        for a in [
            self.downstream_remote,
            self.downstream_local,
            self.upstream_host,
            self.upstream_local,
        ] {
            put_addr(out, a);
        }
        for s in [
            self.route_name,
            self.upstream_cluster,
            self.details,
            self.sni,
            self.failure_reason,
            self.operation,
        ] {
            let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
            let b = match std::str::from_utf8(b) {
                Ok(_) => b,
                // Cut inside a character: back to its start.
                Err(e) => &b[..e.valid_up_to()],
            };
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(b);
        }
        let h = &self.headers[..self.headers.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h);
        let len = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes the first record of `bytes`; returns it and its length.
    pub fn decode(bytes: &'a [u8]) -> Result<(Record<'a>, usize), &'static str> {
        let mut r = Reader(bytes);
        let len = r.u32()? as usize;
        if len < 4 || len > bytes.len() {
            return Err("record length out of range");
        }
        let mut r = Reader(&bytes[4..len]);
        let kind = match r.u8()? {
            1 => RecordKind::Http,
            2 => RecordKind::Tcp,
            _ => return Err("unknown record kind"),
        };
        let protocol = match r.u8()? {
            0 => Protocol::None,
            10 => Protocol::Http10,
            11 => Protocol::Http11,
            20 => Protocol::Http2,
            _ => return Err("unknown protocol"),
        };
        let opt = |n: u64| (n != u64::MAX).then_some(n);
        let rec = Record {
            kind,
            protocol,
            response_code: r.u16()?,
            flags: r.u32()?,
            log_id: r.u64()?,
            start_unix_ns: r.u64()?,
            duration_ns: r.u64()?,
            request_duration_ns: opt(r.u64()?),
            response_duration_ns: opt(r.u64()?),
            bytes_received: r.u64()?,
            bytes_sent: r.u64()?,
            connection_id: r.u64()?,
            attempts: r.u32()?,
            span: match r.u8()? {
                0 => None,
                1 => Some(crate::tracing::SpanIds {
                    trace_hi: r.u64()?,
                    trace_lo: r.u64()?,
                    span: r.u64()?,
                    parent: r.u64()?,
                    flags: r.u8()?,
                }),
                _ => return Err("unknown span marker"),
            },
            downstream_remote: r.addr()?,
            downstream_local: r.addr()?,
            upstream_host: r.addr()?,
            upstream_local: r.addr()?,
            route_name: r.str()?,
            upstream_cluster: r.str()?,
            details: r.str()?,
            sni: r.str()?,
            failure_reason: r.str()?,
            operation: r.str()?,
            headers: {
                let n = r.u16()? as usize;
                r.take(n)?
            },
        };
        if !r.0.is_empty() {
            return Err("trailing bytes in a record");
        }
        if Headers(rec.headers)
            .map(|(_, v)| v.len() + 3)
            .sum::<usize>()
            != rec.headers.len()
        {
            return Err("malformed header block");
        }
        Ok((rec, len))
    }
}

fn put_addr(out: &mut Vec<u8>, a: Option<SocketAddr>) {
    match a {
        None => out.push(0),
        Some(a) => {
            match a.ip() {
                IpAddr::V4(ip) => {
                    out.push(4);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&a.port().to_le_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("truncated record");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn str(&mut self) -> Result<&'a str, &'static str> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "a string is not UTF-8")
    }
    fn addr(&mut self) -> Result<Option<SocketAddr>, &'static str> {
        let ip = match self.u8()? {
            0 => return Ok(None),
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err("unknown address family"),
        };
        Ok(Some(SocketAddr::new(ip, self.u16()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(headers: &[u8]) -> Record<'_> {
        Record {
            kind: RecordKind::Http,
            protocol: Protocol::Http11,
            response_code: 503,
            flags: 0b100010,
            log_id: 0xfeed,
            start_unix_ns: 1_765_000_000_123_456_789,
            duration_ns: 12_345_678,
            request_duration_ns: Some(0),
            response_duration_ns: None,
            bytes_received: 77,
            bytes_sent: 91,
            connection_id: 42,
            attempts: 2,
            span: Some(crate::tracing::SpanIds {
                trace_hi: 1,
                trace_lo: u64::MAX,
                span: 7,
                parent: 0,
                flags: 3,
            }),
            downstream_remote: Some("127.0.0.1:5555".parse().unwrap()),
            downstream_local: Some("[::1]:10000".parse().unwrap()),
            upstream_host: None,
            upstream_local: Some("10.0.0.1:40000".parse().unwrap()),
            route_name: "r1",
            upstream_cluster: "backend",
            details: "upstream_reset_before_response_started{connection_failure}",
            sni: "",
            failure_reason: "connection refused",
            operation: "checkout",
            headers,
        }
    }

    #[test]
    fn a_record_comes_back_as_encoded() {
        let mut block = Vec::new();
        push_header(&mut block, 0, b"GET");
        push_header(&mut block, RESPONSE_SLOTS, b"");
        push_header(&mut block, 3, "d\u{e9}j\u{e0}".as_bytes());
        let rec = sample(&block);
        let mut out = Vec::new();
        rec.encode(&mut out);
        rec.encode(&mut out);
        let (back, len) = Record::decode(&out).unwrap();
        assert_eq!(back, rec);
        assert_eq!(len * 2, out.len());
        assert_eq!(back.header(0), Some(&b"GET"[..]));
        assert_eq!(back.header(RESPONSE_SLOTS), Some(&b""[..]));
        assert_eq!(back.header(1), None);
        assert_eq!(back.headers().count(), 3);
    }

    #[test]
    fn every_truncation_and_a_bad_block_are_refused() {
        let mut block = Vec::new();
        push_header(&mut block, 5, b"value");
        let mut out = Vec::new();
        sample(&block).encode(&mut out);
        for cut in 0..out.len() {
            let mut b = out[..cut].to_vec();
            if b.len() >= 4 {
                b[..4].copy_from_slice(&(cut as u32).to_le_bytes());
            }
            assert!(Record::decode(&b).is_err(), "cut at {cut}");
        }
        // A header entry claiming more than its block holds.
        let n = out.len();
        out[n - 7] = 200;
        assert!(Record::decode(&out).is_err());
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn flags_print_as_envoy_prints_them() {
        let mut f = ResponseFlags::empty();
        assert_eq!(f.short_names(), "-");
        f.insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        f.insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        assert_eq!(f.short_names(), "UF,URX");
        assert!(f.contains(ResponseFlags::UPSTREAM_CONNECTION_FAILURE));
        assert!(!f.contains(ResponseFlags::NO_ROUTE_FOUND));
    }
}
