//! A shard: one pinned OS thread, one monoio runtime (io_uring, or epoll as a fallback), its
//! own SO_REUSEPORT listener sockets, pools, balancers and counters. Nothing here is shared
//! with another shard; the only cross-thread words are the segment's `current` generation
//! (one atomic load per accept and per tick) and the process-wide drain flag.

pub mod config;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use zerohop_proto::shm::{ReadOutcome, Segment};
use zerohop_proto::{codec, stats::Counter};

use crate::cluster::Rng;
use crate::net::Pools;
use crate::stats::ShardStats;
use config::ShardConfig;

/// Set by the main thread on SIGTERM/SIGINT: shards stop accepting and drain.
pub static DRAINING: AtomicBool = AtomicBool::new(false);

/// How often an idle shard looks for a new generation and for the drain flag.
const TICK: Duration = Duration::from_millis(10);

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
    /// `(listener name, this shard's socket)`, by slot.
    pub listeners: Vec<(String, std::net::TcpListener)>,
    pub driver: IoDriver,
    pub drain_timeout: Duration,
}

/// Per-shard state shared by the shard's tasks (`Rc`, `!Send` on purpose).
#[derive(Debug)]
pub struct Shard {
    pub id: usize,
    pub stats: ShardStats,
    pub pools: Pools,
    pub rng: Rng,
    /// Open downstream connections (for draining).
    pub active: Cell<usize>,
    /// Accept loops still running; each owns (and on exit closes) one listener socket.
    accepting: Cell<usize>,
    seg: &'static Segment,
    config: RefCell<Rc<ShardConfig>>,
    bound: Vec<String>,
    last_rejected: Cell<u64>,
    stop: Stop,
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
            rt.block_on(main(spec, false))
        }
        None => {
            log::info!("shard {}: epoll driver, {cpu}", spec.id);
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .expect("epoll driver");
            rt.block_on(main(spec, true))
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

/// `epoll`: the shard runs monoio's legacy driver, which needs O_NONBLOCK listeners (its
/// `from_std` keeps a blocking socket blocking, and a blocking accept4 would stall the shard).
async fn main(spec: Spec, epoll: bool) {
    let Spec {
        id,
        seg,
        listeners,
        drain_timeout,
        ..
    } = spec;
    let bound: Vec<String> = listeners.iter().map(|(n, _)| n.clone()).collect();
    let seed = zerohop_proto::shm::monotonic_ns() ^ ((id as u64 + 1) << 32);
    let shard = Rc::new(Shard {
        id,
        stats: ShardStats::new(seg.shard_counters(id)),
        pools: Pools::default(),
        rng: Rng::new(seed),
        active: Cell::new(0),
        accepting: Cell::new(0),
        seg,
        config: RefCell::new(Rc::new(ShardConfig::build(0, Default::default(), &bound))),
        bound,
        last_rejected: Cell::new(0),
        stop: Stop::default(),
    });
    shard.maybe_reload();

    for (slot, (name, std_listener)) in listeners.into_iter().enumerate() {
        if epoll {
            if let Err(e) = std_listener.set_nonblocking(true) {
                log::error!("shard {id}: listener {name}: O_NONBLOCK: {e}");
                continue;
            }
        }
        match TcpListener::from_std(std_listener) {
            Ok(l) => {
                shard.accepting.set(shard.accepting.get() + 1);
                monoio::spawn(accept_loop(shard.clone(), slot, l));
            }
            Err(e) => log::error!("shard {id}: listener {name}: {e}"),
        }
    }
    log::debug!(
        "shard {id}: accepting on {} listeners",
        shard.accepting.get()
    );

    while !DRAINING.load(Ordering::Relaxed) {
        monoio::time::sleep(TICK).await;
        shard.maybe_reload();
    }

    // Drain: stop accepting (dropping the sockets), let open connections finish.
    log::debug!("shard {id}: draining {} connections", shard.active.get());
    shard.stop.fire();
    // Every listener must be closed before this shard may finish: monoio does not drop the
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
        shard.stats.add(Counter::DrainForcedClose, left as u64);
        log::warn!("shard {id}: drain deadline passed; closing {left} connections");
    }
}

async fn accept_loop(shard: Rc<Shard>, slot: usize, listener: TcpListener) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = shard.stop.wait() => {
                log::debug!("shard {}: listener {} stops accepting", shard.id, shard.bound[slot]);
                drop(listener);
                shard.accepting.set(shard.accepting.get() - 1);
                return;
            }
        };
        match accepted {
            Ok((stream, _peer)) => {
                shard.maybe_reload();
                let cfg = shard.config.borrow().clone();
                monoio::spawn(crate::l4::serve(shard.clone(), cfg, slot, stream));
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning on the error.
                log::warn!("shard {}: accept on {}: {e}", shard.id, shard.bound[slot]);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

// === impl Shard: configuration generations ===

impl Shard {
    /// One atomic load when nothing changed; otherwise copies, checks and decodes the new
    /// generation, swaps it in for new connections, and acknowledges it.
    pub fn maybe_reload(&self) {
        let applied = self.config.borrow().generation;
        let current = self.seg.current_generation();
        if current == applied || current == self.last_rejected.get() {
            return;
        }
        match self.seg.read_current(applied) {
            ReadOutcome::Empty | ReadOutcome::Unchanged | ReadOutcome::Torn => {}
            ReadOutcome::Corrupt { generation, reason } => self.refuse(generation, reason),
            ReadOutcome::New { generation, bytes } => match codec::decode(&bytes) {
                Ok(snapshot) => {
                    self.warn_listener_changes(&snapshot);
                    *self.config.borrow_mut() =
                        Rc::new(ShardConfig::build(generation, snapshot, &self.bound));
                    self.seg.ack(self.id, generation);
                    self.stats.inc(Counter::ConfigApplied);
                    log::debug!("shard {}: applied generation {generation}", self.id);
                }
                Err(e) => self.refuse(generation, &e.to_string()),
            },
        }
    }

    fn refuse(&self, generation: u64, reason: &str) {
        self.last_rejected.set(generation);
        self.seg.reject(self.id, generation);
        self.stats.inc(Counter::ConfigRejected);
        log::error!(
            "shard {}: refused generation {generation} ({reason}); keeping generation {}",
            self.id,
            self.config.borrow().generation
        );
    }

    /// The listener set is bound at start-up; say so when a generation asks for another.
    fn warn_listener_changes(&self, s: &zerohop_proto::Snapshot) {
        if self.id != 0 || self.config.borrow().generation == 0 {
            return;
        }
        for l in &s.listeners {
            if !self.bound.contains(&l.name) {
                log::warn!(
                    "listener {} is new in this generation; it is bound only on restart",
                    l.name
                );
            }
        }
        for name in &self.bound {
            if !s.listeners.iter().any(|l| &l.name == name) {
                log::warn!(
                    "listener {name} was removed; its new connections are closed until restart"
                );
            }
        }
    }
}

/// A one-shot, shard-local stop signal for the accept loops.
#[derive(Debug, Default)]
struct Stop {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Stop {
    fn fire(&self) {
        self.fired.set(true);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        StopWait(self)
    }
}

struct StopWait<'a>(&'a Stop);

impl Future for StopWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.fired.get() {
            return Poll::Ready(());
        }
        let mut wakers = self.0.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone()); // one per accept-loop task, however often polled
        }
        Poll::Pending
    }
}
