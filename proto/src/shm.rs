//! The shared-memory segment through which control publishes snapshots and shards
//! acknowledge them.
//!
//! ```text
//! 0        header: magic, layout version, geometry, `current` = (generation << 8 | slot),
//!          publish time, pids, and one descriptor per slot (seq, len, checksum)
//! 4096     one 64-byte ack line per shard: applied generation, rejected generation, apply time
//! slots    `slot_count` slots of `slot_size` bytes, each holding one encoded snapshot
//! stats    one block of counters per shard (see [`crate::stats`]), written only by its shard
//! space    one stat space per shard: Envoy's scoped counters, gauges and histograms at the
//!          words control assigned (see [`crate::stats::scope`]), written only by its shard
//! codes    one response-code table per shard (see [`crate::stats::codes`])
//! health   the host health table: one byte per health slot written by control (the host
//!          failed its active health checks), one per slot written by the data plane (the
//!          host's cluster has had traffic); see `shm/health.rs`
//! logs     one access-log ring per shard, pushed by its shard, drained by control; see
//!          `shm/logring.rs`
//! ```
//!
//! Publishing is a seqlock per slot: control marks the slot odd (`2g+1`), writes the bytes,
//! length and CRC-32, marks it even (`2g`), then stores `current`. A reader copies the bytes
//! out and re-reads the sequence: a change means the copy may be torn and is retried on the
//! next turn; a checksum mismatch means the slot is corrupt and the generation is refused.
//! Control writes into a slot only after every shard has acknowledged a newer generation
//! (see [`Segment::all_applied`]), so a healthy reader never races a writer; the seqlock and
//! checksum are there for the unhealthy cases (a stuck shard, a stray write, a bad control).
//!
//! Everything a reader takes from the segment is treated as untrusted input.
//! All `unsafe` in zerohop's control/data-plane contract lives in this module and its
//! submodules.
#![allow(unsafe_code)] // Reason: mmap and raw views of shared memory, each with a SAFETY note.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::stats::codes::CODE_WORDS;
use crate::stats::Counter;

pub const MAGIC: u64 = u64::from_le_bytes(*b"ZEROHOP\x01");
/// Bumped on any change to the layout described above or to [`Counter::ALL`]. (A change to
/// a scope kind's list of stats bumps [`crate::codec::FORMAT_VERSION`]: control and the
/// data plane must agree on it, and the snapshot names the scopes.)
pub const LAYOUT_VERSION: u32 = 11;
pub const MAX_SLOTS: usize = 8;
pub const MAX_SHARDS: usize = 256;
const HEADER_SIZE: usize = 4096;
const ACK_LINE: usize = 64;
const PAGE: usize = 4096;
const MAX_SLOT_SIZE: u64 = 1 << 30;
/// The most hosts under active health checking, process-wide (each has a slot in the
/// health table); a segment's own number is in its [`Geometry`].
pub const HEALTH_SLOTS: usize = 1 << 17;
/// The most words of a shard's stat space.
pub const MAX_STAT_WORDS: u32 = 1 << 24;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    layout_version: AtomicU32,
    slot_count: AtomicU32,
    shard_capacity: AtomicU32,
    counters_per_shard: AtomicU32,
    slot_size: AtomicU64,
    total_size: AtomicU64,
    /// `(generation << 8) | slot` of the newest published snapshot; 0 before the first.
    current: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds at which `current` was stored.
    published_ns: AtomicU64,
    /// Shards the attached data plane runs; control waits for acks from these.
    active_shards: AtomicU64,
    /// The first ack line and counter block of the attached data plane's shards. A data plane
    /// started beside a running one (a binary upgrade) takes lines the other is not using.
    shard_base: AtomicU64,
    dataplane_pid: AtomicU64,
    control_pid: AtomicU64,
    /// Bumped by control after it changes the health table.
    health_epoch: AtomicU64,
    /// Slots in the health table.
    health_slots: AtomicU64,
    /// Words of each shard's stat space, and how many control has handed out (the high-water
    /// mark: what a new data plane's lines zero and a re-created file copies).
    stat_words: AtomicU64,
    stat_words_used: AtomicU64,
    /// Bytes of each shard's access-log ring.
    log_bytes: AtomicU64,
    slots: [SlotDesc; MAX_SLOTS],
}

#[repr(C)]
struct SlotDesc {
    /// `2g + 1` while generation `g` is being written, `2g` once complete.
    seq: AtomicU64,
    len: AtomicU64,
    checksum: AtomicU64,
    _reserved: AtomicU64,
}

#[repr(C)]
struct AckLine {
    applied: AtomicU64,
    rejected: AtomicU64,
    applied_ns: AtomicU64,
    /// Event-loop nanoseconds the shard spent taking up `applied`.
    apply_busy_ns: AtomicU64,
    _reserved: [AtomicU64; 4],
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<AckLine>() == ACK_LINE);

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Why a segment could not be attached. Always the segment's (or its creator's) fault.
#[derive(Debug)]
pub enum AttachError {
    /// The file could not be opened, sized or mapped.
    Io(io::Error),
    /// The header is not a zerohop segment of this layout version.
    Layout(&'static str),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::Io(e) => write!(f, "shared-memory segment: {e}"),
            AttachError::Layout(w) => write!(f, "shared-memory segment has a bad header: {w}"),
        }
    }
}

impl std::error::Error for AttachError {}

impl From<io::Error> for AttachError {
    fn from(e: io::Error) -> Self {
        AttachError::Io(e)
    }
}

/// What a reader found in the segment.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Nothing has been published yet.
    Empty,
    /// `current` is the generation the reader already applied.
    Unchanged,
    /// The slot is being rewritten under the reader; try again on the next turn.
    Torn,
    /// A complete, checksummed snapshot (still to be decoded).
    New { generation: u64, bytes: Vec<u8> },
    /// The published slot fails its checks; the generation must be refused.
    Corrupt {
        generation: u64,
        reason: &'static str,
    },
}

/// Why control could not publish.
#[derive(Debug)]
pub enum PublishError {
    /// The encoded snapshot does not fit a slot; the operator must give a larger `slot_size`.
    TooLarge { len: usize, slot_size: u64 },
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::TooLarge { len, slot_size } => write!(
                f,
                "snapshot of {len} bytes does not fit a {slot_size}-byte slot (raise --shm-slot-size)"
            ),
        }
    }
}

impl std::error::Error for PublishError {}

enum Backing {
    Mmap {
        /// The file mapped; replaced when the segment is re-created (see [`Segment::recreate`]).
        file: std::sync::Mutex<File>,
    },
    /// An in-memory segment (tests and fuzzing) of this many u64 words, from
    /// `Box::into_raw`; u64 elements give 8-byte alignment.
    Heap { words: usize },
}

/// A mapped segment. `Send + Sync`: every shared word is an atomic.
pub struct Segment {
    base: *mut u8,
    len: usize,
    geometry: Geometry,
    backing: Backing,
    /// Times the mapping was moved onto a re-created file (see [`Segment::recreate`]).
    incarnation: AtomicU64,
}

// SAFETY: all access to the mapping goes through atomics (header, acks, stats) or through the
// seqlock-validated copy in `read_current`; the pointer itself is immutable after construction.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only hands out shared references to atomics.
unsafe impl Sync for Segment {}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.len)
            .field("geometry", &self.geometry)
            .finish()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        match self.backing {
            // SAFETY: `base`/`len` are exactly the mapping made in `map_file`, unmapped once.
            Backing::Mmap { .. } => unsafe {
                libc::munmap(self.base.cast(), self.len);
            },
            // SAFETY: `base` came from `Box::into_raw` of a `[u64]` of `words` elements in
            // `heap`, and is released exactly once.
            Backing::Heap { words } => unsafe {
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    self.base.cast::<u64>(),
                    words,
                )));
            },
        }
    }
}

// === impl Segment: construction ===

impl Segment {
    /// Creates the segment at `path`, or attaches to an existing one of the same geometry
    /// (a restarted control continues the generation sequence it finds there).
    pub fn create_or_attach(path: &Path, geometry: Geometry) -> Result<Segment, AttachError> {
        geometry.check()?;
        if let Ok(existing) = Segment::open(path) {
            if existing.geometry == geometry && existing.header_fault().is_none() {
                return Ok(existing);
            }
            if existing.header_fault().is_some() {
                // Not a segment anyone can continue: start a fresh one in its place.
                return Segment::create_fresh(path, geometry);
            }
            return Err(AttachError::Layout(
                "an existing segment at this path has another geometry; remove it or pick another path",
            ));
        }
        Segment::create_fresh(path, geometry)
    }

    /// Creates a zeroed segment at `path`, replacing whatever is there.
    fn create_fresh(path: &Path, geometry: Geometry) -> Result<Segment, AttachError> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_len(geometry.total_size() as u64)?;
        let seg = Segment::map_file(file, geometry.total_size(), geometry)?;
        seg.init_header();
        // Appear at `path` only once the header is complete.
        std::fs::rename(&tmp, path)?;
        Ok(seg)
    }

    /// Attaches to an existing segment, validating its header.
    pub fn open(path: &Path) -> Result<Segment, AttachError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < HEADER_SIZE {
            return Err(AttachError::Layout("file is smaller than the header"));
        }
        let seg = Segment::map_file(
            file,
            len,
            Geometry {
                slot_count: 0,
                slot_size: 0,
                shard_capacity: 0,
                health_slots: 0,
                stat_words: 0,
                log_bytes: 0,
            },
        )?;
        seg.validated()
    }

    /// An in-memory segment over `words` (which need not be valid): for tests and fuzzing of
    /// the reader.
    pub fn from_words(words: Box<[u64]>) -> Result<Segment, AttachError> {
        if words.len() * 8 < HEADER_SIZE {
            return Err(AttachError::Layout("segment is smaller than the header"));
        }
        Segment::heap(
            words,
            Geometry {
                slot_count: 0,
                slot_size: 0,
                shard_capacity: 0,
                health_slots: 0,
                stat_words: 0,
                log_bytes: 0,
            },
        )
        .validated()
    }

    /// A zeroed in-memory segment with `geometry`, initialised as `create_or_attach` would.
    pub fn new_in_memory(geometry: Geometry) -> Result<Segment, AttachError> {
        geometry.check()?;
        let seg = Segment::heap(
            vec![0u64; geometry.total_size() / 8].into_boxed_slice(),
            geometry,
        );
        seg.init_header();
        Ok(seg)
    }

    /// Writes the header of a fresh (zeroed) segment; `magic` last, with Release.
    fn init_header(&self) {
        let (h, geometry) = (self.header(), self.geometry);
        h.layout_version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.slot_count.store(geometry.slot_count, Ordering::Relaxed);
        h.shard_capacity
            .store(geometry.shard_capacity, Ordering::Relaxed);
        h.health_slots
            .store(u64::from(geometry.health_slots), Ordering::Relaxed);
        h.stat_words
            .store(u64::from(geometry.stat_words), Ordering::Relaxed);
        h.log_bytes
            .store(u64::from(geometry.log_bytes), Ordering::Relaxed);
        h.counters_per_shard
            .store(Counter::ALL.len() as u32, Ordering::Relaxed);
        h.slot_size.store(geometry.slot_size, Ordering::Relaxed);
        h.total_size
            .store(geometry.total_size() as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
    }

    /// The segment's bytes (for writing fuzz seeds). Test builds only.
    #[cfg(test)]
    pub(crate) fn image_for_test(&self) -> Vec<u8> {
        // SAFETY: `base` is valid for `len` bytes for the lifetime of `self`; the tests that
        // call this are single-threaded, so no word changes while it is copied.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }.to_vec()
    }

    fn heap(words: Box<[u64]>, geometry: Geometry) -> Segment {
        let n = words.len();
        let base = Box::into_raw(words).cast::<u8>();
        Segment {
            base,
            len: n * 8,
            geometry,
            backing: Backing::Heap { words: n },
            incarnation: AtomicU64::new(0),
        }
    }

    fn map_file(file: File, len: usize, geometry: Geometry) -> Result<Segment, AttachError> {
        // SAFETY: a fresh shared mapping of `len` bytes of an open file; the kernel picks the
        // address. The mapping outlives every reference we hand out (unmapped in Drop).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error().into());
        }
        Ok(Segment {
            base: p.cast(),
            len,
            geometry,
            backing: Backing::Mmap {
                file: std::sync::Mutex::new(file),
            },
            incarnation: AtomicU64::new(0),
        })
    }

    /// Reads the geometry from the header and checks that it describes this mapping.
    fn validated(mut self) -> Result<Segment, AttachError> {
        let h = self.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(AttachError::Layout("bad magic"));
        }
        if h.layout_version.load(Ordering::Relaxed) != LAYOUT_VERSION {
            return Err(AttachError::Layout("unsupported layout version"));
        }
        if h.counters_per_shard.load(Ordering::Relaxed) as usize != Counter::ALL.len() {
            return Err(AttachError::Layout("counter table of another version"));
        }
        let g = Geometry {
            slot_count: h.slot_count.load(Ordering::Relaxed),
            slot_size: h.slot_size.load(Ordering::Relaxed),
            shard_capacity: h.shard_capacity.load(Ordering::Relaxed),
            health_slots: u32::try_from(h.health_slots.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            stat_words: u32::try_from(h.stat_words.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            log_bytes: u32::try_from(h.log_bytes.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
        };
        g.check()?;
        if h.total_size.load(Ordering::Relaxed) != g.total_size() as u64
            || g.total_size() > self.len
        {
            return Err(AttachError::Layout("size does not match geometry"));
        }
        self.geometry = g;
        Ok(self)
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn header(&self) -> &Header {
        // SAFETY: base is 8-aligned (page or u64 allocation) and len >= HEADER_SIZE >=
        // size_of::<Header>(); every field is an atomic, valid for any bit pattern.
        unsafe { &*(self.base as *const Header) }
    }

    fn ack_line(&self, shard: usize) -> &AckLine {
        assert!(
            shard < self.geometry.shard_capacity as usize,
            "shard index out of range"
        );
        let off = self.geometry.acks_offset() + shard * ACK_LINE;
        // SAFETY: off + ACK_LINE <= slots_offset <= len (validated geometry); 8-aligned;
        // all-atomic struct.
        unsafe { &*(self.base.add(off) as *const AckLine) }
    }
}

// === impl Segment: publishing (control) and reading (shards) ===

impl Segment {
    /// The newest published generation (0 = none).
    pub fn current_generation(&self) -> u64 {
        self.header().current.load(Ordering::Acquire) >> 8
    }

    /// Monotonic nanoseconds at which the current generation was published.
    pub fn published_ns(&self) -> u64 {
        self.header().published_ns.load(Ordering::Acquire)
    }

    /// Writes `bytes` as the next generation into the slot after the current one and
    /// publishes it. Returns the new generation.
    ///
    /// The caller must not publish again before [`Segment::all_applied`] holds for this
    /// generation (or the data plane is known to be gone), so that no shard still copies
    /// out of the slot being overwritten.
    pub fn publish(&self, bytes: &[u8]) -> Result<u64, PublishError> {
        self.publish_inner(bytes, 0)
    }

    /// `publish`, with the stored checksum XORed with `checksum_xor` (0 outside tests).
    fn publish_inner(&self, bytes: &[u8], checksum_xor: u64) -> Result<u64, PublishError> {
        let g = self.geometry;
        if bytes.len() as u64 > g.slot_size {
            return Err(PublishError::TooLarge {
                len: bytes.len(),
                slot_size: g.slot_size,
            });
        }
        let h = self.header();
        let cur = h.current.load(Ordering::Acquire);
        let generation = (cur >> 8) + 1;
        let slot = if cur == 0 {
            0
        } else {
            ((cur & 0xff) as usize + 1) % g.slot_count as usize
        };
        let desc = &h.slots[slot];
        desc.seq.store(generation * 2 + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: slot_offset(slot) + slot_size <= len (validated geometry) and bytes.len() <=
        // slot_size. Readers may copy concurrently; they detect it through `seq`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.add(g.slot_offset(slot)),
                bytes.len(),
            )
        };
        desc.len.store(bytes.len() as u64, Ordering::Relaxed);
        desc.checksum.store(
            u64::from(crc32fast::hash(bytes)) ^ checksum_xor,
            Ordering::Relaxed,
        );
        desc.seq.store(generation * 2, Ordering::Release);
        h.published_ns.store(monotonic_ns(), Ordering::Relaxed);
        h.current
            .store((generation << 8) | slot as u64, Ordering::Release);
        Ok(generation)
    }

    /// Copies out the current snapshot if it is newer than `applied`.
    pub fn read_current(&self, applied: u64) -> ReadOutcome {
        let g = self.geometry;
        let h = self.header();
        let cur = h.current.load(Ordering::Acquire);
        if cur == 0 {
            return ReadOutcome::Empty;
        }
        let generation = cur >> 8;
        if generation == applied {
            return ReadOutcome::Unchanged;
        }
        let slot = (cur & 0xff) as usize;
        if slot >= g.slot_count as usize {
            return ReadOutcome::Corrupt {
                generation,
                reason: "slot index out of range",
            };
        }
        let desc = &h.slots[slot];
        let seq = desc.seq.load(Ordering::Acquire);
        if seq != generation.wrapping_mul(2) {
            return ReadOutcome::Torn;
        }
        let len = desc.len.load(Ordering::Relaxed);
        if len > g.slot_size {
            return ReadOutcome::Corrupt {
                generation,
                reason: "length exceeds slot size",
            };
        }
        let mut bytes = vec![0u8; len as usize];
        // SAFETY: slot_offset(slot) + len <= slot_offset(slot) + slot_size <= self.len. Another
        // process may be writing the slot right now; the copy is then torn, which the seq
        // re-check below detects, and the bytes are treated as untrusted either way.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.add(g.slot_offset(slot)),
                bytes.as_mut_ptr(),
                bytes.len(),
            )
        };
        fence(Ordering::Acquire);
        if desc.seq.load(Ordering::Relaxed) != seq {
            return ReadOutcome::Torn;
        }
        if u64::from(crc32fast::hash(&bytes)) != desc.checksum.load(Ordering::Relaxed) {
            return ReadOutcome::Corrupt {
                generation,
                reason: "checksum mismatch",
            };
        }
        ReadOutcome::New { generation, bytes }
    }

    /// Publishes `bytes` with a checksum that does not match: a test hook that simulates a
    /// stray write into a slot. Returns the generation.
    #[doc(hidden)]
    pub fn publish_with_bad_checksum_for_test(&self, bytes: &[u8]) -> u64 {
        self.publish_inner(bytes, !0).expect("fits a slot")
    }

    /// Flips bits of one byte of the current slot without updating its checksum: a test hook
    /// that simulates a stray write or a torn slot.
    #[cfg(test)]
    pub fn corrupt_current_slot_for_test(&self, offset: usize, byte: u8) {
        let cur = self.header().current.load(Ordering::Acquire);
        let slot = (cur & 0xff) as usize % self.geometry.slot_count as usize;
        if (offset as u64) < self.geometry.slot_size {
            // SAFETY: offset < slot_size, so the byte lies inside the slot.
            unsafe { *self.base.add(self.geometry.slot_offset(slot) + offset) ^= byte };
        }
    }

    /// The shard on ack line `line` (its data plane's base + its id) now serves `generation`,
    /// having spent `busy_ns` of its event loop on taking it up.
    pub fn ack(&self, line: usize, generation: u64, busy_ns: u64) {
        let a = self.ack_line(line);
        a.applied_ns.store(monotonic_ns(), Ordering::Relaxed);
        a.apply_busy_ns.store(busy_ns, Ordering::Relaxed);
        a.applied.store(generation, Ordering::Release);
    }

    /// The event-loop nanoseconds shard `shard` (0-based) of the attached data plane spent
    /// taking up the generation it last applied.
    pub fn shard_apply_busy_ns(&self, shard: usize) -> u64 {
        self.ack_line(self.shard_base() + shard)
            .apply_busy_ns
            .load(Ordering::Relaxed)
    }

    /// Shard `shard` records that it refused `generation` and kept its previous config.
    pub fn reject(&self, shard: usize, generation: u64) {
        self.ack_line(shard)
            .rejected
            .store(generation, Ordering::Release);
    }

    /// `(applied, rejected, applied_ns)` of shard `shard` (0-based) of the attached data plane.
    pub fn shard_ack(&self, shard: usize) -> (u64, u64, u64) {
        let a = self.ack_line(self.shard_base() + shard);
        (
            a.applied.load(Ordering::Acquire),
            a.rejected.load(Ordering::Acquire),
            a.applied_ns.load(Ordering::Relaxed),
        )
    }

    /// True when every active shard has applied `generation` or a newer one.
    pub fn all_applied(&self, generation: u64) -> bool {
        (0..self.active_shards()).all(|s| self.shard_ack(s).0 >= generation)
    }

    /// A data plane attaches with `shards` shards and gets its first line: 0, or the lines
    /// after (or before) those of a data plane still running on this segment, so that both
    /// can serve side by side during an upgrade. Its lines' acks and counters start at zero.
    pub fn register_dataplane(&self, shards: usize, pid: u32) -> usize {
        let cap = self.geometry.shard_capacity as usize;
        let shards = shards.min(cap);
        let h = self.header();
        let (old_pid, old_base, old_n) = (
            h.dataplane_pid.load(Ordering::Acquire) as u32,
            h.shard_base.load(Ordering::Relaxed) as usize,
            h.active_shards.load(Ordering::Relaxed) as usize,
        );
        let base = if old_pid != pid && pid_alive(old_pid) && old_base < shards {
            old_base + old_n
        } else {
            0
        };
        let base = if base + shards > cap { 0 } else { base };
        for line in base..base + shards {
            let a = self.ack_line(line);
            a.applied.store(0, Ordering::Relaxed);
            a.rejected.store(0, Ordering::Relaxed);
            for c in self.shard_counters(line) {
                c.store(0, Ordering::Relaxed);
            }
            let used = self.stat_words_used();
            for w in &self.shard_space(line)[..used] {
                w.store(0, Ordering::Relaxed);
            }
            for w in self.shard_codes(line) {
                w.store(0, Ordering::Relaxed);
            }
        }
        h.dataplane_pid.store(u64::from(pid), Ordering::Relaxed);
        h.shard_base.store(base as u64, Ordering::Relaxed);
        h.active_shards.store(shards as u64, Ordering::Release);
        base
    }

    /// The data plane `pid` marks itself gone (pid 0) when it stops applying generations, so
    /// control does not wait for its acks; its shards' counters stay readable. Does nothing
    /// if another data plane has attached since.
    pub fn clear_dataplane(&self, pid: u32) {
        let h = self.header();
        let _ = h.dataplane_pid.compare_exchange(
            u64::from(pid),
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// Shards of the attached data plane.
    pub fn active_shards(&self) -> usize {
        let n = self.header().active_shards.load(Ordering::Acquire) as usize;
        n.min(self.geometry.shard_capacity as usize - self.shard_base())
    }

    /// First line of the attached data plane.
    pub fn shard_base(&self) -> usize {
        (self.header().shard_base.load(Ordering::Acquire) as usize)
            .min(self.geometry.shard_capacity as usize - 1)
    }

    pub fn dataplane_pid(&self) -> u32 {
        self.header().dataplane_pid.load(Ordering::Relaxed) as u32
    }

    pub fn set_control_pid(&self, pid: u32) {
        self.header()
            .control_pid
            .store(u64::from(pid), Ordering::Relaxed);
    }

    pub fn control_pid(&self) -> u32 {
        self.header().control_pid.load(Ordering::Relaxed) as u32
    }
}

mod geometry;
mod health;
mod logring;
mod os;
mod repair;
mod stats;
#[cfg(test)]
mod tests;

pub use geometry::Geometry;
pub use logring::{Drained, LogRing};
pub use os::{background_priority, monotonic_ns, pid_alive, priority, wake_address};
pub use repair::{PathState, Registration};
