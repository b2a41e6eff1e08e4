//! Traffic at a fixed rate across a fault: new connections with one echo exchange each.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub fn echo_once(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// Clients opening a new connection with one exchange each, every `interval`, until
/// stopped; `stop` returns (successes, failures).
pub struct FixedRate {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u32, Vec<String>)>>,
}

impl FixedRate {
    pub fn start(front: std::net::SocketAddr, clients: usize, interval: Duration) -> FixedRate {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut ok, mut failures) = (0u32, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = TcpStream::connect(front).and_then(|mut c| {
                            c.set_read_timeout(Some(Duration::from_secs(5)))?;
                            c.write_all(b"ping")?;
                            let mut got = [0u8; 4];
                            c.read_exact(&mut got)?;
                            Ok(got)
                        });
                        match r {
                            Ok(got) if &got == b"ping" => ok += 1,
                            other => failures.push(format!("{other:?}")),
                        }
                        std::thread::sleep(interval);
                    }
                    (ok, failures)
                })
            })
            .collect();
        FixedRate { stop, threads }
    }

    pub fn stop(self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut failures) = (0, Vec::new());
        for t in self.threads {
            let (o, f) = t.join().unwrap();
            ok += o;
            failures.extend(f);
        }
        (ok, failures)
    }
}

pub fn assert_no_failures(ok: u32, failures: &[String], at_least: u32) {
    assert!(
        failures.is_empty(),
        "{} of {} connections failed: {:?}",
        failures.len(),
        ok as usize + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok >= at_least, "only {ok} connections made it through");
}

/// One answered request: when it was answered and which upstream (`x-upstream`) served it.
#[derive(Clone, Debug)]
pub struct Served {
    pub at: std::time::Instant,
    pub upstream: String,
}

/// HTTP/1.1 GETs at a fixed rate over keep-alive connections (a new one after a failure),
/// recording which upstream served each; anything but a 200 is a failure.
pub struct HttpLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    log: std::sync::Arc<std::sync::Mutex<Vec<Served>>>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl HttpLoad {
    /// `clients` connections, each sending one request per `interval` (so about
    /// `clients / interval` requests a second).
    pub fn start(front: std::net::SocketAddr, clients: usize, interval: Duration) -> HttpLoad {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, log) = (stop.clone(), log.clone());
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    let mut client: Option<super::http::Client> = None;
                    while !stop.load(Relaxed) {
                        let c = match client.as_mut() {
                            Some(c) => c,
                            None => match TcpStream::connect(front) {
                                Ok(s) => {
                                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                                    client.insert(super::http::Client {
                                        w: s.try_clone().unwrap(),
                                        r: std::io::BufReader::new(s),
                                    })
                                }
                                Err(e) => {
                                    failures.push(format!("connect: {e}"));
                                    std::thread::sleep(interval);
                                    continue;
                                }
                            },
                        };
                        match c.raw(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n") {
                            Some(r) if r.status == 200 => {
                                let upstream = r.header("x-upstream").unwrap_or("").to_owned();
                                let at = std::time::Instant::now();
                                log.lock().unwrap().push(Served { at, upstream });
                            }
                            Some(r) => failures.push(format!("{} {}", r.status, r.text())),
                            None => {
                                failures.push("connection closed".into());
                                client = None;
                            }
                        }
                        std::thread::sleep(interval);
                    }
                    failures
                })
            })
            .collect();
        HttpLoad { stop, log, threads }
    }

    /// When the first request served by one of `upstreams` was answered at or after `since`.
    pub fn first_from(
        &self,
        upstreams: &[&str],
        since: std::time::Instant,
    ) -> Option<std::time::Instant> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|s| s.at >= since && upstreams.contains(&s.upstream.as_str()))
            .map(|s| s.at)
            .min()
    }

    /// Waits (up to `timeout`) until a request served by one of `upstreams` was answered at or
    /// after `since`; returns how long after `since`.
    pub fn wait_for(
        &self,
        upstreams: &[&str],
        since: std::time::Instant,
        timeout: Duration,
    ) -> Option<Duration> {
        let deadline = since + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(at) = self.first_from(upstreams, since) {
                return Some(at - since);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The upstreams that served requests answered in `[from, to)`.
    pub fn served_between(
        &self,
        from: std::time::Instant,
        to: std::time::Instant,
    ) -> std::collections::BTreeSet<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|s| s.at >= from && s.at < to)
            .map(|s| s.upstream.clone())
            .collect()
    }

    /// Stops; returns (requests served, failures).
    pub fn stop(self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut failures = Vec::new();
        for t in self.threads {
            failures.extend(t.join().unwrap());
        }
        let ok = self.log.lock().unwrap().len() as u32;
        (ok, failures)
    }
}
