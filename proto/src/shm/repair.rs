//! Keeping a segment usable when its file is removed or its header damaged.
//!
//! The data plane holds the truth of what it serves: the generation it applied (and that
//! snapshot's bytes), its shards' ack lines and counters, its registration. When control is
//! gone and the path no longer holds a sane copy of the segment (`rm` of the file, another
//! file in its place, garbage over the header), the data plane writes a fresh file from what
//! it holds and moves its own mapping onto it ([`Segment::recreate`]): the shards keep
//! writing through the same addresses, and the restarted control attaches to a segment that
//! continues the generation sequence. Control, for its part, checks [`Segment::header_fault`]
//! before trusting a header it did not write last.

use std::os::unix::fs::MetadataExt;

use super::*;

/// What a holder of the segment finds at its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathState {
    /// The path maps this segment and its header is sane.
    Ours,
    /// Nothing is at the path.
    Missing,
    /// Another file is at the path (or it cannot be examined).
    Replaced,
    /// The path maps this segment, but its header fails a check (which one).
    Damaged(&'static str),
}

impl fmt::Display for PathState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathState::Ours => f.write_str("in place"),
            PathState::Missing => f.write_str("removed"),
            PathState::Replaced => f.write_str("replaced by another file"),
            PathState::Damaged(why) => write!(f, "damaged ({why})"),
        }
    }
}

/// A data plane's registration on the segment (see [`Segment::register_dataplane`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    pub pid: u32,
    pub base: usize,
    pub shards: usize,
}

impl Segment {
    /// Why the header no longer describes this mapping or holds no sane `current`
    /// (`None`: it is sound). Checks magic, layout, geometry, that `current` names a slot
    /// whose sequence says it holds that generation, and the data plane's registration.
    pub fn header_fault(&self) -> Option<&'static str> {
        let (h, g) = (self.header(), self.geometry);
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Some("bad magic");
        }
        if h.layout_version.load(Ordering::Relaxed) != LAYOUT_VERSION
            || h.counters_per_shard.load(Ordering::Relaxed) as usize != Counter::ALL.len()
        {
            return Some("layout version changed");
        }
        if h.slot_count.load(Ordering::Relaxed) != g.slot_count
            || h.slot_size.load(Ordering::Relaxed) != g.slot_size
            || h.shard_capacity.load(Ordering::Relaxed) != g.shard_capacity
            || h.stat_words.load(Ordering::Relaxed) != u64::from(g.stat_words)
            || h.log_bytes.load(Ordering::Relaxed) != u64::from(g.log_bytes)
            || h.total_size.load(Ordering::Relaxed) != g.total_size() as u64
        {
            return Some("geometry changed");
        }
        let cur = h.current.load(Ordering::Acquire);
        if cur != 0 {
            let (generation, slot) = (cur >> 8, (cur & 0xff) as usize);
            if slot >= g.slot_count as usize {
                return Some("current slot out of range");
            }
            let desc = &h.slots[slot];
            if desc.seq.load(Ordering::Acquire) != generation.wrapping_mul(2)
                || desc.len.load(Ordering::Relaxed) > g.slot_size
            {
                return Some("current generation does not match its slot");
            }
        }
        let base = h.shard_base.load(Ordering::Relaxed);
        let shards = h.active_shards.load(Ordering::Relaxed);
        if base.saturating_add(shards) > u64::from(g.shard_capacity) {
            return Some("data plane registration out of range");
        }
        None
    }

    /// Whether `path` still maps this segment, with a sound header.
    pub fn path_state(&self, path: &Path) -> PathState {
        let Backing::Mmap { file } = &self.backing else {
            return PathState::Replaced;
        };
        let mine = match file.lock().expect("segment file").metadata() {
            Ok(m) => (m.dev(), m.ino()),
            Err(_) => return PathState::Replaced,
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => PathState::Missing,
            Err(_) => PathState::Replaced,
            Ok(m) if (m.dev(), m.ino()) != mine => PathState::Replaced,
            Ok(_) => match self.header_fault() {
                Some(why) => PathState::Damaged(why),
                None => PathState::Ours,
            },
        }
    }

    /// The raw `current` word (`generation << 8 | slot`): what a publisher compares with the
    /// word it stored last, to notice a header it did not write.
    pub fn current_word(&self) -> u64 {
        self.header().current.load(Ordering::Acquire)
    }

    /// Times this mapping was moved onto a re-created file.
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::Acquire)
    }

    /// Writes a fresh segment file at `path` from this mapping and moves the mapping onto it.
    ///
    /// The new file gets a new header of this geometry, a copy of every ack line and counter
    /// block, `serving` (the generation the data plane applied and its encoded snapshot) as
    /// the current generation in slot 0, and `registration`; it replaces whatever is at `path`
    /// by rename. Then the new file is mapped over this mapping's addresses (`MAP_FIXED`), so
    /// every `&Segment` and counter reference stays valid and from then on reads and writes the
    /// new file. Counter increments made by other threads between the copy and the remap (a
    /// few microseconds) are lost. Only for a segment whose control is gone: a live control
    /// keeps writing the old file.
    pub fn recreate(
        &self,
        path: &Path,
        serving: Option<(u64, &[u8])>,
        registration: Registration,
    ) -> Result<(), AttachError> {
        let Backing::Mmap { file } = &self.backing else {
            return Err(AttachError::Layout("an in-memory segment has no file"));
        };
        let g = self.geometry;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let new_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let result = (|| {
            new_file.set_len(self.len as u64)?;
            let fresh = Segment::map_file(new_file.try_clone()?, self.len, g)?;
            fresh.init_header();
            let used = self.stat_words_used();
            fresh.set_stat_words_used(used);
            for line in 0..g.shard_capacity as usize {
                copy_words(self.ack_words(line), fresh.ack_words(line));
                copy_words(self.shard_counters(line), fresh.shard_counters(line));
            }
            // The stat spaces of the serving data plane's lines only: the rest of the file
            // stays sparse.
            for line in registration.base
                ..(registration.base + registration.shards).min(g.shard_capacity as usize)
            {
                copy_words(
                    &self.shard_space(line)[..used],
                    &fresh.shard_space(line)[..used],
                );
                copy_words(self.shard_codes(line), fresh.shard_codes(line));
            }
            if let Some((generation, bytes)) = serving {
                fresh.install(generation, bytes)?;
            }
            let h = fresh.header();
            h.shard_base
                .store(registration.base as u64, Ordering::Relaxed);
            h.active_shards
                .store(registration.shards as u64, Ordering::Relaxed);
            h.dataplane_pid
                .store(u64::from(registration.pid), Ordering::Release);
            std::fs::rename(&tmp, path)?;
            Ok::<(), AttachError>(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // SAFETY: `base`/`len` are exactly this segment's mapping (made by `map_file` or by an
        // earlier `recreate`), and `new_file` is at least `len` bytes long. MAP_FIXED replaces
        // the old pages with the new file's in one step under the kernel's mmap lock, so
        // other threads' accesses (all through atomics or the seqlock-checked copy) see either
        // file, never an unmapped hole; the address range, and so every reference into it,
        // stays valid.
        let p = unsafe {
            libc::mmap(
                self.base.cast(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                new_file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error().into());
        }
        *file.lock().expect("segment file") = new_file;
        self.incarnation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Publishes `bytes` as `generation` in slot 0 of a fresh segment.
    fn install(&self, generation: u64, bytes: &[u8]) -> Result<(), AttachError> {
        let (h, g) = (self.header(), self.geometry);
        if bytes.len() as u64 > g.slot_size || generation == 0 || generation >= 1 << 55 {
            return Err(AttachError::Layout("the kept snapshot does not fit"));
        }
        let desc = &h.slots[0];
        desc.seq.store(generation * 2 + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: slot 0 spans slot_size >= bytes.len() bytes inside the mapping, and this
        // fresh mapping has no other writer yet.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.add(g.slot_offset(0)),
                bytes.len(),
            )
        };
        desc.len.store(bytes.len() as u64, Ordering::Relaxed);
        desc.checksum
            .store(u64::from(crc32fast::hash(bytes)), Ordering::Relaxed);
        desc.seq.store(generation * 2, Ordering::Release);
        h.published_ns.store(monotonic_ns(), Ordering::Relaxed);
        h.current.store(generation << 8, Ordering::Release);
        Ok(())
    }

    /// The ack line of `line` as words.
    fn ack_words(&self, line: usize) -> &[AtomicU64] {
        let a = self.ack_line(line);
        // SAFETY: `AckLine` is `repr(C)` and made only of `AtomicU64`s (ACK_LINE / 8 of them).
        unsafe { std::slice::from_raw_parts((a as *const AckLine).cast(), ACK_LINE / 8) }
    }

    /// The data plane registered now, as the header says.
    pub fn registration(&self) -> Registration {
        Registration {
            pid: self.dataplane_pid(),
            base: self.shard_base(),
            shards: self.active_shards(),
        }
    }
}

fn copy_words(from: &[AtomicU64], to: &[AtomicU64]) {
    for (f, t) in from.iter().zip(to) {
        let v = f.load(Ordering::Relaxed);
        if v != 0 {
            t.store(v, Ordering::Relaxed);
        }
    }
}
