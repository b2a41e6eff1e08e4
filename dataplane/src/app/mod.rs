//! Process start-up and shutdown: find the config (starting control if asked), attach to the
//! segment, bind the listeners (through the [`listeners`] manager, which then follows every
//! generation), start the shards, wait for signals, drain.

mod generations;
mod keeper;
mod listeners;
mod upgrade;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use zerohop_proto::shm::{ReadOutcome, Registration, Segment};
use zerohop_proto::{codec, Snapshot};

use crate::args::Args;
use crate::config::{Graveyard, Latest, Slots};
use crate::control::{self, ControlCommand, Supervisor};
use crate::net::sys;
use crate::shard::listeners::Mailbox;
use crate::shard::{self, IoDriver, DRAINING};
use generations::ConfigThread;
use keeper::Keeper;
use listeners::ListenerManager;

/// The demo upstream's address in the embedded default config.
const DEMO_UPSTREAM: &str = "127.0.0.1:10001";
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why zerohop could not start. Start-up errors only; once serving, nothing here is fatal.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

fn err(msg: impl Into<String>) -> StartError {
    StartError(msg.into())
}

/// What tells zerohop-control its config: the file (or the embedded demo), the
/// `--config-yaml` overlays and the node's `--service-node` / `--service-cluster`.
pub fn control_config_args(args: &Args) -> Vec<String> {
    let mut cargs = match &args.config {
        Some(path) => vec!["-c".to_owned(), path.display().to_string()],
        None if !args.config_yaml.is_empty() => Vec::new(),
        None => vec!["--default-config".to_owned()],
    };
    for y in &args.config_yaml {
        cargs.extend(["--config-yaml".to_owned(), y.clone()]);
    }
    if let Some(n) = &args.service_node {
        cargs.extend(["--service-node".to_owned(), n.clone()]);
    }
    if let Some(c) = &args.service_cluster {
        cargs.extend(["--service-cluster".to_owned(), c.clone()]);
    }
    cargs
}

/// `--mode validate`: zerohop-control checks the config; Envoy's line on success.
pub fn validate(args: &Args) -> i32 {
    let bin = args
        .control_bin
        .clone()
        .unwrap_or_else(control::default_bin);
    let status = std::process::Command::new(&bin)
        .arg("--check")
        .args(control_config_args(args))
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {
            let what = args
                .config
                .as_ref()
                .map_or("<--config-yaml>".into(), |p| p.display().to_string());
            println!("configuration '{what}' OK");
            0
        }
        Ok(_) => 1,
        Err(e) => {
            eprintln!("zerohop: {}: {e}", bin.display());
            1
        }
    }
}

pub fn run(args: Args) -> Result<(), StartError> {
    match sys::raise_nofile_limit() {
        Ok(n) => log::debug!("RLIMIT_NOFILE {n}"),
        Err(e) => log::warn!("could not raise RLIMIT_NOFILE: {e}"),
    }
    let demo = args.config.is_none() && args.config_yaml.is_empty() && !args.attach;
    let created_shm = args.shm.is_none() || args.owns_shm;
    let shm = args
        .shm
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/dev/shm/zerohop-{}", std::process::id())));

    // Set once a generation is served: from then on control may die and is restarted, with
    // the segment file restored first if it was removed or damaged.
    let kept: Arc<OnceLock<Arc<Keeper>>> = Arc::default();
    let supervisor = if args.attach {
        None
    } else {
        let mut cargs = control_config_args(&args);
        if let Some(n) = args.slot_size {
            cargs.extend(["--shm-slot-size".to_owned(), n.to_string()]);
        }
        if let Some(c) = &args.snapshot_cache {
            cargs.extend(["--snapshot-cache".to_owned(), c.display().to_string()]);
        }
        cargs.extend(["--log-level".to_owned(), args.log_filter()]);
        if let Some(a) = &args.admin {
            cargs.extend(["--admin".to_owned(), a.clone()]);
        }
        let bin = args
            .control_bin
            .clone()
            .unwrap_or_else(control::default_bin);
        let probe = shm.clone();
        let keeper = kept.clone();
        let before_restart = move || match keeper.get() {
            Some(k) => {
                k.ensure();
                true
            }
            // Control may have published while this process was still attaching.
            None => Segment::open(&probe)
                .map(|s| s.current_generation() > 0)
                .unwrap_or(false),
        };
        let cmd = ControlCommand {
            bin,
            args: cargs,
            shm: shm.clone(),
            owns_shm: created_shm,
        };
        Some(Supervisor::start(cmd, before_restart).map_err(|e| err(e.to_string()))?)
    };

    let result = serve(&args, &shm, demo, supervisor.as_ref(), &kept);
    if let Some(s) = supervisor {
        s.stop();
    }
    if created_shm {
        let _ = std::fs::remove_file(&shm);
    }
    result
}

fn serve(
    args: &Args,
    shm: &std::path::Path,
    demo: bool,
    supervisor: Option<&Supervisor>,
    kept: &OnceLock<Arc<Keeper>>,
) -> Result<(), StartError> {
    let (seg, snapshot, generation, bytes) = attach(shm)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let shards = args.shards.unwrap_or(cores.len().max(1));
    if shards == 0 || shards > seg.geometry().shard_capacity as usize {
        return Err(err(format!(
            "--shards must be 1..={}",
            seg.geometry().shard_capacity
        )));
    }
    let base = seg.register_dataplane(shards, std::process::id());
    let keeper = Arc::new(Keeper::new(
        seg,
        shm.to_owned(),
        Registration {
            pid: std::process::id(),
            base,
            shards,
        },
        (generation, bytes),
        crate::stats::ShardStats::new(crate::stats::Blocks::of(seg, base)),
    ));
    let _ = kept.set(keeper.clone());

    if demo {
        let addr: SocketAddr = DEMO_UPSTREAM.parse().expect("demo address");
        demo_upstream(addr)?;
    }

    // A binary upgrade: take the listening sockets of the zerohop serving this segment.
    let upgrade_path = upgrade::socket_path(shm);
    let (upgrade_conn, inherited) = if args.upgrade {
        let (conn, inherited) =
            upgrade::take_over(&upgrade_path).map_err(|e| err(format!("--upgrade: {e}")))?;
        log::info!("took over {} listeners", inherited.len());
        (Some(conn), inherited)
    } else {
        (None, Default::default())
    };

    // The first generation, built here before any shard runs; the config thread builds the
    // next ones. It, the mailboxes and the segment live as long as the process: shards
    // hold `&'static`.
    let mut slots = Slots::for_shards(shards);
    let first = slots
        .build(generation, snapshot)
        .map_err(|e| err(format!("generation {generation}: {e}")))?;
    let health_epoch = generations::sync_health(seg, &first, true);
    let latest: &'static Latest = Box::leak(Box::new(Latest::new(Arc::new(first))));
    let graveyard: &'static Graveyard = Box::leak(Box::default());
    let mailboxes: &'static [Mailbox] =
        Vec::leak((0..shards).map(|_| Mailbox::default()).collect());
    let manager = Arc::new(Mutex::new(ListenerManager::new(mailboxes, inherited)));
    let failed = manager
        .lock()
        .expect("listener manager")
        .apply(&latest.get());
    if !failed.is_empty() {
        return Err(err(format!(
            "could not bind listeners: {}",
            failed.join(", ")
        )));
    }

    let driver = args.io_driver.unwrap_or(IoDriver::Auto);
    let drain_timeout = args.drain_timeout.unwrap_or(Duration::from_secs(30));
    let mut threads = Vec::new();
    let mut wakers = Vec::new();
    for (id, mailbox) in mailboxes.iter().enumerate() {
        let wake = match std::os::unix::net::UnixDatagram::pair() {
            Ok((tx, rx)) => {
                let _ = tx.set_nonblocking(true);
                let _ = rx.set_nonblocking(true);
                wakers.push(tx);
                Some(rx)
            }
            Err(e) => {
                log::warn!(
                    "shard {id}: wake-up socket pair: {e}; it looks for generations at its tick"
                );
                None
            }
        };
        let spec = shard::Spec {
            id,
            core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
            seg,
            mailbox,
            line: base + id,
            latest,
            graveyard,
            driver,
            drain_timeout,
            wake,
        };
        let t = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || shard::run(spec))
            .map_err(|e| err(format!("starting shard {id}: {e}")))?;
        threads.push(t);
    }
    if let Some(conn) = upgrade_conn {
        // Our shards serve the same sockets now: the old process may drain and go.
        upgrade::ready(conn).map_err(|e| err(format!("--upgrade: {e}")))?;
    }
    upgrade::serve(&upgrade_path, manager.clone(), args.upgrade).map_err(|e| err(e.to_string()))?;
    let config_thread = ConfigThread {
        seg,
        latest,
        graveyard,
        manager: manager.clone(),
        slots,
        wake: generations::wake_socket(shm, base),
        shards: wakers,
        stats: crate::stats::ShardStats::new(crate::stats::Blocks::of(seg, base)),
        keeper,
        watch_control: supervisor.is_none(),
        shm: shm.to_owned(),
        line: base,
        last_read: generation,
        incarnation: seg.incarnation(),
        last_watch: Instant::now(),
        health_epoch,
    }
    .spawn()
    .map_err(|e| err(format!("config thread: {e}")))?;
    log::info!("zerohop serving generation {generation} on {shards} shards");

    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM, SIGUSR1])
        .map_err(|e| err(e.to_string()))?;
    for sig in signals.forever() {
        // SIGHUP reloads the config file, SIGUSR1 reopens the access logs: both control's.
        if sig == SIGHUP || sig == SIGUSR1 {
            match supervisor {
                Some(s) => s.signal(sig),
                None => log::info!("signal {sig}: control runs separately; send it there"),
            }
            continue;
        }
        log::info!("signal {sig}: draining for up to {drain_timeout:?}");
        break;
    }
    DRAINING.store(true, std::sync::atomic::Ordering::SeqCst);
    // Draining shards no longer apply generations: tell control not to wait for their acks.
    seg.clear_dataplane(std::process::id());
    manager.lock().expect("listener manager").release_sockets();
    for t in threads {
        let _ = t.join();
    }
    let _ = config_thread.join();
    upgrade::remove_socket(&upgrade_path);
    log::info!("drained; exiting");
    Ok(())
}

/// Waits for the segment and its first generation, then decodes it (to bind listeners).
/// Also returns the encoded snapshot (kept in case the segment must be re-created).
fn attach(shm: &std::path::Path) -> Result<(&'static Segment, Snapshot, u64, Vec<u8>), StartError> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    let mut last_error = String::from("no segment yet");
    while Instant::now() < deadline {
        match Segment::open(shm) {
            Ok(seg) => match seg.read_current(0) {
                ReadOutcome::New { generation, bytes } => {
                    let snapshot = codec::decode(&bytes).map_err(|e| {
                        err(format!("generation {generation} in {}: {e}", shm.display()))
                    })?;
                    // The mapping lives as long as the process: shards hold `&'static`.
                    return Ok((Box::leak(Box::new(seg)), snapshot, generation, bytes));
                }
                ReadOutcome::Corrupt { generation, reason } => {
                    return Err(err(format!(
                        "generation {generation} in {}: {reason}",
                        shm.display()
                    )))
                }
                _ => last_error = "nothing published yet".into(),
            },
            Err(e) => last_error = e.to_string(),
        }
        // Start-up only: a short poll, so that the first generation (under xDS, the moment
        // the first configuration is complete) is served without delay.
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(err(format!(
        "no configuration at {} after {ATTACH_TIMEOUT:?}: {last_error}",
        shm.display()
    )))
}

fn demo_upstream(addr: SocketAddr) -> Result<(), StartError> {
    crate::demo::spawn(addr).map_err(|e| err(format!("demo upstream on {addr}: {e}")))
}
