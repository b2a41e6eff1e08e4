//! The HTTP/1.1 codec. Sans-I/O where it can be: request and response heads held to RFC
//! 9112's framing rules (`head`), a strict chunked decoder (`chunked`), and head writers
//! (`encode`); nothing there does I/O, so the fuzz targets and unit tests exercise exactly
//! what the data path runs. `server` is its thin I/O shell on the downstream side; the
//! upstream side's is `upstream::h1`.

pub mod chunked;
pub mod encode;
pub mod head;
pub mod server;
