//! The schedule: a pacer hands out intended send times at a constant rate, and idle workers
//! take them from a per-thread queue. The pacer sleeps on a timerfd (nanosecond deadlines, no
//! timer slack) instead of the runtime's millisecond timer wheel, which would add up to a
//! millisecond of the generator's own lateness to every latency.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Intended send times waiting for a worker. Single-threaded (one per generator thread).
#[derive(Default)]
pub struct Queue {
    items: RefCell<VecDeque<Instant>>,
    /// Workers parked in `pop`, by worker id. A worker is listed only while it waits, so
    /// waking the first one never wakes a worker that is busy with a request.
    waiting: RefCell<VecDeque<(usize, Waker)>>,
    closed: Cell<bool>,
}

impl Queue {
    pub fn push(&self, intended: Instant) {
        self.items.borrow_mut().push_back(intended);
        let next = self.waiting.borrow_mut().pop_front();
        if let Some((_, w)) = next {
            w.wake();
        }
    }

    /// No more items will be pushed; waiting workers get `None` once the queue is empty.
    pub fn close(&self) {
        self.closed.set(true);
        for (_, w) in self.waiting.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Drops what is still queued, returning how many there were.
    pub fn discard(&self) -> usize {
        let mut items = self.items.borrow_mut();
        let n = items.len();
        items.clear();
        n
    }

    /// The next intended send time, or `None` when the schedule is over.
    pub async fn pop(&self, worker: usize) -> Option<Instant> {
        poll_fn(|cx| {
            if let Some(t) = self.items.borrow_mut().pop_front() {
                self.waiting.borrow_mut().retain(|(id, _)| *id != worker);
                return Poll::Ready(Some(t));
            }
            if self.closed.get() {
                return Poll::Ready(None);
            }
            let mut waiting = self.waiting.borrow_mut();
            match waiting.iter_mut().find(|(id, _)| *id == worker) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => waiting.push_back((worker, cx.waker().clone())),
            }
            Poll::Pending
        })
        .await
    }
}

/// A nanosecond-resolution sleep on the current monoio runtime.
pub struct Timer {
    fd: OwnedFd,
    ready: monoio::net::UnixStream,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        // Wake-ups are otherwise deferred by up to the thread's timer slack (50 us default).
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // The runtime only waits for readiness on the timerfd; reads go through `fd`.
        let watched = std::os::unix::net::UnixStream::from(fd.try_clone()?);
        let ready = monoio::net::UnixStream::from_std(watched)?;
        Ok(Timer { fd, ready })
    }

    /// Returns at `deadline` (or at once when it has passed).
    pub async fn sleep_until(&self, deadline: Instant) -> io::Result<()> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(());
        };
        let wait = wait.max(Duration::from_nanos(1));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: i64::from(wait.subsec_nanos()),
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        loop {
            self.ready.readable(false).await?;
            let mut expirations = [0u8; 8];
            match rustix::io::read(&self.fd, &mut expirations) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Yields to every other ready task and to the I/O poll. monoio re-runs a task that wakes
/// itself ahead of everything else, which would starve the workers while the pacer spins, so
/// the wake goes through a relay task: a wake from another task is queued at the back.
#[derive(Default)]
struct Relay {
    pacer: RefCell<Option<Waker>>,
    relay: RefCell<Option<Waker>>,
    done: Cell<bool>,
}

impl Relay {
    async fn run(self: Rc<Self>) {
        poll_fn(|cx| {
            if self.done.get() {
                return Poll::Ready(());
            }
            if let Some(w) = self.pacer.borrow_mut().take() {
                w.wake();
            }
            *self.relay.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    async fn yield_now(&self) {
        let mut yielded = false;
        poll_fn(|cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            match self.relay.borrow_mut().take() {
                Some(relay) => {
                    *self.pacer.borrow_mut() = Some(cx.waker().clone());
                    relay.wake();
                }
                // The relay has not run yet.
                None => cx.waker().wake_by_ref(),
            }
            Poll::Pending
        })
        .await
    }

    fn stop(&self) {
        self.done.set(true);
        if let Some(w) = self.relay.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Pushes `start + k / rate` for every k whose time falls before `end`, at that time, then
/// closes the queue.
///
/// A timer wake-up from an idle CPU takes tens of microseconds on a virtual machine, all of it
/// counted as latency. So the pacer wakes `spin` early and spends the rest yielding (other
/// tasks and I/O still run), at the cost of up to `spin` of CPU per scheduled request.
pub async fn pace(
    queue: &Queue,
    rate: f64,
    start: Instant,
    end: Instant,
    spin: Duration,
) -> io::Result<()> {
    let timer = Timer::new()?;
    let relay = Rc::new(Relay::default());
    monoio::spawn(relay.clone().run());
    let interval_ns = 1e9 / rate;
    let mut k: u64 = 0;
    loop {
        let next = start + Duration::from_nanos((k as f64 * interval_ns) as u64);
        if next >= end {
            break;
        }
        timer
            .sleep_until(next.checked_sub(spin).unwrap_or(next))
            .await?;
        while Instant::now() < next {
            relay.yield_now().await;
        }
        // Hand out everything due (more than one when the thread was busy).
        let now = Instant::now();
        loop {
            let t = start + Duration::from_nanos((k as f64 * interval_ns) as u64);
            if t > now || t >= end {
                break;
            }
            queue.push(t);
            k += 1;
        }
    }
    relay.stop();
    queue.close();
    Ok(())
}
