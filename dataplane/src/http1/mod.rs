//! The HTTP/1.1 codec. Sans-I/O where it can be: request and response heads held to RFC
//! 9112's framing rules (`head`), a strict chunked decoder (`chunked`), and head writers
//! (`encode`); nothing there does I/O, so the fuzz targets and unit tests exercise exactly
//! what the data path runs. `server` is its thin I/O shell on the downstream side (the
//! connection, its buffers and head reads), `downstream` what the connection manager asks
//! of it per stream (including the explicit HTTP/1.1 -> HTTP/1.1 body fast path), and
//! `conn` the loop that serves one request after another; the upstream side's shell is
//! `upstream::h1`.

pub mod chunked;
pub mod conn;
mod downstream;
pub mod encode;
pub mod head;
pub mod server;
