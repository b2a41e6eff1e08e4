//! `zerohop-control`: load config, publish it to the data plane, serve admin. See `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use zerohop_control::config::{self, Bootstrap, Format};
use zerohop_control::publish::{Applied, Publisher};
use zerohop_control::{admin, stats};
use zerohop_proto::shm::{Geometry, Segment};

const HELP: &str = "\
zerohop-control: compiles Envoy v3 config and publishes it to the zerohop data plane

USAGE:
    zerohop-control [OPTIONS] --shm PATH (-c FILE | --default-config)
    zerohop-control --check (-c FILE | --default-config)
    zerohop-control stats --shm PATH [--json | --prometheus]

OPTIONS:
    -c, --config FILE       Envoy v3 bootstrap, YAML or JSON (by extension; .json is JSON)
        --default-config    use the embedded demo config instead of a file
        --shm PATH          shared-memory segment to publish into (created if absent;
                            a restarted control re-attaches and continues its generations)
        --shm-slot-size N   bytes per snapshot slot when creating the segment [default: 67108864]
        --admin ADDR|off    admin listen address; overrides the bootstrap's admin.address
                            [default: the bootstrap's admin.address, else off]
        --check             validate the config, print a summary, and exit
        --log-level LEVEL   error, warn, info, debug or trace [default: info; env RUST_LOG]
    -h, --help              print this help

SIGNALS:
    SIGHUP reloads the config file and publishes it if valid; SIGTERM/SIGINT exit.
";

#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    default_config: bool,
    shm: Option<PathBuf>,
    slot_size: Option<u64>,
    admin: Option<String>,
    check: bool,
    log_level: Option<String>,
    stats: Option<&'static str>,
}

fn parse_args() -> anyhow::Result<Args> {
    use lexopt::prelude::*;
    let mut a = Args::default();
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Short('c') | Long("config") => a.config = Some(p.value()?.into()),
            Long("default-config") => a.default_config = true,
            Long("shm") => a.shm = Some(p.value()?.into()),
            Long("shm-slot-size") => a.slot_size = Some(p.value()?.parse()?),
            Long("admin") => a.admin = Some(p.value()?.string()?),
            Long("check") => a.check = true,
            Long("log-level") => a.log_level = Some(p.value()?.string()?),
            Long("json") if a.stats.is_some() => a.stats = Some("json"),
            Long("prometheus") if a.stats.is_some() => a.stats = Some("prometheus"),
            Value(v) if v == "stats" && a.stats.is_none() => a.stats = Some("text"),
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(a)
}

fn load(a: &Args) -> anyhow::Result<Bootstrap> {
    let result = match (&a.config, a.default_config) {
        (Some(path), false) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            config::load(&text, Format::from_path(path))
        }
        (None, true) => config::load(config::DEFAULT_CONFIG, Format::Yaml),
        _ => bail!("give exactly one of -c FILE or --default-config (see --help)"),
    };
    let source = a
        .config
        .as_ref()
        .map_or("<default config>".into(), |p| p.display().to_string());
    result.map_err(|e| anyhow::anyhow!("{source}: {e}"))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("zerohop-control: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let a = parse_args()?;
    let level = a
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    env_logger::Builder::new()
        .parse_filters(&level)
        .format_target(false)
        .init();

    if let Some(format) = a.stats {
        let shm = a.shm.as_ref().context("stats needs --shm PATH")?;
        let seg = Segment::open(shm)?;
        let shards = stats::read(&seg);
        match format {
            "json" => println!("{:#}", stats::json(&shards)),
            "prometheus" => print!("{}", stats::prometheus(&shards)),
            _ => print!("{}", stats::text(&shards)),
        }
        return Ok(());
    }

    let boot = load(&a)?;
    if a.check {
        let s = &boot.snapshot;
        println!(
            "ok: {} listeners, {} clusters",
            s.listeners.len(),
            s.clusters.len()
        );
        return Ok(());
    }

    let shm = a
        .shm
        .clone()
        .context("--shm PATH is required (see --help)")?;
    let mut geometry = Geometry::default();
    if let Some(n) = a.slot_size {
        geometry.slot_size = n;
    }
    let publisher = Publisher::create_or_attach(&shm, geometry)?;
    let state: admin::Shared = Arc::new(Mutex::new(admin::State::default()));
    publish(&publisher, &state, boot.clone())?;

    let admin_addr = match a.admin.as_deref() {
        Some("off") => None,
        Some(s) => Some(
            s.parse::<SocketAddr>()
                .with_context(|| format!("--admin {s}"))?,
        ),
        None => boot.admin_address,
    };
    if let Some(addr) = admin_addr {
        let seg = Arc::new(Segment::open(&shm)?);
        let bound = admin::spawn(addr, seg, state.clone())
            .with_context(|| format!("admin listener {addr}"))?;
        log::info!("admin listening on http://{bound}");
    }

    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => match load(&a) {
                Ok(boot) => publish(&publisher, &state, boot)?,
                Err(e) => log::error!("reload refused, previous config stays in force: {e:#}"),
            },
            _ => break,
        }
    }
    log::info!(
        "exiting; generation {} stays published in {}",
        publisher.segment().current_generation(),
        shm.display()
    );
    Ok(())
}

fn publish(publisher: &Publisher, state: &admin::Shared, boot: Bootstrap) -> anyhow::Result<()> {
    let generation = publisher.publish(&boot.snapshot, Duration::from_secs(5))?;
    let s = &boot.snapshot;
    log::info!(
        "published generation {generation}: {} listeners, {} clusters, {} endpoints",
        s.listeners.len(),
        s.clusters.len(),
        s.clusters.iter().map(|c| c.endpoints.len()).sum::<usize>()
    );
    {
        let mut st = state.lock().expect("admin state lock");
        st.snapshot = boot.snapshot;
        st.generation = generation;
        st.node_id = boot.node_id;
    }
    match publisher.wait_applied(generation, Duration::from_secs(10)) {
        Applied::All(took) => {
            log::info!("generation {generation} applied by all shards in {took:?}")
        }
        Applied::NoDataPlane => log::info!(
            "no data plane attached yet; it will read generation {generation} when it starts"
        ),
        Applied::TimedOut { acked, shards } => {
            log::warn!(
                "generation {generation} applied by {acked}/{shards} shards after {:?}",
                publisher.since_publish()
            )
        }
    }
    Ok(())
}
