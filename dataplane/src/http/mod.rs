//! HTTP above the codecs: the connection manager (`hcm`) that drives one stream at a time,
//! the filter chain it runs (`filter`), the codec-neutral message types (`message`), the
//! per-request record (`info`), and the HTTP/1.1-to-HTTP/1.1 body fast path (`body`).
//!
//! ```text
//! codec (http1::server) -> hcm: request head -> route -> filters -> router -> upstream
//!                          hcm: response head <- filters (reverse) <- router
//! ```

pub mod body;
pub mod filter;
pub mod hcm;
pub mod info;
pub mod message;
