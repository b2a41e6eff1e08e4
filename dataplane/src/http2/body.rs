//! Bodies between HTTP/2 streams and the other side of an exchange, whichever codec that
//! is: DATA frames to an HTTP/1.1 peer (as sent, or as chunks with the trailers), DATA to
//! DATA (trailers to trailers), and an HTTP/1.1-framed body to DATA. Flow control runs end to
//! end: a frame's window is given back to the sender only once the other side has taken its
//! bytes, and DATA goes out only within the receiver's window, so a slow peer holds back its
//! own stream and nothing else.

use std::cell::Cell;
use std::time::Instant;

use crate::net::transport::Sock;
use bytes::Bytes;
use h2::{RecvStream, SendStream};

use crate::http::body::{self, BodyEnd};
use crate::http::message::Framing;
use crate::net::pump;

/// The next DATA frame's bytes of `recv`, after what was looked at already (`early`).
pub async fn next_data(recv: &mut RecvStream, early: &mut Vec<Bytes>) -> Option<Result<Bytes, ()>> {
    if !early.is_empty() {
        return Some(Ok(early.remove(0)));
    }
    std::future::poll_fn(|cx| recv.poll_data(cx))
        .await
        .map(|r| r.map_err(|_| ()))
}

/// Gives the peer back `n` bytes of window: they have left zerohop.
pub fn release(recv: &mut RecvStream, n: usize) {
    let _ = recv.flow_control().release_capacity(n);
}

/// The stream's trailers, once its DATA is done (`None`: it had none, or failed).
async fn trailers(recv: &mut RecvStream) -> Option<http::HeaderMap> {
    std::future::poll_fn(|cx| recv.poll_trailers(cx))
        .await
        .ok()
        .flatten()
}

/// Sends `data` as DATA frames within the stream's send window, ending the stream after it
/// when `end`. `Err` once the stream is gone (reset, or the connection closed).
pub async fn send_data(send: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), ()> {
    if data.is_empty() {
        return match end {
            true => send.send_data(data, true).map_err(|_| ()),
            false => Ok(()),
        };
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx)).await;
        let n = match granted {
            Some(Ok(n)) => n.min(data.len()),
            Some(Err(_)) | None => return Err(()),
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n);
        send.send_data(chunk, end && data.is_empty())
            .map_err(|_| ())?;
    }
    Ok(())
}

/// Each DATA frame of `recv` (after `early`) to `sink`, as it arrives; its window goes back
/// to the peer once the sink took it. `Sink` when the sink refuses, `Source` when the stream
/// fails; `Ok` at its end (trailers, if any, still to read).
async fn each_data(
    recv: &mut RecvStream,
    early: &mut Vec<Bytes>,
    last: &Cell<Instant>,
    mut sink: impl AsyncFnMut(Bytes) -> bool,
) -> Result<(), BodyEnd> {
    while let Some(chunk) = next_data(recv, early).await {
        let chunk = chunk.map_err(|()| BodyEnd::Source(None))?;
        last.set(Instant::now());
        let n = chunk.len();
        if !sink(chunk).await {
            return Err(BodyEnd::Sink);
        }
        release(recv, n);
    }
    Ok(())
}

/// DATA from `recv` to an HTTP/1.1 peer `to`: as sent (`chunked` false: a declared length, or
/// a connection delimited by its end), or as chunks ending in the stream's trailers. `out`
/// is a scratch buffer.
pub async fn data_to_h1(
    recv: &mut RecvStream,
    early: &mut Vec<Bytes>,
    to: &Sock,
    chunked: bool,
    last: &Cell<Instant>,
    moved: &mut u64,
    out: &mut Vec<u8>,
) -> BodyEnd {
    let sink = async |chunk: Bytes| {
        if chunk.is_empty() {
            return true;
        }
        out.clear();
        match chunked {
            true => crate::http::filter::compressor::chunk_into(&chunk, usize::MAX, out),
            false => out.extend_from_slice(&chunk),
        }
        *moved += chunk.len() as u64;
        pump::send_all(to, out).await.is_ok()
    };
    if let Err(end) = each_data(recv, early, last, sink).await {
        return end;
    }
    if chunked {
        out.clear();
        out.extend_from_slice(b"0\r\n");
        if let Some(map) = trailers(recv).await {
            for (n, v) in &map {
                crate::http1::encode::write_header(out, n.as_str().as_bytes(), v.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        if pump::send_all(to, out).await.is_err() {
            return BodyEnd::Sink;
        }
    }
    BodyEnd::Done
}

/// DATA from `recv` to `send`, then the trailers (or the end of the stream).
pub async fn data_to_data(
    recv: &mut RecvStream,
    early: &mut Vec<Bytes>,
    send: &mut SendStream<Bytes>,
    last: &Cell<Instant>,
    moved: &mut u64,
) -> BodyEnd {
    let sink = async |chunk: Bytes| {
        *moved += chunk.len() as u64;
        send_data(send, chunk, false).await.is_ok()
    };
    if let Err(end) = each_data(recv, early, last, sink).await {
        return end;
    }
    let sent = match trailers(recv).await {
        Some(map) => send.send_trailers(map).map_err(|_| ()),
        None => send_data(send, Bytes::new(), true).await,
    };
    match sent {
        Ok(()) => BodyEnd::Done,
        Err(()) => BodyEnd::Sink,
    }
}

/// An HTTP/1.1-framed body (what `buf` holds, then `from`) as DATA on `send`, ending the
/// stream with its last bytes.
pub async fn h1_to_data(
    from: &Sock,
    buf: &mut Vec<u8>,
    framing: Framing,
    send: &mut SendStream<Bytes>,
    last: &Cell<Instant>,
    moved: &mut u64,
) -> BodyEnd {
    let sink = async |plain: &[u8], done: bool| {
        *moved += plain.len() as u64;
        last.set(Instant::now());
        send_data(send, Bytes::copy_from_slice(plain), done)
            .await
            .is_ok()
    };
    body::relay_decoded(from, buf, framing, last, sink).await
}

/// DATA from `recv` handed to `sink` as it arrives (`true` with the last, possibly empty);
/// trailers are dropped (a sink that re-encodes cannot carry them). A `false` from the sink
/// ends the relay.
pub async fn data_decoded(
    recv: &mut RecvStream,
    last: &Cell<Instant>,
    mut sink: impl AsyncFnMut(&[u8], bool) -> bool,
) -> BodyEnd {
    let each = async |chunk: Bytes| sink(&chunk, false).await;
    if let Err(end) = each_data(recv, &mut Vec::new(), last, each).await {
        return end;
    }
    match sink(&[], true).await {
        true => BodyEnd::Done,
        false => BodyEnd::Sink,
    }
}
