//! What the segment's users ask of the operating system: whether a process lives, the
//! wake-up socket's address, the monotonic clock, a thread's scheduling priority.
#![allow(unsafe_code)] // Reason: clock_gettime and sched_setattr, with SAFETY notes.

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

/// `struct sched_attr` of sched_setattr(2) (not in the libc crate).
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Background priority for process (or thread) `pid` (0: the caller): nice 19 and, on
/// Linux 6.12+, a 100 us scheduler slice. Config work then never starves (SCHED_IDLE did,
/// on a busy host and in a busy test run), and a waking shard waits at most ~100 us for the
/// CPU instead of the default ~3 ms slice, which measured as an 11x p99 hit under one
/// reload per second. Falls back to plain nice 19 where the slice cannot be set.
/// Async-signal-safe (raw syscalls only), so usable between fork and exec.
pub fn background_priority(pid: u32) -> io::Result<()> {
    priority(pid, 19)
}

/// `nice` (0..=19: a thread may only lower its own priority) with a 100 us slice where the
/// kernel takes one (see [`background_priority`]), for thread or process `pid`.
pub fn priority(pid: u32, nice: i32) -> io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: 100_000, // ns: the requested slice
        sched_deadline: 0,
        sched_period: 0,
        sched_util_min: 0,
        sched_util_max: 0,
    };
    // SAFETY: sched_setattr with a pointer to a live, fully initialised sched_attr whose
    // `size` field states its size; flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            pid as libc::pid_t,
            &attr as *const SchedAttr,
            0u32,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // SAFETY: setpriority on a pid; no memory is passed.
    match unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
