//! Bookkeeping every downstream connection does, whatever serves it: counted while open
//! ([`ActiveGuard`]), and registered with its listener so that a drain deadline can shut it
//! down ([`Tracked`]).

use std::cell::Cell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Instant;

use zerohop_proto::stats::{Counter, HttpHist, HttpStat, ListenerHist, ListenerStat};
use zerohop_proto::StatScope;

use crate::shard::listeners::BoundListener;
use crate::shard::Shard;

/// A downstream connection, counted from `enter` until dropped (it travels with the
/// connection into whichever task serves it), in zerohop's counters and in its listener's
/// `listener.<address>.*` (`scope`).
#[derive(Debug)]
pub struct ActiveGuard {
    shard: Rc<Shard>,
    scope: StatScope,
    since: Instant,
    /// The connection manager's `http.<stat_prefix>.*` once an HTTP chain took the
    /// connection, whether it is TLS, and its codec once known (`Some(true)`: HTTP/2).
    http: Cell<StatScope>,
    tls: Cell<bool>,
    codec: Cell<Option<bool>>,
}

impl ActiveGuard {
    pub fn enter(shard: &Rc<Shard>, scope: StatScope) -> Self {
        let stats = &shard.stats;
        stats.inc(Counter::DownstreamCxTotal);
        stats.inc(Counter::DownstreamCxActive);
        stats.count(scope, ListenerStat::DownstreamCxTotal);
        stats.count(scope, ListenerStat::DownstreamCxActive);
        shard.active.set(shard.active.get() + 1);
        ActiveGuard {
            shard: shard.clone(),
            scope,
            since: Instant::now(),
            http: Cell::new(StatScope::NONE),
            tls: Cell::new(false),
            codec: Cell::new(None),
        }
    }

    /// An HTTP connection manager took the connection: counted in its
    /// `downstream_cx_total` / `_active` (and `_ssl_*` when `tls`) until dropped.
    pub fn http(&self, scope: StatScope, tls: bool) {
        let stats = &self.shard.stats;
        self.http.set(scope);
        self.tls.set(tls);
        stats.count(scope, HttpStat::DownstreamCxTotal);
        stats.count(scope, HttpStat::DownstreamCxActive);
        if tls {
            stats.count(scope, HttpStat::DownstreamCxSslTotal);
            stats.count(scope, HttpStat::DownstreamCxSslActive);
        }
    }

    /// The connection's codec is known (`h2`: HTTP/2): `downstream_cx_http1_total` or
    /// `_http2_total`, and its `_active`. Only the first call counts.
    pub fn codec(&self, h2: bool) {
        if self.codec.get().is_some() {
            return;
        }
        self.codec.set(Some(h2));
        let (total, active) = codec_stats(h2);
        self.shard.stats.count(self.http.get(), total);
        self.shard.stats.count(self.http.get(), active);
    }

    pub fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// The listener's stat scope.
    pub fn scope(&self) -> StatScope {
        self.scope
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let stats = &self.shard.stats;
        stats.dec(Counter::DownstreamCxActive);
        stats.uncount(self.scope, ListenerStat::DownstreamCxActive);
        stats.count(self.scope, ListenerStat::DownstreamCxDestroy);
        stats.record_ms(
            self.scope,
            ListenerHist::DownstreamCxLengthMs,
            crate::stats::ms_since(self.since),
        );
        let http = self.http.get();
        if !http.is_none() {
            stats.uncount(http, HttpStat::DownstreamCxActive);
            stats.count(http, HttpStat::DownstreamCxDestroy);
            if self.tls.get() {
                stats.uncount(http, HttpStat::DownstreamCxSslActive);
            }
            if let Some(h2) = self.codec.get() {
                stats.uncount(http, codec_stats(h2).1);
            }
            stats.record_ms(
                http,
                HttpHist::DownstreamCxLengthMs,
                crate::stats::ms_since(self.since),
            );
        }
        self.shard.active.set(self.shard.active.get() - 1);
    }
}

fn codec_stats(h2: bool) -> (HttpStat, HttpStat) {
    match h2 {
        true => (
            HttpStat::DownstreamCxHttp2Total,
            HttpStat::DownstreamCxHttp2Active,
        ),
        false => (
            HttpStat::DownstreamCxHttp1Total,
            HttpStat::DownstreamCxHttp1Active,
        ),
    }
}

/// A connection's sockets registered with its listener; forgotten when dropped (before the
/// sockets close).
#[derive(Debug)]
pub struct Tracked<'a>(&'a BoundListener, usize);

impl<'a> Tracked<'a> {
    pub fn new(listener: &'a BoundListener, fds: [RawFd; 2]) -> Self {
        Tracked(listener, listener.track(fds))
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.0.untrack(self.1);
    }
}
