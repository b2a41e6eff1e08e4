//! Where configuration comes from, and what control falls back on when it cannot be read.
//!
//! The config file is watched by polling its metadata (modification time, size, inode):
//! editors that write a new file and rename it over the old one, and Kubernetes ConfigMap
//! volumes that swap a symlink, both show up as a change. Every snapshot that is published
//! is also written to the snapshot cache (when one is configured), so that a control that
//! starts while its source is unavailable can serve the last good configuration.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zerohop_proto::{codec, Snapshot};

/// How often the config file's metadata is checked.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// What identifies one version of the file: taken before the file is read, so that a change
/// made while control starts up is seen by the watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    mtime: SystemTime,
    len: u64,
    ino: u64,
    dev: u64,
}

pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime: m.modified().ok()?,
        len: m.len(),
        ino: m.ino(),
        dev: m.dev(),
    })
}

/// Calls `changed` (on a background thread) whenever `path` differs from `seen` (the stamp
/// taken before the file was last read). A file that is briefly missing (mid-rename) is
/// waited for; a change is reported once the file has held still for one interval (the same
/// size, modification time, inode and content hash at both ends of it), so a file still
/// being written is not read half-way. A file renamed into place is whole at once and
/// passes the same check.
pub fn watch(
    path: PathBuf,
    seen: Option<Stamp>,
    mut changed: impl FnMut() -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            let mut seen = seen;
            loop {
                std::thread::sleep(WATCH_INTERVAL);
                let now = stamp(&path);
                if now.is_none() || now == seen {
                    continue;
                }
                let before = digest(&path);
                std::thread::sleep(WATCH_INTERVAL);
                if stamp(&path) != now || digest(&path) != before {
                    continue; // still changing: look again next turn
                }
                seen = now;
                log::info!("{} changed", path.display());
                if !changed() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// A hash of the file's content (`None` when it cannot be read).
fn digest(path: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// The last published snapshot, on disk.
#[derive(Clone, Debug)]
pub struct SnapshotCache {
    pub path: PathBuf,
}

const CACHE_MAGIC: &[u8; 4] = b"ZHLG";

impl SnapshotCache {
    /// Writes `snapshot` atomically (temp file + rename).
    pub fn store(&self, snapshot: &Snapshot) -> std::io::Result<()> {
        let bytes = codec::encode(snapshot);
        let mut out = Vec::with_capacity(bytes.len() + 8);
        out.extend_from_slice(CACHE_MAGIC);
        out.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        out.extend_from_slice(&bytes);
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Reads the cached snapshot back, checking its checksum and encoding.
    pub fn load(&self) -> Result<Snapshot, String> {
        let raw = std::fs::read(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        if raw.len() < 8 || &raw[..4] != CACHE_MAGIC {
            return Err(format!(
                "{}: not a zerohop snapshot cache",
                self.path.display()
            ));
        }
        let (crc, bytes) = (
            u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes")),
            &raw[8..],
        );
        if crc32fast::hash(bytes) != crc {
            return Err(format!("{}: checksum mismatch", self.path.display()));
        }
        codec::decode(bytes).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}
