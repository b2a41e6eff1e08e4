//! The HTTP/2 codec, downstream: `h2` over monoio's poll-style socket ([`io`]), heads laid
//! out in the codec-neutral shape ([`head`]), one [`Downstream`](crate::http::downstream)
//! per stream ([`downstream`]), and the connection shell that drives them ([`conn`]).
//! Routing, filters, the router and the upstream are the same code HTTP/1.1 requests take.

pub mod body;
pub mod conn;
pub mod downstream;
pub mod head;
mod io;

pub use io::Io;

/// The HTTP/2 connection preface as far as an HTTP/1.1 parser reads it (RFC 9113 section
/// 3.4): a request line with version `HTTP/2.0`, which HTTP/1.1 refuses.
pub const PREFACE_START: &[u8] = b"PRI * HTTP/2.0";
