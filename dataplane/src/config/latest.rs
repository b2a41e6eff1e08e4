//! Handing finished generations from the config thread to the shards, and taking retired
//! ones back.
//!
//! [`Latest`] holds the newest generation behind a mutex and its number in an atomic: a
//! shard checks the atomic (one relaxed load, per accept and per tick) and takes the lock
//! only to clone the `Arc` of a generation it has not applied. A refused generation is
//! announced the same way, so every shard records the refusal in its own ack line and
//! counters.
//!
//! Freeing a generation (thousands of clusters, route tables, strings) is not a shard's
//! work either: a shard never drops the last reference itself but hands it to the
//! [`Graveyard`], which the config thread empties.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Generation;

#[derive(Debug)]
pub struct Latest {
    number: AtomicU64,
    current: Mutex<Arc<Generation>>,
    rejected_number: AtomicU64,
    rejected: Mutex<(u64, String)>,
}

impl Latest {
    pub fn new(first: Arc<Generation>) -> Latest {
        Latest {
            number: AtomicU64::new(first.number),
            current: Mutex::new(first),
            rejected_number: AtomicU64::new(0),
            rejected: Mutex::new((0, String::new())),
        }
    }

    /// The newest generation's number: one load, for the per-accept check.
    #[inline]
    pub fn number(&self) -> u64 {
        self.number.load(Ordering::Acquire)
    }

    pub fn get(&self) -> Arc<Generation> {
        self.current.lock().expect("latest generation").clone()
    }

    /// Makes `g` the newest; returns the one it replaces (for the caller to retire).
    pub fn publish(&self, g: Arc<Generation>) -> Arc<Generation> {
        let number = g.number;
        let old = std::mem::replace(&mut *self.current.lock().expect("latest generation"), g);
        self.number.store(number, Ordering::Release);
        old
    }

    /// The newest refused generation's number (0: none yet).
    #[inline]
    pub fn rejected_number(&self) -> u64 {
        self.rejected_number.load(Ordering::Acquire)
    }

    pub fn rejected(&self) -> (u64, String) {
        self.rejected.lock().expect("rejected generation").clone()
    }

    pub fn reject(&self, number: u64, reason: String) {
        *self.rejected.lock().expect("rejected generation") = (number, reason);
        self.rejected_number.store(number, Ordering::Release);
    }
}

/// Generations the shards are done with, freed by the config thread.
#[derive(Debug, Default)]
pub struct Graveyard(Mutex<Vec<Arc<Generation>>>);

impl Graveyard {
    pub fn bury(&self, g: Arc<Generation>) {
        self.0.lock().expect("graveyard").push(g);
    }

    /// Drops what was buried (on the caller's thread).
    pub fn empty(&self) -> usize {
        let dead = std::mem::take(&mut *self.0.lock().expect("graveyard"));
        dead.len()
    }
}
