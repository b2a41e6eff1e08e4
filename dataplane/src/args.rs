//! Command-line flags of `zerohop`.

use std::path::PathBuf;
use std::time::Duration;

use crate::shard::IoDriver;

pub const HELP: &str = "\
zerohop: a thread-per-core service-mesh data plane configured as Envoy is

USAGE:
    zerohop                      run the embedded demo config: a TCP proxy on 127.0.0.1:10000 and
                                 an HTTP/1.1 proxy on 127.0.0.1:10080, both to a demo upstream on
                                 127.0.0.1:10001; admin on 127.0.0.1:9901
    zerohop -c FILE [OPTIONS]    run an Envoy v3 bootstrap (YAML or JSON)
    zerohop --attach --shm PATH  serve what a separately run zerohop-control publishes

OPTIONS:
    -c, --config FILE        Envoy v3 bootstrap; zerohop starts and supervises zerohop-control on it
        --shm PATH           shared-memory segment [default: /dev/shm/zerohop-<pid>, removed at exit]
        --attach             do not start zerohop-control; attach to the segment at --shm
        --upgrade            take the listening sockets of the zerohop serving --shm PATH (a
                             binary upgrade); once this process serves, that one drains and exits
        --shards N           shards (threads, one per CPU) [default: the CPUs this process may use]
        --drain-timeout SECS on SIGTERM/SIGINT, how long open connections may finish [default: 30]
        --io-driver DRIVER   auto (io_uring, epoll if a ring can't be set up), uring, epoll [default: auto]
        --control-bin PATH   the zerohop-control executable [default: next to zerohop, else $PATH]
        --shm-slot-size N    passed to zerohop-control: bytes per snapshot slot
        --snapshot-cache PATH
                             passed to zerohop-control: keep the last good snapshot there and
                             start from it when the config cannot be used
    -l, --log-level LEVEL    trace, debug, info, warn(ing), error, critical, off [default: info;
                             env RUST_LOG]
        --admin ADDR|off     passed to zerohop-control: the admin listen address
        --version            print the version and exit
    -h, --help               print this help

ENVOY'S FLAGS (so that a wrapper that runs `envoy` runs zerohop when `envoy` links to it):
    -c, --config-path FILE   = --config
        --config-yaml YAML   merged over the file (or the whole bootstrap without -c), as
                             Envoy merges it; repeatable
        --mode serve|validate
                             validate: check the config as zerohop-control --check does,
                             print \"configuration 'FILE' OK\" and exit (1 when refused)
        --concurrency N      = --shards
        --drain-time-s SECS  = --drain-timeout
        --service-node ID, --service-cluster NAME
                             node.id and node.cluster over the bootstrap's
        --component-log-level COMPONENT:LEVEL,...
                             levels of Envoy's components that have a counterpart here:
                             admin, config, connection, dns, http, http1, main, misc,
                             router, upstream (any other is refused by name)
        --base-id N          the shared-memory segment is /dev/shm/zerohop-base-N (unless --shm)
        --log-format FMT     accepted; zerohop's lines are always
                             `[TIMESTAMP LEVEL] message`, on standard error
        --disable-hot-restart, --parent-shutdown-time-s SECS
                             accepted: zerohop has no Envoy hot restart (its binary upgrade is
                             --upgrade, where the old process drains for its --drain-time-s)

SIGNALS:
    SIGTERM/SIGINT drain and exit 0; SIGHUP is passed to zerohop-control (reload the config file),
    and SIGUSR1 too (reopen the access log files, for log rotation).
";

#[derive(Debug, Default)]
pub struct Args {
    pub config: Option<PathBuf>,
    pub shm: Option<PathBuf>,
    pub attach: bool,
    pub upgrade: bool,
    pub shards: Option<usize>,
    pub drain_timeout: Option<Duration>,
    pub io_driver: Option<IoDriver>,
    pub control_bin: Option<PathBuf>,
    pub slot_size: Option<u64>,
    pub snapshot_cache: Option<PathBuf>,
    pub log_level: Option<String>,
    pub admin: Option<String>,
    /// `--config-yaml` overlays, in order.
    pub config_yaml: Vec<String>,
    /// `--mode validate`.
    pub validate: bool,
    pub service_node: Option<String>,
    pub service_cluster: Option<String>,
    /// `--component-log-level`, as log filter directives (`module=level`).
    pub component_filters: Vec<String>,
    pub base_id: Option<u32>,
    /// The segment is this process's own (named by --base-id): removed at exit.
    pub owns_shm: bool,
    /// `--log-format`: accepted, not applied (see --help).
    pub log_format: Option<String>,
}

/// Envoy's log components that have a counterpart here, and the modules they name.
const COMPONENTS: &[(&str, &[&str])] = &[
    ("admin", &["zerohop_control::admin"]),
    (
        "config",
        &[
            "zerohop::config",
            "zerohop::app::generations",
            "zerohop_control::config",
            "zerohop_control::xds",
        ],
    ),
    ("connection", &["zerohop::conn", "zerohop::net"]),
    ("dns", &["zerohop_control::dns"]),
    ("http", &["zerohop::http"]),
    ("http1", &["zerohop::http1"]),
    ("main", &["zerohop::app", "zerohop_control"]),
    ("misc", &["zerohop::shard"]),
    ("router", &["zerohop::router", "zerohop::route"]),
    ("upstream", &["zerohop::upstream"]),
];

/// Envoy's level names in env_logger's terms.
fn level(name: &str) -> Result<&'static str, String> {
    Ok(match name {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        other => {
            return Err(format!(
                "unknown log level {other:?} (trace, debug, info, warning, error, critical, off)"
            ))
        }
    })
}

impl Args {
    /// The log filter for both processes: the level (or RUST_LOG), then the components'.
    pub fn log_filter(&self) -> String {
        let mut f = self
            .log_level
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".into());
        for c in &self.component_filters {
            f.push(',');
            f.push_str(c);
        }
        f
    }
}

impl Args {
    pub fn parse() -> Result<Args, lexopt::Error> {
        use lexopt::prelude::*;
        let mut a = Args::default();
        let mut p = lexopt::Parser::from_env();
        while let Some(arg) = p.next()? {
            match arg {
                Short('c') | Long("config") | Long("config-path") => {
                    a.config = Some(p.value()?.into())
                }
                Long("config-yaml") => a.config_yaml.push(p.value()?.string()?),
                Long("mode") => {
                    a.validate = match p.value()?.string()?.as_str() {
                        "validate" => true,
                        "serve" => false,
                        other => {
                            return Err(format!(
                                "--mode {other}: zerohop has serve and validate (not init_only)"
                            )
                            .into())
                        }
                    }
                }
                Long("concurrency") => a.shards = Some(p.value()?.parse()?),
                Long("drain-time-s") => {
                    a.drain_timeout = Some(Duration::from_secs_f64(p.value()?.parse()?))
                }
                Long("service-node") => a.service_node = Some(p.value()?.string()?),
                Long("service-cluster") => a.service_cluster = Some(p.value()?.string()?),
                Long("component-log-level") => {
                    for item in p.value()?.string()?.split(',') {
                        let (name, lvl) = item.split_once(':').ok_or_else(|| {
                            format!("--component-log-level {item:?}: expected COMPONENT:LEVEL")
                        })?;
                        let lvl = level(lvl)?;
                        let Some((_, modules)) = COMPONENTS.iter().find(|(c, _)| *c == name)
                        else {
                            let known: Vec<&str> = COMPONENTS.iter().map(|(c, _)| *c).collect();
                            return Err(format!(
                                "--component-log-level: component {name:?} has no counterpart in zerohop (it has: {})",
                                known.join(", ")
                            )
                            .into());
                        };
                        a.component_filters
                            .extend(modules.iter().map(|m| format!("{m}={lvl}")));
                    }
                }
                Long("base-id") => {
                    let id: u32 = p.value()?.parse()?;
                    a.base_id = Some(id);
                }
                Long("log-format") => a.log_format = Some(p.value()?.string()?),
                Long("disable-hot-restart") => {}
                Long("parent-shutdown-time-s") => {
                    let _: f64 = p.value()?.parse()?;
                }
                Long("admin") => a.admin = Some(p.value()?.string()?),
                Long("version") => {
                    println!("zerohop version {}", env!("CARGO_PKG_VERSION"));
                    std::process::exit(0);
                }
                Long("shm") => a.shm = Some(p.value()?.into()),
                Long("attach") => a.attach = true,
                Long("upgrade") => a.upgrade = true,
                Long("shards") => a.shards = Some(p.value()?.parse()?),
                Long("drain-timeout") => {
                    a.drain_timeout = Some(Duration::from_secs_f64(p.value()?.parse()?))
                }
                Long("io-driver") => {
                    a.io_driver = Some(match p.value()?.string()?.as_str() {
                        "auto" => IoDriver::Auto,
                        "uring" => IoDriver::Uring,
                        "epoll" => IoDriver::Epoll,
                        other => {
                            return Err(format!(
                                "--io-driver {other}: expected auto, uring or epoll"
                            )
                            .into())
                        }
                    })
                }
                Long("control-bin") => a.control_bin = Some(p.value()?.into()),
                Long("shm-slot-size") => a.slot_size = Some(p.value()?.parse()?),
                Long("snapshot-cache") => a.snapshot_cache = Some(p.value()?.into()),
                Short('l') | Long("log-level") => {
                    a.log_level = Some(level(&p.value()?.string()?)?.to_owned())
                }
                Short('h') | Long("help") => {
                    print!("{HELP}");
                    std::process::exit(0);
                }
                Long(flag) => {
                    return Err(format!(
                        "unknown flag --{flag}: neither a zerohop flag nor an Envoy flag zerohop takes (see --help)"
                    )
                    .into())
                }
                _ => return Err(arg.unexpected()),
            }
        }
        if let (Some(id), None) = (a.base_id, &a.shm) {
            a.shm = Some(PathBuf::from(format!("/dev/shm/zerohop-base-{id}")));
            a.owns_shm = true;
        }
        if a.attach && (a.config.is_some() || a.shm.is_none()) {
            return Err("--attach takes --shm PATH and no -c (control runs separately)".into());
        }
        if a.upgrade && a.shm.is_none() {
            return Err(
                "--upgrade takes --shm PATH: the segment of the zerohop to take over from".into(),
            );
        }
        Ok(a)
    }
}
