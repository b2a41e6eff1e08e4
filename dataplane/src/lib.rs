//! The zerohop data plane.
//!
//! ```text
//! main -> app (attach to the segment, bind, start shards)
//!           shard (one pinned thread + monoio runtime each)
//!             accept --> l4::serve --> cluster (pick endpoint) --> connect
//!                                  \-> net::pump x2 (ring readiness, recv/send or splice)
//!                    \-> http1::serve: net::ring recv --> http1::head --> route --> cluster
//!                         --> http1::pool / connect --> net::ring send ... recv --> send
//!             tick   --> shard::maybe_reload (new generation from shared memory) --> ack
//! ```
//!
//! Configuration arrives compiled, from `zerohop-control`, through the shared-memory segment
//! defined in `zerohop-proto`. Nothing on the connection path crosses shards.
#![deny(unsafe_code)]

pub mod app;
pub mod args;
pub mod cluster;
pub mod control;
pub mod demo;
pub mod fasthash;
pub mod http1;
pub mod l4;
pub mod net;
pub mod route;
pub mod shard;
pub mod stats;
