//! The things being measured: a direct connection, zerohop, HAProxy.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Zerohop,
    /// HAProxy in TCP mode, one thread; `splice` adds `option splice-auto`.
    Haproxy {
        splice: bool,
    },
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Zerohop => "zerohop",
            Kind::Haproxy { splice: false } => "haproxy",
            Kind::Haproxy { splice: true } => "haproxy+splice",
        }
    }
}

/// A running target in front of one upstream.
#[derive(Debug)]
pub struct Target {
    pub front: SocketAddr,
    /// The proxy process whose CPU and memory are measured (None for direct).
    pub pid: Option<u32>,
    child: Option<Child>,
    files: Vec<PathBuf>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the proxy for {addr} exited: {status}");
        }
        assert!(Instant::now() < deadline, "{addr} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `kind` in front of `upstream`, with the proxy on `proxy_cpu`.
pub fn start(
    kind: Kind,
    upstream: SocketAddr,
    zerohop: &std::path::Path,
    extra: &[String],
    proxy_cpu: usize,
) -> Target {
    if kind == Kind::Direct {
        return Target {
            front: upstream,
            pid: None,
            child: None,
            files: vec![],
        };
    }
    let port = free_port();
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let tag = format!("{}-{}-{port}", kind.name(), std::process::id());
    let cfg = std::env::temp_dir().join(format!("zerohop-bench-{tag}.cfg"));
    let mut files = vec![cfg.clone()];
    let mut cmd = match kind {
        Kind::Zerohop => {
            std::fs::write(&cfg, crate::config::yaml(1, 1, front, upstream, 0)).unwrap();
            let shm = PathBuf::from(format!("/dev/shm/zerohop-bench-{tag}"));
            files.push(shm.clone());
            let mut c = Command::new(zerohop);
            // One shard; zerohop pins it to the first CPU it may use, set here by taskset.
            c.args(["--shards", "1", "--log-level", "warn", "-c"])
                .arg(&cfg)
                .arg("--shm")
                .arg(&shm)
                .args(extra);
            with_cpu(c, proxy_cpu)
        }
        Kind::Haproxy { splice } => {
            std::fs::write(&cfg, haproxy_config(port, upstream, splice)).unwrap();
            let mut c = Command::new("haproxy");
            c.arg("-db").arg("-f").arg(&cfg);
            with_cpu(c, proxy_cpu)
        }
        Kind::Direct => unreachable!(),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", kind.name()));
    wait_listening(front, &mut child);
    let pid = child.id();
    // taskset execs the proxy in place, so the child's pid is the proxy's.
    Target {
        front,
        pid: Some(pid),
        child: Some(child),
        files,
    }
}

fn with_cpu(c: Command, cpu: usize) -> Command {
    let mut t = Command::new("taskset");
    t.arg("-c")
        .arg(cpu.to_string())
        .arg(c.get_program())
        .args(c.get_args());
    t
}

fn haproxy_config(port: u16, upstream: SocketAddr, splice: bool) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 4000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n{}\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n\nbackend b\n  server s1 {upstream}\n",
        if splice { "  option splice-auto\n" } else { "" }
    )
}
