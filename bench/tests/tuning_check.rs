//! `tuning/check` reports what this host really has, and `--strict` agrees with it.

use std::process::Command;

fn check(arg: &str) -> std::process::Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tuning/check"))
        .arg(arg)
        .output()
        .expect("run tuning/check")
}

fn rows() -> Vec<serde_json::Value> {
    let out = check("--json");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect()
}

#[test]
fn reports_every_setting_with_a_reason_and_a_valid_status() {
    let rows = rows();
    for want in [
        "RLIMIT_MEMLOCK",
        "RLIMIT_NOFILE",
        "net.core.somaxconn",
        "net.ipv4.tcp_tw_reuse",
        "fs.nr_open",
        "net.ipv4.ip_local_port_range",
        "kernel.io_uring_disabled",
        "CPU frequency governor",
        "isolated CPUs",
        "IRQ default affinity",
        "transparent huge pages",
    ] {
        assert!(
            rows.iter()
                .any(|r| r["name"].as_str().unwrap().starts_with(want)),
            "{want} missing"
        );
    }
    for r in &rows {
        assert!(
            ["ok", "change", "info", "n/a"].contains(&r["status"].as_str().unwrap()),
            "{r}"
        );
        assert!(!r["why"].as_str().unwrap().is_empty(), "{r}");
    }
}

#[test]
fn reported_values_are_the_hosts() {
    let rows = rows();
    let current = |name: &str| {
        rows.iter().find(|r| r["name"] == name).unwrap()["current"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let proc = |path: &str| std::fs::read_to_string(path).unwrap().trim().to_owned();
    assert_eq!(
        current("net.core.somaxconn"),
        proc("/proc/sys/net/core/somaxconn")
    );
    assert_eq!(current("fs.nr_open"), proc("/proc/sys/fs/nr_open"));
    let range = proc("/proc/sys/net/ipv4/ip_local_port_range")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-");
    assert_eq!(current("net.ipv4.ip_local_port_range"), range);
}

#[test]
fn strict_fails_exactly_when_something_should_change() {
    let changes = rows().iter().filter(|r| r["status"] == "change").count();
    assert_eq!(check("--strict").status.success(), changes == 0);
}
