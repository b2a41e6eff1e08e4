//! Starting and supervising `zerohop-control` when zerohop is run with a config file.
//!
//! The control process is a child that dies with us (PR_SET_PDEATHSIG) but not we with it:
//! if it exits after the first generation was published, the shards keep serving the last
//! snapshot and it is restarted with backoff; the new one re-attaches to the segment and
//! continues the generation sequence (the segment file is restored first if it was removed
//! or damaged meanwhile: see `app::keeper`). If it exits before publishing anything, the config
//! was refused (it printed why) and zerohop exits too.
//!
//! Priority: control runs at background priority (nice 19 with a 100 us slice, see
//! `sys::background_priority`): it never starves, and a waking shard gets the CPU from it
//! within ~100 us.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::net::sys;

#[derive(Debug)]
pub struct Supervisor {
    pid: Arc<AtomicU32>,
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the supervisor runs: `zerohop-control <config args> --shm PATH`.
#[derive(Clone, Debug)]
pub struct ControlCommand {
    pub bin: PathBuf,
    /// `-c FILE` or `--default-config`, plus pass-through flags.
    pub args: Vec<String>,
    pub shm: PathBuf,
    /// The segment is this process's own: removed when a failed start ends it.
    pub owns_shm: bool,
}

/// Finds zerohop-control next to our own executable, else on $PATH.
pub fn default_bin() -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("zerohop-control")));
    match sibling {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("zerohop-control"),
    }
}

impl Supervisor {
    /// Starts control. `before_restart` is asked each time control has exited: it returns
    /// whether a generation is being served (if not, the config was refused and zerohop
    /// exits), after making sure the segment is in place for the next control.
    pub fn start(
        cmd: ControlCommand,
        before_restart: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<Supervisor> {
        let child = spawn(&cmd)?;
        let pid = Arc::new(AtomicU32::new(child.id()));
        let stopping = Arc::new(AtomicBool::new(false));
        let (pid2, stopping2) = (pid.clone(), stopping.clone());
        let thread = std::thread::Builder::new().name("control-supervisor".into()).spawn(move || {
            let mut child = Some(child);
            let mut backoff = Duration::from_millis(250);
            loop {
                if let Some(mut c) = child.take() {
                    let status = c.wait();
                    if stopping2.load(Ordering::SeqCst) {
                        return;
                    }
                    let status = match &status {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    };
                    if !before_restart() {
                        log::error!("zerohop-control exited ({status}) before publishing a config; exiting");
                        if cmd.owns_shm {
                            let _ = std::fs::remove_file(&cmd.shm);
                        }
                        std::process::exit(1);
                    }
                    log::warn!("zerohop-control exited ({status}); serving the last snapshot, restarting it in {backoff:?}");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                if stopping2.load(Ordering::SeqCst) {
                    return;
                }
                match spawn(&cmd) {
                    Ok(c) => {
                        pid2.store(c.id(), Ordering::SeqCst);
                        child = Some(c);
                    }
                    Err(e) => log::error!("restarting zerohop-control: {e}"),
                }
            }
        })?;
        Ok(Supervisor {
            pid,
            stopping,
            thread: Some(thread),
        })
    }

    pub fn signal(&self, sig: libc::c_int) {
        let _ = sys::kill(self.pid.load(Ordering::SeqCst), sig);
    }

    /// Stops control (SIGTERM) and waits for it.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.signal(libc::SIGTERM);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spawn(cmd: &ControlCommand) -> std::io::Result<std::process::Child> {
    let mut c = Command::new(&cmd.bin);
    c.args(&cmd.args)
        .arg("--shm")
        .arg(&cmd.shm)
        .stdin(Stdio::null());
    // Its own process group: a terminal's Ctrl-C reaches zerohop, which then stops control.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    sys::spawn_tied_to_parent(&mut c).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("starting {}: {e} (see --control-bin)", display(&cmd.bin)),
        )
    })
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
