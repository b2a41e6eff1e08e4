//! The xDS client: zerohop-control as an xDS client of Istio, go-control-plane or any
//! Envoy control plane, and of the SDS servers TLS contexts name.
//!
//! ```text
//! ADS server  --response--+
//! SDS servers --response--+--> client::Client (check each resource, warm, store)
//!                                  | snapshot changed?
//!                                  v
//!                              publish --> shards apply --> ACK / NACK --> that server
//! ```
//!
//! One ADS stream (state of the world or delta, as `ads_config.api_type` says) carries CDS,
//! EDS, LDS, RDS and SDS; each SDS server named by an `api_config_source` (Istio's
//! `sds-grpc`) gets a stream of its own, opened when something first names it. Each stream
//! is a task that only moves messages ([`transport`]); one loop owns the client and handles
//! every stream's responses in turn. A response is acknowledged only after every shard has
//! applied the snapshot it produced, so an ACK means "serving it". When a server is
//! unreachable the last good configuration keeps serving and its stream reconnects with
//! jittered exponential backoff, presenting the versions it holds.

pub mod client;
mod transport;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zerohop_proto::Snapshot;

use crate::config::{Dynamic, Kind};
pub use client::{Client, Pending, Request, StreamId};

/// First reconnect delay; doubled per failure up to [`BACKOFF_MAX`], with jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A resource as the ADS server sent it, kept for admin's `/config_dump`.
#[derive(Clone, Debug)]
pub struct Held {
    pub version: String,
    pub resource: prost_types::Any,
    pub last_updated: std::time::SystemTime,
}

/// The resources the client holds, by kind and name; shared with admin.
pub type HeldResources = Arc<Mutex<BTreeMap<(Kind, String), Held>>>;

/// Counters of the ADS client, shown by admin's `/stats` and `/config_dump`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub connected: bool,
    pub server: String,
    pub stream_connects: u64,
    pub stream_failures: u64,
    /// Per type: update_attempt, update_success, update_rejected.
    pub types: BTreeMap<&'static str, [u64; 3]>,
    pub versions: Vec<(Kind, String, usize)>,
    /// Response received to snapshot applied by every shard.
    pub apply_last: Duration,
    pub apply_max: Duration,
    pub applies: u64,
    /// Response received to ACK/NACK queued.
    pub ack_last: Duration,
    pub warming: usize,
    pub initialized: bool,
    pub last_nack: Option<String>,
    /// When `last_nack` was sent.
    pub last_nack_at: Option<std::time::SystemTime>,
    pub held: HeldResources,
}

impl Stats {
    /// `(name, value)` pairs in Envoy's naming.
    pub fn lines(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            (
                "control_plane.connected_state".into(),
                self.connected as u64,
            ),
            ("xds.stream_connects".into(), self.stream_connects),
            ("xds.stream_failures".into(), self.stream_failures),
            (
                "xds.apply_time_us_last".into(),
                self.apply_last.as_micros() as u64,
            ),
            (
                "xds.apply_time_us_max".into(),
                self.apply_max.as_micros() as u64,
            ),
            ("xds.applies".into(), self.applies),
            (
                "xds.ack_time_us_last".into(),
                self.ack_last.as_micros() as u64,
            ),
            ("xds.warming".into(), self.warming as u64),
            ("xds.initialized".into(), self.initialized as u64),
        ];
        for (t, [attempt, success, rejected]) in &self.types {
            out.push((format!("xds.{t}.update_attempt"), *attempt));
            out.push((format!("xds.{t}.update_success"), *success));
            out.push((format!("xds.{t}.update_rejected"), *rejected));
        }
        out
    }

    fn count(&mut self, kind: Kind, rejected: bool) {
        let e = self.types.entry(short(kind)).or_default();
        e[0] += 1;
        e[if rejected { 2 } else { 1 }] += 1;
    }
}

/// `cds`, `eds`, `lds`, `rds`, `sds`.
pub fn short(kind: Kind) -> &'static str {
    match kind {
        Kind::Cluster => "cds",
        Kind::Endpoint => "eds",
        Kind::Listener => "lds",
        Kind::Route => "rds",
        Kind::Secret => "sds",
    }
}

/// Publishes a snapshot and returns once every shard applied it (or the wait gave up).
/// Runs on a blocking thread.
/// With the snapshot go the CDS clusters whose endpoints control resolves by DNS (filled in
/// before the snapshot is published).
pub type Publish =
    Arc<dyn Fn(Snapshot, Vec<crate::config::DnsCluster>) -> anyhow::Result<()> + Send + Sync>;

/// Runs the client for ever on the calling thread (its own single-threaded runtime).
pub fn run(dynamic: Dynamic, publish: Publish, stats: Arc<Mutex<Stats>>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Driver::new(dynamic, publish, stats, tx).run(rx).await
    });
    Ok(())
}

/// What a stream's task tells the loop that owns the client.
pub(crate) enum Event {
    /// A stream connected: its first requests go to this sender.
    Open(StreamId, tokio::sync::mpsc::UnboundedSender<Request>),
    Sotw(StreamId, wire::DiscoveryResponse),
    Delta(StreamId, wire::DeltaDiscoveryResponse),
    /// The stream ended (it reconnects after a backoff).
    Closed(StreamId),
}

struct Driver {
    client: Client,
    publish: Publish,
    stats: Arc<Mutex<Stats>>,
    /// The last snapshot published (None before the first), and its DNS clusters.
    published: Option<(Snapshot, Vec<crate::config::DnsCluster>)>,
    /// When the first configuration is served regardless (`initial_fetch_timeout`).
    deadline: Option<tokio::time::Instant>,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    /// The streams connected now, and where their requests go.
    open: BTreeMap<StreamId, tokio::sync::mpsc::UnboundedSender<Request>>,
    /// The streams whose task runs (connected or reconnecting).
    started: BTreeMap<StreamId, tokio::task::JoinHandle<()>>,
}

impl Driver {
    fn new(
        dynamic: Dynamic,
        publish: Publish,
        stats: Arc<Mutex<Stats>>,
        events: tokio::sync::mpsc::UnboundedSender<Event>,
    ) -> Driver {
        let deadline = dynamic
            .ads
            .as_ref()
            .and_then(|a| a.initial_fetch_timeout)
            .map(|t| tokio::time::Instant::now() + t);
        let client = Client::new(dynamic);
        {
            let mut st = stats.lock().expect("xds stats");
            st.server = match &client.dynamic.ads {
                Some(a) => format!("{:?}", a.target),
                None => "none (SDS only)".into(),
            };
            st.held = client.held.clone();
        }
        Driver {
            client,
            publish,
            stats,
            published: None,
            deadline,
            events,
            open: BTreeMap::new(),
            started: Default::default(),
        }
    }

    async fn run(mut self, mut events: tokio::sync::mpsc::UnboundedReceiver<Event>) {
        // SDS secrets read from files are looked at as often as a config file is.
        let mut files = tokio::time::interval(crate::source::WATCH_INTERVAL);
        files.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.start_streams();
            let deadline = self.pending_deadline();
            tokio::select! {
                e = events.recv() => match e {
                    Some(e) => self.on_event(e).await,
                    None => return,
                },
                _ = sleep_until(deadline) => self.initial_timeout().await,
                _ = files.tick(), if self.client.resources.watches_files() => {
                    if self.client.resources.reread_files() {
                        self.publish_if_changed(false).await;
                    }
                }
            }
        }
    }

    /// Starts the task of every stream the configuration needs and has none yet (an SDS
    /// server first named by a listener that just arrived, say).
    fn start_streams(&mut self) {
        let wanted = self.client.wanted_streams();
        for sid in wanted.iter().cloned() {
            if self.started.contains_key(&sid) {
                continue;
            }
            let Some(target) = self.client.dynamic.target(&sid.source()).cloned() else {
                continue; // checked when the resource compiled: not reached
            };
            let api = sid.api(self.client.dynamic.ads.as_ref());
            log::info!("xDS stream {sid:?} to {target:?}");
            let task = tokio::spawn(transport::run_stream(
                sid.clone(),
                target,
                api,
                self.events.clone(),
            ));
            self.started.insert(sid, task);
        }
        // An SDS stream whose secret nothing names any more is closed, as Envoy drops the
        // subscription.
        self.started.retain(|sid, task| {
            let keep = wanted.contains(sid);
            if !keep {
                log::info!("xDS stream {sid:?}: no longer needed, closed");
                task.abort();
            }
            keep
        });
        self.open.retain(|sid, _| self.started.contains_key(sid));
    }

    async fn on_event(&mut self, e: Event) {
        let out = match e {
            Event::Open(sid, tx) => {
                {
                    let mut st = self.stats.lock().expect("xds stats");
                    st.stream_connects += 1;
                    st.connected |= sid == StreamId::Ads;
                }
                let first = self.client.connected(&sid);
                for r in first {
                    let _ = tx.send(r);
                }
                self.open.insert(sid, tx);
                return;
            }
            Event::Closed(sid) => {
                self.open.remove(&sid);
                let mut st = self.stats.lock().expect("xds stats");
                st.stream_failures += 1;
                if sid == StreamId::Ads {
                    st.connected = false;
                }
                return;
            }
            Event::Sotw(sid, r) => match self.client.sotw(&sid, r) {
                Ok(p) => self.settle(p).await,
                Err(nack) => vec![(sid, *nack)],
            },
            Event::Delta(sid, r) => match self.client.delta(&sid, r) {
                Ok(p) => self.settle(p).await,
                Err(nack) => vec![(sid, *nack)],
            },
        };
        for (sid, r) in out {
            // A stream that is down gets its subscriptions when it connects again.
            if let Some(tx) = self.open.get(&sid) {
                let _ = tx.send(r);
            }
        }
    }

    /// When `initial_fetch_timeout` fires, while the first configuration is incomplete.
    fn pending_deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline.filter(|_| self.published.is_none())
    }

    /// The initial fetch timed out: serve what has arrived, as Envoy starts its workers.
    async fn initial_timeout(&mut self) {
        log::warn!(
            "initial_fetch_timeout: the first xDS configuration is incomplete ({} warming); serving what has arrived",
            self.client.resources.warming()
        );
        self.client.resources.finish_warming();
        self.deadline = None;
        self.publish_if_changed(true).await;
    }

    /// Applies a response's outcome: publishes if the snapshot changed (and the first
    /// configuration is complete), then returns the requests to send.
    async fn settle(&mut self, p: Pending) -> Vec<(StreamId, Request)> {
        let received = p.received;
        let kind = p.kind;
        let nack = p.error_detail();
        if let Some(detail) = &nack {
            log::warn!("NACK {}: {detail}", short(kind));
        } else {
            log::info!(
                "{}: {} applied, {} removed",
                short(kind),
                p.applied,
                p.removed
            );
        }
        let force = self.published.is_none() && self.client.initialized();
        let published = self.publish_if_changed(force).await;
        let out = self.client.settle(p);
        let mut st = self.stats.lock().expect("xds stats");
        st.count(kind, nack.is_some());
        if nack.is_some() {
            st.last_nack = nack;
            st.last_nack_at = Some(std::time::SystemTime::now());
        }
        if published {
            let took = received.elapsed();
            st.apply_last = took;
            st.apply_max = st.apply_max.max(took);
            st.applies += 1;
        }
        st.ack_last = received.elapsed();
        st.versions = self.client.versions();
        st.warming = self.client.resources.warming();
        st.initialized = self.published.is_some();
        out
    }

    /// Publishes the current snapshot when it differs from the last one published. Before
    /// the first configuration is complete nothing is published unless `force`.
    async fn publish_if_changed(&mut self, force: bool) -> bool {
        if self.published.is_none() && !force {
            return false;
        }
        let snapshot = self.client.snapshot();
        let dns = self.client.resources.dns_clusters();
        if self
            .published
            .as_ref()
            .is_some_and(|(s, d)| *s == snapshot && *d == dns)
        {
            return false;
        }
        let publish = self.publish.clone();
        let (copy, names) = (snapshot.clone(), dns.clone());
        match tokio::task::spawn_blocking(move || publish(copy, names)).await {
            Ok(Ok(())) => {
                self.published = Some((snapshot, dns));
                true
            }
            Ok(Err(e)) => {
                log::error!("publishing the xDS snapshot failed: {e:#}");
                false
            }
            Err(e) => {
                log::error!("publish task: {e}");
                false
            }
        }
    }
}

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Jittered exponential backoff: base * 2^(failures-1), capped, then 50-100% of that.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(10));
    let cap = exp.min(BACKOFF_MAX);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let jitter = 0.5 + (nanos % 1000) as f64 / 2000.0;
    cap.mul_f64(jitter)
}
