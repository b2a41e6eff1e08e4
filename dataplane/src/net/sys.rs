//! The raw syscalls under the byte pumps: non-blocking recv/send/splice on sockets whose
//! readiness the ring reported, pipes for splicing, and a few socket options.
//!
//! Why not ring ops for the copies: a recv submitted to io_uring on a socket that has no data
//! pins its buffer until data arrives (an idle connection would hold one), and a SPLICE op on
//! a socket that isn't ready is punted to an io-wq kernel thread (DESIGN.md section 2: 1,000
//! idle connections made ~2,000 kernel threads). So the ring waits for readiness (PollAdd,
//! no buffer held), and the copy runs here as one non-blocking syscall that cannot block.
#![allow(unsafe_code)] // Reason: libc calls on file descriptors we own; each has a SAFETY note.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Converts a libc return value into `io::Result`.
fn check(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Makes a *socket* non-blocking with one syscall: F_SETFL replaces only the status flags
/// (O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME, O_NONBLOCK), and a socket uses none but
/// O_NONBLOCK, so there is nothing to read back first.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl F_SETFL on a descriptor the caller owns, int argument.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) } as isize).map(drop)
}

/// `recvfrom(2)` as a raw syscall: glibc's `recv` wrapper is a thread-cancellation point and
/// pays for enabling and disabling cancellation around every call (5% of a shard's CPU in a
/// profile of small HTTP requests); zerohop never cancels threads.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes for the duration of the call.
unsafe fn raw_recv(fd: RawFd, ptr: *mut u8, len: usize, flags: libc::c_int) -> isize {
    // SAFETY: the caller guarantees the buffer; the null address arguments are allowed.
    unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            ptr,
            len,
            flags,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        ) as isize
    }
}

/// `recv(2)` with MSG_DONTWAIT into `buf`.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable region of buf.len() bytes for the duration of the call.
    check(unsafe { raw_recv(fd, buf.as_mut_ptr(), buf.len(), libc::MSG_DONTWAIT) })
}

/// `recv(2)` with MSG_PEEK | MSG_DONTWAIT: what has arrived, left in the socket.
pub fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable region of buf.len() bytes for the duration of the call.
    check(unsafe {
        raw_recv(
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    })
}

/// `recv(2)` with MSG_DONTWAIT into the spare capacity of `buf` (at most `max` bytes),
/// growing its length by what arrived: no zero-filling of the space first.
pub fn recv_spare(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: `spare` is writable, uninitialised memory of at least `len` bytes owned by `buf`;
    // recv writes at most `len` bytes into it.
    let n = check(unsafe { raw_recv(fd, spare.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT) })?;
    // SAFETY: recv initialised the first `n` (<= len) bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Whether an idle pooled connection is still usable: nothing to read (EAGAIN). A peer that
/// closed (EOF), sent unsolicited bytes, or errored makes it unusable.
pub fn idle_alive(fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: byte is a valid writable 1-byte region for the duration of the call.
    let r = check(unsafe {
        libc::recv(
            fd,
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    });
    matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// `send(2)` with MSG_DONTWAIT | MSG_NOSIGNAL (a reset peer gives EPIPE, not SIGPIPE).
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable region of buf.len() bytes for the duration of the call;
    // a raw syscall, like `raw_recv`, to skip glibc's cancellation-point bookkeeping.
    check(unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        ) as isize
    })
}

/// Non-blocking `splice(2)` of up to `len` bytes from `from` to `to` (one must be a pipe).
/// Both descriptors must be O_NONBLOCK: SPLICE_F_NONBLOCK alone covers only the pipe side.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice with null offsets (sockets and pipes have no offset); no memory is passed.
    check(unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    })
}

/// A non-blocking pipe, used as the in-kernel buffer of a splicing pump.
#[derive(Debug)]
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
    /// Bytes the pipe holds (what F_SETPIPE_SZ granted).
    pub capacity: usize,
}

impl Pipe {
    pub fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into a valid [c_int; 2].
        check(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } as isize,
        )?;
        // SAFETY: pipe2 succeeded, so both are fresh descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Best effort: a larger pipe moves more per splice; the default (64 KiB) also works,
        // and an unprivileged user past fs.pipe-user-pages-soft gets less.
        // SAFETY: fcntl F_SETPIPE_SZ on our own pipe, int argument.
        let _ = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
        // SAFETY: F_GETPIPE_SZ on our own pipe.
        let capacity =
            check(unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) } as isize)?;
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

/// `shutdown(fd, SHUT_WR)`: forwards a half-close (FIN) to the peer.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown on a socket descriptor the caller owns.
    check(unsafe { libc::shutdown(fd, libc::SHUT_WR) } as isize).map(drop)
}

/// `shutdown(fd, SHUT_RDWR)`: ends a connection whose owner is parked on it (its pending
/// readiness wait completes and sees the end).
pub fn shutdown_both(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown on a live socket descriptor (callers drop registrations before close).
    check(unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } as isize).map(drop)
}

/// The host's address as Envoy's `local_info` has it: the first IPv4 address of
/// `getifaddrs(3)` that is not loopback, else 127.0.0.1. With `use_remote_address`, a request
/// from a loopback peer gets this appended to `x-forwarded-for` instead of the peer.
pub fn local_address() -> std::net::IpAddr {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `list`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return loopback;
    }
    let mut found = None;
    let mut at = list;
    while !at.is_null() && found.is_none() {
        // SAFETY: `at` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*at };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    found = Some(std::net::IpAddr::V4(ip));
                }
            }
        }
        at = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once; nothing refers to it any more.
    unsafe { libc::freeifaddrs(list) };
    found.unwrap_or(loopback)
}

/// `SO_LINGER {on, 0}`: the next close sends RST instead of FIN (used to forward a reset).
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a pointer to a live `linger` and its exact size.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    } as isize)
    .map(drop)
}

/// Creates a listening TCP socket with SO_REUSEADDR and SO_REUSEPORT, so that every shard
/// can bind its own socket to the same address and the kernel spreads connections.
pub fn reuseport_listener(
    addr: std::net::SocketAddr,
    backlog: i32,
) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket() returns a new descriptor or -1.
    let fd =
        check(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) } as isize)?
            as RawFd;
    // SAFETY: fd is a fresh socket that nothing else owns; OwnedFd closes it on error paths.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        check(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } as isize)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of `len` bytes for addr's family.
    check(
        unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } as isize,
    )?;
    // SAFETY: listen on our bound socket.
    check(unsafe { libc::listen(fd, backlog) } as isize)?;
    Ok(std::net::TcpListener::from(owned))
}

fn sockaddr(addr: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Raises RLIMIT_NOFILE to its hard limit: every proxied connection costs two descriptors.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } as isize)?;
    r.rlim_cur = r.rlim_max;
    // SAFETY: as above.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } as isize)?;
    Ok(r.rlim_cur)
}

/// Asks the kernel to send SIGTERM to this (child) process when its parent dies. Called in
/// the child between fork and exec, where only async-signal-safe calls are allowed; prctl is.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes an integer signal number.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } as isize).map(drop)
}

pub use zerohop_proto::shm::background_priority;

/// Spawns `cmd` so that it gets SIGTERM if this process dies (even by SIGKILL). Control
/// puts its own threads at background priority (all but its access-log writer, which does
/// per-request work).
pub fn spawn_tied_to_parent(cmd: &mut std::process::Command) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only prctl, which
    // is async-signal-safe; it touches no memory shared with the parent.
    unsafe { cmd.pre_exec(die_with_parent) };
    cmd.spawn()
}

/// Sends `sig` to process `pid` (the supervised control process).
pub fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes a pid and a signal number; no memory is passed.
    check(unsafe { libc::kill(pid as libc::pid_t, sig) } as isize).map(drop)
}

/// Most descriptors one SCM_RIGHTS message may carry (the kernel's SCM_MAX_FD).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Sends `data` with `fds` attached (SCM_RIGHTS) on a connected Unix stream socket.
pub fn send_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(!data.is_empty() && fds.len() <= MAX_FDS_PER_MESSAGE);
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space.max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid before the fields are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` bytes, enough for one cmsghdr carrying
        // `fd_bytes` of data (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and CMSG_DATA has room
        // for every descriptor; the buffer outlives the sendmsg call.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg points at live iovec and control buffers for the duration of the call.
    let n = check(unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) })?;
    if n != data.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// Receives one message into `buf` and up to `max_fds` descriptors passed with it.
pub fn recv_fds(sock: RawFd, buf: &mut [u8], max_fds: usize) -> io::Result<(usize, Vec<OwnedFd>)> {
    let fd_bytes = max_fds * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid before the fields are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live, writable iovec and control buffers for the call.
    let n = check(unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "descriptors were truncated (too many for one message)",
        ));
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages recvmsg filled in, within msg_controllen; each
    // SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors that are now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, fds))
}

/// Non-blocking `accept4(2)`: the accepted socket is O_NONBLOCK and close-on-exec.
///
/// The accept loops wait for readiness on the ring and then call this, instead of submitting
/// an accept op: a readiness wait can be cancelled without consuming anything, whereas an
/// accept op cancelled as a listener stops (removal, drain, upgrade) may already have taken a
/// connection off the queue, leaving it to be reset.
pub fn accept(listener: RawFd) -> io::Result<std::net::TcpStream> {
    // SAFETY: accept4 with null address pointers returns a new descriptor or -1.
    let fd = check(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    } as isize)? as RawFd;
    // SAFETY: accept4 succeeded: a fresh descriptor that nothing else owns.
    Ok(std::net::TcpStream::from(unsafe {
        OwnedFd::from_raw_fd(fd)
    }))
}

/// A new epoll set (close-on-exec).
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes flags only.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)?;
    // SAFETY: epoll_create1 succeeded: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Adds `fd` to `epoll`, edge-triggered, for the peer's hang-up only (EPOLLRDHUP; EPOLLHUP
/// and EPOLLERR come unasked), tagged `token`. The entry goes when `fd` is closed.
pub fn epoll_watch_hangup(epoll: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: token,
    };
    // SAFETY: epoll_ctl with a valid event struct; both descriptors are the caller's.
    check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) } as isize).map(drop)
}

/// The tokens of the entries that have events now (never waits), at most `out.len()`.
pub fn epoll_ready(epoll: RawFd, out: &mut [u64]) -> io::Result<usize> {
    const BATCH: usize = 64;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let max = out.len().min(BATCH) as libc::c_int;
    // SAFETY: epoll_wait writes at most `max` <= BATCH events into `events`; timeout 0.
    let n = check(unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), max, 0) } as isize)?;
    for (o, e) in out.iter_mut().zip(&events[..n]) {
        *o = e.u64;
    }
    Ok(n)
}

extern "C" {
    /// mimalloc's collection of the calling thread's heap (linked in with the `mimalloc`
    /// global allocator).
    fn mi_collect(force: bool);
}

/// Gives the calling thread's freed memory back to the system. mimalloc returns free pages
/// only as the heap is used again; a shard that went quiet after many connections closed
/// would otherwise keep their memory (6.4x its starting RSS after 10,000 idle connections
/// closed: `zerohop-bench idle-http`).
pub fn release_free_memory() {
    // SAFETY: mi_collect takes a flag and only reorganises the caller's own heap; mimalloc
    // is the process's allocator (dataplane/src/main.rs), so the symbol is linked.
    unsafe { mi_collect(true) }
}
