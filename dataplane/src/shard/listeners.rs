//! Listener sockets on a shard: the accept loops, and the operations the data plane's
//! listener manager posts when a generation adds or removes a listener.
//!
//! Each shard owns one SO_REUSEPORT socket per listener. A removed listener stops
//! accepting at once (its socket closes); its open connections may finish until the drain
//! deadline, when they are shut down through the listener's connection registry.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Mutex;

use monoio::net::TcpListener;
use zerohop_proto::stats::Counter;

use super::config::ShardConfig;
use super::stop::Stop;
use super::Shard;
use crate::net::sys;

/// What the listener manager asks of a shard.
#[derive(Debug)]
pub enum ListenerOp {
    /// Start accepting on this (already bound) socket.
    Add {
        name: String,
        address: SocketAddr,
        socket: std::net::TcpListener,
    },
    /// Stop accepting on the listener of this name and drain its connections.
    Remove { name: String },
}

/// Operations posted to one shard, taken on its next tick. The only lock a shard touches,
/// and never on the connection path.
#[derive(Debug, Default)]
pub struct Mailbox(Mutex<Vec<ListenerOp>>);

impl Mailbox {
    pub fn post(&self, op: ListenerOp) {
        self.0.lock().expect("mailbox lock").push(op);
    }

    pub fn take(&self) -> Vec<ListenerOp> {
        std::mem::take(&mut *self.0.lock().expect("mailbox lock"))
    }
}

/// A listener bound on this shard.
#[derive(Debug)]
pub struct BoundListener {
    pub name: String,
    pub address: SocketAddr,
    /// Fired to stop the accept loop (listener removed, or the process drains).
    pub stop_accepting: Stop,
    /// The listening socket, once a shard accepts on it (-1 before).
    pub fd: Cell<RawFd>,
    /// `(generation, this listener's index in it)`: resolved once per generation, so an
    /// accept costs a compare, not a name lookup.
    route: Cell<(u64, Option<usize>)>,
    conns: RefCell<ConnSet>,
}

/// The sockets of the listener's open connections, so they can be shut down at a deadline.
#[derive(Debug, Default)]
struct ConnSet {
    slots: Vec<Option<[RawFd; 2]>>,
    free: Vec<usize>,
}

impl BoundListener {
    pub fn new(name: String, address: SocketAddr) -> Rc<BoundListener> {
        Rc::new(BoundListener {
            name,
            address,
            stop_accepting: Stop::default(),
            fd: Cell::new(-1),
            route: Cell::new((u64::MAX, None)),
            conns: RefCell::default(),
        })
    }

    /// This listener's index in `cfg`, if the generation still has it.
    pub fn index_in(&self, cfg: &ShardConfig) -> Option<usize> {
        let (generation, index) = self.route.get();
        if generation == cfg.number {
            return index;
        }
        let index = cfg.listener_index(&self.name);
        self.route.set((cfg.number, index));
        index
    }

    /// Registers a proxied connection's two sockets; returns its key.
    pub fn track(&self, fds: [RawFd; 2]) -> usize {
        let mut c = self.conns.borrow_mut();
        match c.free.pop() {
            Some(k) => {
                c.slots[k] = Some(fds);
                k
            }
            None => {
                c.slots.push(Some(fds));
                c.slots.len() - 1
            }
        }
    }

    /// Forgets a connection (before its sockets are closed).
    pub fn untrack(&self, key: usize) {
        let mut c = self.conns.borrow_mut();
        c.slots[key] = None;
        c.free.push(key);
    }

    /// Shuts down both sockets of every open connection: their pumps see the end and the
    /// connections close. Returns how many there were.
    pub fn shutdown_connections(&self) -> usize {
        let c = self.conns.borrow();
        let mut n = 0;
        for fds in c.slots.iter().flatten() {
            for fd in fds {
                let _ = sys::shutdown_both(*fd);
            }
            n += 1;
        }
        n
    }
}

/// Starts accepting on `socket` for `listener`.
pub fn start(shard: &Rc<Shard>, listener: Rc<BoundListener>, socket: std::net::TcpListener) {
    {
        // accept4 runs after a readiness report; with O_NONBLOCK a connection taken by
        // another shard (or process) in between gives EAGAIN instead of blocking the shard.
        if let Err(e) = socket.set_nonblocking(true) {
            log::error!(
                "shard {}: listener {}: O_NONBLOCK: {e}",
                shard.id,
                listener.name
            );
            return;
        }
    }
    match TcpListener::from_std(socket) {
        Ok(socket) => {
            listener.fd.set(std::os::fd::AsRawFd::as_raw_fd(&socket));
            shard.accepting.set(shard.accepting.get() + 1);
            shard.listeners.borrow_mut().push(listener.clone());
            monoio::spawn(accept_loop(shard.clone(), listener, socket));
        }
        Err(e) => log::error!("shard {}: listener {}: {e}", shard.id, listener.name),
    }
}

/// A repeated error's log line, at most once a second, with how many were not logged.
#[derive(Debug, Default)]
struct FailureLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl FailureLog {
    /// `Some(suppressed since the last line)` when a line is due at `now`.
    fn due(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < std::time::Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Accepts on `socket` until the listener is stopped: waits for readiness through the ring
/// (cancelled safely on stop), then takes every queued connection with `accept4`.
async fn accept_loop(shard: Rc<Shard>, listener: Rc<BoundListener>, socket: TcpListener) {
    /// Connections taken per wake-up before yielding to the shard's other tasks.
    const BATCH: usize = 64;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let mut failures = FailureLog::default();
    'outer: loop {
        let ready = monoio::select! {
            r = socket.readable(false) => r,
            _ = listener.stop_accepting.wait() => break,
        };
        if let Err(e) = ready {
            log::warn!("shard {}: listener {}: {e}", shard.id, listener.name);
            monoio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        }
        for _ in 0..BATCH {
            if listener.stop_accepting.fired() {
                break 'outer;
            }
            match sys::accept(fd) {
                Ok(stream) => match monoio::net::TcpStream::from_std(stream) {
                    Ok(stream) => {
                        shard.maybe_reload();
                        let cfg = shard.config();
                        match listener.index_in(&cfg) {
                            Some(index) => {
                                crate::conn::dispatch(&shard, cfg, index, listener.clone(), stream)
                            }
                            None => drop(stream), // removed in this generation; its socket closes soon
                        }
                    }
                    Err(e) => log::warn!("shard {}: registering an accepted socket: {e}", shard.id),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue 'outer,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {} // gone before we took it
                Err(e) => {
                    // EMFILE/ENFILE and friends: counted, logged at most once a second, and
                    // backed off from instead of spinning on the error.
                    shard.stats.inc(Counter::DownstreamCxAcceptFailed);
                    if let Some(more) = failures.due(std::time::Instant::now()) {
                        log::warn!(
                            "shard {}: accept on {}: {e} ({more} more since the last line)",
                            shard.id,
                            listener.name
                        );
                    }
                    monoio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue 'outer;
                }
            }
        }
        // A full batch: let the shard's other tasks run, then take more without waiting.
        monoio::time::sleep(std::time::Duration::ZERO).await;
    }
    log::debug!(
        "shard {}: listener {} stops accepting",
        shard.id,
        listener.name
    );
    listener.fd.set(-1); // the number may be reused once the socket closes
    drop(socket);
    shard.accepting.set(shard.accepting.get() - 1);
}
