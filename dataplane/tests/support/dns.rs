//! A DNS server on 127.0.0.1 for the tests (UDP): answers A and AAAA queries from a table
//! the test changes while it runs, counts the queries per name, and can go silent (an
//! outage: queries are read and dropped) or answer SERVFAIL. Messages are parsed and
//! written with hickory-proto; the server logic is the test's own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Answer,
    /// Queries are dropped: the resolver times out.
    Silent,
    ServFail,
}

#[derive(Default)]
struct Table {
    /// Name (lower case, no trailing dot) -> addresses and TTL.
    names: HashMap<String, (Vec<IpAddr>, u32)>,
    queries: HashMap<String, u64>,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let table = Arc::new(Mutex::new(Table::default()));
        let mode = Arc::new(Mutex::new(Mode::Answer));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, m, s) = (table.clone(), mode.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Some(reply) = answer(&query, &t, *m.lock().unwrap()) {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        DnsServer {
            addr,
            table,
            mode,
            stop,
        }
    }

    /// `name` answers `ips` (A for IPv4, AAAA for IPv6) with `ttl`; no addresses: NXDOMAIN.
    pub fn set(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let mut t = self.table.lock().unwrap();
        if ips.is_empty() {
            t.names.remove(name);
        } else {
            t.names.insert(name.to_owned(), (ips.to_vec(), ttl));
        }
    }

    pub fn mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Queries received for `name` (any type), answered or not.
    pub fn queries(&self, name: &str) -> u64 {
        self.table
            .lock()
            .unwrap()
            .queries
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(query: &Message, table: &Mutex<Table>, mode: Mode) -> Option<Vec<u8>> {
    let q = query.queries.first()?.clone();
    let name = q
        .name()
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut t = table.lock().unwrap();
    *t.queries.entry(name.clone()).or_default() += 1;
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_query(q.clone());
    match mode {
        Mode::Silent => return None,
        Mode::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
        Mode::Answer => match t.names.get(&name) {
            None => reply.metadata.response_code = ResponseCode::NXDomain,
            Some((ips, ttl)) => {
                for ip in ips {
                    let rdata = match (ip, q.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue, // NODATA for the other family
                    };
                    reply.add_answer(Record::from_rdata(q.name().clone(), *ttl, rdata));
                }
            }
        },
    }
    reply.to_vec().ok()
}
