//! Binary encoding of a [`Snapshot`].
//!
//! Little-endian, length-prefixed, no padding. The decoder treats its input as untrusted
//! (a torn or corrupted shared-memory slot must be refused, never trusted): every count is
//! bounded by the bytes that remain before anything is allocated, every [`ClusterId`] is
//! checked against the cluster table, and trailing bytes are an error.
//!
//! ```text
//! snapshot := "ZHSN" version:u16 reserved:u16 clusters listeners
//! clusters := count:u32 { name:str connect_timeout:dur lb:u8 count:u32 { addr weight:u32 } }
//! listeners:= count:u32 { name:str addr kind:u8 filter }
//! filter   := (kind 1, tcp_proxy) stat_prefix:str count:u32 { cluster:u32 weight:u32 } idle:dur
//!           | (kind 2, http) stat_prefix:str u32 u32 dur dur dur dur u8 route_config
//!             (the HTTP part is written out field by field in `Writer::http`, in declaration
//!             order; optional values carry a u8 presence flag, optional durations use 0)
//! str      := len:u32 utf8-bytes        dur := nanos:u64 (idle: 0 means disabled)
//! addr     := 4 ip:[u8;4] port:u16 | 6 ip:[u8;16] port:u16
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::snapshot::*;

const MAGIC: &[u8; 4] = b"ZHSN";
/// Bumped on any change to the byte layout above.
pub const FORMAT_VERSION: u16 = 3;

const KIND_TCP_PROXY: u8 = 1;
const KIND_HTTP: u8 = 2;
const LB_ROUND_ROBIN: u8 = 0;
const LB_RANDOM: u8 = 1;

/// Why a byte string is not a valid snapshot. Always the writer's (or the memory's) fault;
/// the reader keeps its previous configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset at which decoding stopped.
    pub offset: usize,
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid snapshot at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for DecodeError {}

// === encode ===

pub fn encode(s: &Snapshot) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.0.extend_from_slice(MAGIC);
    w.u16(FORMAT_VERSION);
    w.u16(0);
    w.u32(s.clusters.len() as u32);
    for c in &s.clusters {
        w.str(&c.name);
        w.dur(c.connect_timeout);
        w.u8(match c.lb_policy {
            LbPolicy::RoundRobin => LB_ROUND_ROBIN,
            LbPolicy::Random => LB_RANDOM,
        });
        w.u32(c.endpoints.len() as u32);
        for e in &c.endpoints {
            w.addr(e.address);
            w.u32(e.weight);
        }
        w.dur(c.http.idle_timeout.unwrap_or(Duration::ZERO));
        w.u32(c.http.max_requests_per_connection.unwrap_or(0));
        w.u32(c.http.max_headers_count);
    }
    w.u32(s.listeners.len() as u32);
    for l in &s.listeners {
        w.str(&l.name);
        w.addr(l.address);
        match &l.filter {
            NetworkFilter::TcpProxy(t) => {
                w.u8(KIND_TCP_PROXY);
                w.str(&t.stat_prefix);
                w.u32(t.targets.len() as u32);
                for wc in &t.targets {
                    w.u32(wc.cluster.0);
                    w.u32(wc.weight);
                }
                w.dur(t.idle_timeout.unwrap_or(Duration::ZERO));
            }
            NetworkFilter::Http(h) => {
                w.u8(KIND_HTTP);
                w.http(h);
            }
        }
    }
    w.0
}

struct Writer(Vec<u8>);

impl Writer {
    fn http(&mut self, h: &HttpManager) {
        self.str(&h.stat_prefix);
        self.u32(h.max_request_headers_bytes);
        self.u32(h.max_headers_count);
        for d in [
            h.request_headers_timeout,
            h.idle_timeout,
            h.stream_idle_timeout,
            h.request_timeout,
        ] {
            self.dur(d.unwrap_or(Duration::ZERO));
        }
        self.u8(u8::from(h.generate_request_id));
        self.u8(u8::from(h.use_remote_address));
        self.u32(h.max_request_bytes.unwrap_or(0));
        let rc = &h.route_config;
        self.str(&rc.name);
        self.edits(&rc.headers);
        self.u32(rc.virtual_hosts.len() as u32);
        for vh in &rc.virtual_hosts {
            self.str(&vh.name);
            self.strs(&vh.domains);
            self.edits(&vh.headers);
            self.u32(vh.routes.len() as u32);
            for r in &vh.routes {
                self.route(r);
            }
        }
    }
    fn route(&mut self, r: &Route) {
        self.str(&r.name);
        let m = &r.matcher;
        match &m.path {
            PathMatch::Prefix(p) => {
                self.u8(0);
                self.str(p);
            }
            PathMatch::Path(p) => {
                self.u8(1);
                self.str(p);
            }
            PathMatch::Regex(p) => {
                self.u8(2);
                self.str(p);
            }
        }
        self.u8(u8::from(m.case_sensitive));
        self.u32(m.headers.len() as u32);
        for h in &m.headers {
            self.str(&h.name);
            self.rule(&h.rule);
            self.u8(u8::from(h.invert));
        }
        self.u32(m.query_parameters.len() as u32);
        for q in &m.query_parameters {
            self.str(&q.name);
            match &q.rule {
                None => self.u8(0),
                Some(rule) => {
                    self.u8(1);
                    self.rule(rule);
                }
            }
        }
        match &r.action {
            RouteAction::Forward(f) => {
                self.u8(0);
                self.u32(f.targets.len() as u32);
                for t in &f.targets {
                    self.u32(t.cluster.0);
                    self.u32(t.weight);
                }
                self.opt_str(f.prefix_rewrite.as_deref());
                match &f.regex_rewrite {
                    None => self.u8(0),
                    Some((pattern, sub)) => {
                        self.u8(1);
                        self.str(pattern);
                        self.str(sub);
                    }
                }
                self.opt_str(f.host_rewrite.as_deref());
                self.dur(f.timeout.unwrap_or(Duration::ZERO));
            }
            RouteAction::Direct { status, body } => {
                self.u8(1);
                self.u16(*status);
                self.str(body);
            }
            RouteAction::Redirect(rd) => {
                self.u8(2);
                self.opt_str(rd.scheme.as_deref());
                self.opt_str(rd.host.as_deref());
                match rd.port {
                    None => self.u8(0),
                    Some(p) => {
                        self.u8(1);
                        self.u16(p);
                    }
                }
                self.opt_str(rd.path.as_deref());
                self.opt_str(rd.prefix_rewrite.as_deref());
                self.u16(rd.status);
                self.u8(u8::from(rd.strip_query));
            }
        }
        self.edits(&r.headers);
    }
    fn rule(&mut self, rule: &StringRule) {
        let (kind, value, ignore_case) = match rule {
            StringRule::Exact { value, ignore_case } => (0, value.as_str(), *ignore_case),
            StringRule::Prefix { value, ignore_case } => (1, value.as_str(), *ignore_case),
            StringRule::Suffix { value, ignore_case } => (2, value.as_str(), *ignore_case),
            StringRule::Contains { value, ignore_case } => (3, value.as_str(), *ignore_case),
            StringRule::Regex(value) => (4, value.as_str(), false),
            StringRule::Present(p) => (5, "", *p),
        };
        self.u8(kind);
        self.str(value);
        self.u8(u8::from(ignore_case));
    }
    fn edits(&mut self, e: &HeaderEdits) {
        for adds in [&e.request_add, &e.response_add] {
            self.u32(adds.len() as u32);
            for a in adds {
                self.str(&a.name);
                self.str(&a.value);
                self.u8(match a.append {
                    AppendAction::AppendIfExistsOrAdd => 0,
                    AppendAction::AddIfAbsent => 1,
                    AppendAction::OverwriteIfExistsOrAdd => 2,
                    AppendAction::OverwriteIfExists => 3,
                });
            }
        }
        self.strs(&e.request_remove);
        self.strs(&e.response_remove);
    }
    fn strs(&mut self, v: &[String]) {
        self.u32(v.len() as u32);
        for s in v {
            self.str(s);
        }
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn dur(&mut self, d: Duration) {
        self.u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
    fn addr(&mut self, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.0.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.0.extend_from_slice(&ip.octets());
            }
        }
        self.u16(a.port());
    }
}

// === decode ===

pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
    let mut r = Reader { b: bytes, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err(r.err("bad magic"));
    }
    if r.u16()? != FORMAT_VERSION {
        return Err(r.err("unsupported format version"));
    }
    r.u16()?;

    // Smallest encodings, used to bound counts before allocating.
    const MIN_CLUSTER: usize = 4 + 8 + 1 + 4 + 8 + 4 + 4;
    const MIN_ENDPOINT: usize = 1 + 4 + 2 + 4;
    const MIN_LISTENER: usize = 4 + 7 + 1;
    const MIN_TARGET: usize = 8;

    let n = r.count(MIN_CLUSTER)?;
    let mut clusters = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?;
        let connect_timeout = r.dur()?;
        let lb_policy = match r.u8()? {
            LB_ROUND_ROBIN => LbPolicy::RoundRobin,
            LB_RANDOM => LbPolicy::Random,
            _ => return Err(r.err("unknown lb policy")),
        };
        let m = r.count(MIN_ENDPOINT)?;
        let mut endpoints = Vec::with_capacity(m);
        for _ in 0..m {
            let address = r.addr()?;
            let weight = r.weight()?;
            endpoints.push(Endpoint { address, weight });
        }
        let idle_timeout = Some(r.dur()?).filter(|d| !d.is_zero());
        let max_requests_per_connection = Some(r.u32()?).filter(|&n| n > 0);
        let max_headers_count = r.u32()?;
        if max_headers_count == 0 {
            return Err(r.err("cluster max_headers_count of 0"));
        }
        clusters.push(Cluster {
            name,
            connect_timeout,
            lb_policy,
            endpoints,
            http: UpstreamHttp {
                idle_timeout,
                max_requests_per_connection,
                max_headers_count,
            },
        });
    }

    let n = r.count(MIN_LISTENER)?;
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?;
        let address = r.addr()?;
        let filter = match r.u8()? {
            KIND_TCP_PROXY => {
                let stat_prefix = r.str()?;
                let m = r.count(MIN_TARGET)?;
                if m == 0 {
                    return Err(r.err("tcp_proxy without a target cluster"));
                }
                let mut targets = Vec::with_capacity(m);
                for _ in 0..m {
                    let id = r.u32()?;
                    if id as usize >= clusters.len() {
                        return Err(r.err("cluster id out of range"));
                    }
                    let weight = r.weight()?;
                    targets.push(WeightedCluster {
                        cluster: ClusterId(id),
                        weight,
                    });
                }
                let idle = r.dur()?;
                NetworkFilter::TcpProxy(TcpProxy {
                    stat_prefix,
                    targets,
                    idle_timeout: (!idle.is_zero()).then_some(idle),
                })
            }
            KIND_HTTP => NetworkFilter::Http(r.http(clusters.len())?),
            _ => return Err(r.err("unknown network filter kind")),
        };
        listeners.push(Listener {
            name,
            address,
            filter,
        });
    }
    if r.pos != bytes.len() {
        return Err(r.err("trailing bytes"));
    }
    Ok(Snapshot {
        listeners,
        clusters,
    })
}

/// Smallest encoding of a route: name, path match, flags, empty lists, the smallest action
/// (a direct response) and empty header edits.
const MIN_ROUTE: usize = 4 + 1 + 4 + 1 + 4 + 4 + 1 + 2 + 4 + 4 * 4;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn http(&mut self, n_clusters: usize) -> Result<HttpManager, DecodeError> {
        let stat_prefix = self.str()?;
        let max_request_headers_bytes = self.u32()?;
        let max_headers_count = self.u32()?;
        let mut opt = || -> Result<Option<Duration>, DecodeError> {
            let d = self.dur()?;
            Ok((!d.is_zero()).then_some(d))
        };
        let (request_headers_timeout, idle_timeout, stream_idle_timeout, request_timeout) =
            (opt()?, opt()?, opt()?, opt()?);
        let generate_request_id = self.bool()?;
        let use_remote_address = self.bool()?;
        let max_request_bytes = Some(self.u32()?).filter(|&n| n > 0);
        let name = self.str()?;
        let headers = self.edits()?;
        let n = self.count(4 + 4 + 4 * 6 + 4)?;
        let mut virtual_hosts = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str()?;
            let domains = self.strs()?;
            let headers = self.edits()?;
            let m = self.count(MIN_ROUTE)?;
            let mut routes = Vec::with_capacity(m);
            for _ in 0..m {
                routes.push(self.route(n_clusters)?);
            }
            virtual_hosts.push(VirtualHost {
                name,
                domains,
                routes,
                headers,
            });
        }
        Ok(HttpManager {
            stat_prefix,
            max_request_headers_bytes,
            max_headers_count,
            request_headers_timeout,
            idle_timeout,
            stream_idle_timeout,
            request_timeout,
            generate_request_id,
            use_remote_address,
            max_request_bytes,
            route_config: RouteConfig {
                name,
                virtual_hosts,
                headers,
            },
        })
    }
    fn route(&mut self, n_clusters: usize) -> Result<Route, DecodeError> {
        let name = self.str()?;
        let path = match self.u8()? {
            0 => PathMatch::Prefix(self.str()?),
            1 => PathMatch::Path(self.str()?),
            2 => PathMatch::Regex(self.str()?),
            _ => return Err(self.err("unknown path match")),
        };
        let case_sensitive = self.bool()?;
        let n = self.count(4 + 6 + 1)?;
        let mut headers = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str()?;
            let rule = self.rule()?;
            let invert = self.bool()?;
            headers.push(HeaderMatcher { name, rule, invert });
        }
        let n = self.count(4 + 1)?;
        let mut query_parameters = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str()?;
            let rule = if self.bool()? {
                Some(self.rule()?)
            } else {
                None
            };
            query_parameters.push(QueryMatcher { name, rule });
        }
        let action = match self.u8()? {
            0 => {
                let m = self.count(8)?;
                if m == 0 {
                    return Err(self.err("route without a target cluster"));
                }
                let mut targets = Vec::with_capacity(m);
                for _ in 0..m {
                    let id = self.u32()?;
                    if id as usize >= n_clusters {
                        return Err(self.err("cluster id out of range"));
                    }
                    let weight = self.weight()?;
                    targets.push(WeightedCluster {
                        cluster: ClusterId(id),
                        weight,
                    });
                }
                let prefix_rewrite = self.opt_str()?;
                let regex_rewrite = if self.bool()? {
                    Some((self.str()?, self.str()?))
                } else {
                    None
                };
                let host_rewrite = self.opt_str()?;
                let timeout = self.dur()?;
                RouteAction::Forward(Forward {
                    targets,
                    prefix_rewrite,
                    regex_rewrite,
                    host_rewrite,
                    timeout: (!timeout.is_zero()).then_some(timeout),
                })
            }
            1 => RouteAction::Direct {
                status: self.u16()?,
                body: self.str()?,
            },
            2 => {
                let scheme = self.opt_str()?;
                let host = self.opt_str()?;
                let port = if self.bool()? {
                    Some(self.u16()?)
                } else {
                    None
                };
                let path = self.opt_str()?;
                let prefix_rewrite = self.opt_str()?;
                let status = self.u16()?;
                let strip_query = self.bool()?;
                RouteAction::Redirect(Redirect {
                    scheme,
                    host,
                    port,
                    path,
                    prefix_rewrite,
                    status,
                    strip_query,
                })
            }
            _ => return Err(self.err("unknown route action")),
        };
        let edits = self.edits()?;
        Ok(Route {
            name,
            matcher: RouteMatch {
                path,
                case_sensitive,
                headers,
                query_parameters,
            },
            action,
            headers: edits,
        })
    }
    fn rule(&mut self) -> Result<StringRule, DecodeError> {
        let kind = self.u8()?;
        let value = self.str()?;
        let flag = self.bool()?;
        Ok(match kind {
            0 => StringRule::Exact {
                value,
                ignore_case: flag,
            },
            1 => StringRule::Prefix {
                value,
                ignore_case: flag,
            },
            2 => StringRule::Suffix {
                value,
                ignore_case: flag,
            },
            3 => StringRule::Contains {
                value,
                ignore_case: flag,
            },
            4 => StringRule::Regex(value),
            5 => StringRule::Present(flag),
            _ => return Err(self.err("unknown string match")),
        })
    }
    fn edits(&mut self) -> Result<HeaderEdits, DecodeError> {
        let mut adds = [Vec::new(), Vec::new()];
        for list in &mut adds {
            let n = self.count(4 + 4 + 1)?;
            list.reserve(n);
            for _ in 0..n {
                let name = self.str()?;
                let value = self.str()?;
                let append = match self.u8()? {
                    0 => AppendAction::AppendIfExistsOrAdd,
                    1 => AppendAction::AddIfAbsent,
                    2 => AppendAction::OverwriteIfExistsOrAdd,
                    3 => AppendAction::OverwriteIfExists,
                    _ => return Err(self.err("unknown append action")),
                };
                list.push(HeaderAdd {
                    name,
                    value,
                    append,
                });
            }
        }
        let [request_add, response_add] = adds;
        Ok(HeaderEdits {
            request_add,
            request_remove: self.strs()?,
            response_add,
            response_remove: self.strs()?,
        })
    }
    fn strs(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.str()).collect()
    }
    fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.str()?)
        } else {
            None
        })
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err("invalid boolean")),
        }
    }
    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            what,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() - self.pos < n {
            return Err(self.err("truncated"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A count of items each at least `min_size` bytes long, bounded by what remains.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.b.len() - self.pos {
            return Err(self.err("count exceeds remaining bytes"));
        }
        Ok(n)
    }
    fn weight(&mut self) -> Result<u32, DecodeError> {
        match self.u32()? {
            0 => Err(self.err("zero weight")),
            w => Ok(w),
        }
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| self.err("string is not UTF-8"))
    }
    fn dur(&mut self) -> Result<Duration, DecodeError> {
        Ok(Duration::from_nanos(self.u64()?))
    }
    fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(self.err("unknown address family")),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

#[cfg(test)]
mod tests;
