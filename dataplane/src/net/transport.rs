//! What carries a connection's bytes: plain TCP, or TLS over it (Envoy's transport socket).
//!
//! The byte-moving code (`pump`, the HTTP/1.1 body relays, tunnels) is written once against
//! [`Transport`]: readiness, a non-blocking receive, a whole send. Plain TCP answers with
//! the socket's own syscalls (and offers its descriptor for splice); TLS answers with
//! plaintext that `tls::TlsStream` decrypted, so splice is never used on it. [`Sock`] is the
//! enum a connection holds when it may be either (enum dispatch: a branch, no vtable).

use std::future::Future;
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::time::Instant;

use monoio::net::TcpStream;
use monoio::time::Sleep;

use super::{ring, sys};
use crate::tls::TlsStream;

/// One connection's byte stream, as the byte-moving code drives it.
// Reason: the futures are used on the shard that made them (the runtime is per thread);
// no caller needs them `Send`.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// The TCP socket underneath (for linger, hang-up watch, shutdown at drain).
    fn fd(&self) -> RawFd;
    /// The plain socket, when the bytes on it are the bytes to move (splice may be used).
    fn plain(&self) -> Option<&TcpStream>;
    /// Waits until a receive may find bytes (or the end of the stream).
    async fn readable(&self) -> io::Result<()>;
    /// A non-blocking receive: `WouldBlock` when nothing is there, `Ok(0)` at the end.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends all of `buf` (and, for TLS, everything it encrypted) before returning.
    async fn send_all(&self, buf: &[u8]) -> io::Result<()>;
    /// Ends the sending direction (TLS: close_notify first).
    fn shutdown_write(&self) -> io::Result<()>;

    /// A non-blocking receive of at most `max` bytes appended to `buf`.
    fn try_recv_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let len = buf.len();
        buf.resize(len + max, 0);
        let r = self.try_recv(&mut buf[len..]);
        buf.truncate(len + *r.as_ref().unwrap_or(&0));
        r
    }
}

impl Transport for TcpStream {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }

    async fn readable(&self) -> io::Result<()> {
        TcpStream::readable(self, false).await
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.as_raw_fd(), buf)
    }

    async fn send_all(&self, mut buf: &[u8]) -> io::Result<()> {
        let fd = self.as_raw_fd();
        while !buf.is_empty() {
            match sys::send(fd, buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable(false).await?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        sys::shutdown_write(self.as_raw_fd())
    }

    fn try_recv_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        sys::recv_spare(self.as_raw_fd(), buf, max)
    }
}

/// A connection that is plain TCP or TLS, decided when it was accepted or connected.
#[derive(Debug)]
pub enum Sock {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Sock {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Sock::Plain(s) => s,
            Sock::Tls(t) => &t.tcp,
        }
    }

    /// A receive of at most `max` bytes onto the end of `buf`, as [`ring::recv_op`]:
    /// through the ring on a plain connection; decrypted by rustls, on readiness, under TLS.
    pub fn recv_op<'a>(
        &'a mut self,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> + 'a {
        let mut v = std::mem::take(buf);
        async move {
            match self {
                Sock::Plain(s) => ring::recv_op(s, &mut v, max).await,
                Sock::Tls(t) => loop {
                    match t.try_recv_spare(&mut v, max) {
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            if let Err(e) = t.readable().await {
                                return (Err(e), v);
                            }
                        }
                        r => return (r, v),
                    }
                },
            }
        }
    }

    /// [`ring::recv`] on either kind of connection.
    pub async fn recv(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        deadline: Option<Instant>,
        timer: Pin<&mut Sleep>,
    ) -> ring::Recv {
        let op = self.recv_op(buf, max);
        let (r, v) = match deadline {
            None => op.await,
            Some(d) => match ring::until(std::pin::pin!(op), timer, d).await {
                Some(done) => done,
                None => return ring::Recv::TimedOut,
            },
        };
        *buf = v;
        ring::outcome(r)
    }

    /// Sends all of `out` (through the ring on a plain connection) and gives it back.
    pub async fn send(&mut self, out: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Sock::Plain(s) => ring::send(s, out).await,
            Sock::Tls(t) => (t.send_all(&out).await, out),
        }
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl Transport for Sock {
    fn fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }

    fn plain(&self) -> Option<&TcpStream> {
        match self {
            Sock::Plain(s) => Some(s),
            Sock::Tls(_) => None,
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Sock::Plain(s) => Transport::readable(s).await,
            Sock::Tls(t) => t.readable().await,
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.try_recv(buf),
            Sock::Tls(t) => t.try_recv(buf),
        }
    }

    async fn send_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sock::Plain(s) => s.send_all(buf).await,
            Sock::Tls(t) => t.send_all(buf).await,
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Sock::Plain(s) => s.shutdown_write(),
            Sock::Tls(t) => t.shutdown_write(),
        }
    }

    fn try_recv_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.try_recv_spare(buf, max),
            Sock::Tls(t) => Transport::try_recv_spare(&**t, buf, max),
        }
    }
}
