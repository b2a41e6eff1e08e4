//! Ring-side receives and sends for HTTP heads and small bodies: the ring does the copy, so
//! a request costs no `recvfrom`/`sendto` syscalls of its own. The operations ride the
//! `io_uring_enter` the shard makes anyway, batched with every other connection's.
//!
//! The byte pumps in [`super::pump`] wait for readiness instead, because an L4 connection
//! may sit idle for hours and a pending receive pins its buffer. An HTTP connection keeps
//! its head buffer between requests regardless, so for it the pending receive costs no
//! memory. The buffers here are owned and travel with the operation: a receive that
//! is abandoned (its future dropped) is cancelled, and its buffer is freed when the
//! cancellation completes. Abandoning loses whatever that receive had read, so callers do
//! it only when they are closing the stream anyway.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::time::Sleep;

/// How a receive ended.
#[derive(Debug)]
pub enum Recv {
    /// This many bytes were appended.
    Read(usize),
    /// The peer closed its side (end of stream).
    Closed,
    Failed(io::Error),
    /// The deadline passed first; the stream must be closed.
    TimedOut,
}

/// Receives up to `max` bytes onto the end of `buf`.
///
/// The returned future owns `buf`'s contents while the receive is pending (`buf` is left
/// empty) and resolves to them, with what arrived appended: put them back into `buf`. Drop
/// the future only to close the stream.
pub fn recv_op<'a>(
    s: &'a mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> + 'a {
    let mut v = std::mem::take(buf);
    v.reserve(max);
    let len = v.len();
    let op = s.read(v.slice_mut(len..len + max));
    async move {
        let (r, slice) = op.await;
        (r, slice.into_inner())
    }
}

/// Receives up to `max` bytes onto the end of `buf`, waiting until `deadline` (or for ever)
/// on the connection's `timer`.
pub async fn recv(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Option<Instant>,
    timer: Pin<&mut Sleep>,
) -> Recv {
    let op = recv_op(s, buf, max);
    let (r, v) = match deadline {
        None => op.await,
        Some(d) => match until(std::pin::pin!(op), timer, d).await {
            Some(done) => done,
            None => return Recv::TimedOut,
        },
    };
    *buf = v;
    outcome(r)
}

/// Polls `op` until it completes (`Some`) or `deadline` passes (`None`, `op` left pending).
///
/// A connection keeps one `timer` and moves it to each wait's deadline: usually a cheap
/// extension of an entry already in the timer wheel, where a new `Sleep` per wait would
/// register one (and build a cache-line-aligned future half a kilobyte large).
pub async fn until<F: Future>(
    mut op: Pin<&mut F>,
    mut timer: Pin<&mut Sleep>,
    deadline: Instant,
) -> Option<F::Output> {
    timer.as_mut().reset(deadline.into());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = op.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// The [`Recv`] for a completed receive.
pub fn outcome(r: io::Result<usize>) -> Recv {
    match r {
        Ok(0) => Recv::Closed,
        Ok(n) => Recv::Read(n),
        Err(e) => Recv::Failed(e),
    }
}

/// Sends all of `buf` and gives it back (to be sent again, or reused).
pub async fn send(s: &mut TcpStream, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    let total = buf.len();
    if total == 0 {
        return (Ok(()), buf);
    }
    let (r, mut buf) = s.write(buf).await;
    let mut sent = match r {
        Ok(n) => n,
        Err(e) => return (Err(e), buf),
    };
    // A short send (the socket's buffer filled): the rest, from where it stopped.
    while sent < total {
        let (r, slice) = s.write(buf.slice(sent..)).await;
        buf = slice.into_inner();
        match r {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// Why an io_uring could not be set up, in an operator's terms, from the error and what the
/// process can read about itself (`tuning/README.md`, "When io_uring is unavailable", has
/// the remedy for each).
pub fn unavailable_cause(e: &io::Error) -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let proc_line = |file: &str, key: &str| {
        read(file)
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| {
                l[key.len()..]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    match e.raw_os_error() {
        Some(libc::ENOMEM) => format!(
            "ENOMEM: RLIMIT_MEMLOCK is too low for the ring (locked memory soft/hard: {}); raise it",
            proc_line("/proc/self/limits", "Max locked memory")
        ),
        Some(libc::EPERM) => {
            let disabled = read("/proc/sys/kernel/io_uring_disabled");
            let seccomp = proc_line("/proc/self/status", "Seccomp:");
            match disabled.trim() {
                "2" => "EPERM: io_uring is disabled on this host (sysctl kernel.io_uring_disabled=2)".into(),
                "1" => "EPERM: io_uring is limited to the group in kernel.io_uring_group (sysctl kernel.io_uring_disabled=1), which this process is not in".into(),
                _ if seccomp == "2" => "EPERM: a seccomp filter refuses io_uring_setup (a container runtime's default profile does); allow io_uring_setup, io_uring_enter and io_uring_register".into(),
                _ => format!("EPERM: io_uring_setup was refused (seccomp mode {seccomp:?}, io_uring_disabled {:?}): a security module or a sandbox", disabled.trim()),
            }
        }
        Some(libc::ENOSYS) => "ENOSYS: this kernel has no io_uring (older than 5.1, or built without it), or a seccomp filter answers ENOSYS".into(),
        _ => format!("{e}"),
    }
}

#[cfg(test)]
mod cause_tests {
    use super::unavailable_cause;

    #[test]
    fn each_cause_is_named() {
        let of = |errno| unavailable_cause(&std::io::Error::from_raw_os_error(errno));
        assert!(
            of(libc::ENOMEM).contains("RLIMIT_MEMLOCK"),
            "{}",
            of(libc::ENOMEM)
        );
        assert!(of(libc::ENOMEM).contains("locked memory"));
        assert!(of(libc::ENOSYS).contains("no io_uring"));
        let eperm = of(libc::EPERM);
        assert!(
            eperm.starts_with("EPERM: ")
                && ["seccomp", "io_uring_disabled", "io_uring_group"]
                    .iter()
                    .any(|w| eperm.contains(w)),
            "{eperm}"
        );
    }
}
