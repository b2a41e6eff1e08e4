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
//! str      := len:u32 utf8-bytes        dur := nanos:u64 (idle: 0 means disabled)
//! addr     := 4 ip:[u8;4] port:u16 | 6 ip:[u8;16] port:u16
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::snapshot::*;

const MAGIC: &[u8; 4] = b"ZHSN";
/// Bumped on any change to the byte layout above.
pub const FORMAT_VERSION: u16 = 1;

const KIND_TCP_PROXY: u8 = 1;
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
        }
    }
    w.0
}

struct Writer(Vec<u8>);

impl Writer {
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
    const MIN_CLUSTER: usize = 4 + 8 + 1 + 4;
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
        clusters.push(Cluster {
            name,
            connect_timeout,
            lb_policy,
            endpoints,
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

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
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
