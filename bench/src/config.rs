//! `zerohop-bench config`: the live-configuration path, measured from the segment itself.
//!
//! - publish -> applied by every shard, for configs of 10, 1,000 and 10,000 clusters (10
//!   endpoints each: 100,000 at the top size), over many updates (SIGHUP to zerohop, which
//!   passes it to control; each update changes one endpoint weight). The latency is the
//!   segment's own record: the last shard's `applied_ns` minus `published_ns`, both
//!   CLOCK_MONOTONIC. Beside it, the event-loop time a shard spent taking each generation
//!   up (each shard records it in its ack line; the largest is reported).
//! - memory of both processes at each size, and the data plane's RSS after 100 swaps
//!   against its RSS after the first (is a retired snapshot's memory returned?).
//! - traffic under config churn: see `churn.rs`.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{gen, procstat};

/// A running `zerohop -c` on a generated config, with its segment.
pub struct Proxy {
    child: Child,
    pub config: PathBuf,
    pub shm: PathBuf,
    pub front: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.shm); // given with --shm, so zerohop leaves it
    }
}

impl Proxy {
    pub fn start(zerohop: &Path, yaml: &str, front: SocketAddr) -> Proxy {
        let tag = format!("{}-{}", std::process::id(), front.port());
        let config = std::env::temp_dir().join(format!("zerohop-bench-config-{tag}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let shm = PathBuf::from(format!("/dev/shm/zerohop-bench-config-{tag}"));
        let child = Command::new(zerohop)
            .arg("-c")
            .arg(&config)
            .arg("--shm")
            .arg(&shm)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start zerohop");
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(front).is_err() {
            assert!(Instant::now() < deadline, "zerohop did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy {
            child,
            config,
            shm,
            front,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn segment(&self) -> zerohop_proto::shm::Segment {
        zerohop_proto::shm::Segment::open(&self.shm).expect("segment")
    }

    /// The segment, if this bench can read its layout (another build's may differ).
    pub fn try_segment(&self) -> Option<zerohop_proto::shm::Segment> {
        zerohop_proto::shm::Segment::open(&self.shm).ok()
    }

    pub fn control_pid(&self) -> u32 {
        self.segment().control_pid()
    }

    /// Rewrites the config and sends SIGHUP; returns the publish->applied latency of the
    /// resulting generation and the longest time a shard's event loop spent taking it up.
    pub fn update(&self, yaml: &str) -> (Duration, Duration) {
        let seg = self.segment();
        let before = seg.current_generation();
        std::fs::write(&self.config, yaml).unwrap();
        let _ = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let g = seg.current_generation();
            if g > before && seg.all_applied(g) {
                let shards = 0..seg.active_shards();
                let last = shards
                    .clone()
                    .map(|s| seg.shard_ack(s).2)
                    .max()
                    .unwrap_or(0);
                let busy = shards
                    .map(|s| seg.shard_apply_busy_ns(s))
                    .max()
                    .unwrap_or(0);
                return (
                    Duration::from_nanos(last.saturating_sub(seg.published_ns())),
                    Duration::from_nanos(busy),
                );
            }
            assert!(Instant::now() < deadline, "update not applied");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// A bootstrap with `clusters` clusters of `eps` endpoints each; listener `front` routes to
/// cluster 0, whose endpoints are all `upstream`. `variant` changes one endpoint's weight.
pub fn yaml(
    clusters: usize,
    eps: usize,
    front: SocketAddr,
    upstream: SocketAddr,
    variant: usize,
) -> String {
    let mut y = String::with_capacity(clusters * (300 + eps * 110));
    y.push_str(&format!(
        "static_resources:\n  listeners:\n  - name: front\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: front\n          cluster: c0\n  clusters:\n",
        front.port()
    ));
    for c in 0..clusters {
        y.push_str(&format!(
            "  - name: c{c}\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: c{c}\n      endpoints:\n      - lb_endpoints:\n"
        ));
        for e in 0..eps {
            let (ip, port) = if c == 0 {
                (upstream.ip().to_string(), upstream.port())
            } else {
                (
                    format!("10.{}.{}.{}", (c >> 8) & 0xff, c & 0xff, e + 1),
                    8080,
                )
            };
            let weight = if c == variant % clusters && e == 0 {
                2 + variant % 7
            } else {
                1
            };
            y.push_str(&format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }}\n          load_balancing_weight: {weight}\n"
            ));
        }
    }
    y
}

/// Open-loop echo exchanges at `rate`/s over `conns` connections for `duration` (the load
/// generator's, latency from the intended send time); `each_second` runs once a second on the
/// calling thread. Returns the latency histogram, in nanoseconds.
pub fn open_loop(
    front: SocketAddr,
    rate: f64,
    conns: usize,
    duration: Duration,
    mut each_second: impl FnMut(),
) -> hdrhistogram::Histogram<u64> {
    let spec = gen::Spec {
        connections: conns,
        streams: 1,
        duration,
        warmup: Duration::from_secs(1),
        ..gen::Spec::new(gen::Proto::Tcp, front, rate)
    };
    gen::run(&spec, |_| each_second()).latency
}

pub fn rss_mib(pid: u32) -> f64 {
    procstat::rss_bytes(pid) as f64 / (1 << 20) as f64
}

/// A `zerohop --attach` on a segment this process publishes to in control's place: config
/// changes that cost the data plane what they cost it, and nothing of control's parsing.
pub struct Attached {
    child: Child,
    publisher: zerohop_control::publish::Publisher,
    shm: PathBuf,
    pub front: SocketAddr,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.shm);
    }
}

impl Attached {
    /// Publishes `yaml` (compiled here, as control would) and starts zerohop on the segment.
    /// `None` when that zerohop does not serve it (a build with another segment layout).
    pub fn start(zerohop: &Path, yaml: &str, front: SocketAddr) -> Option<Attached> {
        let shm = PathBuf::from(format!(
            "/dev/shm/zerohop-bench-attached-{}-{}",
            std::process::id(),
            front.port()
        ));
        let _ = std::fs::remove_file(&shm);
        let publisher = zerohop_control::publish::Publisher::create_or_attach(
            &shm,
            zerohop_proto::shm::Geometry::default(),
        )
        .expect("create segment");
        // The data plane attaches to a segment that holds a generation.
        publisher
            .publish_encoded(&encode(yaml), Duration::ZERO)
            .expect("publish");
        let mut attached = Attached {
            child: Command::new(zerohop)
                .args(["--attach", "--shm"])
                .arg(&shm)
                .args(["--log-level", "error"])
                .stdin(Stdio::null())
                .spawn()
                .expect("start zerohop"),
            publisher,
            shm,
            front,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(front).is_err() {
            if attached.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(attached)
    }

    pub fn generation(&self) -> u64 {
        self.publisher.segment().current_generation()
    }

    /// Every shard applied the current generation (waiting up to a second for it).
    pub fn all_applied(&self) -> bool {
        matches!(
            self.publisher
                .wait_applied(self.generation(), Duration::from_secs(1)),
            zerohop_control::publish::Applied::All(_)
        )
    }

    /// Publishes an encoded snapshot and wakes the data plane, as control does.
    pub fn publish(&self, bytes: &[u8]) {
        self.publisher
            .publish_encoded(bytes, Duration::from_secs(1))
            .expect("publish");
    }
}

/// `yaml` compiled and encoded as control publishes it.
pub fn encode(yaml: &str) -> Vec<u8> {
    let boot = zerohop_control::config::load(yaml, zerohop_control::config::Format::Yaml)
        .expect("a config control accepts");
    zerohop_proto::codec::encode(&boot.snapshot)
}
