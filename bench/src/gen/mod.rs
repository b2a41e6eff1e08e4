//! The open-loop load generator (the wrk2 / Nighthawk model).
//!
//! Each generator thread is pinned to a CPU and runs its own runtime, like a zerohop shard.
//! A pacer hands out intended send times at the thread's share of the rate; idle workers (one
//! per connection, or one per h2 stream) take them. Latency runs from the *intended* send time
//! to the end of the response, so a stall in the target — or in the generator — shows up as
//! latency for every request scheduled during it, instead of delaying the schedule and
//! hiding (coordinated omission). The wait between intended and actual send is recorded as
//! well: when it grows, the connections (or this generator) are the limit.
//!
//! Once a second every thread sends its interval histograms to the calling thread, which
//! merges them, drives the progress display and writes the HdrHistogram interval log.

pub mod client;
mod pace;
pub mod report;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use client::Proto;
use client::{H2Slot, Http1Conn, Request, TcpConn};

/// Why an exchange did not produce a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    Connect,
    Write,
    Read,
    /// The peer closed the connection before the whole response arrived.
    Closed,
    /// No response within `--timeout`.
    Timeout,
    /// A response the generator could not parse (or an h2 protocol error).
    Protocol,
    /// Still queued when the run ended: neither the target nor this generator kept up.
    Unsent,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Write => "write",
            Failure::Read => "read",
            Failure::Closed => "closed",
            Failure::Timeout => "timeout",
            Failure::Protocol => "protocol",
            Failure::Unsent => "unsent",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// HTTP `Host` / `:authority` (default: the address).
    pub authority: Option<String>,
    pub path: String,
    /// Requests per second, all threads together. 0: closed loop (each connection sends its
    /// next request as soon as the previous one completes, as wrk does), for throughput.
    pub rate: f64,
    pub connections: usize,
    /// h2c: concurrent streams per connection.
    pub streams: usize,
    pub threads: usize,
    /// CPUs for the generator threads, in order (empty: not pinned).
    pub cpus: Vec<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    pub size: usize,
    pub timeout: Duration,
    /// How early the pacer wakes, to send on time (see `pace::pace`).
    pub spin: Duration,
    /// HTTP/1.1: extra request headers (e.g. `accept-encoding`).
    pub headers: Vec<(String, String)>,
}

/// How early the pacer wakes by default (see `pace::pace`).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

impl Spec {
    /// A run against `addr` with the defaults of `zerohop-bench load`: 10 connections, one
    /// thread (not pinned), 10 s after 2 s of warm-up, `GET /` (64 B each way for tcp), 10 s
    /// request timeout, 50 us early wake-up; `rate` is required.
    pub fn new(proto: Proto, addr: SocketAddr, rate: f64) -> Spec {
        Spec {
            proto,
            addr,
            authority: None,
            path: "/".into(),
            rate,
            connections: 10,
            streams: 10,
            threads: 1,
            cpus: Vec::new(),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            size: if proto == Proto::Tcp { 64 } else { 0 },
            timeout: Duration::from_secs(10),
            spin: DEFAULT_SPIN,
            headers: Vec::new(),
        }
    }
}

/// A second (or the last part of one) of one thread's results.
struct Interval {
    /// The generator thread it came from (recycled intervals go back to it).
    thread: usize,
    index: usize,
    warmup: bool,
    latency: Histogram<u64>,
    wait: Histogram<u64>,
    ok: u64,
    /// Completions (any outcome) inside the measured window, for the achieved rate.
    completed_in_window: u64,
    statuses: BTreeMap<u16, u64>,
    failures: BTreeMap<Failure, u64>,
    /// The thread's CPU seconds for the whole run (sent with its last interval).
    cpu_seconds: f64,
}

pub fn histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds")
}

impl Interval {
    fn new(index: usize, warmup: bool) -> Interval {
        Interval {
            thread: 0,
            index,
            warmup,
            latency: histogram(),
            wait: histogram(),
            ok: 0,
            completed_in_window: 0,
            statuses: BTreeMap::new(),
            failures: BTreeMap::new(),
            cpu_seconds: 0.0,
        }
    }

    /// Empties it for reuse. The histograms are ~300 KB each: allocating (and faulting in)
    /// fresh ones every second on a generator thread stalled it for a few hundred
    /// microseconds, which showed up at p99.9. They are cleared on the calling thread instead
    /// and handed back.
    fn reset(&mut self) {
        self.latency.reset();
        self.wait.reset();
        self.ok = 0;
        self.completed_in_window = 0;
        self.statuses.clear();
        self.failures.clear();
        self.cpu_seconds = 0.0;
        self.warmup = false;
    }
}

/// One generator thread's shared state.
struct Thread {
    req: Request,
    queue: pace::Queue,
    closed_loop: bool,
    timeout: Duration,
    /// Intended send times before this are warm-up.
    measure_from: Instant,
    end: Instant,
    current: RefCell<Interval>,
}

impl Thread {
    /// The next request's intended send time: from the schedule, or now in closed loop.
    async fn next(&self, worker: usize) -> Option<Instant> {
        if self.closed_loop {
            let now = Instant::now();
            return (now < self.end).then_some(now);
        }
        self.queue.pop(worker).await
    }

    fn done(&self, intended: Instant, sent: Instant, outcome: Result<u16, Failure>) {
        let now = Instant::now();
        let mut cur = self.current.borrow_mut();
        if now >= self.measure_from && now <= self.end {
            cur.completed_in_window += 1;
        }
        if intended < self.measure_from {
            return;
        }
        match outcome {
            Ok(status) => {
                cur.ok += 1;
                let ns = now.duration_since(intended).as_nanos() as u64;
                cur.latency.saturating_record(ns.max(1));
                let waited = sent.duration_since(intended).as_nanos() as u64;
                cur.wait.saturating_record(waited.max(1));
                if status != 0 {
                    *cur.statuses.entry(status).or_default() += 1;
                }
            }
            Err(f) => *cur.failures.entry(f).or_default() += 1,
        }
    }
}

/// The merged result of a run.
pub struct Outcome {
    pub spec: Spec,
    pub latency: Histogram<u64>,
    pub wait: Histogram<u64>,
    pub ok: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub failures: BTreeMap<Failure, u64>,
    pub achieved_rate: f64,
    /// The generator threads' CPU use over the run, in cores (1.0 = one core busy).
    pub generator_cpu: f64,
    /// Merged per-second histograms (measured window only), for the interval log.
    pub intervals: Vec<Histogram<u64>>,
}

/// Runs `spec`; `progress` is called once per second with the merged interval.
pub fn run(spec: &Spec, mut progress: impl FnMut(&Progress)) -> Outcome {
    let threads = spec.threads.max(1);
    let (tx, rx) = mpsc::channel::<Interval>();
    let started = Instant::now();
    let start = started + Duration::from_millis(200);
    let mut recyclers = Vec::with_capacity(threads);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let tx = tx.clone();
            let spec = spec.clone();
            let (give, take) = mpsc::channel::<Interval>();
            let _ = give.send(Interval::new(0, false)); // one spare to start with
            recyclers.push(give);
            std::thread::Builder::new()
                .name(format!("gen-{i}"))
                .spawn(move || thread_main(&spec, i, start, tx, take))
                .expect("spawn generator thread")
        })
        .collect();
    drop(tx);

    let mut pending: BTreeMap<usize, (usize, Interval)> = BTreeMap::new();
    let mut out = Outcome {
        spec: spec.clone(),
        latency: histogram(),
        wait: histogram(),
        ok: 0,
        statuses: BTreeMap::new(),
        failures: BTreeMap::new(),
        achieved_rate: 0.0,
        generator_cpu: 0.0,
        intervals: Vec::new(),
    };
    let mut cpu_seconds = 0.0;
    let mut completed_in_window = 0;
    let mut merge = |out: &mut Outcome, iv: Interval| {
        completed_in_window += iv.completed_in_window;
        if iv.warmup {
            return;
        }
        out.latency.add(&iv.latency).expect("same bounds");
        out.wait.add(&iv.wait).expect("same bounds");
        out.ok += iv.ok;
        for (s, n) in &iv.statuses {
            *out.statuses.entry(*s).or_default() += n;
        }
        for (f, n) in &iv.failures {
            *out.failures.entry(*f).or_default() += n;
        }
        out.intervals.push(iv.latency.clone());
    };
    for mut iv in rx {
        let index = iv.index;
        let slot = pending
            .entry(index)
            .or_insert_with(|| (0, Interval::new(index, iv.warmup)));
        slot.0 += 1;
        let m = &mut slot.1;
        m.latency.add(&iv.latency).expect("same bounds");
        m.wait.add(&iv.wait).expect("same bounds");
        m.ok += iv.ok;
        m.completed_in_window += iv.completed_in_window;
        cpu_seconds += iv.cpu_seconds;
        for (s, n) in std::mem::take(&mut iv.statuses) {
            *m.statuses.entry(s).or_default() += n;
        }
        for (f, n) in std::mem::take(&mut iv.failures) {
            *m.failures.entry(f).or_default() += n;
        }
        let back = iv.thread;
        iv.reset();
        let _ = recyclers[back].send(iv);
        // Every thread has reported this second: it is final.
        while let Some(entry) = pending.first_entry() {
            if entry.get().0 < threads {
                break;
            }
            let (_, merged) = entry.remove();
            progress(&Progress {
                second: merged.index + 1,
                warmup: merged.warmup,
                ok: merged.ok,
                failed: merged.failures.values().sum(),
                p99_ns: merged.latency.value_at_quantile(0.99),
            });
            merge(&mut out, merged);
        }
    }
    // Intervals a thread never completed (it failed): merge what arrived.
    for (_, (_, merged)) in std::mem::take(&mut pending) {
        merge(&mut out, merged);
    }
    for h in handles {
        if h.join().is_err() {
            eprintln!("zerohop-bench: a generator thread panicked");
        }
    }
    out.achieved_rate = completed_in_window as f64 / spec.duration.as_secs_f64();
    out.generator_cpu = cpu_seconds / started.elapsed().as_secs_f64();
    out
}

/// What the progress display shows each second.
pub struct Progress {
    pub second: usize,
    pub warmup: bool,
    pub ok: u64,
    pub failed: u64,
    pub p99_ns: u64,
}

fn thread_main(
    spec: &Spec,
    i: usize,
    start: Instant,
    tx: mpsc::Sender<Interval>,
    recycled: mpsc::Receiver<Interval>,
) {
    let cpu_at_start = crate::procstat::thread_cpu_seconds();
    if let Some(&cpu) = spec.cpus.get(i % spec.cpus.len().max(1)) {
        crate::load::pin(Some(core_affinity::CoreId { id: cpu }));
    }
    let threads = spec.threads.max(1);
    // This thread's share of connections (at least one) and of the rate.
    let conns = (spec.connections / threads + usize::from(i < spec.connections % threads)).max(1);
    let rate = spec.rate / threads as f64;
    let authority = spec
        .authority
        .clone()
        .unwrap_or_else(|| spec.addr.to_string());
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let th = Rc::new(Thread {
        req: Request::new(
            spec.proto,
            spec.addr,
            authority,
            spec.path.clone(),
            spec.size,
            &spec.headers,
        ),
        queue: pace::Queue::default(),
        closed_loop: spec.rate <= 0.0,
        timeout: spec.timeout,
        measure_from,
        end,
        current: RefCell::new(Interval::new(0, false)),
    });
    let mut rt = crate::load::runtime();
    let proto = spec.proto;
    let streams = spec.streams.max(1);
    let spin = spec.spin;
    rt.block_on(async move {
        let mut workers = Vec::new();
        let slots: Vec<Rc<H2Slot>> = (0..conns)
            .map(|_| Rc::new(H2Slot::new(streams == 1)))
            .collect();
        let n_workers = if proto == Proto::H2c {
            conns * streams
        } else {
            conns
        };
        for w in 0..n_workers {
            let th = th.clone();
            let slot = slots[w % conns].clone();
            workers.push(monoio::spawn(async move {
                match proto {
                    Proto::Tcp => tcp_worker(&th, w).await,
                    Proto::Http1
                    | Proto::Http1Close
                    | Proto::Https
                    | Proto::HttpsFull
                    | Proto::HttpsResumed => http1_worker(&th, w, proto).await,
                    Proto::H2c => h2_worker(&th, w, &slot).await,
                }
            }));
        }
        monoio::spawn(ticks(th.clone(), i, start, tx.clone(), recycled));
        if th.closed_loop {
            monoio::time::sleep(end.saturating_duration_since(Instant::now())).await;
        } else if let Err(e) = pace::pace(&th.queue, rate, start, end, spin).await {
            eprintln!("zerohop-bench: pacer: {e}");
            th.queue.close();
        }
        // Let in-flight requests finish, up to the request timeout.
        let drain = async {
            for w in workers {
                w.await;
            }
        };
        let _ = monoio::time::timeout(th.timeout, drain).await;
        let unsent = th.queue.discard() as u64;
        let mut last = th.current.replace(Interval::new(0, false));
        last.thread = i;
        if unsent > 0 {
            *last.failures.entry(Failure::Unsent).or_default() += unsent;
        }
        let seconds = end.duration_since(start).as_secs_f64().ceil() as usize;
        last.index = seconds.saturating_sub(1).max(last.index);
        last.warmup = false;
        last.cpu_seconds = crate::procstat::thread_cpu_seconds() - cpu_at_start;
        let _ = tx.send(last);
    });
}

/// Sends the thread's interval every second, on the second.
async fn ticks(
    th: Rc<Thread>,
    thread: usize,
    start: Instant,
    tx: mpsc::Sender<Interval>,
    recycled: mpsc::Receiver<Interval>,
) {
    let Ok(timer) = pace::Timer::new() else {
        return;
    };
    let total = th.end.duration_since(start).as_secs_f64().ceil() as usize;
    for index in 0..total.saturating_sub(1) {
        let at = start + Duration::from_secs(index as u64 + 1);
        if timer.sleep_until(at).await.is_err() {
            return;
        }
        let mut next = recycled
            .try_recv()
            .unwrap_or_else(|_| Interval::new(0, false));
        next.index = index + 1;
        let mut iv = th.current.replace(next);
        iv.thread = thread;
        iv.warmup = at <= th.measure_from;
        if tx.send(iv).is_err() {
            return;
        }
    }
}

async fn with_timeout<T>(
    th: &Thread,
    f: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    monoio::time::timeout(th.timeout, f)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

async fn tcp_worker(th: &Thread, id: usize) {
    let mut conn: Option<TcpConn> = None;
    while let Some(intended) = th.next(id).await {
        let sent = Instant::now();
        let r = with_timeout(th, async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(TcpConn::open(&th.req).await?),
            };
            c.exchange().await
        })
        .await;
        if r.is_err() {
            conn = None;
        }
        th.done(intended, sent, r);
    }
}

async fn http1_worker(th: &Thread, id: usize, proto: Proto) {
    let mut conn: Option<Http1Conn> = None;
    while let Some(intended) = th.next(id).await {
        let sent = Instant::now();
        let r = with_timeout(th, async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(Http1Conn::open(&th.req, proto).await?),
            };
            c.exchange().await
        })
        .await;
        let status = match r {
            Ok((status, reuse)) => {
                if !reuse || proto.closes() {
                    conn = None;
                }
                Ok(status)
            }
            Err(f) => {
                conn = None;
                Err(f)
            }
        };
        th.done(intended, sent, status);
    }
}

async fn h2_worker(th: &Thread, id: usize, slot: &Rc<H2Slot>) {
    while let Some(intended) = th.next(id).await {
        let sent = Instant::now();
        let r = with_timeout(th, slot.exchange(&th.req)).await;
        if matches!(r, Err(Failure::Connect | Failure::Read | Failure::Protocol)) {
            slot.reset();
        }
        th.done(intended, sent, r);
    }
}
