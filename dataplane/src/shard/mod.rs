//! A shard: one pinned OS thread, one monoio runtime (io_uring, or epoll as a fallback), its
//! own SO_REUSEPORT listener sockets, pools, balancer state and counters. Nothing here is
//! shared with another shard; the only cross-thread words are the newest generation's
//! number in [`Latest`] (one atomic load per accept and per tick), the process-wide drain
//! flag, and the listener mailbox, taken once per tick (never on the connection path).
//!
//! A shard does not decode or build configuration: the config thread hands it finished
//! generations ([`Latest`]), and taking one up is an `Arc` clone and an ack.

pub mod config;
pub mod listeners;
pub mod stop;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zerohop_proto::shm::Segment;
use zerohop_proto::stats::Counter;

use crate::config::{Graveyard, Latest};
use crate::net::Pools;
use crate::stats::ShardStats;
use crate::upstream::lb::Rng;
use crate::upstream::Upstreams;
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
    /// Where finished generations come from (the one the process started from is already
    /// there, so a shard serves from its first accept).
    pub latest: &'static Latest,
    pub graveyard: &'static Graveyard,
    pub driver: IoDriver,
    pub drain_timeout: Duration,
    /// The config thread's wake-up after it published a generation. `None`: the shard finds
    /// new generations at its tick only.
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
    /// Load-balancer state and idle upstream connections.
    pub upstreams: Upstreams,
    /// Clients that hang up while their requests wait (`None`: no epoll set could be made;
    /// such hang-ups are then noticed at the next read or write).
    pub hangups: Option<Rc<crate::net::hangup::Hangups>>,
    pub rng: Rng,
    /// Access-log records into this shard's ring.
    pub log: crate::accesslog::AccessLog,
    /// The `date` header's value, made again when the second changes (Envoy's date
    /// provider, per shard): the second it was made for, and the text.
    date: Cell<(u64, [u8; 29])>,
    /// Open downstream connections (for draining).
    pub active: Cell<usize>,
    /// Accept loops still running; each owns (and on exit closes) one listener socket.
    accepting: Cell<usize>,
    /// Listeners this shard accepts on.
    listeners: RefCell<Vec<Rc<BoundListener>>>,
    /// Listeners removed but whose connections may still run until their deadline.
    draining: RefCell<Vec<(Instant, Rc<BoundListener>)>>,
    /// The segment whose ack line this shard writes (`None` for a detached shard).
    seg: Option<&'static Segment>,
    mailbox: Option<&'static Mailbox>,
    drain_timeout: Duration,
    config: RefCell<Rc<ShardConfig>>,
    last_rejected: Cell<u64>,
    latest: &'static Latest,
    graveyard: Option<&'static Graveyard>,
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
                    "shard {}: io_uring unavailable: {}; falling back to the epoll driver \
                     (tuning/README.md, \"When io_uring is unavailable\")",
                    spec.id,
                    crate::net::ring::unavailable_cause(&e)
                );
                None
            }
            Err(e) => {
                log::error!(
                    "shard {}: io_uring unavailable: {}; and --io-driver uring was given",
                    spec.id,
                    crate::net::ring::unavailable_cause(&e)
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
        latest,
        graveyard,
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
    let shard = Shard::new(
        id,
        line,
        ShardStats::new(crate::stats::Blocks::of(seg, line)),
        latest,
        Some((seg, mailbox, graveyard)),
        drain_timeout,
    );
    seg.ack(line, shard.generation(), 0);
    if let Some(h) = &shard.hangups {
        monoio::spawn(h.clone().serve());
    }
    shard.stats.inc(Counter::ConfigApplied);
    shard.maybe_reload();
    shard.take_listener_ops();

    let mut next_sweep = Instant::now() + POOL_SWEEP;
    let mut peak_active = 0usize;
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
        shard.refresh_date();
        if shard.id == 0 {
            // The success-rate and failure-percentage detectors, process-wide: one shard
            // sweeps them, each cluster once per its interval.
            let config = shard.config();
            for &i in config.sweeps() {
                if let Some(hosts) = &config.clusters[i].hosts {
                    hosts.sweep(shard.stats, &shard.rng);
                }
            }
        }
        let now = Instant::now();
        shard.expire_drained_listeners(now);
        if now >= next_sweep {
            let config = shard.config();
            shard.upstreams.pool.sweep(now, |e| config.has_endpoint(e));
            // After many connections closed (at least half of the most seen, and 256),
            // their memory goes back to the system; a full collection walks the heap, so
            // only then, not every second.
            let active = shard.active.get();
            peak_active = peak_active.max(active);
            if active * 2 < peak_active && peak_active - active >= 256 {
                crate::net::sys::release_free_memory();
                peak_active = active;
            }
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

/// A seed for a shard's generator: the clock and the shard, so shards and restarts differ.
fn seed(id: usize) -> u64 {
    zerohop_proto::shm::monotonic_ns() ^ ((id as u64 + 1) << 32)
}

// === impl Shard: configuration generations ===

impl Shard {
    /// A shard serving what `latest` holds, counting in `stats`; with `attached`, the
    /// segment it acknowledges in, the mailbox the listener manager posts to, and the
    /// graveyard retired generations go to.
    fn new(
        id: usize,
        line: usize,
        stats: ShardStats,
        latest: &'static Latest,
        attached: Option<(&'static Segment, &'static Mailbox, &'static Graveyard)>,
        drain_timeout: Duration,
    ) -> Rc<Shard> {
        let graveyard = attached.map(|a| a.2);
        let shard = Rc::new(Shard {
            id,
            line,
            stats,
            pools: Pools::default(),
            upstreams: Upstreams::default(),
            date: Cell::new((0, [b' '; 29])),
            hangups: match crate::net::hangup::Hangups::new() {
                Ok(h) => Some(Rc::new(h)),
                Err(e) => {
                    log::warn!("shard {id}: hang-up watch unavailable: {e}");
                    None
                }
            },
            rng: Rng::new(seed(id)),
            log: crate::accesslog::AccessLog::new(attached.map(|a| a.0.shard_log(line)), id),
            active: Cell::new(0),
            accepting: Cell::new(0),
            listeners: RefCell::default(),
            draining: RefCell::default(),
            seg: attached.map(|a| a.0),
            mailbox: attached.map(|a| a.1),
            drain_timeout,
            config: RefCell::new(Rc::new(ShardConfig::new(latest.get(), graveyard))),
            last_rejected: Cell::new(0),
            latest,
            graveyard,
        });
        shard.refresh_date();
        shard
    }

    /// A shard that belongs to no segment and no listener manager: it serves what `latest`
    /// holds, with its counters in `counters`. For tests and tools that drive the HTTP core
    /// in-process; a shard of the data plane is made by [`run`].
    pub fn detached(
        id: usize,
        latest: &'static Latest,
        counters: &'static [std::sync::atomic::AtomicU64],
    ) -> Rc<Shard> {
        Shard::new(
            id,
            id,
            ShardStats::new(crate::stats::Blocks::detached(counters)),
            latest,
            None,
            Duration::from_secs(1),
        )
    }

    /// Two atomic loads when nothing changed. Otherwise: records a generation the config
    /// thread refused, or takes up the newest one (after the listener operations the config
    /// thread posted for it, so that an acknowledgement means the listener set is in force
    /// too) and acknowledges it with the event-loop time it took.
    pub fn maybe_reload(self: &Rc<Self>) {
        let rejected = self.latest.rejected_number();
        if rejected != self.last_rejected.get() {
            let (generation, reason) = self.latest.rejected();
            self.refuse(generation, &reason);
        }
        let number = self.latest.number();
        if number == self.generation() {
            return;
        }
        let started = Instant::now();
        self.take_listener_ops();
        let next = self.latest.get();
        let number = next.number;
        self.upstreams
            .pool
            .retain_endpoints(|e| next.has_endpoint(e));
        self.upstreams.h2.retain_endpoints(|e| next.has_endpoint(e));
        let old = std::mem::replace(
            &mut *self.config.borrow_mut(),
            Rc::new(ShardConfig::new(next, self.graveyard)),
        );
        drop(old); // to the graveyard if no connection holds it
        let busy = started.elapsed();
        if let Some(seg) = self.seg {
            seg.ack(self.line, number, busy.as_nanos() as u64);
        }
        self.stats.inc(Counter::ConfigApplied);
        log::debug!("shard {}: applied generation {number} in {busy:?}", self.id);
    }

    fn refuse(&self, generation: u64, reason: &str) {
        self.last_rejected.set(generation);
        if let Some(seg) = self.seg {
            seg.reject(self.line, generation);
        }
        self.stats.inc(Counter::ConfigRejected);
        log::error!(
            "shard {}: refused generation {generation} ({reason}); keeping generation {}",
            self.id,
            self.generation()
        );
    }

    pub fn config(&self) -> Rc<ShardConfig> {
        self.config.borrow().clone()
    }

    /// The current `date` header value (`Sun, 06 Dec 2026 16:07:15 GMT`), as of the shard's
    /// last tick: no clock read per response.
    pub fn http_date(&self) -> [u8; 29] {
        self.date.get().1
    }

    /// Makes the `date` text again when the second has changed (the shard's tick, at least
    /// every 10 ms; Envoy's date provider refreshes every 500 ms).
    fn refresh_date(&self) {
        let now = std::time::SystemTime::now();
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.date.get().0 == secs {
            return;
        }
        self.log.refresh_clock();
        let mut text = [b' '; 29];
        let s = httpdate::fmt_http_date(now);
        let n = s.len().min(29);
        text[..n].copy_from_slice(&s.as_bytes()[..n]);
        self.date.set((secs, text));
    }

    /// The generation this shard serves.
    pub fn generation(&self) -> u64 {
        self.config.borrow().number
    }
}

// === impl Shard: listeners ===

impl Shard {
    /// Applies what the listener manager posted since the last tick.
    fn take_listener_ops(self: &Rc<Self>) {
        let Some(mailbox) = self.mailbox else { return };
        for op in mailbox.take() {
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
