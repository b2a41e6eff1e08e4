//! Access logs (issue #18) against Envoy 1.40: the same `access_log` configuration (file
//! loggers with Envoy's default format, a text format and a JSON format of the command
//! operators zerohop records, and filters) and the same requests through both, one
//! worker / one shard each; the lines must say the same, once what differs by nature
//! (times, durations, request ids, ports of each proxy's own sockets) is normalized. Then
//! tcp_proxy's access log, SIGUSR1's reopen, and a sink that stops taking lines (requests
//! are not held; records are dropped and counted). CI sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::envoy;
use support::http::{admin_prefix, manager_bootstrap, static_cluster, upstream, Client, ROUTER};
use support::Proxy;

/// Every deterministic operator, in a text format.
const TEXT: &str = "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %ROUTE_NAME% %RESPONSE_CODE_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON% %REQ(X-TAG):4% %REQ(X-MISSING?X-TAG)% %RESP(CONTENT-TYPE)% %RESP(CONTENT-LENGTH)% %REQ(CONTENT-LENGTH)% %REQ(:AUTHORITY)% %REQ(X-FORWARDED-PROTO)% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %REQUESTED_SERVER_NAME% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %START_TIME(%Y)% 100%%\n";

/// Typed values: numbers stay numbers, absent values are null.
const JSON: &str = r#"{ code: "%RESPONSE_CODE%", rx: "%BYTES_RECEIVED%", tx: "%BYTES_SENT%", flags: "%RESPONSE_FLAGS%", host: "%UPSTREAM_HOST%", local: "%DOWNSTREAM_LOCAL_ADDRESS%", remote: "%DOWNSTREAM_REMOTE_ADDRESS%", up_local: "%UPSTREAM_LOCAL_ADDRESS%", start: "%START_TIME%", duration: "%DURATION%", request_duration: "%REQUEST_DURATION%", response_duration: "%RESPONSE_DURATION%", id: "%REQ(X-REQUEST-ID)%", connection: "%CONNECTION_ID%", hostname: "%HOSTNAME%", ua: "%REQ(USER-AGENT)%", mixed: "[%RESPONSE_CODE% %ROUTE_NAME%]", nested: { proto: "%PROTOCOL%", literal: 7 } }"#;

fn file_logger(path: &Path, format: &str) -> String {
    format!(
        "          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n{format}",
        path.display()
    )
}

fn text_format(t: &str) -> String {
    format!(
        "              log_format: {{ text_format_source: {{ inline_string: {} }} }}\n",
        serde_json::to_string(t).unwrap()
    )
}

/// The loggers of one proxy, writing into `dir`.
fn loggers(dir: &Path) -> String {
    let filtered = |name: &str, filter: &str| {
        format!(
            "{}            filter: {filter}\n",
            file_logger(
                &dir.join(name),
                &text_format("%REQ(:PATH)% %RESPONSE_CODE%\n")
            )
        )
    };
    [
        file_logger(&dir.join("default.log"), ""),
        file_logger(&dir.join("text.log"), &text_format(TEXT)),
        file_logger(
            &dir.join("json.log"),
            &format!("              log_format: {{ json_format: {JSON} }}\n"),
        ),
        filtered("errors.log", "{ status_code_filter: { comparison: { op: GE, value: { default_value: 500, runtime_key: none } } } }"),
        filtered("either.log", "{ or_filter: { filters: [ { response_flag_filter: { flags: [ NR ] } }, { and_filter: { filters: [ { status_code_filter: { comparison: { op: EQ, value: { default_value: 201, runtime_key: none } } } }, { duration_filter: { comparison: { op: LE, value: { default_value: 60000, runtime_key: none } } } } ] } } ] } }"),
        filtered("none.log", "{ runtime_filter: { runtime_key: none, percent_sampled: { numerator: 0 } } }"),
    ]
    .concat()
}

/// A connection manager with `loggers` (its `access_log` entries) and `routes` (indented 14).
fn manager(loggers: &str, routes: &str) -> String {
    format!(
        r#"          access_log:
{loggers}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
{ROUTER}"#
    )
}

fn config(admin: u16, port: u16, dir: &Path, a: u16, down: u16) -> String {
    let routes = r#"              - name: to_a
                match: { prefix: "/a" }
                route: { cluster: a }
              - name: to_down
                match: { prefix: "/down" }
                route: { cluster: down }
              - name: direct
                match: { prefix: "/d" }
                direct_response: { status: 201, body: { inline_string: "made here" } }
"#;
    let clusters = format!("{}{}", static_cluster("a", a), static_cluster("down", down));
    manager_bootstrap(
        &admin_prefix(admin),
        port,
        &manager(&loggers(dir), routes),
        &clusters,
    )
}

/// The requests, each on its own connection.
fn traffic(addr: SocketAddr) -> Vec<u16> {
    let mut statuses = Vec::new();
    for (path, extra) in [
        ("/a/1", &[("x-tag", "tagged-value")][..]),
        ("/a/2?q=1", &[][..]),
        ("/d", &[][..]),
        ("/down", &[("x-tag", "t")][..]),
        ("/missing", &[][..]),
    ] {
        statuses.push(Client::connect(addr).get("log.test", path, extra).status);
    }
    // A request with a body.
    let mut c = Client::connect(addr);
    let post = b"POST /a/post HTTP/1.1\r\nhost: log.test\r\ncontent-length: 11\r\n\r\nhello world";
    statuses.push(c.raw(post).map_or(0, |r| r.status));
    statuses
}

const REQUESTS: usize = 6;

/// The file's lines once it has `n` (Envoy flushes its files every second).
fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The default format with times, durations and request ids replaced by their shape.
fn normalize_default(line: &str) -> String {
    let time = regex::Regex::new(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\]").unwrap();
    let id =
        regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
            .unwrap();
    let line = time.replace(line, "[TIME]");
    let line = id.replace(&line, "UUID");
    // DURATION and x-envoy-upstream-service-time, after BYTES_SENT.
    let fields: Vec<&str> = line.split(' ').collect();
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| match i {
            8 | 9 if f.parse::<u64>().is_ok() => "N",
            _ => f,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A JSON line with what differs by nature checked for its shape and replaced.
fn normalize_json(line: &str, listener: u16) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(line).expect(line);
    let o = v.as_object_mut().unwrap();
    for k in ["duration", "request_duration", "response_duration"] {
        let shape = match &o[k] {
            serde_json::Value::Number(n) => {
                assert!(n.as_u64().unwrap() < 10_000, "{k}: {line}");
                "ms"
            }
            serde_json::Value::Null => "null",
            other => panic!("{k}: {other}"),
        };
        o.insert(k.into(), shape.into());
    }
    let start = o["start"].as_str().unwrap().to_owned();
    assert!(
        regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            .unwrap()
            .is_match(&start),
        "{start}"
    );
    o.insert("start".into(), "TIME".into());
    assert!(o["connection"].is_u64(), "{line}");
    o.insert("connection".into(), "N".into());
    let id = o["id"].as_str().unwrap_or("").len();
    o.insert("id".into(), id.into());
    for k in ["remote", "up_local"] {
        if let Some(a) = o[k].as_str() {
            let a: SocketAddr = a.parse().unwrap();
            o.insert(k.into(), a.ip().to_string().into());
        }
    }
    let local: SocketAddr = o["local"].as_str().unwrap().parse().unwrap();
    assert_eq!(local.port(), listener);
    o.insert("local".into(), local.ip().to_string().into());
    v
}

#[test]
fn access_log_lines_say_what_envoys_say() {
    if !envoy::available() {
        return;
    }
    let up = upstream("a");
    let down = envoy::free_port();
    let (zdir, edir) = (support::scratch("zlogs"), support::scratch("elogs"));
    std::fs::create_dir_all(&zdir).unwrap();
    std::fs::create_dir_all(&edir).unwrap();
    let (zport, eport) = (envoy::free_port(), envoy::free_port());
    let (zadmin, eadmin) = (envoy::free_port(), envoy::free_port());
    let _proxy = Proxy::start(&config(zadmin, zport, &zdir, up.addr.port(), down));
    let mut e = envoy::spawn(&config(eadmin, eport, &edir, up.addr.port(), down));
    let eaddr: SocketAddr = ([127, 0, 0, 1], eport).into();
    envoy::wait_accepting(&mut e, eaddr, Duration::from_secs(30));
    let zaddr: SocketAddr = ([127, 0, 0, 1], zport).into();
    // Nothing logs the probe connections (no request on them).
    let zs = traffic(zaddr);
    let es = traffic(eaddr);
    assert_eq!(zs, es, "statuses");
    assert_eq!(zs, [200, 200, 201, 503, 404, 200]);

    let both = |name: &str, n: usize| (lines(&zdir.join(name), n), lines(&edir.join(name), n));
    let (z, e) = both("text.log", REQUESTS);
    assert_eq!(z.len(), REQUESTS, "zerohop's text log: {z:#?}");
    // The listeners' ports differ; nothing else may.
    let z: Vec<String> = z
        .iter()
        .map(|l| l.replace(&zport.to_string(), "PORT"))
        .collect();
    let e: Vec<String> = e
        .iter()
        .map(|l| l.replace(&eport.to_string(), "PORT"))
        .collect();
    support::same("text format", &z, &e);

    let (z, e) = both("default.log", REQUESTS);
    let z: Vec<String> = z.iter().map(|l| normalize_default(l)).collect();
    let e: Vec<String> = e.iter().map(|l| normalize_default(l)).collect();
    support::same("default format", &z, &e);

    let (z, e) = both("json.log", REQUESTS);
    assert_eq!(z.len(), e.len(), "json lines");
    for (zl, el) in z.iter().zip(&e) {
        let (zv, ev) = (normalize_json(zl, zport), normalize_json(el, eport));
        assert_eq!(zv, ev, "json\nzerohop: {zl}\nenvoy:   {el}");
    }

    // Filters: the same requests pass each one.
    for (name, n) in [("errors.log", 1), ("either.log", 2)] {
        let (z, e) = both(name, n);
        assert_eq!(z.len(), n, "{name}: {z:?}");
        support::same(name, &z, &e);
    }
    assert_eq!(std::fs::read_to_string(zdir.join("none.log")).unwrap(), "");
    assert_eq!(std::fs::read_to_string(edir.join("none.log")).unwrap(), "");
    let (_, stats) = support::admin::request(zadmin, "GET", "/stats");
    assert!(support::admin::stat(&stats, "zerohop.access_log.records") >= REQUESTS as u64);
    assert_eq!(
        support::admin::stat(&stats, "zerohop.access_log.dropped"),
        0
    );
}

fn tcp_config(admin: u16, port: u16, log: &Path, cluster: &str, up: u16) -> String {
    format!(
        r#"{}static_resources:
  listeners:
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: {cluster}
          access_log:
{}  clusters:
{}"#,
        admin_prefix(admin),
        file_logger(
            log,
            &text_format("%PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %REQ(:PATH)% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%\n")
        ),
        static_cluster(cluster, up)
    )
}

/// One connection: sends 100 bytes, reads what comes back until the proxy closes.
fn tcp_exchange(addr: SocketAddr) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&[b'x'; 100]);
    let mut got = vec![0u8; 100];
    let n = s.read_exact(&mut got).map_or(0, |()| 100);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    n + rest.len()
}

#[test]
fn tcp_proxy_connections_are_logged_as_envoy_logs_them() {
    if !envoy::available() {
        return;
    }
    let echo = support::echo_upstream();
    let dead = envoy::free_port();
    for (cluster, port, moved) in [("echo", echo.port(), 100), ("dead", dead, 0)] {
        let (zlog, elog) = (
            support::scratch(&format!("z-{cluster}.log")),
            support::scratch(&format!("e-{cluster}.log")),
        );
        let (zport, eport) = (envoy::free_port(), envoy::free_port());
        let (zadmin, eadmin) = (envoy::free_port(), envoy::free_port());
        let proxy = Proxy::start(&tcp_config(zadmin, zport, &zlog, cluster, port));
        let mut e = envoy::spawn(&tcp_config(eadmin, eport, &elog, cluster, port));
        let eaddr: SocketAddr = ([127, 0, 0, 1], eport).into();
        envoy::wait_accepting(&mut e, eaddr, Duration::from_secs(30));
        // The probe connection above is one Envoy logs too: zerohop gets one as well.
        drop(TcpStream::connect(("127.0.0.1", zport)).unwrap());
        assert_eq!(tcp_exchange(([127, 0, 0, 1], zport).into()), moved);
        assert_eq!(tcp_exchange(eaddr), moved);
        let (z, e) = (lines(&zlog, 2), lines(&elog, 2));
        assert_eq!(z.len(), 2, "{cluster}: {z:?}\n{}", proxy.log());
        support::same(cluster, &z, &e);
    }
}

fn http_one_logger(admin: u16, port: u16, log: &Path, a: u16) -> String {
    let logger = file_logger(log, &text_format("%REQ(:PATH)% %RESPONSE_CODE%\n"));
    let routes =
        "              - match: { prefix: \"/\" }\n                route: { cluster: a }\n";
    let m = manager(&logger, routes);
    manager_bootstrap(&admin_prefix(admin), port, &m, &static_cluster("a", a))
}

#[test]
fn sigusr1_reopens_the_files_for_log_rotation() {
    let up = upstream("a");
    let log = support::scratch("rotate.log");
    let moved = PathBuf::from(format!("{}.1", log.display()));
    let admin = envoy::free_port();
    let proxy = Proxy::start(&http_one_logger(admin, 0, &log, up.addr.port()));
    let addr = proxy.addr("web");
    assert_eq!(Client::connect(addr).get("x", "/before", &[]).status, 200);
    assert_eq!(lines(&log, 1), ["/before 200"]);
    std::fs::rename(&log, &moved).unwrap();
    // Until the reopen, lines follow the file to its new name (logrotate's window).
    assert_eq!(Client::connect(addr).get("x", "/moved", &[]).status, 200);
    assert_eq!(lines(&moved, 2), ["/before 200", "/moved 200"]);
    proxy.signal("USR1");
    assert!(proxy.wait_log("files reopened", Duration::from_secs(5)));
    assert_eq!(Client::connect(addr).get("x", "/after", &[]).status, 200);
    assert_eq!(lines(&log, 1), ["/after 200"]);
    assert_eq!(
        lines(&moved, 2).len(),
        2,
        "nothing more in the rotated file"
    );
}

#[test]
fn a_sink_that_stops_taking_lines_holds_no_request() {
    // A FIFO whose reader never reads: once its buffer is full, control's writer blocks
    // (a full disk, a stuck NFS mount); the shards' rings fill and records are dropped.
    let fifo = support::scratch("stalled.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(&fifo)
        .unwrap();
    let up = upstream("a");
    let admin = envoy::free_port();
    let proxy = Proxy::start(&http_one_logger(admin, 0, &fifo, up.addr.port()));
    let addr = proxy.addr("web");
    // Long paths: the 64 KiB pipe and the 512 KiB ring fill after a few thousand.
    let path = format!("/{}", "p".repeat(1000));
    let mut c = Client::connect(addr);
    let n = 3000;
    for _ in 0..n {
        assert_eq!(c.get("x", &path, &[]).status, 200);
    }
    let (_, stats) = support::admin::request(admin, "GET", "/stats");
    let dropped = support::admin::stat(&stats, "zerohop.access_log.dropped");
    assert!(dropped > 0, "records were dropped: {stats}");
    // Reading again lets lines through: the drain was blocked, not dead.
    let mut r = reader;
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got < 100_000 && Instant::now() < deadline {
        match r.read(&mut buf) {
            Ok(k) => got += k,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(
        got >= 100_000,
        "lines flow once the sink takes them again: {got}"
    );
    drop(proxy);
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_NONBLOCK)
    }
}
