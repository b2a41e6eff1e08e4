//! The byte-moving layer: the only code that touches sockets directly.
//!
//! [`pump`] moves one direction of a proxied connection, [`tunnel`] both; [`ring`] receives
//! and sends HTTP heads as io_uring operations; [`hangup`] notices clients that hang up while
//! their requests wait; [`sys`] holds the raw syscalls; [`Pools`] keeps each shard's
//! copy buffers, splice pipes and byte vectors, so an idle L4 connection holds none of them
//! (it waits for readiness first and borrows a buffer only to move bytes).

pub mod hangup;
pub mod pump;
pub mod ring;
pub mod sys;
pub mod transport;
pub mod tunnel;

use std::cell::RefCell;

pub use sys::Pipe;

/// Copy buffer size. A read that fills it marks the direction as bulk and switches it to
/// splice(2).
pub const BUF_SIZE: usize = 16 * 1024;
/// Requested pipe size for splicing: fewer, larger splices per bulk transfer.
pub const PIPE_SIZE: usize = 256 * 1024;
/// Pooled items kept per shard; beyond this they are freed.
const POOL_MAX: usize = 256;
/// A pooled byte vector larger than this is freed instead of kept.
const VEC_MAX: usize = 128 * 1024;

/// Per-shard pools (`!Sync`: a shard's alone).
#[derive(Debug, Default)]
pub struct Pools {
    buffers: RefCell<Vec<Box<[u8]>>>,
    pipes: RefCell<Vec<Pipe>>,
    vecs: RefCell<Vec<Vec<u8>>>,
}

/// An empty byte vector from the shard's pool, given back when dropped: HTTP heads and
/// response buffers reuse allocations instead of making two or three per request.
#[derive(Debug)]
pub struct PooledVec<'a> {
    vec: Vec<u8>,
    pools: &'a Pools,
}

impl std::ops::Deref for PooledVec<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.vec
    }
}

impl std::ops::DerefMut for PooledVec<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }
}

impl Drop for PooledVec<'_> {
    fn drop(&mut self) {
        self.pools.give_vec(std::mem::take(&mut self.vec));
    }
}

impl Pools {
    /// An empty vector (with whatever capacity it had) that returns to the pool when dropped.
    pub fn vec(&self) -> PooledVec<'_> {
        PooledVec {
            vec: self.take_vec(),
            pools: self,
        }
    }

    /// An empty vector to keep; hand it back with [`Pools::give_vec`] when done.
    pub fn take_vec(&self) -> Vec<u8> {
        self.vecs.borrow_mut().pop().unwrap_or_default()
    }

    pub fn give_vec(&self, mut vec: Vec<u8>) {
        let mut v = self.vecs.borrow_mut();
        if v.len() < POOL_MAX && vec.capacity() > 0 && vec.capacity() <= VEC_MAX {
            vec.clear();
            v.push(vec);
        }
    }

    pub fn take_buffer(&self) -> Box<[u8]> {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
    }

    pub fn give_buffer(&self, buf: Box<[u8]>) {
        let mut b = self.buffers.borrow_mut();
        if b.len() < POOL_MAX {
            b.push(buf);
        }
    }

    /// A pipe for splicing, or `None` when none can be made (fd limit): the pump then keeps
    /// copying, which is slower but correct.
    pub fn take_pipe(&self) -> Option<Pipe> {
        if let Some(p) = self.pipes.borrow_mut().pop() {
            return Some(p);
        }
        Pipe::new(PIPE_SIZE)
            .map_err(|e| log::debug!("pipe2: {e}; copying instead of splicing"))
            .ok()
    }

    /// Returns an empty pipe to the pool. A pipe that may still hold bytes must be dropped.
    pub fn give_pipe(&self, pipe: Pipe) {
        let mut p = self.pipes.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(pipe);
        }
    }
}
