//! Access logs, control's side: the logger sets compiled from `access_log` (format, filter,
//! where lines go), and the thread that drains the shards' rings in shared memory, applies
//! each record's loggers and writes the lines. The shards only push records
//! (`dataplane/src/accesslog.rs`); formatting and file I/O never run on a request's path,
//! and a slow disk fills a ring (records dropped and counted), never a request.
//!
//! A connection manager's (or tcp_proxy's) logger set is named in the snapshot by an id
//! that is a hash of its compiled form: the same configuration gets the same id in every
//! generation and after a restart of control, so records of streams that began under an
//! older generation still find their loggers.

pub mod filter;
pub mod format;
pub mod sink;
pub mod time;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zerohop_proto::accesslog::{AccessLogSpec, Record};
use zerohop_proto::shm::Segment;

use filter::Filter;
use format::{Captures, Ctx, Format};
use sink::{Sink, Writers};

/// One `access_log` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Logger {
    pub filter: Option<Filter>,
    pub format: Format,
    pub sink: Sink,
}

/// A connection manager's or tcp_proxy's `access_log` list, compiled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoggerSet {
    pub loggers: Vec<Logger>,
    pub captures: Captures,
    /// The connection manager's tracer: a record that carries a sampled span is made into
    /// one and exported.
    pub tracer: Option<Arc<crate::tracing::Tracer>>,
}

impl LoggerSet {
    /// Registers the set and returns what the snapshot carries for it.
    pub fn register(self) -> AccessLogSpec {
        if self.loggers.is_empty() && self.tracer.is_none() {
            return AccessLogSpec::default();
        }
        if self.tracer.is_some() {
            crate::tracing::export::COUNTS
                .configured
                .store(true, Ordering::Relaxed);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{self:?}").hash(&mut h);
        // 0 means "no access log".
        let id = h.finish().max(1);
        let spec = AccessLogSpec {
            id,
            request_headers: self.captures.request.clone(),
            response_headers: self.captures.response.clone(),
            response_trailers: self.captures.trailers.clone(),
            upstream_local: self.captures.upstream_local,
            every_stream: !self.loggers.is_empty(),
        };
        let mut sets = SETS.lock().unwrap_or_else(|e| e.into_inner());
        if !sets.map.contains_key(&id) {
            sets.order.push(id);
            sets.map.insert(id, Arc::new(self));
            // Keep the newest sets: a record names a set of its stream's generation.
            if sets.order.len() > MAX_SETS {
                let old = sets.order.remove(0);
                sets.map.remove(&old);
            }
        }
        spec
    }
}

/// Logger sets kept for records still in flight.
const MAX_SETS: usize = 4096;

#[derive(Default)]
struct Sets {
    map: HashMap<u64, Arc<LoggerSet>>,
    order: Vec<u64>,
}

static SETS: std::sync::LazyLock<Mutex<Sets>> = std::sync::LazyLock::new(Default::default);

/// Set by SIGUSR1: files are reopened before the next write.
pub static REOPEN: AtomicBool = AtomicBool::new(false);

/// What the drain thread has done (admin `/stats`: `zerohop.access_log.*`; the records the
/// shards dropped are counted in their rings, read by [`dropped`]).
#[derive(Debug, Default)]
pub struct Counts {
    /// Records formatted (whether or not a filter passed them).
    pub records: AtomicU64,
    /// Records that did not decode or named no known logger set.
    pub invalid: AtomicU64,
    pub write_failed: AtomicU64,
}

pub static COUNTS: Counts = Counts {
    records: AtomicU64::new(0),
    invalid: AtomicU64::new(0),
    write_failed: AtomicU64::new(0),
};

/// Records the attached data plane's shards could not push (their rings were full).
pub fn dropped(seg: &Segment) -> u64 {
    let base = seg.shard_base();
    let end = (base + seg.active_shards()).min(seg.geometry().shard_capacity as usize);
    (base..end).map(|l| seg.shard_log(l).dropped()).sum()
}

/// How often an idle drain looks at the rings (a ring holds ~30 ms of records at 70,000
/// requests a second).
const IDLE_POLL: Duration = Duration::from_millis(5);
/// How often it looks whether any access log is configured at all.
const UNUSED_POLL: Duration = Duration::from_millis(100);

/// Starts the thread that drains the shards' rings, once it is given the publisher (whose
/// segment moves with it if it is re-created); it runs for as long as the process does.
/// Called before control puts its other threads at background priority: this one does
/// per-request work, so it keeps the normal priority (with the short slice where the
/// kernel takes one) and competes for the CPU as the proxy's own work.
pub fn start() -> std::io::Result<std::sync::mpsc::Sender<Arc<crate::publish::Publisher>>> {
    let (tx, rx) = std::sync::mpsc::channel::<Arc<crate::publish::Publisher>>();
    let ctx = Ctx {
        hostname: hostname(),
    };
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            if let Err(e) = zerohop_proto::shm::priority(0, 0) {
                log::debug!("access-log thread: priority: {e}");
            }
            let Ok(publisher) = rx.recv() else { return };
            let mut drain = Drain::new(ctx);
            loop {
                // No logger was ever configured: no shard pushes records, nothing to poll.
                if SETS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .map
                    .is_empty()
                {
                    std::thread::sleep(UNUSED_POLL);
                    continue;
                }
                if !drain.once(publisher.segment()) {
                    std::thread::sleep(IDLE_POLL);
                }
            }
        })?;
    Ok(tx)
}

/// The drain's state between rounds.
struct Drain {
    ctx: Ctx,
    writers: Writers,
    buf: Vec<u8>,
    /// Lines per sink for this round.
    out: HashMap<Sink, String>,
    /// Each shard line's dropped count last seen.
    dropped_seen: HashMap<usize, u64>,
    /// Where sampled spans go.
    exporters: crate::tracing::export::Exporters,
}

impl Drain {
    fn new(ctx: Ctx) -> Drain {
        Drain {
            ctx,
            writers: Writers::default(),
            buf: Vec::with_capacity(1 << 16),
            out: HashMap::new(),
            dropped_seen: HashMap::new(),
            exporters: Default::default(),
        }
    }

    /// One round over every active shard's ring; whether anything was found.
    fn once(&mut self, seg: &Segment) -> bool {
        if REOPEN.swap(false, Ordering::Relaxed) {
            self.writers.reopen();
            log::info!("access logs: files reopened (SIGUSR1)");
        }
        let base = seg.shard_base();
        let mut found = false;
        for line in base..(base + seg.active_shards()).min(seg.geometry().shard_capacity as usize) {
            let ring = seg.shard_log(line);
            let dropped = ring.dropped();
            let seen = self.dropped_seen.entry(line).or_insert(dropped);
            if dropped > *seen {
                log::warn!(
                    "access log: shard line {line} dropped {} records (its ring was full: the log sinks are slower than the traffic)",
                    dropped - *seen
                );
                *seen = dropped;
            }
            self.buf.clear();
            let d = ring.drain(&mut self.buf);
            if d.lost > 0 {
                log::warn!(
                    "access log ring of shard line {line} was not sane; {} bytes skipped",
                    d.lost
                );
                COUNTS.invalid.fetch_add(1, Ordering::Relaxed);
            }
            if d.bytes > 0 {
                found = true;
                let buf = std::mem::take(&mut self.buf);
                self.records(&buf);
                self.buf = buf;
            }
        }
        let writes: Vec<(Sink, String)> = self.out.drain().filter(|(_, s)| !s.is_empty()).collect();
        for (sink, lines) in writes {
            self.writers.write(&sink, lines.as_bytes());
        }
        COUNTS
            .write_failed
            .store(self.writers.write_failed, Ordering::Relaxed);
        found
    }

    /// Formats every record of `bytes` (whole records, as pushed).
    fn records(&mut self, mut bytes: &[u8]) {
        let sets = SETS.lock().unwrap_or_else(|e| e.into_inner()).map.clone();
        while !bytes.is_empty() {
            let (rec, len) = match Record::decode(bytes) {
                Ok(r) => r,
                Err(e) => {
                    // The rest of this chunk cannot be split into records.
                    log::warn!("access log: a record from shared memory is invalid ({e}); the rest of the batch is skipped");
                    COUNTS.invalid.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            bytes = &bytes[len..];
            let Some(set) = sets.get(&rec.log_id) else {
                COUNTS.invalid.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            COUNTS.records.fetch_add(1, Ordering::Relaxed);
            self.apply(set, &rec);
        }
    }

    fn apply(&mut self, set: &LoggerSet, rec: &Record<'_>) {
        if let Some(tracer) = &set.tracer {
            if let Some(span) = tracer.span(rec) {
                self.exporters.submit(tracer, span);
            }
        }
        let mut random = crate::random::u64;
        for logger in &set.loggers {
            if logger
                .filter
                .as_ref()
                .is_some_and(|f| !f.passes(rec, &mut random))
            {
                continue;
            }
            let out = self.out.entry(logger.sink.clone()).or_default();
            logger.format.write(rec, &self.ctx, out);
        }
    }
}

/// The host's name (`%HOSTNAME%`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "-".into())
}
