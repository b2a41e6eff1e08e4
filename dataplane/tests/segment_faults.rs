//! The segment file under faults: removed, or its header overwritten, with control killed or
//! running. The shards keep serving what they applied, the segment is restored for the next
//! control, and configuration changes flow again, with no request failing meanwhile.

mod support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::envoy::free_port;
use support::traffic::*;
use support::*;
use zerohop_proto::shm::Segment;
use zerohop_proto::stats::Counter;

fn config(listeners: &[&str], up: std::net::SocketAddr, admin: u16) -> String {
    let mut yaml = tcp_proxy_listeners(listeners, &[up], "", "1s");
    yaml.push_str(&format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n"
    ));
    yaml
}

/// `GET /ready` on the admin port: (status, body).
fn ready(admin: u16) -> (u16, String) {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", admin)) else {
        return (0, String::new());
    };
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = c.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// Waits until a control other than `old` publishes a generation after `after` into the
/// segment at `proxy.shm`.
fn wait_new_control(proxy: &Proxy, old: u32, after: u64) -> Segment {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(seg) = Segment::open(&proxy.shm) {
            if seg.control_pid() != old
                && seg.control_pid() != 0
                && seg.current_generation() > after
            {
                return seg;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new control published:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After the fault: the new control's changes reach the shards, `/ready` says LIVE and tells
/// that the segment was re-created, and the traffic saw no failure.
fn check_recovered(proxy: &Proxy, up: std::net::SocketAddr, admin: u16, traffic: FixedRate) {
    proxy.rewrite_config(&config(&["front", "second"], up, admin));
    let second = proxy.wait_listener("second", Duration::from_secs(15));
    echo_once(&mut TcpStream::connect(second).unwrap(), b"new generation");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut status, mut body) = ready(admin);
    while status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        (status, body) = ready(admin);
    }
    assert_eq!(status, 200, "{body}\n{}", proxy.log());
    assert!(body.starts_with("LIVE\n"), "{body}");
    assert!(body.contains("re-created 1 time"), "{body}");
    assert_eq!(proxy.total(Counter::SegmentRecreated), 1);
    let (ok, failures) = traffic.stop();
    assert_no_failures(ok, &failures, 100);
}

/// A zerohop (with an admin port) serving new connections at a fixed rate: the state before
/// a fault.
struct Running {
    proxy: Proxy,
    up: std::net::SocketAddr,
    admin: u16,
    /// The control process and the generation it published.
    control: u32,
    generation: u64,
    traffic: FixedRate,
}

impl Running {
    fn start() -> Running {
        let (up, admin) = (echo_upstream(), free_port());
        let proxy = Proxy::start(&config(&["front"], up, admin));
        let seg = Segment::open(&proxy.shm).unwrap();
        let (control, generation) = (seg.control_pid(), seg.current_generation());
        drop(seg);
        let traffic = FixedRate::start(proxy.addr("front"), 2, Duration::from_millis(5));
        std::thread::sleep(Duration::from_millis(200));
        Running {
            proxy,
            up,
            admin,
            control,
            generation,
            traffic,
        }
    }
}

#[test]
fn a_removed_segment_file_then_control_killed_is_restored_and_nothing_fails() {
    let Running {
        proxy,
        up,
        admin,
        control,
        generation,
        traffic,
    } = Running::start();

    std::fs::remove_file(&proxy.shm).unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &control.to_string()])
        .status()
        .unwrap();
    assert!(
        proxy.wait_log("re-created it with generation", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(proxy.log().contains("was removed"), "{}", proxy.log());
    wait_new_control(&proxy, control, generation);
    check_recovered(&proxy, up, admin, traffic);
}

#[test]
fn garbage_over_the_segment_header_stops_control_and_the_data_plane_restores_it() {
    let Running {
        proxy,
        up,
        admin,
        control,
        generation,
        traffic,
    } = Running::start();

    // The magic stays, so the file still looks like a segment; what follows is noise.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&proxy.shm)
        .unwrap();
    f.seek(SeekFrom::Start(8)).unwrap();
    let noise: Vec<u8> = (0..1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    f.write_all(&noise).unwrap();
    drop(f);

    assert!(
        proxy.wait_log("exiting without publishing", Duration::from_secs(5)),
        "control noticed the damage:\n{}",
        proxy.log()
    );
    assert!(
        proxy.wait_log("re-created it with generation", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    let seg = wait_new_control(&proxy, control, generation);
    assert!(
        seg.current_generation() < 1 << 20,
        "the generation sequence continues from the served one, not from garbage: {}",
        seg.current_generation()
    );
    check_recovered(&proxy, up, admin, traffic);
}

#[test]
fn attached_to_a_separate_control_the_data_plane_restores_a_removed_segment_itself() {
    let up = echo_upstream();
    let mut control = Control::start(&tcp_proxy_config(&[up], "", "1s"), &[]);
    let opts = Opts {
        attach: Some(control.shm.clone()),
        ..Opts::default()
    };
    let proxy = Proxy::start_with("", opts);
    let generation = control.segment().current_generation();
    // With --attach the data plane's listeners are named in its log.
    let front = proxy.wait_listener("front", Duration::from_secs(5));
    let traffic = FixedRate::start(front, 2, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(200));

    std::fs::remove_file(&control.shm).unwrap();
    control.kill_and_restart(|| {
        // Within its one-second look, the data plane puts the file back; the restarted
        // control then continues from it.
        assert!(
            proxy.wait_log("re-created it with generation", Duration::from_secs(5)),
            "{}",
            proxy.log()
        );
    });
    let seg = wait_new_control(&proxy, 0, generation);
    assert_eq!(seg.current_generation(), generation + 1);
    std::fs::write(
        &control.config,
        tcp_proxy_listeners(&["front", "second"], &[up], "", "1s"),
    )
    .unwrap();
    let second = proxy.wait_listener("second", Duration::from_secs(15));
    echo_once(&mut TcpStream::connect(second).unwrap(), b"new generation");
    let (ok, failures) = traffic.stop();
    assert_no_failures(ok, &failures, 100);
}
