//! The listener manager: the one place that binds listener sockets.
//!
//! It runs on its own thread, off the connection path. For every generation it compares the
//! listener set with what is bound: a new listener gets one SO_REUSEPORT socket per shard
//! (port 0 is resolved by the first bind and reused by the rest, so every shard shares the
//! one port), posted to each shard's mailbox; a removed listener (or one whose address
//! changed) is posted for removal, and each shard stops accepting on it and drains it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use zerohop_proto::shm::{ReadOutcome, Segment};
use zerohop_proto::{codec, Snapshot};

use crate::net::sys;
use crate::shard::listeners::{ListenerOp, Mailbox};
use crate::shard::DRAINING;

const LISTEN_BACKLOG: i32 = 4096;
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub struct ListenerManager {
    mailboxes: &'static [Mailbox],
    /// Bound listeners by name, with the address the config asked for (port 0 stays 0).
    bound: HashMap<String, SocketAddr>,
}

impl ListenerManager {
    pub fn new(mailboxes: &'static [Mailbox]) -> ListenerManager {
        ListenerManager {
            mailboxes,
            bound: HashMap::new(),
        }
    }

    /// Brings the bound set in line with `snapshot`. Returns the listeners that could not be
    /// bound (each is logged); they are tried again with the next generation.
    pub fn apply(&mut self, snapshot: &Snapshot) -> Vec<String> {
        let wanted: HashMap<&str, SocketAddr> = snapshot
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.address))
            .collect();
        let gone: Vec<String> = self
            .bound
            .iter()
            .filter(|(name, addr)| wanted.get(name.as_str()) != Some(addr))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.bound.remove(&name);
            log::info!("listener {name} removed: it stops accepting and its connections drain");
            for m in self.mailboxes {
                m.post(ListenerOp::Remove { name: name.clone() });
            }
        }
        let mut failed = Vec::new();
        for l in &snapshot.listeners {
            if self.bound.contains_key(&l.name) {
                continue;
            }
            match bind_per_shard(l.address, self.mailboxes.len()) {
                Ok((address, sockets)) => {
                    log::info!("listener {} listening on {address}", l.name);
                    for (m, socket) in self.mailboxes.iter().zip(sockets) {
                        m.post(ListenerOp::Add {
                            name: l.name.clone(),
                            address,
                            socket,
                        });
                    }
                    self.bound.insert(l.name.clone(), l.address);
                }
                Err(e) => {
                    log::error!("listener {} on {}: {e}; not serving it", l.name, l.address);
                    failed.push(l.name.clone());
                }
            }
        }
        failed
    }

    /// Follows the segment's generations until the process drains.
    pub fn spawn(
        mut self,
        seg: &'static Segment,
        mut seen: u64,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("listeners".into())
            .spawn(move || {
                while !DRAINING.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(POLL);
                    if seg.current_generation() == seen {
                        continue;
                    }
                    match seg.read_current(seen) {
                        ReadOutcome::New { generation, bytes } => {
                            seen = generation;
                            // A bad generation is the shards' to refuse and report.
                            if let Ok(snapshot) = codec::decode(&bytes) {
                                self.apply(&snapshot);
                            }
                        }
                        ReadOutcome::Corrupt { generation, .. } => seen = generation,
                        ReadOutcome::Torn | ReadOutcome::Empty | ReadOutcome::Unchanged => {}
                    }
                }
            })
    }
}

/// One socket per shard on `addr`; returns the resolved address (port 0 made concrete).
fn bind_per_shard(
    addr: SocketAddr,
    shards: usize,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let first = sys::reuseport_listener(addr, LISTEN_BACKLOG)?;
    let resolved = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..shards {
        sockets.push(sys::reuseport_listener(resolved, LISTEN_BACKLOG)?);
    }
    Ok((resolved, sockets))
}
