//! Zero-downtime binary upgrade: the running zerohop hands its listening sockets to a new
//! one over a Unix socket (SCM_RIGHTS), as Envoy's hot restart and HAProxy's `-x` do.
//!
//! Because the new process accepts on the very same sockets, nothing queued on them is lost
//! when the old process closes its copies (with plain SO_REUSEPORT, connections queued on a
//! closing socket are reset). The exchange, lock-step so that no two fd-carrying messages can
//! merge on the stream:
//!
//! ```text
//! new -> old   HELLO
//! old -> new   L <name> <address> <n>      (+ n listening sockets)   ... one per listener
//! new -> old   NEXT                                                    ... after each
//! old -> new   END
//! new -> old   READY      (its shards serve: the old process now drains and exits)
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::listeners::ListenerManager;
use crate::net::sys;

/// Sockets taken over from the previous process, by listener name.
pub type Inherited = HashMap<String, (SocketAddr, Vec<std::net::TcpListener>)>;

/// Set once this process has handed its listeners over: the upgrade socket path then
/// belongs to the new process and must not be removed at exit.
static HANDED_OVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Removes this process's upgrade socket at exit (unless it now belongs to a successor).
pub fn remove_socket(path: &Path) {
    if !HANDED_OVER.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = std::fs::remove_file(path);
    }
}

/// Where the upgrade socket of the data plane serving segment `shm` lives.
pub fn socket_path(shm: &Path) -> PathBuf {
    let mut p = shm.as_os_str().to_owned();
    p.push(".upgrade");
    PathBuf::from(p)
}

/// The new side: takes every listener socket from the process serving at `path`. Returns the
/// connection (to say READY on) and the sockets.
pub fn take_over(path: &Path) -> std::io::Result<(UnixStream, Inherited)> {
    let mut conn = UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (is a zerohop serving this --shm?)", path.display()),
        )
    })?;
    conn.write_all(b"HELLO\n")?;
    let mut inherited = Inherited::new();
    loop {
        let mut buf = [0u8; 4096];
        let (n, fds) = sys::recv_fds(conn.as_raw_fd(), &mut buf, sys::MAX_FDS_PER_MESSAGE)?;
        let line = std::str::from_utf8(&buf[..n])
            .map_err(|_| bad("not UTF-8"))?
            .trim_end();
        if line == "END" {
            return Ok((conn, inherited));
        }
        let mut parts = line.split(' ');
        let (Some("L"), Some(name), Some(addr), Some(count)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(line));
        };
        let addr: SocketAddr = addr.parse().map_err(|_| bad(line))?;
        if count.parse::<usize>().ok() != Some(fds.len()) {
            return Err(bad("descriptor count does not match"));
        }
        let sockets = fds.into_iter().map(std::net::TcpListener::from).collect();
        inherited.insert(name.to_owned(), (addr, sockets));
        conn.write_all(b"NEXT\n")?;
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("upgrade protocol: unexpected {what:?}"),
    )
}

/// The new side, once its shards serve: the old process may go.
pub fn ready(mut conn: UnixStream) -> std::io::Result<()> {
    conn.write_all(b"READY\n")
}

/// The running side: serves the upgrade socket at `path` for as long as the process lives.
/// On a completed hand-over it sends itself SIGTERM, which drains and exits as usual.
/// `took_over`: this process has just taken over from the one that served `path` (which is
/// going away), so a socket still answering there is not a conflict.
pub fn serve(
    path: &Path,
    manager: Arc<Mutex<ListenerManager>>,
    took_over: bool,
) -> std::io::Result<()> {
    if !took_over && UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("a zerohop already serves this segment ({}); start with --upgrade to take over from it", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path); // stale, from a process that died
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                match hand_over(conn, &manager) {
                    Ok(()) => {
                        log::info!("listeners handed over to a new zerohop; draining");
                        let _ = sys::kill(std::process::id(), libc::SIGTERM);
                        return;
                    }
                    Err(e) => log::warn!("upgrade request failed, still serving: {e}"),
                }
            }
        })?;
    Ok(())
}

fn hand_over(conn: UnixStream, manager: &Mutex<ListenerManager>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim_end() != "HELLO" {
        return Err(bad(line.trim_end()));
    }
    let listeners: Vec<(String, SocketAddr, Vec<OwnedFd>)> =
        manager.lock().expect("listener manager").handover()?;
    for (name, addr, fds) in &listeners {
        let raw: Vec<_> = fds
            .iter()
            .take(sys::MAX_FDS_PER_MESSAGE)
            .map(|f| f.as_raw_fd())
            .collect();
        sys::send_fds(
            conn.as_raw_fd(),
            format!("L {name} {addr} {}\n", raw.len()).as_bytes(),
            &raw,
        )?;
        line.clear();
        reader.read_line(&mut line)?;
        if line.trim_end() != "NEXT" {
            return Err(bad(line.trim_end()));
        }
    }
    sys::send_fds(conn.as_raw_fd(), b"END\n", &[])?;
    line.clear();
    reader.read_line(&mut line)?;
    match line.trim_end() {
        "READY" => Ok(()),
        other => Err(bad(if other.is_empty() {
            "disconnect before READY"
        } else {
            other
        })),
    }
}
