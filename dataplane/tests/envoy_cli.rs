//! Envoy's command line: a wrapper that runs `envoy -c FILE --concurrency 2 -l info
//! --service-node x ...` runs zerohop when `envoy` is a link to it; `--mode validate`
//! answers as Envoy's does; `--config-yaml` is merged over the file; an unknown flag is
//! named. The same flags are given to Envoy 1.40 (`--mode validate`), which accepts them too.

mod support;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::envoy;
use support::http::{http_bootstrap, static_cluster, upstream, Client};

/// A directory with `envoy` linked to the zerohop binary (zerohop-control stays next to
/// the real binary, where zerohop looks for it).
fn envoy_link() -> PathBuf {
    let dir = support::scratch("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("envoy");
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    link
}

fn config(listen: u16, upstream_port: u16) -> String {
    let routes = "              - { match: { prefix: \"/\" }, route: { cluster: a } }\n";
    http_bootstrap("", listen, "", routes, &static_cluster("a", upstream_port))
}

/// The flags a wrapper (Istio's pilot-agent, a docker entrypoint) passes Envoy.
fn wrapper_flags(file: &str, admin: u16) -> Vec<String> {
    [
        "-c",
        file,
        "--concurrency",
        "2",
        "-l",
        "info",
        "--service-node",
        "x",
        "--service-cluster",
        "web-cluster",
        "--component-log-level",
        "upstream:debug,misc:error",
        "--drain-time-s",
        "1",
        "--parent-shutdown-time-s",
        "2",
        "--disable-hot-restart",
        "--log-format",
        "[%Y-%m-%d %T.%e][%l] %v",
        "--base-id",
        "7331",
        "--config-yaml",
        &format!("admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_wrapper_running_envoy_runs_zerohop_through_a_link() {
    let up = upstream("a");
    let (listen, admin) = (envoy::free_port(), envoy::free_port());
    let file = support::scratch("bootstrap.yaml");
    std::fs::write(&file, config(listen, up.addr.port())).unwrap();
    let flags = wrapper_flags(file.to_str().unwrap(), admin);

    // Envoy takes the same command line.
    if envoy::available() {
        let out = Command::new("envoy")
            .args(&flags)
            .args(["--mode", "validate"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "envoy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut child = quiet(&envoy_link(), &flags);
    let deadline = Instant::now() + Duration::from_secs(10);
    let dump = loop {
        if let Some(d) = support::admin::get(admin, "/server_info") {
            if TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                break d;
            }
        }
        assert!(Instant::now() < deadline, "not serving");
        std::thread::sleep(Duration::from_millis(50));
    };
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["node"]["id"], "x", "--service-node");
    assert_eq!(dump["node"]["cluster"], "web-cluster", "--service-cluster");
    assert_eq!(
        dump["command_line_options"]["concurrency"], 2,
        "--concurrency 2"
    );
    let r = Client::connect(([127, 0, 0, 1], listen).into()).get("x", "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("a"));
    let shm = PathBuf::from("/dev/shm/zerohop-base-7331");
    assert!(shm.exists(), "--base-id names the segment");

    unsafe_free_sigterm(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!shm.exists(), "the --base-id segment is removed at exit");
}

/// `bin args`, its output discarded.
fn quiet(bin: &std::path::Path, args: &[impl AsRef<std::ffi::OsStr>]) -> std::process::Child {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// SIGTERM through kill(1) (no unsafe in the tests).
fn unsafe_free_sigterm(pid: u32) {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}

#[test]
fn mode_validate_answers_as_envoys_does() {
    let link = envoy_link();
    let good = support::scratch("good.yaml");
    std::fs::write(&good, config(0, 1)).unwrap();
    let bad = support::scratch("bad.yaml");
    std::fs::write(
        &bad,
        config(0, 1).replace("type: STATIC", "type: STATIC\n    lb_policy: MAGLEV_X"),
    )
    .unwrap();
    for (file, ok) in [(&good, true), (&bad, false)] {
        let run = |bin: &std::path::Path| {
            Command::new(bin)
                .args(["--mode", "validate", "-c", file.to_str().unwrap()])
                .output()
                .unwrap()
        };
        let z = run(&link);
        assert_eq!(
            z.status.success(),
            ok,
            "{}",
            String::from_utf8_lossy(&z.stderr)
        );
        if ok {
            let out = String::from_utf8_lossy(&z.stdout);
            assert_eq!(out.trim(), format!("configuration '{}' OK", file.display()));
        } else {
            let err = String::from_utf8_lossy(&z.stderr);
            assert!(
                err.contains("static_resources.clusters[0].lb_policy"),
                "{err}"
            );
        }
        if envoy::available() {
            let e = run(std::path::Path::new("envoy"));
            assert_eq!(e.status.success(), ok, "envoy agrees on {}", file.display());
        }
    }
}

#[test]
fn config_yaml_alone_is_the_bootstrap_and_unknown_flags_are_named() {
    let up = upstream("a");
    let listen = envoy::free_port();
    let yaml = config(listen, up.addr.port());
    let mut child = quiet(
        &support::bin(),
        &["--config-yaml", &yaml, "--concurrency", "1"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(Instant::now() < deadline, "not serving");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = Client::connect(([127, 0, 0, 1], listen).into()).get("x", "/", &[]);
    assert_eq!(r.status, 200);
    unsafe_free_sigterm(child.id());
    assert!(child.wait().unwrap().success());

    for (args, named) in [
        (vec!["--no-such-flag"], "unknown flag --no-such-flag"),
        (vec!["--mode", "init_only"], "--mode init_only"),
        (vec!["-l", "loud"], "unknown log level \"loud\""),
        (
            vec!["--component-log-level", "quic:debug"],
            "component \"quic\" has no counterpart",
        ),
    ] {
        let out = Command::new(envoy_link()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{args:?}: {err}");
    }
}

/// The admin port in use stops start-up at once with the field named (no restart loop of
/// control), and the failed start leaves no segment behind; log lines carry a timestamp
/// and a level.
#[test]
fn an_admin_port_in_use_stops_the_start_cleanly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let yaml = format!(
        "admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n{}",
        config(0, 1)
    );
    let file = support::scratch("admin-taken.yaml");
    std::fs::write(&file, yaml).unwrap();
    let started = Instant::now();
    let child = Command::new(support::bin())
        .args(["-c", file.to_str().unwrap(), "--shards", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it kept trying: {err}"
    );
    assert!(
        err.contains(&format!(
            "admin.address 127.0.0.1:{port}: the admin listener cannot be bound"
        )),
        "{err}"
    );
    // `[2026-12-06T16:07:15Z ERROR] ...`
    let line = err.lines().find(|l| l.contains("admin listener")).unwrap();
    assert!(
        line.starts_with("[20") && line.contains("Z ERROR]"),
        "{line}"
    );
    assert!(
        !std::path::Path::new(&format!("/dev/shm/zerohop-{pid}")).exists(),
        "the failed start left its segment"
    );
}
