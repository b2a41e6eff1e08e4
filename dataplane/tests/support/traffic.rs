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
