//! zerohop-control as a command: config checks, publishing into a segment, stats, reloads.
//! (Its presence also makes `cargo test` build the binary the data-plane tests drive.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zerohop_proto::shm::Segment;

fn control() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zerohop-control"))
}

fn scratch(name: &str) -> std::path::PathBuf {
    // The pid and this process's start time: CI runs the suite twice (root, then an
    // unprivileged user), and a pid reused from the first pass met a root-owned directory.
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("zerohop-control-test-{}-{t:x}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        dir
    });
    dir.join(name)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const CONFIG: &str = include_str!("fixtures/tcp_proxy.yaml");

#[test]
fn check_summarises_a_valid_config_and_refuses_an_invalid_one() {
    let out = control()
        .args(["--check", "--default-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 2 listeners, 1 clusters\n"
    );

    let bad = scratch("bad.yaml");
    std::fs::write(&bad, CONFIG.replace("cluster: backend", "cluster: nowhere")).unwrap();
    let out = control()
        .arg("--check")
        .arg("-c")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster \"nowhere\" is not defined"));
}

#[test]
fn publishes_into_the_segment_and_an_invalid_reload_publishes_nothing() {
    let cfg = scratch("reload.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let shm = scratch("reload.shm");
    let _ = std::fs::remove_file(&shm);
    let mut child = control()
        .arg("-c")
        .arg(&cfg)
        .arg("--shm")
        .arg(&shm)
        .args(["--admin", "off"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("generation 1", || {
        Segment::open(&shm)
            .map(|s| s.current_generation() == 1)
            .unwrap_or(false)
    });
    let seg = Segment::open(&shm).unwrap();
    assert_eq!(seg.control_pid(), child.id());

    // A valid change, then SIGHUP: generation 2.
    std::fs::write(&cfg, CONFIG.replace("port_value: 8080", "port_value: 8082")).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    wait_for("generation 2", || seg.current_generation() == 2);

    // An invalid file and SIGHUP: refused, nothing published, control keeps running.
    std::fs::write(&cfg, CONFIG.replace("lb_endpoints", "lb_endpoint")).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(seg.current_generation(), 2);
    assert!(
        child.try_wait().unwrap().is_none(),
        "control exited on an invalid reload"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("reload refused, previous config stays in force"),
        "{log}"
    );
    assert!(
        log.contains("lb_endpoint"),
        "the error names the field: {log}"
    );

    // stats reads the segment: Envoy's stats of the scopes the served snapshot names, in
    // Envoy's JSON shape (no data plane attached: all 0, and no per-shard view).
    let out = control()
        .arg("stats")
        .arg("--shm")
        .arg(&shm)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stats = v["stats"].as_array().unwrap();
    let value = |n: &str| {
        stats
            .iter()
            .find(|s| s["name"] == n)
            .map(|s| s["value"].clone())
    };
    assert_eq!(value("cluster.backend.upstream_rq_total"), Some(0.into()));
    assert_eq!(value("zerohop.downstream_cx_total"), Some(0.into()));
    assert!(!stats.iter().any(|s| s["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("zerohop.shard."))));
    std::fs::remove_file(&shm).unwrap();
}
