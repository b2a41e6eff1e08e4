//! The zerohop data plane.
//!
//! ```text
//! main -> app (attach to the segment, bind, start shards and the config thread)
//!   config thread: segment -> decode -> config::Generation (built once per process) -> Latest
//!   shard (one pinned thread + monoio runtime each): takes the newest Generation, acks
//!     accept --> conn (listener filters, filter chain match) -->
//!        l4 (tcp_proxy) --> upstream (pick, connect) --> net::pump x2 (ring readiness, splice)
//!        http1::conn (codec shell) --> http::hcm (connection manager, via Downstream)
//!           --> route --> http::filter --> router --> upstream (pick, pool, connect,
//!           upstream::h1) --> http::body relays
//! ```
//!
//! Configuration arrives compiled, from `zerohop-control`, through the shared-memory segment
//! defined in `zerohop-proto`. Nothing on the connection path crosses shards.
#![deny(unsafe_code)]

pub mod accesslog;
pub mod app;
pub mod args;
pub mod config;
pub mod conn;
pub mod control;
pub mod demo;
pub mod error;
pub mod fasthash;
pub mod http;
pub mod http1;
pub mod http2;
pub mod l4;
pub mod net;
pub mod ratelimit;
pub mod rbac;
pub mod route;
pub mod router;
pub mod shard;
pub mod stats;
pub mod tls;
pub mod upstream;
