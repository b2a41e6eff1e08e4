//! The byte-moving layer: the only code that touches sockets directly.
//!
//! [`pump`] moves one direction of a proxied connection; [`sys`] holds the raw syscalls;
//! [`Pools`] keeps each shard's copy buffers and splice pipes, so an idle connection holds
//! neither (it waits for readiness first and borrows a buffer only to move bytes).

pub mod pump;
pub mod sys;

use std::cell::RefCell;

pub use sys::Pipe;

/// Copy buffer size. A read that fills it marks the direction as bulk and switches it to
/// splice(2).
pub const BUF_SIZE: usize = 16 * 1024;
/// Requested pipe size for splicing: fewer, larger splices per bulk transfer.
pub const PIPE_SIZE: usize = 256 * 1024;
/// Pooled items kept per shard; beyond this they are freed.
const POOL_MAX: usize = 256;

/// Per-shard pools (`!Sync`: a shard's alone).
#[derive(Debug, Default)]
pub struct Pools {
    buffers: RefCell<Vec<Box<[u8]>>>,
    pipes: RefCell<Vec<Pipe>>,
}

impl Pools {
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
