//! What the segment's users ask of the operating system: whether a process lives, the
//! wake-up socket's address, the monotonic clock.
#![allow(unsafe_code)] // Reason: clock_gettime, with a SAFETY note.

use std::io;
use std::path::Path;

/// Whether process `pid` exists (0 never does).
pub fn pid_alive(pid: u32) -> bool {
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The abstract Unix datagram socket the shard on ack line `line` of the segment at
/// `segment` listens on for "a new generation is published". Control sends one byte to
/// each active shard's after publishing, so shards apply a generation at once instead of at
/// their next tick (which stays as the fallback: the wake-up is an optimisation, never
/// needed for correctness). Named after the segment file's device and inode, so every
/// process that maps the segment agrees and two segments never collide.
pub fn wake_address(segment: &Path, line: usize) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(segment)?;
    let name = format!("zerohop-wake-{:x}-{:x}-{line}", m.dev(), m.ino());
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes on one host.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
