//! HTTP above the codecs: the connection manager (`hcm`) that drives one stream at a time,
//! what it asks of a codec for a stream (`downstream`), the filter chain it runs
//! (`filter`), the codec-neutral message types (`message`), the per-request record
//! (`info`), and the HTTP/1.1-to-HTTP/1.1 body relays (`body`).
//!
//! ```text
//! codec shell (http1::conn) -> hcm: request head -> route -> filters -> router -> upstream
//!   Downstream (http1)     <-  hcm: response head <- filters (reverse) <- router
//! ```

pub mod body;
pub mod downstream;
pub mod filter;
pub mod hcm;
pub mod info;
pub mod message;
