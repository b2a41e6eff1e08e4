//! Active health checking, as Envoy's `health_checks`: it runs here in control, never on a
//! shard, one task per checked host on its own runtime, and each verdict reaches every
//! shard through the segment's health table (see `zerohop_proto::shm`, `shm/health.rs`)
//! without a configuration generation.
//!
//! Before each publish, [`Checker::assign`] gives every endpoint of a cluster with a health
//! check a slot in the table (the same slot for as long as the cluster, the endpoint's
//! addresses and the check stay the same), marks a new host failed (Envoy's
//! `FAILED_ACTIVE_HC`: a host takes traffic once its first check passed), and starts its
//! task; hosts gone stop theirs. A cluster new to health checking warms as Envoy's does:
//! the publish waits (up to the checks' timeout) for its hosts' first checks. The intervals
//! follow Envoy's rules (`state`), including `no_traffic_interval` until the data plane has
//! marked the cluster as having had traffic.

mod probe;
pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use zerohop_proto::{HealthCheck, HealthChecker, Snapshot};

use crate::publish::Publisher;
use state::{HostState, Verdict};

/// A host under checking: the cluster, the endpoint's address, where checks go.
type Key = (String, SocketAddr, SocketAddr);

struct Session {
    slot: u32,
    spec: Arc<HealthCheck>,
    task: tokio::task::AbortHandle,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<Key, Session>,
    /// Slots of hosts gone, given out again from the next `assign` on (after the publish
    /// that dropped them).
    free: Vec<u32>,
    released: Vec<u32>,
    next: u32,
}

/// Every health-checked host's task, and their slots.
pub struct Checker {
    runtime: tokio::runtime::Runtime,
    publisher: Arc<Publisher>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.lock().map(|i| i.sessions.len()).unwrap_or(0);
        f.debug_struct("Checker").field("hosts", &n).finish()
    }
}

/// First checks a publish waits for.
#[derive(Debug, Default)]
pub struct Warming {
    first: Vec<mpsc::Receiver<()>>,
    limit: Duration,
}

impl Warming {
    /// Waits for each host's first check, up to the longest timeout among their checks.
    pub fn wait(self) {
        if self.first.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.limit;
        for rx in self.first {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = rx.recv_timeout(left);
        }
    }
}

impl Checker {
    pub fn new(publisher: Arc<Publisher>) -> std::io::Result<Checker> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("health")
            .enable_all()
            .build()?;
        Ok(Checker {
            runtime,
            publisher,
            inner: Mutex::default(),
        })
    }

    /// The slots of `snapshot`'s hosts that are checked already (with the same check); the
    /// others get none. Nothing starts or stops.
    pub fn fill_known(&self, snapshot: &mut Snapshot) {
        let inner = self.inner.lock().expect("health state");
        for cluster in &mut snapshot.clusters {
            let spec = cluster.health_checks.first();
            for e in &mut cluster.endpoints {
                let target = e.health_check_address.unwrap_or(e.address);
                let key = (cluster.name.clone(), e.address, target);
                e.health_slot = inner
                    .sessions
                    .get(&key)
                    .filter(|s| Some(&*s.spec) == spec)
                    .map(|s| s.slot);
            }
        }
    }

    /// Fills in the health slots of `snapshot`'s health-checked endpoints, starting the
    /// checks of hosts new to it and stopping those of hosts gone. Returns the first checks
    /// the publish should wait for (those of clusters new to health checking).
    pub fn assign(&self, snapshot: &mut Snapshot) -> Warming {
        let mut inner = self.inner.lock().expect("health state");
        let inner = &mut *inner;
        let released = std::mem::take(&mut inner.released);
        inner.free.extend(released);
        let mut old = std::mem::take(&mut inner.sessions);
        let seg = self.publisher.segment();
        let mut warming = Warming::default();
        let mut new_hosts = false;
        for cluster in &mut snapshot.clusters {
            let Some(spec) = cluster.health_checks.first() else {
                for e in &mut cluster.endpoints {
                    e.health_slot = None;
                }
                continue;
            };
            let known = old.keys().any(|k| k.0 == cluster.name);
            for e in &mut cluster.endpoints {
                let target = e.health_check_address.unwrap_or(e.address);
                let key = (cluster.name.clone(), e.address, target);
                // A host whose check changed starts over: its old task stops and its slot
                // is given out again after this publish.
                let kept = match old.remove(&key) {
                    Some(s) if *s.spec == *spec => Some(s),
                    Some(s) => {
                        s.task.abort();
                        inner.released.push(s.slot);
                        None
                    }
                    None => None,
                };
                let session = match kept {
                    Some(s) => s,
                    None => {
                        let Some(slot) = inner.free.pop().or_else(|| {
                            (inner.next < seg.geometry().health_slots).then(|| {
                                inner.next += 1;
                                inner.next - 1
                            })
                        }) else {
                            log::error!(
                                "cluster {:?}: endpoint {}: every one of the {} health slots is taken; it is not health checked",
                                cluster.name,
                                e.address,
                                seg.geometry().health_slots
                            );
                            e.health_slot = None;
                            continue;
                        };
                        seg.set_host_failed(slot, true);
                        seg.clear_traffic(slot);
                        new_hosts = true;
                        let spec = Arc::new(spec.clone());
                        let (tx, rx) = mpsc::channel();
                        if !known {
                            warming.first.push(rx);
                            warming.limit = warming.limit.max(spec.timeout + spec.initial_jitter);
                        }
                        let host = Host {
                            publisher: self.publisher.clone(),
                            cluster: cluster.name.clone(),
                            target,
                            slot,
                            spec: spec.clone(),
                            first: Some(tx),
                        };
                        let task = self.runtime.spawn(host.run()).abort_handle();
                        Session { slot, spec, task }
                    }
                };
                e.health_slot = Some(session.slot);
                inner.sessions.insert(key, session);
            }
        }
        for (_, gone) in old {
            gone.task.abort();
            inner.released.push(gone.slot);
        }
        if new_hosts {
            seg.bump_health_epoch();
        }
        warming
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Ok(inner) = self.inner.lock() {
            inner.sessions.values().for_each(|s| s.task.abort());
        }
    }
}

/// One host's checks.
struct Host {
    publisher: Arc<Publisher>,
    cluster: String,
    target: SocketAddr,
    slot: u32,
    spec: Arc<HealthCheck>,
    /// Told after the first check.
    first: Option<mpsc::Sender<()>>,
}

impl Host {
    async fn run(mut self) {
        let spec = self.spec.clone();
        if !spec.initial_jitter.is_zero() {
            let ms = spec.initial_jitter.as_millis() as u64;
            tokio::time::sleep(Duration::from_millis(crate::random::u64() % ms)).await;
        }
        let mut state = HostState::default();
        let mut conn = probe::Conn::None;
        loop {
            let verdict =
                tokio::time::timeout(spec.timeout, probe::check(&spec, self.target, &mut conn))
                    .await
                    .unwrap_or_else(|_| {
                        conn = probe::Conn::None;
                        Verdict::Timeout
                    });
            let was = state.failed;
            let t = state.apply(verdict, &spec);
            let seg = self.publisher.segment();
            if state.failed != was {
                seg.set_host_failed(self.slot, state.failed);
                seg.bump_health_epoch();
                log::info!(
                    "cluster {:?}: host {} is {} ({} check: {verdict:?})",
                    self.cluster,
                    self.target,
                    if state.failed { "unhealthy" } else { "healthy" },
                    kind(&spec.checker),
                );
            } else if verdict != Verdict::Healthy {
                log::debug!(
                    "cluster {:?}: host {} failed a {} check: {verdict:?} ({t:?})",
                    self.cluster,
                    self.target,
                    kind(&spec.checker)
                );
            }
            if let Some(tx) = self.first.take() {
                let _ = tx.send(());
            }
            let traffic = seg.traffic(self.slot);
            let wait = state::with_jitter(
                &spec,
                state::base_interval(&spec, verdict, t, traffic),
                crate::random::u64,
            );
            tokio::time::sleep(wait).await;
        }
    }
}

fn kind(c: &HealthChecker) -> &'static str {
    match c {
        HealthChecker::Http(_) => "HTTP",
        HealthChecker::Tcp { .. } => "TCP",
        HealthChecker::Grpc { .. } => "gRPC",
    }
}
