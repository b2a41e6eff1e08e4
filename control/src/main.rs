//! `zerohop-control`: load config, publish it to the data plane, serve admin. See `--help`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use zerohop_control::config::{self, Bootstrap, Format};
use zerohop_control::dns::Discovery;
use zerohop_control::health::Checker;
use zerohop_control::publish::{Applied, Publisher};
use zerohop_control::source::{self, SnapshotCache};
use zerohop_control::stats::scopes::Scopes;
use zerohop_control::{admin, stats};
use zerohop_proto::shm::{Geometry, ReadOutcome, Segment};
use zerohop_proto::{codec, Snapshot};

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
        --snapshot-cache PATH
                            keep the last published snapshot in PATH, and start from it when
                            the config cannot be read or is invalid at start-up
        --no-watch          do not watch the config file for changes (SIGHUP still reloads)
        --config-yaml YAML  merged over the file (or the whole bootstrap without -c), as Envoy
                            merges it: mappings key by key, lists appended; repeatable
        --service-node ID   node.id, over the bootstrap's (Envoy's flag)
        --service-cluster NAME
                            node.cluster, over the bootstrap's (Envoy's flag)
        --check             validate the config, print a summary, and exit
        --log-level LEVEL   error, warn, info, debug or trace [default: info; env RUST_LOG]
    -h, --help              print this help

DNS CLUSTERS:
    STRICT_DNS and LOGICAL_DNS clusters are resolved here (never by the data plane), each
    target every dns_refresh_rate (or at the answer's TTL with respect_dns_ttl); a changed
    answer is published as the next generation. The first publish waits up to 10 s for
    their first answers. A failing resolver keeps the last endpoints (update_failure).

RELOADS:
    The config file is watched (polled every 200 ms) and SIGHUP reloads it; a valid change is
    published as the next generation, an invalid one is logged with the field at fault and
    nothing is published. SIGTERM/SIGINT exit; the data plane keeps serving.

START-UP WHEN THE CONFIG CANNOT BE USED:
    1. the --snapshot-cache file, if valid; else 2. the generation already in the segment
    (a restarted control); else exit 1.
";

#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    default_config: bool,
    shm: Option<PathBuf>,
    slot_size: Option<u64>,
    admin: Option<String>,
    snapshot_cache: Option<PathBuf>,
    no_watch: bool,
    check: bool,
    log_level: Option<String>,
    stats: Option<&'static str>,
    /// `--config-yaml`, in order, then the `--service-node` / `--service-cluster` overlay.
    overlays: Vec<String>,
    service_node: Option<String>,
    service_cluster: Option<String>,
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
            Long("snapshot-cache") => a.snapshot_cache = Some(p.value()?.into()),
            Long("no-watch") => a.no_watch = true,
            Long("check") => a.check = true,
            Long("log-level") => a.log_level = Some(p.value()?.string()?),
            Long("config-yaml") => a.overlays.push(p.value()?.string()?),
            Long("service-node") => a.service_node = Some(p.value()?.string()?),
            Long("service-cluster") => a.service_cluster = Some(p.value()?.string()?),
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
    a.overlays.extend(config::overlay::node_overlay(
        a.service_node.as_deref(),
        a.service_cluster.as_deref(),
    ));
    Ok(a)
}

fn load(a: &Args) -> anyhow::Result<Bootstrap> {
    let (text, format) = match (&a.config, a.default_config) {
        (Some(path), false) => (
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            Format::from_path(path),
        ),
        (None, true) => (config::DEFAULT_CONFIG.to_owned(), Format::Yaml),
        (None, false) if !a.overlays.is_empty() => (String::new(), Format::Yaml),
        _ => bail!("give exactly one of -c FILE or --default-config (see --help)"),
    };
    let result = match a.overlays.is_empty() {
        true => config::load(&text, format),
        false => config::overlay::merge(&text, format, &a.overlays)
            .and_then(|json| config::load(&json, Format::Json)),
    };
    let source = a
        .config
        .as_ref()
        .map_or("<default config>".into(), |p| p.display().to_string());
    result.map_err(|e| anyhow::anyhow!("{source}: {e}"))
}

/// Set once control serves (not `--check` or `stats`): its fatal error is then a log line,
/// with a timestamp and level like every other.
static SERVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() {
    if let Err(e) = run() {
        match SERVING.load(std::sync::atomic::Ordering::Relaxed) {
            true => log::error!("zerohop-control: error: {e:#}"),
            false => eprintln!("zerohop-control: error: {e:#}"),
        }
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
        // The scopes are those of the snapshot the segment serves.
        let snap = match seg.read_current(0) {
            ReadOutcome::New { bytes, .. } => codec::decode(&bytes).unwrap_or_default(),
            _ => Snapshot::default(),
        };
        let (facts, sel) = (
            stats::Facts::default(),
            stats::Select::parse(&[]).expect("no parameters"),
        );
        match format {
            "json" => println!("{:#}", stats::json(&seg, &snap, &facts, &sel)),
            "prometheus" => print!("{}", stats::prometheus(&seg, &snap, &facts, &sel)),
            _ => print!("{}", stats::text(&seg, &snap, &facts, &sel)),
        }
        return Ok(());
    }

    if a.check {
        let boot = load(&a)?;
        let s = &boot.snapshot;
        let dns = match boot.dns.len() {
            0 => String::new(),
            n => format!(" ({n} by DNS, resolved when serving)"),
        };
        match &boot.dynamic {
            None => println!(
                "ok: {} listeners, {} clusters{dns}",
                s.listeners.len(),
                s.clusters.len()
            ),
            Some(d) => println!(
                "ok: {} static listeners, {} static clusters{dns}; {}",
                s.listeners.len(),
                s.clusters.len(),
                match &d.ads {
                    Some(ads) => format!("ADS ({:?}) at {:?}", ads.api, ads.target),
                    None => "secrets by SDS".into(),
                }
            ),
        }
        return Ok(());
    }

    let shm = a
        .shm
        .clone()
        .context("--shm PATH is required (see --help)")?;
    SERVING.store(true, std::sync::atomic::Ordering::Relaxed);
    // The access-log writer first, at normal priority; then this thread, and every thread
    // it starts, at background priority (config work must not hold a CPU a shard wants).
    let access_log = zerohop_control::accesslog::start()?;
    if let Err(e) = zerohop_proto::shm::background_priority(0) {
        log::debug!("background priority: {e}");
    }
    // Registered before anything is published: a SIGHUP sent as soon as the first
    // generation appears must reload, not take SIGHUP's default action (exit).
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM, SIGUSR1])?;
    let mut geometry = Geometry::default();
    if let Some(n) = a.slot_size {
        geometry.slot_size = n;
    }
    let publisher = Arc::new(Publisher::create_or_attach(&shm, geometry)?);
    publisher.watch_header()?;
    // Access-log records from the shards' rings, formatted and written off the data path.
    let _ = access_log.send(publisher.clone());
    let cache = a.snapshot_cache.clone().map(|path| SnapshotCache { path });
    let state: admin::Shared = Arc::new(Mutex::new(admin::State {
        started_at: Some(std::time::SystemTime::now()),
        ..Default::default()
    }));

    // Reloads come from the file watcher and SIGHUP, new answers from DNS discovery; all
    // land in the loop below, one at a time.
    let (events, rx) = std::sync::mpsc::channel::<Event>();
    let dns_events = events.clone();
    // `/runtime_modify`: the configuration compiled again with the admin layer's values.
    let (runtime_tx, runtime_rx) = std::sync::mpsc::channel::<()>();
    state.lock().expect("admin state lock").runtime_changed = Some(runtime_tx);
    let runtime_events = events.clone();
    std::thread::Builder::new()
        .name("runtime".into())
        .spawn(move || {
            for () in runtime_rx {
                if runtime_events.send(Event::Reload).is_err() {
                    return;
                }
            }
        })?;
    let discovery = Arc::new(Discovery::new(move || {
        let _ = dns_events.send(Event::Dns);
    })?);
    state.lock().expect("admin state lock").dns = Some(discovery.clone());
    let out = Arc::new(Out {
        publisher: publisher.clone(),
        state: state.clone(),
        cache,
        dns: discovery.clone(),
        health: Checker::new(publisher.clone())?,
        scopes: Mutex::new(served_scopes(publisher.segment())),
        gate: Mutex::new(()),
    });

    let mut dynamic = false;
    // Stamped before the first read: a change made while control starts is not missed.
    let initial_stamp = a.config.as_deref().and_then(source::stamp);
    // The admin listener is bound before anything is published: a port in use stops the
    // start here, with the data plane told the config could not be served (no restart loop).
    let loaded = load(&a);
    let (admin_addr, admin_source) = match a.admin.as_deref() {
        Some("off") => (None, ""),
        Some(s) => (
            Some(
                s.parse::<SocketAddr>()
                    .with_context(|| format!("--admin {s}"))?,
            ),
            "--admin",
        ),
        None => (
            loaded.as_ref().ok().and_then(|b| b.admin_address),
            "admin.address",
        ),
    };
    if let Some(addr) = admin_addr {
        let seg = Arc::new(Segment::open(&shm)?);
        let bound = admin::spawn(addr, seg, state.clone()).with_context(|| {
            format!("{admin_source} {addr}: the admin listener cannot be bound")
        })?;
        log::info!("admin listening on http://{bound}");
    }
    match loaded {
        Ok(boot) => {
            state.lock().expect("admin state lock").loaded(&boot);
            discovery.set(&boot.dns, DNS_WARM_LIMIT);
            match boot.dynamic {
                Some(d) => {
                    dynamic = true;
                    start_xds(d, boot.dns.clone(), &out)?;
                }
                None => out.publish(boot.snapshot, false)?,
            }
        }
        Err(e) => start_without_config(&out, e)?,
    }

    if dynamic {
        log::info!(
            "dynamic_resources or SDS: the bootstrap is read once, as Envoy reads it; configuration changes come from xDS"
        );
    } else if let (Some(path), false) = (a.config.clone(), a.no_watch) {
        let tx = events.clone();
        source::watch(path, initial_stamp, move || tx.send(Event::Reload).is_ok())?;
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGUSR1 {
                    // Access log files are reopened before the next write (logrotate).
                    zerohop_control::accesslog::REOPEN
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                if events.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    while let Ok(first) = rx.recv() {
        // Coalesce: one change is often seen twice (watcher and SIGHUP), and a burst of
        // changes needs only one reload. A pending SIGTERM/SIGINT wins.
        let (mut reload, mut dns) = (false, false);
        for event in std::iter::once(first).chain(rx.try_iter()) {
            match event {
                Event::Reload | Event::Signal(SIGHUP) => reload = true,
                Event::Dns => dns = true,
                Event::Signal(_) => {
                    reload = false;
                    dns = false;
                    break;
                }
            }
        }
        if !reload && !dns {
            break;
        }
        if reload && dynamic {
            log::info!("SIGHUP: ignored, the configuration comes from xDS");
        } else if reload {
            // Admin-layer changes made before this load are compiled in by it.
            let ticket = state.lock().expect("admin state lock").runtime_ticket;
            let result = load(&a);
            let done = |state: &admin::Shared| {
                let mut st = state.lock().expect("admin state lock");
                st.runtime_done = st.runtime_done.max(ticket);
            };
            match result {
                Ok(mut boot) => {
                    discovery.set(&boot.dns, DNS_WARM_LIMIT);
                    let mut snapshot = std::mem::take(&mut boot.snapshot);
                    let boot_meta = boot;
                    discovery.fill(&mut snapshot);
                    out.assign_health_slots(&mut snapshot);
                    if unchanged(&publisher, &state, &snapshot) {
                        log::info!("config unchanged; nothing to publish")
                    } else {
                        out.publish(snapshot, false)?;
                    }
                    state.lock().expect("admin state lock").loaded(&boot_meta);
                }
                Err(e) => log::error!("reload refused, previous config stays in force: {e:#}"),
            }
            done(&state);
            continue;
        }
        if dns {
            out.refresh_dns()?;
        }
    }
    log::info!(
        "exiting; generation {} stays published in {}",
        publisher.segment().current_generation(),
        shm.display()
    );
    Ok(())
}

/// True when `snapshot` is the one already in force (a file touched, or one change seen
/// both by the watcher and by a SIGHUP): publishing it again would only churn.
fn unchanged(publisher: &Publisher, state: &admin::Shared, snapshot: &Snapshot) -> bool {
    let st = state.lock().expect("admin state lock");
    st.generation == publisher.segment().current_generation() && st.snapshot == *snapshot
}

/// The config cannot be used at start-up: serve the snapshot cache if there is one, else
/// keep the generation a previous control left in the segment (admin then only on
/// `--admin`).
fn start_without_config(out: &Out, error: anyhow::Error) -> anyhow::Result<()> {
    if let Some(cache) = &out.cache {
        match cache.load() {
            Ok(snapshot) => {
                log::warn!(
                    "{error:#}; starting from the last good snapshot in {}",
                    cache.path.display()
                );
                out.publish_uncached(snapshot)?;
                return Ok(());
            }
            Err(e) => log::warn!("snapshot cache unusable: {e}"),
        }
    }
    let seg = out.publisher.segment();
    if let ReadOutcome::New { generation, bytes } = seg.read_current(0) {
        if let Ok(snapshot) = codec::decode(&bytes) {
            log::error!("{error:#}; generation {generation} already in the segment stays in force");
            let mut st = out.state.lock().expect("admin state lock");
            st.snapshot = snapshot;
            st.generation = generation;
            return Ok(());
        }
    }
    Err(error)
}

/// Runs the ADS client on its own thread; it publishes every snapshot its responses produce.
fn start_xds(
    d: config::Dynamic,
    static_dns: Vec<config::DnsCluster>,
    out: &Arc<Out>,
) -> anyhow::Result<()> {
    match &d.ads {
        Some(ads) => log::info!(
            "ADS ({:?}) at {:?} (cluster {:?}); the first configuration is published once it is complete{}",
            ads.api,
            ads.target,
            ads.cluster_name,
            match ads.initial_fetch_timeout {
                Some(t) => format!(" or after initial_fetch_timeout {t:?}"),
                None => String::new(),
            }
        ),
        None => log::info!(
            "TLS contexts take secrets by SDS; the configuration is published once they have arrived"
        ),
    }
    let stats = Arc::new(Mutex::new(zerohop_control::xds::Stats::default()));
    out.state.lock().expect("admin state lock").xds = Some(stats.clone());
    let out = out.clone();
    // The bootstrap's DNS clusters and those CDS brought: resolved alike; a new one that
    // waits for warm holds the publish (and so the ACK) until its first answer, as Envoy
    // warms a cluster.
    let publish_fn: zerohop_control::xds::Publish = Arc::new(move |s, cds_dns| {
        let mut all = static_dns.clone();
        all.extend(cds_dns);
        out.dns.set(&all, DNS_WARM_LIMIT);
        out.publish(s, true)
    });
    std::thread::Builder::new()
        .name("xds".into())
        .spawn(move || {
            if let Err(e) = zerohop_control::xds::run(d, publish_fn, stats) {
                log::error!("ADS client stopped: {e:#}");
            }
        })?;
    Ok(())
}

/// How long the first publish (and a reload that adds DNS clusters) waits for new DNS
/// clusters' first answers before going ahead without their endpoints.
const DNS_WARM_LIMIT: Duration = Duration::from_secs(10);

/// What the control loop waits for.
enum Event {
    /// The config file changed.
    Reload,
    Signal(i32),
    /// A DNS cluster's endpoints changed.
    Dns,
}

/// Where snapshots go: the segment, admin's view and the snapshot cache, with DNS
/// clusters' endpoints filled in and health-checked hosts given their health slots. One
/// publish at a time (the ADS client's thread and DNS answers both publish).
struct Out {
    publisher: Arc<Publisher>,
    state: admin::Shared,
    cache: Option<SnapshotCache>,
    dns: Arc<Discovery>,
    health: Checker,
    /// Where each listener's, connection manager's and cluster's stats live.
    scopes: Mutex<Scopes>,
    gate: Mutex<()>,
}

/// The stat-space assignment a restarted control continues: the places the served
/// snapshot gives its names.
fn served_scopes(seg: &Segment) -> Scopes {
    let served = match seg.read_current(0) {
        ReadOutcome::New { bytes, .. } => codec::decode(&bytes).ok(),
        _ => None,
    };
    Scopes::new(
        seg.geometry().stat_words,
        served.as_ref(),
        seg.stat_words_used(),
    )
}

impl Out {
    /// Gives `snapshot`'s hosts already under health checking their slots, so that it
    /// compares equal to the one in force when nothing changed.
    fn assign_health_slots(&self, snapshot: &mut Snapshot) {
        self.health.fill_known(snapshot);
        self.assign_scopes(snapshot);
    }

    /// Gives `snapshot`'s listeners, connection managers and clusters their stat places.
    fn assign_scopes(&self, snapshot: &mut Snapshot) {
        self.scopes
            .lock()
            .expect("stat scopes lock")
            .assign(snapshot, self.publisher.segment());
    }

    /// Publishes `snapshot` with DNS clusters' latest endpoints (`served`: see
    /// [`publish_as`]).
    fn publish(&self, mut snapshot: Snapshot, served: bool) -> anyhow::Result<()> {
        let _one = self.gate.lock().expect("publish gate");
        self.dns.fill(&mut snapshot);
        publish_as(self, snapshot, served, true)
    }

    /// Publishes the snapshot-cache's snapshot (not written back to the cache).
    fn publish_uncached(&self, mut snapshot: Snapshot) -> anyhow::Result<()> {
        let _one = self.gate.lock().expect("publish gate");
        self.dns.fill(&mut snapshot);
        publish_as(self, snapshot, false, false)
    }

    /// DNS answers changed: the configuration in force again, with the new endpoints.
    fn refresh_dns(&self) -> anyhow::Result<()> {
        let _one = self.gate.lock().expect("publish gate");
        let mut snapshot = {
            let st = self.state.lock().expect("admin state lock");
            if st.generation == 0 {
                return Ok(()); // nothing published yet: the first publish fills them
            }
            st.snapshot.clone()
        };
        if !self.dns.fill(&mut snapshot) {
            return Ok(());
        }
        publish_as(self, snapshot, false, true)
    }
}

/// Publishes and waits for the shards; `served` also waits for a data plane that has not
/// attached yet (xDS: the ACK that follows must mean "serving"). The caller holds the gate.
/// Health-checked hosts get their slots first, and a cluster new to health checking warms:
/// the publish waits for its hosts' first checks, as Envoy's cluster initialization does.
fn publish_as(out: &Out, mut snapshot: Snapshot, served: bool, store: bool) -> anyhow::Result<()> {
    out.health.assign(&mut snapshot).wait();
    out.assign_scopes(&mut snapshot);
    let (publisher, state) = (&out.publisher, &out.state);
    let cache = out.cache.as_ref().filter(|_| store);
    let generation = publisher.publish(&snapshot, Duration::from_secs(5))?;
    if let Some(cache) = cache {
        if let Err(e) = cache.store(&snapshot) {
            log::warn!("snapshot cache {}: {e}", cache.path.display());
        }
    }
    let s = &snapshot;
    log::info!(
        "published generation {generation}: {} listeners, {} clusters, {} endpoints",
        s.listeners.len(),
        s.clusters.len(),
        s.clusters.iter().map(|c| c.endpoints.len()).sum::<usize>()
    );
    {
        let mut st = state.lock().expect("admin state lock");
        let prev = std::mem::take(&mut st.snapshot);
        st.changes.record(&prev, &snapshot);
        st.snapshot = snapshot;
        st.generation = generation;
    }
    let wait = Duration::from_secs(10);
    let applied = match served {
        true => publisher.wait_served(generation, wait),
        false => publisher.wait_applied(generation, wait),
    };
    match applied {
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
