//! The shard's side of access logs: when a logged stream or connection ends, one record
//! ([`zerohop_proto::accesslog::Record`]) goes into the shard's ring in shared memory, and
//! control filters, formats and writes it. Nothing here formats or touches a file: a record
//! is fixed fields and the values of the headers control asked for. A full ring drops the
//! record (counted in the ring, reported by control as `access_log.dropped`); a request never
//! waits for a log.

use std::cell::{Cell, RefCell};
use std::time::{Instant, SystemTime};

use zerohop_proto::accesslog::{push_header, Record};
use zerohop_proto::shm::LogRing;

use crate::http::message::HeaderSource;

/// One shard's access-log writer.
#[derive(Debug)]
pub struct AccessLog {
    ring: Option<LogRing<'static>>,
    /// The record being encoded (kept to reuse its allocation).
    buf: RefCell<Vec<u8>>,
    /// `%CONNECTION_ID%`: this shard's next connection number (the shard's id in the top
    /// bits keeps them unique in the process).
    next_connection: Cell<u64>,
    /// The wall clock at a monotonic instant, refreshed every second: a record's start
    /// time without a second clock read.
    anchor: Cell<(Instant, u64)>,
}

impl AccessLog {
    pub fn new(ring: Option<LogRing<'static>>, shard: usize) -> AccessLog {
        let log = AccessLog {
            ring,
            buf: RefCell::new(Vec::with_capacity(512)),
            next_connection: Cell::new((shard as u64) << 40),
            anchor: Cell::new((Instant::now(), 0)),
        };
        log.refresh_clock();
        log
    }

    /// Reads the wall clock again (the shard calls it once a second).
    pub fn refresh_clock(&self) {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.anchor.set((now, wall));
    }

    /// Nanoseconds since the Unix epoch at `at`.
    pub fn unix_ns(&self, at: Instant) -> u64 {
        let (mono, wall) = self.anchor.get();
        match at.checked_duration_since(mono) {
            Some(d) => wall + d.as_nanos() as u64,
            None => wall.saturating_sub(mono.duration_since(at).as_nanos() as u64),
        }
    }

    /// A number for a new connection (`%CONNECTION_ID%`).
    pub fn connection_id(&self) -> u64 {
        let n = self.next_connection.get() + 1;
        self.next_connection.set(n);
        n
    }

    /// Pushes `rec` into the ring (dropped and counted there when it is full).
    pub fn push(&self, rec: &Record<'_>) {
        let Some(ring) = &self.ring else { return };
        let mut buf = self.buf.borrow_mut();
        buf.clear();
        rec.encode(&mut buf);
        ring.push(&buf);
    }
}

/// Appends to `block` the first value of each header of `names` that `headers` has, at
/// slot `base + index` (names are lower case, as the codecs give them).
pub fn capture(names: &[String], base: u8, headers: &impl HeaderSource, block: &mut Vec<u8>) {
    let mut seen = 0u64;
    headers.for_each(|n, v| {
        if let Some(i) = names.iter().position(|want| want.as_bytes() == n) {
            if seen & (1 << i) == 0 {
                seen |= 1 << i;
                push_header(block, base + i as u8, v);
            }
        }
    });
}

/// Headers given as a list of pairs (a local reply's).
#[derive(Debug)]
pub struct Pairs<'a, V>(pub &'a [(&'a [u8], V)]);

impl<V: AsRef<[u8]>> HeaderSource for Pairs<'_, V> {
    fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        for (n, v) in self.0 {
            f(n, v.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_proto::accesslog::Headers;

    #[test]
    fn the_first_value_of_each_named_header_is_captured() {
        let names = vec!["x-b".to_string(), "x-a".to_string()];
        let list: Vec<(&[u8], &[u8])> = vec![
            (b"x-a", b"1"),
            (b"x-c", b"no"),
            (b"x-a", b"2"),
            (b"x-b", b""),
        ];
        let mut block = Vec::new();
        capture(&names, 64, &Pairs(&list), &mut block);
        let rec = Record {
            headers: &block,
            ..Record::default()
        };
        let got: Vec<(u8, &[u8])> = rec.headers().collect();
        assert_eq!(got, vec![(65, &b"1"[..]), (64, &b""[..])]);
        let _: Headers<'_> = rec.headers();
    }

    #[test]
    fn start_times_follow_the_wall_clock() {
        let log = AccessLog::new(None, 3);
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let got = log.unix_ns(now);
        assert!(got.abs_diff(wall) < 50_000_000, "{got} vs {wall}");
        let earlier = log.unix_ns(now - std::time::Duration::from_secs(2));
        assert!(got - earlier >= 1_999_000_000);
        assert_eq!(log.connection_id(), (3 << 40) + 1);
    }
}
