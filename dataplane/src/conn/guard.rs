//! Bookkeeping every downstream connection does, whatever serves it: counted while open
//! ([`ActiveGuard`]), and registered with its listener so that a drain deadline can shut it
//! down ([`Tracked`]).

use std::os::fd::RawFd;

use zerohop_proto::stats::Counter;

use crate::shard::listeners::BoundListener;
use crate::shard::Shard;

/// A downstream connection, counted from `enter` until dropped.
#[derive(Debug)]
pub struct ActiveGuard<'a>(&'a Shard);

impl<'a> ActiveGuard<'a> {
    pub fn enter(shard: &'a Shard) -> Self {
        shard.stats.inc(Counter::DownstreamCxTotal);
        shard.stats.inc(Counter::DownstreamCxActive);
        shard.active.set(shard.active.get() + 1);
        ActiveGuard(shard)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.stats.dec(Counter::DownstreamCxActive);
        self.0.active.set(self.0.active.get() - 1);
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
