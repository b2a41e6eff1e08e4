//! Stat scopes by name: control gives each listener, connection manager and cluster of a
//! snapshot its run of words in the shards' stat space, and keeps it for that name, so a
//! counter keeps its value across generations (and across a restart of control, which
//! adopts the places the served snapshot holds).
//!
//! Names as Envoy's: `listener.<address>` (`127.0.0.1_10000`, `[__1]_443`),
//! `http.<stat_prefix>` (two connection managers with one prefix share it),
//! `cluster.<name>`. A name that leaves the configuration keeps its words until the space
//! runs out; then the words of a name unused for the last two publishes go to a new name of
//! the same kind, zeroed first. With no room at all a scope gets [`StatScope::NONE`]
//! (logged once): its traffic is served, uncounted.

use std::collections::HashMap;
use std::net::SocketAddr;

use zerohop_proto::shm::Segment;
use zerohop_proto::stats::{
    codes, ClusterScope, HttpScope, ListenerScope, ScopeKind, StatScope, TcpScope,
};
use zerohop_proto::{NetworkFilter, Snapshot};

/// The kind of a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Listener,
    Http,
    Cluster,
    Tcp,
}

impl Kind {
    pub fn words(self) -> u32 {
        (match self {
            Kind::Listener => ListenerScope::WORDS,
            Kind::Http => HttpScope::WORDS,
            Kind::Cluster => ClusterScope::WORDS,
            Kind::Tcp => TcpScope::WORDS,
        }) as u32
    }
}

/// `listener.<address>`'s address part, as Envoy writes it (`:` becomes `_`).
pub fn listener_name(addr: SocketAddr) -> String {
    addr.to_string().replace(':', "_")
}

/// Every scope of `snap`: its kind, its name and where its place is kept.
pub fn visit(snap: &mut Snapshot, mut f: impl FnMut(Kind, &str, &mut StatScope)) {
    for l in &mut snap.listeners {
        f(Kind::Listener, &listener_name(l.address), &mut l.stats);
        for chain in l
            .filter_chains
            .iter_mut()
            .chain(&mut l.default_filter_chain)
        {
            for filter in &mut chain.filters {
                match filter {
                    NetworkFilter::Http(h) => f(Kind::Http, &h.stat_prefix, &mut h.stats),
                    NetworkFilter::TcpProxy(t) => f(Kind::Tcp, &t.stat_prefix, &mut t.stats),
                    _ => {}
                }
            }
        }
    }
    for c in &mut snap.clusters {
        f(Kind::Cluster, &c.name, &mut c.stats);
    }
}

#[derive(Debug)]
struct Entry {
    base: u32,
    /// The publish that last named it.
    used: u64,
}

/// The assignment of the stat space.
#[derive(Debug)]
pub struct Scopes {
    by_name: HashMap<(Kind, String), Entry>,
    next: u32,
    capacity: u32,
    publishes: u64,
    full_logged: bool,
}

impl Scopes {
    /// An empty assignment of a space of `capacity` words, taking over the places the
    /// snapshot `served` gives (a restarted control continues its predecessor's).
    pub fn new(capacity: u32, served: Option<&Snapshot>, used: usize) -> Scopes {
        let mut s = Scopes {
            by_name: HashMap::new(),
            next: used.min(capacity as usize) as u32,
            capacity,
            publishes: 0,
            full_logged: false,
        };
        if let Some(snap) = served {
            let mut snap = snap.clone();
            visit(&mut snap, |kind, name, scope| {
                let end = scope.0.checked_add(kind.words());
                if !scope.is_none() && end.is_some_and(|e| e <= capacity) {
                    s.by_name.insert(
                        (kind, name.to_owned()),
                        Entry {
                            base: scope.0,
                            used: 0,
                        },
                    );
                    s.next = s.next.max(end.unwrap_or(0));
                }
            });
        }
        s
    }

    /// Gives every scope of `snap` its place, by name; `seg` is where freed words are
    /// zeroed before they are reused, and learns the high-water mark.
    pub fn assign(&mut self, snap: &mut Snapshot, seg: &Segment) {
        self.publishes += 1;
        let now = self.publishes;
        visit(snap, |kind, name, scope| {
            *scope = self.place(kind, name, now, seg);
        });
        seg.set_stat_words_used(self.next as usize);
    }

    fn place(&mut self, kind: Kind, name: &str, now: u64, seg: &Segment) -> StatScope {
        if let Some(e) = self.by_name.get_mut(&(kind, name.to_owned())) {
            e.used = now;
            return StatScope(e.base);
        }
        let words = kind.words();
        let base = if self
            .next
            .checked_add(words)
            .is_some_and(|e| e <= self.capacity)
        {
            let b = self.next;
            self.next += words;
            Some(b)
        } else {
            self.reuse(kind, now, seg)
        };
        match base {
            Some(base) => {
                self.by_name
                    .insert((kind, name.to_owned()), Entry { base, used: now });
                StatScope(base)
            }
            None => {
                if !self.full_logged {
                    self.full_logged = true;
                    log::error!(
                        "the shards' stat space ({} words) is full: {kind:?} {name:?} and later new scopes are not counted (restart with a larger stat space)",
                        self.capacity
                    );
                }
                StatScope::NONE
            }
        }
    }

    /// The place of a name of `kind` no publish named in the last two, zeroed in every
    /// shard line of the segment.
    fn reuse(&mut self, kind: Kind, now: u64, seg: &Segment) -> Option<u32> {
        let key = self
            .by_name
            .iter()
            .filter(|((k, _), e)| *k == kind && e.used + 2 <= now)
            .min_by_key(|(_, e)| e.used)
            .map(|(key, _)| key.clone())?;
        let e = self.by_name.remove(&key)?;
        let (from, to) = (e.base as usize, (e.base + kind.words()) as usize);
        // Every line a data plane may have counted in (one being replaced sits below).
        for line in 0..seg.shard_base() + seg.active_shards() {
            for w in &seg.shard_space(line)[from..to] {
                w.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            codes::clear_scope(seg.shard_codes(line), StatScope(e.base));
        }
        Some(e.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_proto::shm::Geometry;

    /// A bootstrap of static clusters named `names`.
    fn snap(names: &[&str]) -> Snapshot {
        let clusters: Vec<String> = names
            .iter()
            .map(|n| format!("{{\"name\":\"{n}\",\"connect_timeout\":\"1s\",\"load_assignment\":{{\"cluster_name\":\"{n}\",\"endpoints\":[{{\"lb_endpoints\":[{{\"endpoint\":{{\"address\":{{\"socket_address\":{{\"address\":\"127.0.0.1\",\"port_value\":1}}}}}}}}]}}]}}}}"))
            .collect();
        let text = format!(
            "{{\"static_resources\":{{\"clusters\":[{}]}}}}",
            clusters.join(",")
        );
        crate::config::load(&text, crate::config::Format::Json)
            .expect("bootstrap")
            .snapshot
    }

    fn seg() -> Segment {
        Segment::new_in_memory(Geometry {
            slot_count: 2,
            slot_size: 1 << 16,
            shard_capacity: 1,
            health_slots: 16,
            stat_words: 1024,
            log_bytes: 4096,
        })
        .unwrap()
    }

    #[test]
    fn names_keep_their_places_and_full_space_reuses_the_oldest_unused() {
        let seg = seg();
        seg.register_dataplane(1, std::process::id());
        let w = Kind::Cluster.words();
        let fits = 1024 / w;
        let mut scopes = Scopes::new(1024, None, 0);
        let names: Vec<String> = (0..fits).map(|i| format!("c{i}")).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut s = snap(&all);
        scopes.assign(&mut s, &seg);
        let bases: Vec<_> = s.clusters.iter().map(|c| c.stats).collect();
        assert!(bases.iter().all(|b| !b.is_none()));
        assert_eq!(seg.stat_words_used(), (fits * w) as usize);
        // The same names, reordered: the same places.
        let mut again = snap(&all.iter().rev().copied().collect::<Vec<_>>());
        scopes.assign(&mut again, &seg);
        for c in &again.clusters {
            let i: usize = c.name[1..].parse().unwrap();
            assert_eq!(c.stats, bases[i]);
        }
        // No room and nobody idle: not counted.
        let mut more = snap(&[all[0], "new"]);
        scopes.assign(&mut more, &seg);
        assert!(more.clusters[1].stats.is_none());
        // After two more publishes without c1, its words (zeroed) go to "new".
        seg.shard_space(0)[bases[1].0 as usize].store(9, std::sync::atomic::Ordering::Relaxed);
        let mut later = snap(&[all[0]]);
        scopes.assign(&mut later, &seg);
        let mut later = snap(&[all[0], "new"]);
        scopes.assign(&mut later, &seg);
        let got = later.clusters[1].stats;
        assert!(!got.is_none());
        assert_ne!(got, bases[0]);
        assert_eq!(
            seg.shard_space(0)[got.0 as usize].load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // A restarted control takes the places over.
        let adopted = Scopes::new(1024, Some(&later), seg.stat_words_used());
        let mut same = later.clone();
        let mut adopted = adopted;
        adopted.assign(&mut same, &seg);
        assert_eq!(same, later);
    }

    #[test]
    fn listener_names_are_envoys() {
        assert_eq!(
            listener_name("127.0.0.1:10000".parse().unwrap()),
            "127.0.0.1_10000"
        );
        assert_eq!(listener_name("[::1]:443".parse().unwrap()), "[__1]_443");
    }
}
