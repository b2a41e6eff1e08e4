//! The socket as `h2` reads and writes it: monoio's poll-style view of the connection
//! (readiness through the ring), plain or under TLS, after the bytes another codec already
//! read off it (the start of the connection preface, when `codec_type: AUTO` looked at it
//! first).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::transport::Sock;
use crate::tls::TlsIo;

#[derive(Debug)]
pub struct Io {
    /// Read already, not yet given to `h2`: returned first.
    early: Vec<u8>,
    at: usize,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Plain(TcpStreamPoll),
    Tls(Box<TlsIo<TcpStreamPoll>>),
}

impl Io {
    /// `sock` in poll style, `early` to be read first.
    pub fn new(early: Vec<u8>, sock: Sock) -> io::Result<Io> {
        let inner = match sock {
            Sock::Plain(s) => Inner::Plain(s.try_into_poll_io().map_err(|(e, _)| e)?),
            Sock::Tls(t) => {
                let (tcp, conn) = t.into_parts();
                let tcp = tcp.try_into_poll_io().map_err(|(e, _)| e)?;
                Inner::Tls(Box::new(TlsIo::new(tcp, conn)))
            }
        };
        Ok(Io {
            early,
            at: 0,
            inner,
        })
    }
}

macro_rules! inner {
    ($this:expr, $s:ident => $e:expr) => {
        match &mut $this.inner {
            Inner::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Inner::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.early.len() {
            let n = (this.early.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.early[this.at..this.at + n]);
            this.at += n;
            if this.at == this.early.len() {
                this.early = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        inner!(this, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        inner!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        inner!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Plain(s) => s.is_write_vectored(),
            Inner::Tls(_) => false,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(self, s => s.poll_shutdown(cx))
    }
}
