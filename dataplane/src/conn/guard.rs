//! Bookkeeping every downstream connection does, whatever serves it: counted while open
//! ([`ActiveGuard`]), and registered with its listener so that a drain deadline can shut it
//! down ([`Tracked`]).

use std::os::fd::RawFd;
use std::rc::Rc;

use zerohop_proto::stats::Counter;

use crate::shard::listeners::BoundListener;
use crate::shard::Shard;

/// A downstream connection, counted from `enter` until dropped (it travels with the
/// connection into whichever task serves it).
#[derive(Debug)]
pub struct ActiveGuard(Rc<Shard>);

impl ActiveGuard {
    pub fn enter(shard: &Rc<Shard>) -> Self {
        shard.stats.inc(Counter::DownstreamCxTotal);
        shard.stats.inc(Counter::DownstreamCxActive);
        shard.active.set(shard.active.get() + 1);
        ActiveGuard(shard.clone())
    }

    pub fn shard(&self) -> &Rc<Shard> {
        &self.0
    }
}

impl Drop for ActiveGuard {
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
