//! The TLS I/O shell: a rustls connection (sans-I/O) driven over a shard's TCP socket with
//! readiness from the ring and non-blocking syscalls, as `net::pump` drives plain sockets.
//!
//! The rustls state sits in a `RefCell` that is borrowed only between awaits, so a
//! connection's two directions (a tunnel's two pumps) can use it at the same time.

use std::cell::{Cell, RefCell};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use monoio::net::TcpStream;

use crate::net::sys;
use crate::net::transport::Transport;

/// Plaintext rustls buffers before a send waits for the socket (bounds memory per
/// connection when the peer reads slowly).
const SEND_BUFFER: usize = 64 * 1024;

/// The socket as rustls reads and writes it: non-blocking `recv`/`send`.
struct Fd(RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.0, buf)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a handshake failed, for the counters Envoy keeps (`ssl.*`).
#[derive(Debug)]
pub enum HandshakeError {
    /// The peer closed, reset or went quiet before the handshake ended.
    Io(io::Error),
    /// The TLS exchange failed (the alert sent says why).
    Tls(rustls::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::Tls(e) => write!(f, "{e}"),
        }
    }
}

/// A TCP connection carrying TLS, after its handshake.
#[derive(Debug)]
pub struct TlsStream {
    pub tcp: TcpStream,
    conn: RefCell<rustls::Connection>,
    /// The socket reached its end (no more ciphertext will come).
    eof: Cell<bool>,
}

impl TlsStream {
    /// Runs the handshake of `conn` on `tcp` (until `deadline`, if any).
    pub async fn handshake(
        tcp: TcpStream,
        conn: impl Into<rustls::Connection>,
        deadline: Option<Instant>,
    ) -> Result<TlsStream, HandshakeError> {
        let mut conn = conn.into();
        conn.set_buffer_limit(Some(SEND_BUFFER));
        let s = TlsStream {
            tcp,
            conn: RefCell::new(conn),
            eof: Cell::new(false),
        };
        let work = s.drive_handshake();
        match deadline {
            None => work.await?,
            Some(d) => match monoio::time::timeout_at(d.into(), work).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(HandshakeError::Io(io::Error::new(
                        ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    )))
                }
            },
        }
        Ok(s)
    }

    async fn drive_handshake(&self) -> Result<(), HandshakeError> {
        loop {
            self.flush().await.map_err(HandshakeError::Io)?;
            if !self.conn.borrow().is_handshaking() {
                return Ok(());
            }
            match self.read_tls() {
                Ok(0) => {
                    return Err(HandshakeError::Io(ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(ReadTls::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    self.tcp.readable(false).await.map_err(HandshakeError::Io)?;
                }
                Err(ReadTls::Io(e)) => return Err(HandshakeError::Io(e)),
                Err(ReadTls::Tls(e)) => {
                    // The alert rustls queued tells the peer why; best effort.
                    let _ = self.flush_now();
                    return Err(HandshakeError::Tls(e));
                }
            }
        }
    }

    /// Reads ciphertext from the socket into rustls and processes it: `Ok(0)` at the end
    /// of the stream.
    fn read_tls(&self) -> Result<usize, ReadTls> {
        let mut conn = self.conn.borrow_mut();
        let n = loop {
            match conn.read_tls(&mut Fd(self.tcp.as_raw_fd())) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                r => break r.map_err(ReadTls::Io)?,
            }
        };
        if n == 0 {
            self.eof.set(true);
        }
        conn.process_new_packets().map_err(ReadTls::Tls)?;
        Ok(n)
    }

    /// Writes what rustls has queued, as far as the socket takes it now: `Ok(true)` when
    /// nothing is left.
    fn flush_now(&self) -> io::Result<bool> {
        let mut conn = self.conn.borrow_mut();
        while conn.wants_write() {
            match conn.write_tls(&mut Fd(self.tcp.as_raw_fd())) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Writes everything rustls has queued.
    async fn flush(&self) -> io::Result<()> {
        while !self.flush_now()? {
            self.tcp.writable(false).await?;
        }
        Ok(())
    }

    /// The protocol the peers agreed by ALPN.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.conn.borrow().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// Whether the session was resumed (no full handshake).
    pub fn resumed(&self) -> bool {
        matches!(
            self.conn.borrow().handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        )
    }

    /// The SNI a client sent (server side).
    pub fn server_name(&self) -> Option<String> {
        match &*self.conn.borrow() {
            rustls::Connection::Server(s) => s.server_name().map(str::to_owned),
            rustls::Connection::Client(_) => None,
        }
    }

    /// Whether the peer sent a certificate.
    pub fn has_peer_certificate(&self) -> bool {
        self.conn
            .borrow()
            .peer_certificates()
            .is_some_and(|c| !c.is_empty())
    }

    /// Whether the peer's certificate is valid for `host` (a DNS name, wildcards as
    /// webpki reads them, or an IP address): `auto_san_validation`'s check.
    pub fn peer_valid_for(&self, host: &str) -> bool {
        let conn = self.conn.borrow();
        let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
            return false;
        };
        let Ok(name) = rustls_pki_types::ServerName::try_from(host) else {
            return false;
        };
        webpki::EndEntityCert::try_from(leaf)
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
    }

    /// The peer's certificate chain (leaf first), if it sent one.
    pub fn peer_certificates(&self) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
        self.conn
            .borrow()
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
    }

    /// The TCP socket and the rustls state, for a codec that drives them itself (HTTP/2).
    pub fn into_parts(self) -> (TcpStream, rustls::Connection) {
        (self.tcp, self.conn.into_inner())
    }

    /// Whether decrypted bytes (or the end of the stream) are waiting, reading what the
    /// socket has if not. `Ok(false)`: wait for the socket.
    fn has_input(&self) -> io::Result<bool> {
        loop {
            let state = self
                .conn
                .borrow_mut()
                .process_new_packets()
                .map_err(tls_error)?;
            if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() || self.eof.get() {
                return Ok(true);
            }
            match self.read_tls() {
                Ok(_) => {}
                Err(ReadTls::Io(e)) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(ReadTls::Io(e)) => return Err(e),
                Err(ReadTls::Tls(e)) => {
                    let _ = self.flush_now();
                    return Err(tls_error(e));
                }
            }
        }
    }
}

enum ReadTls {
    Io(io::Error),
    Tls(rustls::Error),
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, e)
}

impl Transport for TlsStream {
    fn fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }

    fn plain(&self) -> Option<&TcpStream> {
        None
    }

    async fn readable(&self) -> io::Result<()> {
        while !self.has_input()? {
            self.tcp.readable(false).await?;
        }
        Ok(())
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.borrow_mut().reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: an end like any other here (HTTP
                // framing says whether anything was cut short).
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof.get() {
                return Ok(0);
            }
            match self.read_tls() {
                Ok(_) => {
                    // A key update or an alert may want an answer.
                    let _ = self.flush_now()?;
                }
                Err(ReadTls::Io(e)) => return Err(e),
                Err(ReadTls::Tls(e)) => {
                    let _ = self.flush_now();
                    return Err(tls_error(e));
                }
            }
        }
    }

    async fn send_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.conn.borrow_mut().writer().write(buf)?;
            buf = &buf[n..];
            if n == 0 || !buf.is_empty() {
                self.flush().await?;
            }
        }
        self.flush().await
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.conn.borrow_mut().send_close_notify();
        let _ = self.flush_now();
        sys::shutdown_write(self.tcp.as_raw_fd())
    }
}
