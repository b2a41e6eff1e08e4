//! The HTTP/2 downstream path on arbitrary client bytes (after the connection preface): `h2`'s
//! server reads them as frames, and every request it accepts goes through zerohop's head
//! conversion (`http2::head::request`) and gets a local reply (`head::local_response`).
//! Never a panic; no request that converts carries a control character an HTTP/1.1 upstream
//! could be misled by; a request that converts reads back as its parts.
#![no_main]
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zerohop::http::downstream::LocalBody;
use zerohop::http2::head;

/// The client: the preface, an empty SETTINGS, then the fuzzer's bytes; writes vanish.
struct Client {
    input: Vec<u8>,
    at: usize,
}

impl AsyncRead for Client {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        // Small reads, so frames straddle them.
        let n = (self.input.len() - self.at).min(buf.remaining()).min(61);
        let at = self.at;
        buf.put_slice(&self.input[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    input.extend_from_slice(data);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut handshake = Box::pin(
        h2::server::Builder::new()
            .max_header_list_size(60 * 1024)
            .handshake::<_, bytes::Bytes>(Client { input, at: 0 }),
    );
    let mut conn = loop {
        match handshake.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(c)) => break c,
            Poll::Ready(Err(_)) => return,
            Poll::Pending => return,
        }
    };
    for _ in 0..10_000 {
        match conn.poll_accept(&mut cx) {
            Poll::Ready(Some(Ok((req, mut respond)))) => {
                let (parts, body) = req.into_parts();
                if let Ok(r) = head::request(&parts, body.is_end_stream(), 100) {
                    assert!(!r.raw.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
                    assert_eq!(r.method(), parts.method.as_str().as_bytes());
                    assert!(r.header("host").is_none());
                }
                let (resp, body) = head::local_response(200, LocalBody::Text("ok"), &[]);
                if let Ok(mut send) = respond.send_response(resp, false) {
                    let _ = send.send_data(body, true);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => return,
            Poll::Pending => return,
        }
    }
});
