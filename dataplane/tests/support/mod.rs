//! Test support: runs the real `zerohop` (which starts the real `zerohop-control`) on a
//! config written to a temp file, with listeners on 127.0.0.1 port 0, and reads its
//! per-shard counters from the shared-memory segment.
#![allow(dead_code)] // Reason: each test binary uses a different part of this module.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use zerohop_proto::shm::Segment;
use zerohop_proto::stats::Counter;

pub mod admin;
pub mod dns;
pub mod envoy;
pub mod http;
pub mod sds;
pub mod tls;
pub mod traffic;
pub mod xds;

/// Asserts that zerohop's transcript of a run equals Envoy's, printing the lines that
/// differ first.
pub fn same(what: &str, z: &[String], e: &[String]) {
    for (zl, el) in z.iter().zip(e) {
        if zl != el {
            eprintln!("differ:\n  zerohop {zl}\n  envoy   {el}");
        }
    }
    assert_eq!(z, e, "zerohop and Envoy differ: {what}");
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Whether `python` runs `check` (its imports). When it does not, a test that needs it
/// fails under ZEROHOP_REQUIRE_PEERS (CI) and is skipped otherwise; `what` names what the
/// Python must have.
pub fn python_has(python: &std::path::Path, check: &str, what: &str) -> bool {
    let ok = std::process::Command::new(python)
        .args(["-c", check])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("ZEROHOP_REQUIRE_PEERS").is_none(),
            "{} with {what} is required here (ZEROHOP_REQUIRE_PEERS)",
            python.display()
        );
        eprintln!(
            "no Python with {what} at {}: test skipped",
            python.display()
        );
    }
    ok
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zerohop"))
}

pub fn control_bin() -> PathBuf {
    let p = bin().with_file_name("zerohop-control");
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

/// A name no other test process has used: the pid, this process's start time and a
/// counter. The pid alone is not enough: CI runs the suite twice (as root, then as an
/// unprivileged user), and a reused pid met the first pass's root-owned directory.
pub fn unique(prefix: &str) -> String {
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    });
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{start:x}-{n}", std::process::id())
}

/// A fresh directory of this test's own, and `name` in it.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("zerohop-test"));
    std::fs::create_dir(&dir).unwrap();
    dir.join(name)
}

#[derive(Clone, Debug)]
pub struct Opts {
    /// Extra flags for zerohop.
    pub args: Vec<String>,
    /// Serve an existing segment (`--attach`) instead of starting control on a config.
    pub attach: Option<PathBuf>,
    /// Use this segment path (the caller removes it) instead of a fresh one.
    pub shm: Option<PathBuf>,
    pub shards: usize,
    pub driver: &'static str,
    pub memlock_zero: bool,
    pub drain_timeout: &'static str,
    /// The bootstrap's file name (its extension chooses YAML or JSON) [default: bootstrap.yaml].
    pub config_name: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            args: Vec::new(),
            attach: None,
            shm: None,
            shards: 1,
            driver: "auto",
            memlock_zero: false,
            drain_timeout: "5",
            config_name: None,
        }
    }
}

/// A running zerohop (and its control child).
pub struct Proxy {
    child: Option<Child>,
    /// The bootstrap file zerohop runs (rewrite it to reload).
    pub config: PathBuf,
    pub listeners: HashMap<String, SocketAddr>,
    pub shm: PathBuf,
    owns_shm: bool,
    killed: bool,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

impl Proxy {
    pub fn start(yaml: &str) -> Proxy {
        Proxy::start_with(yaml, Opts::default())
    }

    pub fn start_with(yaml: &str, opts: Opts) -> Proxy {
        let cfg = scratch(opts.config_name.as_deref().unwrap_or("bootstrap.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let shm = opts
            .attach
            .clone()
            .or(opts.shm.clone())
            .unwrap_or_else(|| PathBuf::from(format!("/dev/shm/{}", unique("zerohop-test"))));
        let mut cmd = if opts.memlock_zero {
            let mut c = Command::new("prlimit");
            c.arg("--memlock=0:0").arg("--").arg(bin());
            c
        } else {
            Command::new(bin())
        };
        if opts.attach.is_some() {
            cmd.arg("--attach");
        } else {
            cmd.arg("-c").arg(&cfg);
        }
        cmd.arg("--shm")
            .arg(&shm)
            .args([
                "--shards",
                &opts.shards.to_string(),
                "--io-driver",
                opts.driver,
            ])
            .args(["--drain-timeout", opts.drain_timeout, "--log-level", "info"])
            .arg("--control-bin")
            .arg(control_bin())
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn zerohop");
        let (log, lines) = capture(child.stderr.take().unwrap());
        let owns_shm = opts.attach.is_none() && opts.shm.is_none();
        let mut proxy = Proxy {
            child: Some(child),
            config: cfg,
            owns_shm,
            killed: false,
            listeners: HashMap::new(),
            shm,
            log,
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = proxy
                .next_line(deadline)
                .unwrap_or_else(|| panic!("zerohop did not start:\n{}", proxy.log()));
            if let Some(rest) = line.split("listener ").nth(1) {
                if let Some((name, addr)) = rest.split_once(" listening on ") {
                    proxy
                        .listeners
                        .insert(name.to_owned(), addr.trim().parse().unwrap());
                }
            }
            if line.contains("zerohop serving generation") {
                return proxy;
            }
        }
    }

    /// Rewrites the bootstrap; control notices the change by itself.
    pub fn rewrite_config(&self, yaml: &str) {
        let tmp = self.config.with_extension("new");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Waits for a `listener NAME listening on ADDR` line and returns the address.
    pub fn wait_listener(&self, name: &str, timeout: Duration) -> SocketAddr {
        let needle = format!("listener {name} listening on ");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().rev().find(|l| l.contains(&needle)) {
                return line.split(&needle).nth(1).unwrap().trim().parse().unwrap();
            }
            assert!(
                self.next_line(deadline).is_some(),
                "no {name} listener:\n{}",
                self.log()
            );
        }
    }

    fn next_line(&self, deadline: Instant) -> Option<String> {
        self.lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }

    /// Waits until a log line containing `needle` appears.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if self.log().contains(needle) {
            return true;
        }
        while let Some(line) = self.next_line(deadline) {
            if line.contains(needle) {
                return true;
            }
        }
        false
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener}: {:?}", self.listeners))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `[shard][counter]`.
    pub fn counters(&self) -> Vec<Vec<u64>> {
        Segment::open(&self.shm)
            .expect("open segment")
            .read_counters()
    }

    pub fn total(&self, c: Counter) -> u64 {
        self.counters().iter().map(|s| s[c.index()]).sum()
    }

    /// Polls until counter `c` reaches `want` (counters trail the sockets by a moment).
    pub fn wait_counter(&self, c: Counter, want: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.total(c);
            if v >= want || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then waits for exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(20))
            .expect("zerohop exits after SIGTERM")
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.killed = true;
        }
        if self.owns_shm {
            let _ = std::fs::remove_file(&self.shm);
        }
        // Killed, it could not remove its upgrade socket itself.
        if self.owns_shm || self.killed {
            let _ = std::fs::remove_file(format!("{}.upgrade", self.shm.display()));
        }
    }
}

/// A zerohop-control run on its own (for `zerohop --attach`).
pub struct Control {
    child: Child,
    pub shm: PathBuf,
    pub config: PathBuf,
}

impl Control {
    pub fn start(yaml: &str, args: &[&str]) -> Control {
        let config = scratch("control.yaml");
        std::fs::write(&config, yaml).unwrap();
        let shm = PathBuf::from(format!("/dev/shm/{}", unique("zerohop-ctl")));
        let child = Control::spawn(&config, &shm, args);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Segment::open(&shm)
            .map(|s| s.current_generation())
            .unwrap_or(0)
            == 0
        {
            assert!(Instant::now() < deadline, "control did not publish");
            std::thread::sleep(Duration::from_millis(10));
        }
        Control { child, shm, config }
    }

    fn spawn(config: &std::path::Path, shm: &std::path::Path, args: &[&str]) -> Child {
        Command::new(control_bin())
            .arg("-c")
            .arg(config)
            .arg("--shm")
            .arg(shm)
            .args(["--admin", "off"])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// SIGKILL, then a new control on the same config and segment path (as a service
    /// manager restarting it would).
    pub fn kill_and_restart(&mut self, before_restart: impl FnOnce()) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        before_restart();
        self.child = Control::spawn(&self.config, &self.shm, &[]);
    }

    pub fn segment(&self) -> Segment {
        Segment::open(&self.shm).unwrap()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.shm);
    }
}

fn capture(
    stderr: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let l2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("ZEROHOP_TEST_LOG").is_some() {
                eprintln!("[zerohop] {line}");
            }
            l2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (log, rx)
}

/// An Envoy bootstrap with one tcp_proxy listener `front` (port 0) to cluster `backend`.
pub fn tcp_proxy_config(
    endpoints: &[SocketAddr],
    tcp_extra: &str,
    connect_timeout: &str,
) -> String {
    tcp_proxy_listeners(&["front"], endpoints, tcp_extra, connect_timeout)
}

/// An Envoy bootstrap with a tcp_proxy listener per name (port 0, stat_prefix = name), all
/// to cluster `backend`; `tcp_extra` is appended to each tcp_proxy config.
pub fn tcp_proxy_listeners(
    names: &[&str],
    endpoints: &[SocketAddr],
    tcp_extra: &str,
    connect_timeout: &str,
) -> String {
    let listeners: String = names
        .iter()
        .map(|name| {
            format!(
                r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {name}
          cluster: backend
{tcp_extra}
"#
            )
        })
        .collect();
    let eps: String = endpoints
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: \"{}\", port_value: {} }} }} }}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        r#"static_resources:
  listeners:
{listeners}  clusters:
  - name: backend
    connect_timeout: {connect_timeout}
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
{eps}"#
    )
}

/// True once connecting to `addr` is refused (its listener closed), polling until `timeout`.
pub fn refused_within(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

// === upstream peers ===

/// A thread-per-connection upstream running `handler` on each accepted stream.
pub fn upstream(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let h = handler.clone();
            std::thread::spawn(move || h(s));
        }
    });
    addr
}

/// An echo upstream on its own monoio runtime: cheap enough for thousands of connections.
pub fn echo_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async move {
            use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
            l.set_nonblocking(true).unwrap(); // the legacy driver needs it (see shard::main)
            let l = monoio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                monoio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let (r, b) = s.read(buf).await;
                        buf = b;
                        let n = match r {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let (r, b) = s.write_all(buf.slice(0..n)).await;
                        buf = b.into_inner();
                        if r.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    addr
}

use monoio::buf::IoBuf;

/// A 127.0.0.1 port with nothing listening on it.
pub fn refused_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// === deterministic bulk data ===

pub const BLOCK: usize = 64 * 1024;

/// Block `i` of a deterministic pseudo-random stream.
pub fn block(seed: u64, i: u64, out: &mut [u8; BLOCK]) {
    let mut x = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
}

/// Writes `blocks` blocks of the stream `seed` and returns its CRC-32.
pub fn send_stream(s: &mut TcpStream, seed: u64, blocks: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut buf = Box::new([0u8; BLOCK]);
    for i in 0..blocks {
        block(seed, i, &mut buf);
        h.update(&buf[..]);
        s.write_all(&buf[..]).unwrap();
    }
    h.finalize()
}

/// Reads to EOF; returns (bytes, CRC-32).
pub fn drain_stream(s: &mut TcpStream) -> (u64, u32) {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            return (total, h.finalize());
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
}

pub fn half_close(s: &TcpStream) {
    s.shutdown(Shutdown::Write).unwrap();
}
