//! The config thread: the one place in the data plane where snapshots are decoded and
//! generations built, off the shard threads.
//!
//! It waits for control's wake-up after a publish (an abstract Unix datagram socket bound to
//! this data plane's first ack line, `shm::wake_address`; a 10 ms poll is the fallback),
//! copies the new snapshot out of the segment, checks and decodes it, builds the
//! [`Generation`] (reusing what did not change), has the listener manager bind or close
//! the listeners it adds or removes, and then publishes it to the shards through
//! [`Latest`] and wakes them. A snapshot that fails its checksum or does not decode is
//! announced as refused; each shard records the refusal itself. Generations the shards are
//! done with come back through the [`Graveyard`] and are freed here.
//!
//! It runs at background priority (nice 19, a 100 us scheduler slice): decoding and building
//! a large configuration must not take CPU from the shards.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zerohop_proto::codec;
use zerohop_proto::shm::{ReadOutcome, Segment};
use zerohop_proto::stats::Counter;

use super::keeper::Keeper;
use super::listeners::ListenerManager;
use crate::config::{Generation, Graveyard, Latest, Slots};
use crate::net::sys;
use crate::shard::DRAINING;
use crate::stats::ShardStats;

const POLL: Duration = Duration::from_millis(10);
/// How often a data plane run with `--attach` looks whether control is down and the segment
/// file needs restoring.
const WATCH: Duration = Duration::from_secs(1);

/// What the config thread works with.
#[derive(Debug)]
pub struct ConfigThread {
    pub seg: &'static Segment,
    pub latest: &'static Latest,
    pub graveyard: &'static Graveyard,
    pub manager: Arc<Mutex<ListenerManager>>,
    pub slots: Slots,
    /// Control's wake-up (`None`: poll only).
    pub wake: Option<UnixDatagram>,
    /// One per shard: a byte sent after each publish wakes it.
    pub shards: Vec<UnixDatagram>,
    /// The first shard's counters: where the listener manager's failures are counted (only
    /// this thread writes that counter).
    pub stats: ShardStats,
    /// Keeps the served snapshot, to restore the segment file if it goes.
    pub keeper: Arc<Keeper>,
    /// No supervisor restarts control (`--attach`): look after the segment file here.
    pub watch_control: bool,
    pub shm: PathBuf,
    /// The data plane's first ack line (the wake-up address is named after it).
    pub line: usize,
    /// The generation last read out of the segment, applied or refused.
    pub last_read: u64,
    /// The segment's incarnation the wake-up socket is bound for.
    pub incarnation: u64,
    pub last_watch: Instant,
    /// The segment's health epoch when the hosts' flags were last synced.
    pub health_epoch: u64,
}

impl ConfigThread {
    pub fn spawn(mut self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("config".into())
            .spawn(move || {
                if let Err(e) = sys::background_priority(0) {
                    log::debug!("config thread: background priority: {e}");
                }
                if let Some(w) = &self.wake {
                    let _ = w.set_read_timeout(Some(POLL));
                }
                while !DRAINING.load(Ordering::Relaxed) {
                    self.wait();
                    self.graveyard.empty();
                    self.follow();
                    self.follow_health(&self.latest.get(), false);
                    self.look_after_segment();
                }
            })
    }

    /// Until control's wake-up (or the poll interval). A wake-up left over from an earlier
    /// publish costs one more look at the segment's `current` word.
    fn wait(&self) {
        match &self.wake {
            Some(w) => {
                let _ = w.recv(&mut [0u8; 8]);
            }
            None => std::thread::sleep(POLL),
        }
    }

    /// Takes up the segment's current generation, if it is new.
    fn follow(&mut self) {
        let current = self.seg.current_generation();
        if current == self.last_read || current == self.latest.number() {
            return;
        }
        match self.seg.read_current(self.last_read) {
            ReadOutcome::New { generation, bytes } => {
                self.last_read = generation;
                let built = codec::decode(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|s| self.slots.build(generation, s));
                match built {
                    Ok(g) => {
                        self.publish(Arc::new(g));
                        self.keeper.serving(generation, bytes);
                    }
                    Err(reason) => self.refuse(generation, reason),
                }
            }
            ReadOutcome::Corrupt { generation, reason } => {
                self.last_read = generation;
                self.refuse(generation, reason.into())
            }
            // A torn copy is read again at the next turn.
            ReadOutcome::Torn | ReadOutcome::Empty | ReadOutcome::Unchanged => {}
        }
    }

    /// With no supervisor, restores the segment file while control is down; and after the
    /// file was re-created (by either), binds the wake-up address of the new file.
    fn look_after_segment(&mut self) {
        if self.watch_control && self.last_watch.elapsed() >= WATCH {
            self.last_watch = Instant::now();
            if !zerohop_proto::shm::pid_alive(self.seg.control_pid()) {
                self.keeper.ensure();
            }
        }
        let incarnation = self.seg.incarnation();
        if incarnation != self.incarnation {
            self.incarnation = incarnation;
            self.wake = wake_socket(&self.shm, self.line);
            if let Some(w) = &self.wake {
                let _ = w.set_read_timeout(Some(POLL));
            }
        }
    }

    /// Health checks' verdicts into the hosts' flags when control changed them (or, with
    /// `all`, for a generation about to be handed out), and the clusters' first traffic
    /// out to control.
    fn follow_health(&mut self, g: &Generation, all: bool) {
        let changed = all || self.seg.health_epoch() != self.health_epoch;
        self.health_epoch = sync_health(self.seg, g, changed);
    }

    fn publish(&mut self, g: Arc<Generation>) {
        self.follow_health(&g, true);
        // Every generation: a listener that failed to bind is tried again.
        let failed = self.manager.lock().expect("listener manager").apply(&g);
        self.stats
            .add(Counter::ListenerCreateFailure, failed.len() as u64);
        let old = self.latest.publish(g);
        drop(old); // freed here unless a shard still holds it
        self.wake_shards();
    }

    fn refuse(&self, generation: u64, reason: String) {
        self.latest.reject(generation, reason);
        self.wake_shards();
    }

    fn wake_shards(&self) {
        for s in &self.shards {
            let _ = s.send(&[1]);
        }
    }
}

/// Copies the health checks' verdicts from the segment into `g`'s hosts (when `changed`)
/// and marks the slots of clusters that have had traffic since; returns the health epoch
/// the verdicts are from. Nothing to do without health-checked clusters.
pub fn sync_health(seg: &Segment, g: &Generation, changed: bool) -> u64 {
    let epoch = seg.health_epoch();
    for hosts in g.clusters.iter().filter_map(|c| c.hosts.as_deref()) {
        if !hosts.checked() {
            continue;
        }
        if changed {
            hosts.sync_health(|slot| seg.host_failed(slot));
        }
        hosts.tell_traffic(|slot| seg.mark_traffic(slot));
    }
    epoch
}

/// Binds the wake-up address of ack line `line` (see [`zerohop_proto::shm::wake_address`]);
/// `None` (the config thread then polls) if it cannot, e.g. while the process it replaces in
/// an upgrade still holds the same line.
pub fn wake_socket(shm: &std::path::Path, line: usize) -> Option<UnixDatagram> {
    let bound =
        zerohop_proto::shm::wake_address(shm, line).and_then(|a| UnixDatagram::bind_addr(&a));
    match bound {
        Ok(s) => Some(s),
        Err(e) => {
            log::debug!("wake-up socket for line {line}: {e}");
            None
        }
    }
}
