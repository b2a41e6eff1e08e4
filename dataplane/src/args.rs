//! Command-line flags of `zerohop`.

use std::path::PathBuf;
use std::time::Duration;

use crate::shard::IoDriver;

pub const HELP: &str = "\
zerohop: a thread-per-core service-mesh data plane configured as Envoy is

USAGE:
    zerohop                      run the embedded demo config (127.0.0.1:10000 -> demo upstream)
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
        --log-level LEVEL    error, warn, info, debug, trace [default: info; env RUST_LOG]
    -h, --help               print this help

SIGNALS:
    SIGTERM/SIGINT drain and exit 0; SIGHUP is passed to zerohop-control (reload the config file).
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
}

impl Args {
    pub fn parse() -> Result<Args, lexopt::Error> {
        use lexopt::prelude::*;
        let mut a = Args::default();
        let mut p = lexopt::Parser::from_env();
        while let Some(arg) = p.next()? {
            match arg {
                Short('c') | Long("config") => a.config = Some(p.value()?.into()),
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
                Long("log-level") => a.log_level = Some(p.value()?.string()?),
                Short('h') | Long("help") => {
                    print!("{HELP}");
                    std::process::exit(0);
                }
                _ => return Err(arg.unexpected()),
            }
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
