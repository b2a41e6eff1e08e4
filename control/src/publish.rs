//! Publishing snapshots into the shared-memory segment and waiting for the shards.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zerohop_proto::shm::{
    monotonic_ns, wake_address, AttachError, Geometry, PathState, PublishError, Segment,
};
use zerohop_proto::{codec, Snapshot};

/// Control's handle on the segment.
#[derive(Debug)]
pub struct Publisher {
    seg: Segment,
    /// The `current` word this publisher found at attach or stored last: a header that says
    /// anything else was written by someone else.
    expected: AtomicU64,
    /// Held across a publish, so that the header watch never sees it half done.
    publishing: std::sync::Mutex<()>,
    /// An exclusive flock on the segment file, held for the publisher's life: one writer per
    /// segment. During a binary upgrade the new process's control waits here until the old
    /// one exits, then continues the generation sequence.
    _lock: std::fs::File,
    path: std::path::PathBuf,
    /// Sends the shards their wake-up after a publish ([`wake_address`]).
    waker: Option<std::os::unix::net::UnixDatagram>,
}

/// How a wait for the shards ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Every active shard applied the generation; the time from publish to the last ack.
    All(Duration),
    /// No data plane is attached yet; it will read the current generation when it starts.
    NoDataPlane,
    /// Some shard had not applied it when the wait gave up.
    TimedOut { acked: usize, shards: usize },
}

impl Publisher {
    pub fn create_or_attach(path: &Path, geometry: Geometry) -> Result<Publisher, AttachError> {
        wait_for_repair(path);
        let seg = Segment::create_or_attach(path, geometry)?;
        let lock = std::fs::File::open(path)?;
        if lock.try_lock().is_err() {
            log::info!(
                "another zerohop-control (pid {}) publishes to {}; waiting for it to exit",
                seg.control_pid(),
                path.display()
            );
            lock.lock()?;
        }
        seg.set_control_pid(std::process::id());
        let waker = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|w| w.set_nonblocking(true).map(|()| w))
            .ok();
        let expected = AtomicU64::new(seg.current_word());
        Ok(Publisher {
            seg,
            expected,
            publishing: std::sync::Mutex::default(),
            _lock: lock,
            path: path.to_owned(),
            waker,
        })
    }

    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// Encodes and publishes `snapshot` as the next generation.
    ///
    /// Waits (up to `settle`) for the shards to apply the current generation first, so the
    /// slot about to be reused is no longer being read.
    pub fn publish(&self, snapshot: &Snapshot, settle: Duration) -> Result<u64, PublishError> {
        self.publish_encoded(&codec::encode(snapshot), settle)
    }

    /// [`Publisher::publish`] of a snapshot already encoded (`codec::encode`).
    pub fn publish_encoded(&self, bytes: &[u8], settle: Duration) -> Result<u64, PublishError> {
        let current = self.seg.current_generation();
        if current > 0 {
            if let Applied::TimedOut { acked, shards } = self.wait_applied(current, settle) {
                log::warn!(
                    "generation {current}: only {acked}/{shards} shards applied it; publishing anyway (readers detect torn slots)"
                );
            }
        }
        let _publishing = self.publishing.lock().expect("publish lock");
        self.check_own_header();
        let generation = self.seg.publish(bytes)?;
        self.expected
            .store(self.seg.current_word(), Ordering::Relaxed);
        self.wake();
        Ok(generation)
    }

    /// Never publishes on top of a header this process did not leave: a generation counted
    /// on from garbage (or from another writer's sequence) would be refused by the shards for
    /// good. Control exits instead, so that the data plane, which holds the generation it
    /// serves, re-creates the segment (see `zerohop_proto::shm::repair`) and its supervisor
    /// starts a control that attaches to it.
    fn check_own_header(&self) {
        let found = self.seg.current_word();
        let expected = self.expected.load(Ordering::Relaxed);
        let fault = self
            .seg
            .header_fault()
            .or((found != expected).then_some("current generation changed by another writer"));
        let state = self.seg.path_state(&self.path);
        if let Some(why) = fault.or(match state {
            PathState::Ours | PathState::Damaged(_) => None,
            _ => Some("the file at the path is gone or another"),
        }) {
            log::error!(
                "segment {}: {why} (state: {state}); exiting without publishing so that the data plane restores it",
                self.path.display()
            );
            std::process::exit(3);
        }
    }

    /// Checks the header every second (between publishes), so that a damaged segment does
    /// not sit unnoticed, with `/ready` answering from garbage, until the next change.
    pub fn watch_header(self: &std::sync::Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("segment-watch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                let _publishing = me.publishing.lock().expect("publish lock");
                me.check_own_header();
            })
            .map(drop)
    }

    /// Tells each active shard a generation is waiting. Best effort: a shard that misses it
    /// applies the generation at its next tick.
    fn wake(&self) {
        let Some(waker) = &self.waker else { return };
        let base = self.seg.shard_base();
        for line in base..base + self.seg.active_shards() {
            if let Ok(addr) = wake_address(&self.path, line) {
                let _ = waker.send_to_addr(&[1], &addr);
            }
        }
    }

    /// Polls the ack words until every active shard applied `generation` (or newer).
    pub fn wait_applied(&self, generation: u64, timeout: Duration) -> Applied {
        let deadline = Instant::now() + timeout;
        loop {
            let shards = self.seg.active_shards();
            let pid = self.seg.dataplane_pid();
            // No data plane, one that exited (pid 0), or one that died without saying so.
            if shards == 0 || pid == 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Applied::NoDataPlane;
            }
            if self.seg.all_applied(generation) {
                let last = (0..shards)
                    .map(|s| self.seg.shard_ack(s).2)
                    .max()
                    .unwrap_or(0);
                return Applied::All(Duration::from_nanos(
                    last.saturating_sub(self.seg.published_ns()),
                ));
            }
            if Instant::now() >= deadline {
                let acked = (0..shards)
                    .filter(|&s| self.seg.shard_ack(s).0 >= generation)
                    .count();
                return Applied::TimedOut { acked, shards };
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Like [`Publisher::wait_applied`], but a data plane that has not attached yet is
    /// waited for too (until `timeout`): under xDS an ACK must mean "serving", and at start-up
    /// the data plane attaches only once the first generation exists.
    pub fn wait_served(&self, generation: u64, timeout: Duration) -> Applied {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_applied(generation, left) {
                Applied::NoDataPlane if !left.is_zero() => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                other => return other,
            }
        }
    }

    /// Time since the current generation was published (for logs).
    pub fn since_publish(&self) -> Duration {
        Duration::from_nanos(monotonic_ns().saturating_sub(self.seg.published_ns()))
    }
}

/// A segment file that is there but damaged is given a moment: a data plane that serves it
/// re-creates it from what it holds once it sees control gone (within about a second).
/// After that a fresh segment replaces it.
fn wait_for_repair(path: &Path) {
    const PATIENCE: Duration = Duration::from_secs(3);
    let deadline = Instant::now() + PATIENCE;
    let damaged =
        || path.exists() && Segment::open(path).map_or(true, |s| s.header_fault().is_some());
    if !damaged() {
        return;
    }
    log::warn!(
        "segment {} is damaged; waiting up to {PATIENCE:?} for its data plane to restore it",
        path.display()
    );
    while damaged() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}
