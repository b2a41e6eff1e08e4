//! The contract between `zerohop-control` and the `zerohop` data plane.
//!
//! Control compiles Envoy configuration into a [`Snapshot`]: plain data with typed IDs and no
//! strings that the request path would have to look up. It encodes the snapshot with
//! [`codec`] and publishes it into a shared-memory [`shm::Segment`]; every shard of the data
//! plane decodes it, applies it, and acknowledges the generation in the same segment. Each
//! shard also owns a block of [`stats`] counters there that only it writes.
//!
//! This crate depends on neither side; both depend on it. A change to any byte layout here
//! bumps [`codec::FORMAT_VERSION`] or [`shm::LAYOUT_VERSION`].

pub mod accesslog;
pub mod codec;
pub mod shm;
pub mod snapshot;
pub mod stats;
pub mod tracing;

pub use snapshot::*;
