//! Keeping the segment file in place for control.
//!
//! Once a generation is applied, the shards serve it from the mapping they hold, whatever
//! happens to the file: removing it (`rm /dev/shm/...`) or writing over its header does not
//! reach them. What it does break is the next control: it would start a new, empty segment
//! that the shards never see. So, whenever control is gone, the [`Keeper`] makes sure the
//! path holds this data plane's segment with a sound header, re-creating it from what the
//! data plane holds (the generation it serves, with that snapshot's bytes; its ack lines and
//! counters; its registration) when it does not. The supervisor asks before every restart
//! of control; a data plane run with `--attach` looks every second while control is down.

use std::path::PathBuf;
use std::sync::Mutex;

use zerohop_proto::shm::{PathState, Registration, Segment};
use zerohop_proto::stats::Counter;

use crate::stats::ShardStats;

#[derive(Debug)]
pub struct Keeper {
    seg: &'static Segment,
    path: PathBuf,
    registration: Registration,
    /// The generation the data plane serves and its encoded snapshot.
    serving: Mutex<(u64, Vec<u8>)>,
    /// Where `segment_recreated` is counted (the first shard's block; only the keeper, under
    /// `serving`'s lock, writes that counter).
    stats: ShardStats,
}

impl Keeper {
    pub fn new(
        seg: &'static Segment,
        path: PathBuf,
        registration: Registration,
        serving: (u64, Vec<u8>),
        stats: ShardStats,
    ) -> Keeper {
        Keeper {
            seg,
            path,
            registration,
            serving: Mutex::new(serving),
            stats,
        }
    }

    /// The data plane now serves `generation`, encoded as `bytes`.
    pub fn serving(&self, generation: u64, bytes: Vec<u8>) {
        *self.serving.lock().expect("kept snapshot") = (generation, bytes);
    }

    /// Makes sure the path holds this segment, sound; returns what it found there.
    /// Call only while control is down.
    pub fn ensure(&self) -> PathState {
        let serving = self.serving.lock().expect("kept snapshot");
        let found = self.seg.path_state(&self.path);
        if found == PathState::Ours {
            return found;
        }
        let (generation, bytes) = (serving.0, &serving.1);
        match self
            .seg
            .recreate(&self.path, Some((generation, bytes)), self.registration)
        {
            Ok(()) => {
                self.stats.inc(Counter::SegmentRecreated);
                log::error!(
                    "segment {} was {found}: re-created it with generation {generation}, which the shards still serve; control continues from there",
                    self.path.display()
                );
            }
            Err(e) => log::error!(
                "segment {} was {found}; re-creating it failed: {e}; the shards keep serving generation {generation}",
                self.path.display()
            ),
        }
        found
    }
}
