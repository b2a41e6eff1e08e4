//! The listener manager: the one place that binds listener sockets.
//!
//! The config thread (`app::generations`) asks it, off the connection path, for every
//! generation that changes the listener set; it compares the set with what is bound: a new listener gets one SO_REUSEPORT socket per shard
//! (port 0 is resolved by the first bind and reused by the rest, so every shard shares the
//! one port), posted to each shard's mailbox; a removed listener (or one whose address
//! changed) is posted for removal, and each shard stops accepting on it and drains it.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::upgrade::Inherited;
use crate::config::Generation;
use crate::net::sys;
use crate::shard::listeners::{ListenerOp, Mailbox};

const LISTEN_BACKLOG: i32 = 4096;

#[derive(Debug)]
pub struct ListenerManager {
    mailboxes: &'static [Mailbox],
    /// Bound listeners by name.
    bound: HashMap<String, Bound>,
    /// Sockets taken over from a previous process, used before binding new ones.
    inherited: Inherited,
}

#[derive(Debug)]
struct Bound {
    /// The address the config asked for (port 0 stays 0).
    requested: SocketAddr,
    resolved: SocketAddr,
    /// Duplicates of the shards' sockets, kept to hand over in a binary upgrade.
    sockets: Vec<std::net::TcpListener>,
}

impl ListenerManager {
    pub fn new(mailboxes: &'static [Mailbox], inherited: Inherited) -> ListenerManager {
        ListenerManager {
            mailboxes,
            bound: HashMap::new(),
            inherited,
        }
    }

    /// Brings the bound set in line with generation `g`. Returns the listeners that could
    /// not be bound (each is logged); they are tried again with the next generation.
    pub fn apply(&mut self, g: &Generation) -> Vec<String> {
        let wanted: HashMap<&str, SocketAddr> = g
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.address))
            .collect();
        let gone: Vec<String> = self
            .bound
            .iter()
            .filter(|(name, b)| wanted.get(name.as_str()) != Some(&b.requested))
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
        for l in &g.listeners {
            if self.bound.contains_key(&l.name) {
                continue;
            }
            match self.sockets_for(&l.name, l.address) {
                Ok((resolved, per_shard, inherited)) => {
                    log::info!("listener {} listening on {resolved}", l.name);
                    if inherited {
                        log::info!(
                            "listener {}: sockets taken over from the previous zerohop",
                            l.name
                        );
                    }
                    let mut kept = Vec::new();
                    for (m, sockets) in self.mailboxes.iter().zip(per_shard) {
                        for socket in sockets {
                            match socket.try_clone() {
                                Ok(dup) => kept.push(dup),
                                Err(e) => log::warn!(
                                    "listener {}: keeping a copy for upgrades: {e}",
                                    l.name
                                ),
                            }
                            m.post(ListenerOp::Add {
                                name: l.name.clone(),
                                address: resolved,
                                socket,
                            });
                        }
                    }
                    self.bound.insert(
                        l.name.clone(),
                        Bound {
                            requested: l.address,
                            resolved,
                            sockets: kept,
                        },
                    );
                }
                Err(e) => {
                    log::error!("listener {} on {}: {e}; not serving it", l.name, l.address);
                    failed.push(l.name.clone());
                }
            }
        }
        self.inherited.clear(); // taken-over sockets no generation wants close here
        failed
    }

    /// Sockets for `name` on `addr`, as one list per shard: the ones taken over from a
    /// previous process (spread over the shards; a shard may get several), then new
    /// SO_REUSEPORT sockets for shards left without one. Returns the resolved address.
    fn sockets_for(
        &mut self,
        name: &str,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, Vec<Vec<std::net::TcpListener>>, bool)> {
        let shards = self.mailboxes.len();
        let mut per_shard: Vec<Vec<std::net::TcpListener>> =
            (0..shards).map(|_| Vec::new()).collect();
        let taken = match self.inherited.remove(name) {
            Some((resolved, sockets)) if same_address(addr, resolved) && !sockets.is_empty() => {
                for (i, s) in sockets.into_iter().enumerate() {
                    per_shard[i % shards].push(s);
                }
                Some(resolved)
            }
            _ => None,
        };
        let resolved = match taken {
            Some(r) => r,
            None => {
                let first = sys::reuseport_listener(addr, LISTEN_BACKLOG)?;
                let r = first.local_addr()?;
                per_shard[0].push(first);
                r
            }
        };
        for sockets in per_shard.iter_mut().filter(|s| s.is_empty()) {
            sockets.push(sys::reuseport_listener(resolved, LISTEN_BACKLOG)?);
        }
        Ok((resolved, per_shard, taken.is_some()))
    }

    /// Closes the copies kept for upgrades: once the shards have closed theirs too, the
    /// sockets are gone and new connections are refused (draining).
    pub fn release_sockets(&mut self) {
        for b in self.bound.values_mut() {
            b.sockets.clear();
        }
    }

    /// Duplicates of every bound listener socket, for a new process taking over.
    pub fn handover(
        &self,
    ) -> std::io::Result<Vec<(String, SocketAddr, Vec<std::os::fd::OwnedFd>)>> {
        self.bound
            .iter()
            .map(|(name, b)| {
                let fds = b
                    .sockets
                    .iter()
                    .map(|s| s.try_clone().map(std::os::fd::OwnedFd::from))
                    .collect::<Result<_, _>>()?;
                Ok((name.clone(), b.resolved, fds))
            })
            .collect()
    }
}

/// A listener's configured address matches a socket's bound one (port 0 matches any port).
fn same_address(configured: SocketAddr, bound: SocketAddr) -> bool {
    configured.ip() == bound.ip() && (configured.port() == 0 || configured.port() == bound.port())
}
