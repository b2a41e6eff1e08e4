//! Where log lines go: files (opened for append, shared by every logger naming the same
//! path, as Envoy's access log manager shares them), standard output and standard error.
//! Reopened on SIGUSR1 so that logrotate can move a file away, as Envoy does.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sink {
    File(PathBuf),
    Stdout,
    Stderr,
}

impl Sink {
    /// `envoy.access_loggers.file`'s `path` (`/dev/stdout` and `/dev/stderr` as Envoy's).
    pub fn file(path: &str) -> Sink {
        match path {
            "/dev/stdout" => Sink::Stdout,
            "/dev/stderr" => Sink::Stderr,
            p => Sink::File(PathBuf::from(p)),
        }
    }

    /// Checks that the file can be opened for append (created if missing), as Envoy checks
    /// it when it loads the configuration.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Sink::File(p) => open(p)
                .map(drop)
                .map_err(|e| format!("{}: {e}", p.display())),
            Sink::Stdout | Sink::Stderr => Ok(()),
        }
    }
}

fn open(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

/// The open files, and what failed.
#[derive(Debug, Default)]
pub struct Writers {
    files: HashMap<PathBuf, File>,
    pub write_failed: u64,
}

impl Writers {
    /// Writes `bytes` to `sink` (one call per batch of lines).
    pub fn write(&mut self, sink: &Sink, bytes: &[u8]) {
        let result = match sink {
            Sink::Stdout => std::io::stdout().lock().write_all(bytes),
            Sink::Stderr => std::io::stderr().lock().write_all(bytes),
            Sink::File(p) => {
                if !self.files.contains_key(p) {
                    match open(p) {
                        Ok(f) => {
                            self.files.insert(p.clone(), f);
                        }
                        Err(e) => {
                            self.failed(p, &e);
                            return;
                        }
                    }
                }
                let f = self.files.get_mut(p).expect("opened above");
                f.write_all(bytes)
            }
        };
        if let Err(e) = result {
            let name = match sink {
                Sink::File(p) => p.clone(),
                Sink::Stdout => "/dev/stdout".into(),
                Sink::Stderr => "/dev/stderr".into(),
            };
            self.failed(&name, &e);
        }
    }

    fn failed(&mut self, p: &Path, e: &std::io::Error) {
        if self.write_failed.is_power_of_two() || self.write_failed == 0 {
            log::warn!("access log {}: {e}; lines are lost", p.display());
        }
        self.write_failed += 1;
    }

    /// Closes every file: the next line opens its path again (SIGUSR1).
    pub fn reopen(&mut self) {
        self.files.clear();
    }
}
