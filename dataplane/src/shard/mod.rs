//! A shard: one pinned OS thread, one monoio runtime (io_uring, or epoll as a fallback), its
//! own SO_REUSEPORT listener sockets, pools, balancers and counters. Nothing here is shared
//! with another shard; the only cross-thread words are the segment's `current` generation
//! (one atomic load per accept and per tick), the process-wide drain flag, and the
//! listener mailbox, taken once per tick (never on the connection path).

pub mod config;
pub mod listeners;
mod stop;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zerohop_proto::shm::{ReadOutcome, Segment};
use zerohop_proto::{codec, stats::Counter};

use crate::cluster::Rng;
use crate::net::Pools;
use crate::stats::ShardStats;
use config::ShardConfig;
use listeners::{BoundListener, ListenerOp, Mailbox};

/// Set by the main thread on SIGTERM/SIGINT: shards stop accepting and drain.
pub static DRAINING: AtomicBool = AtomicBool::new(false);

/// How often an idle shard looks for a new generation and for the drain flag.
const TICK: Duration = Duration::from_millis(10);
/// How often idle upstream connections past their cluster's idle timeout are closed.
const POOL_SWEEP: Duration = Duration::from_secs(1);

/// Which io driver a shard runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring, falling back to epoll with a warning when a ring cannot be set up.
    Auto,
    Uring,
    Epoll,
}

/// Everything a shard thread starts with.
#[derive(Debug)]
pub struct Spec {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub seg: &'static Segment,
    /// Listener operations for this shard (the initial listeners are already posted).
    pub mailbox: &'static Mailbox,
    /// This shard's ack line and counter block in the segment (its data plane's base + id).
    pub line: usize,
    /// The generation the process started from (already decoded): a shard serves it from
    /// its first accept, whatever the segment holds by the time the shard runs.
    pub initial: (u64, zerohop_proto::Snapshot),
    pub driver: IoDriver,
    pub drain_timeout: Duration,
    /// Bound to [`zerohop_proto::shm::wake_address`] for this shard's line: control's
    /// wake-up after a publish. `None`: the shard finds new generations at its tick only.
    pub wake: Option<std::os::unix::net::UnixDatagram>,
}

/// Per-shard state shared by the shard's tasks (`Rc`, `!Send` on purpose).
#[derive(Debug)]
pub struct Shard {
    pub id: usize,
    /// Ack line and counter block in the segment.
    line: usize,
    pub stats: ShardStats,
    pub pools: Pools,
    /// Idle upstream HTTP/1.1 connections.
    pub upstreams: crate::http1::pool::UpstreamPool,
    pub rng: Rng,
    /// Open downstream connections (for draining).
    pub active: Cell<usize>,
    /// Accept loops still running; each owns (and on exit closes) one listener socket.
    accepting: Cell<usize>,
    /// Listeners this shard accepts on.
    listeners: RefCell<Vec<Rc<BoundListener>>>,
    /// Listeners removed but whose connections may still run until their deadline.
    draining: RefCell<Vec<(Instant, Rc<BoundListener>)>>,
    seg: &'static Segment,
    mailbox: &'static Mailbox,
    drain_timeout: Duration,
    config: RefCell<Rc<ShardConfig>>,
    last_rejected: Cell<u64>,
}

/// Runs a shard on the current thread until it has drained.
pub fn run(spec: Spec) {
    if let Some(core) = spec.core {
        if !core_affinity::set_for_current(core) {
            log::warn!("shard {}: could not pin to cpu {}", spec.id, core.id);
        }
    }
    let uring = match spec.driver {
        IoDriver::Epoll => None,
        IoDriver::Uring | IoDriver::Auto => match uring_runtime() {
            Ok(rt) => Some(rt),
            Err(e) if spec.driver == IoDriver::Auto => {
                log::warn!(
                    "shard {}: io_uring unavailable ({e}); falling back to the epoll driver \
                     (raise RLIMIT_MEMLOCK, see tuning/README.md)",
                    spec.id
                );
                None
            }
            Err(e) => {
                log::error!(
                    "shard {}: io_uring unavailable ({e}) and --io-driver uring was given",
                    spec.id
                );
                std::process::exit(1);
            }
        },
    };
    let cpu = spec
        .core
        .map_or("unpinned".to_owned(), |c| format!("cpu {}", c.id));
    match uring {
        Some((mut rt, mode)) => {
            log::info!("shard {}: io_uring driver ({mode}), {cpu}", spec.id);
            rt.block_on(main(spec))
        }
        None => {
            log::info!("shard {}: epoll driver, {cpu}", spec.id);
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .expect("epoll driver");
            rt.block_on(main(spec))
        }
    }
}

/// io_uring set-up modes, best first. Measured with `zerohop-bench l4` (bench/RESULTS.md):
/// by default the kernel interrupts the shard for every completion (task work signalled
/// like a signal); COOP_TASKRUN defers that to the next kernel entry; SINGLE_ISSUER |
/// DEFER_TASKRUN (Linux 6.1+) runs it only when the shard waits for completions, which cut
/// proxy CPU per small exchange from 9.1 to 6.3 us. Older kernels refuse newer flags with
/// EINVAL, so each mode is tried in turn.
/// A named way to set up a ring.
type UringMode = (&'static str, fn(&mut io_uring::Builder));

const URING_MODES: &[UringMode] = &[
    ("single-issuer, defer-taskrun", |b| {
        b.setup_single_issuer().setup_defer_taskrun();
    }),
    ("coop-taskrun", |b| {
        b.setup_coop_taskrun();
    }),
    ("default", |_| {}),
];

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

/// Builds an io_uring runtime in the best mode this kernel accepts.
fn uring_runtime() -> std::io::Result<(UringRuntime, &'static str)> {
    let mut last = None;
    for (name, setup) in URING_MODES {
        let mut urb = io_uring::IoUring::builder();
        setup(&mut urb);
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .uring_builder(urb)
            .with_entries(1024)
            .enable_timer()
            .build()
        {
            Ok(rt) => return Ok((rt, name)),
            // EINVAL: this kernel does not know the flags. Anything else (ENOMEM from
            // RLIMIT_MEMLOCK, EPERM from io_uring_disabled) will not improve with fewer flags.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no io_uring mode")))
}

async fn main(spec: Spec) {
    let Spec {
        id,
        seg,
        mailbox,
        drain_timeout,
        initial,
        line,
        wake,
        ..
    } = spec;
    let wake = wake.and_then(|w| match monoio::net::unix::UnixDatagram::from_std(w) {
        Ok(w) => Some(w),
        Err(e) => {
            log::debug!("shard {id}: wake-up socket: {e}; new generations are found at each tick");
            None
        }
    });
    let seed = zerohop_proto::shm::monotonic_ns() ^ ((id as u64 + 1) << 32);
    let shard = Rc::new(Shard {
        id,
        line,
        stats: ShardStats::new(seg.shard_counters(line)),
        pools: Pools::default(),
        upstreams: Default::default(),
        rng: Rng::new(seed),
        active: Cell::new(0),
        accepting: Cell::new(0),
        listeners: RefCell::default(),
        draining: RefCell::default(),
        seg,
        mailbox,
        drain_timeout,
        config: RefCell::new(Rc::new(ShardConfig::empty())),
        last_rejected: Cell::new(0),
    });
    match ShardConfig::build(initial.0, initial.1, None) {
        Ok(cfg) => {
            *shard.config.borrow_mut() = Rc::new(cfg);
            seg.ack(line, initial.0);
            shard.stats.inc(Counter::ConfigApplied);
        }
        Err(e) => shard.refuse(initial.0, &e),
    }
    shard.maybe_reload();
    shard.take_listener_ops();

    let mut next_sweep = Instant::now() + POOL_SWEEP;
    while !DRAINING.load(Ordering::Relaxed) {
        match &wake {
            Some(w) => {
                monoio::select! {
                    _ = monoio::time::sleep(TICK) => {}
                    _ = w.readable(false) => {
                        let fd = std::os::fd::AsRawFd::as_raw_fd(w);
                        while crate::net::sys::recv(fd, &mut [0u8; 8]).is_ok_and(|n| n > 0) {}
                    }
                }
            }
            None => monoio::time::sleep(TICK).await,
        }
        shard.take_listener_ops();
        shard.maybe_reload();
        let now = Instant::now();
        shard.expire_drained_listeners(now);
        if now >= next_sweep {
            shard.upstreams.sweep(now);
            next_sweep = now + POOL_SWEEP;
        }
    }

    // Drain: stop accepting (closing the sockets), let open connections finish.
    log::debug!("shard {id}: draining {} connections", shard.active.get());
    for l in shard.listeners.borrow_mut().drain(..) {
        l.stop_accepting.fire();
        shard
            .draining
            .borrow_mut()
            .push((Instant::now() + drain_timeout, l));
    }
    // Every socket must be closed before this shard may finish: monoio does not drop the
    // tasks of a finished runtime, so a socket left in an accept loop would keep queueing
    // connections that nobody accepts.
    while shard.accepting.get() > 0 {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    let deadline = Instant::now() + drain_timeout;
    while shard.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(TICK).await;
    }
    let left = shard.active.get();
    if left > 0 {
        log::warn!("shard {id}: drain deadline passed; closing {left} connections");
        shard.expire_drained_listeners(deadline + Duration::from_secs(1)); // counts them
                                                                           // Let the shut-down connections observe their end and close their sockets.
        let grace = Instant::now() + Duration::from_secs(1);
        while shard.active.get() > 0 && Instant::now() < grace {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

// === impl Shard: configuration generations ===

impl Shard {
    /// One atomic load when nothing changed; otherwise copies, checks and decodes the new
    /// generation, swaps it in for new connections, and acknowledges it. A generation that
    /// adds or removes listeners waits until the listener manager has carried it out
    /// ([`listeners::LISTENERS_AT`]); the listener operations it posted are taken first.
    pub fn maybe_reload(self: &Rc<Self>) {
        let applied = self.config.borrow().generation;
        let current = self.seg.current_generation();
        if current == applied || current == self.last_rejected.get() {
            return;
        }
        let started = Instant::now();
        match self.seg.read_current(applied) {
            ReadOutcome::Empty | ReadOutcome::Unchanged | ReadOutcome::Torn => {}
            ReadOutcome::Corrupt { generation, reason } => self.refuse(generation, reason),
            ReadOutcome::New { generation, bytes } => match codec::decode(&bytes) {
                Ok(snapshot) => {
                    // A generation that changes the listener set waits (a tick at a time)
                    // for the listener manager, whose operations are taken first.
                    if listeners_changed(&self.config.borrow().snapshot, &snapshot)
                        && listeners::LISTENERS_AT.load(Ordering::Acquire) < generation
                    {
                        return;
                    }
                    self.take_listener_ops();
                    let next =
                        match ShardConfig::build(generation, snapshot, Some(&self.config.borrow()))
                        {
                            Ok(next) => next,
                            Err(e) => return self.refuse(generation, &e),
                        };
                    *self.config.borrow_mut() = Rc::new(next);
                    self.seg.ack(self.line, generation);
                    self.stats.inc(Counter::ConfigApplied);
                    log::debug!(
                        "shard {}: applied generation {generation} in {:?}",
                        self.id,
                        started.elapsed()
                    );
                }
                Err(e) => self.refuse(generation, &e.to_string()),
            },
        }
    }

    fn refuse(&self, generation: u64, reason: &str) {
        self.last_rejected.set(generation);
        self.seg.reject(self.line, generation);
        self.stats.inc(Counter::ConfigRejected);
        log::error!(
            "shard {}: refused generation {generation} ({reason}); keeping generation {}",
            self.id,
            self.config.borrow().generation
        );
    }

    pub fn config(&self) -> Rc<ShardConfig> {
        self.config.borrow().clone()
    }

    /// The generation this shard serves.
    pub fn generation(&self) -> u64 {
        self.config.borrow().generation
    }
}

/// True when `next` binds a different set of listeners (by name and address) than `current`.
fn listeners_changed(current: &zerohop_proto::Snapshot, next: &zerohop_proto::Snapshot) -> bool {
    let key = |s: &zerohop_proto::Snapshot| {
        let mut k: Vec<_> = s
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.address))
            .collect();
        k.sort();
        k
    };
    current.listeners.len() != next.listeners.len() || key(current) != key(next)
}

// === impl Shard: listeners ===

impl Shard {
    /// Applies what the listener manager posted since the last tick.
    fn take_listener_ops(self: &Rc<Self>) {
        for op in self.mailbox.take() {
            match op {
                ListenerOp::Add {
                    name,
                    address,
                    socket,
                } => {
                    listeners::start(self, BoundListener::new(name, address), socket);
                }
                ListenerOp::Remove { name } => {
                    let mut bound = self.listeners.borrow_mut();
                    // A shard may hold several sockets of one listener (taken over in an upgrade).
                    while let Some(i) = bound.iter().position(|l| l.name == name) {
                        let l = bound.remove(i);
                        l.stop_accepting.fire();
                        // Refuse new connections now, not when the accept loop next runs:
                        // the generation that removed it is acknowledged right after this.
                        if l.fd.get() >= 0 {
                            let _ = crate::net::sys::shutdown_both(l.fd.get());
                        }
                        log::debug!(
                            "shard {}: listener {name} removed; draining its connections",
                            self.id
                        );
                        self.draining
                            .borrow_mut()
                            .push((Instant::now() + self.drain_timeout, l));
                    }
                }
            }
        }
    }

    /// Shuts down the connections of removed listeners whose drain deadline passed.
    fn expire_drained_listeners(&self, now: Instant) {
        self.draining.borrow_mut().retain(|(deadline, l)| {
            if *deadline > now {
                return true;
            }
            let n = l.shutdown_connections();
            if n > 0 {
                self.stats.add(Counter::DrainForcedClose, n as u64);
                log::info!(
                    "listener {}: drain deadline passed; closed {n} connections",
                    l.name
                );
            }
            false
        });
    }
}
