//! zerohop-control: everything string-shaped happens here, off the data path.
//!
//! ```text
//! Envoy v3 bootstrap (YAML/JSON) --config::load--> Snapshot --codec--> shm slot --> shards
//!                                                         <-- acks ----------------
//! ```
//!
//! [`config`] decodes Envoy's proto3 JSON mapping against the Envoy API descriptors, refuses
//! any field zerohop does not implement, and compiles the rest into a
//! [`zerohop_proto::Snapshot`]. [`publish`] writes it into the shared-memory segment and
//! waits for every shard's acknowledgement. [`admin`] serves what an operator asks of a
//! running proxy; [`stats`] reads the per-shard counters; [`source`] watches the config
//! file and keeps the last good snapshot on disk.

pub mod accesslog;
pub mod admin;
pub mod config;
pub mod dns;
pub mod health;
pub mod publish;
mod random;
pub mod source;
pub mod stats;
pub mod tracing;
pub mod xds;
