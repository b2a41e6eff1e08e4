//! HTTP/1.1, sans-I/O: request and response heads held to RFC 9112's framing rules, and a
//! strict chunked decoder. The connection manager (issue #4) drives these with the shard's
//! sockets; nothing here does I/O, so the fuzz targets and unit tests exercise exactly what
//! the data path runs.

pub mod chunked;
mod conn;
pub mod head;
pub mod pool;

pub use conn::serve;
