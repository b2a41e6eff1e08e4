//! Route retry policies against Envoy 1.40: the same bootstrap and requests through both, to
//! scripted upstreams that fail on command. Compared: what each client gets (status, body,
//! `x-envoy-attempt-count`), how many attempts each request made and with what request
//! (body, attempt-count header), how many distinct hosts they went to, and the retry
//! counters (Envoy's summed over its clusters). Envoy comes from PyPI; CI sets
//! ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails the test.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::envoy;
use support::http::Client;
use support::http::{admin_prefix, manager_bootstrap, ROUTER};
use support::{admin, refused_port, Proxy};
use zerohop_proto::stats::Counter;

/// Each attempt an upstream saw, by the request's `x-key`: (upstream, the request's
/// `x-envoy-attempt-count`, its body).
type Attempts = Mutex<HashMap<String, Vec<(usize, String, String)>>>;
type Seen = Arc<Attempts>;

/// Upstream `id`: the n-th attempt of a request (counted across every upstream, by its
/// `x-key`) does the n-th step of its `x-plan` (the last step repeats): a status code
/// (`503`: that status), `reset` (closes without answering), `slow` (answers 200 after a
/// second), `hdr` (200 with `x-try-again: yes`), `grpcN` (200 with `grpc-status: N`),
/// `limited` (429 with `x-envoy-ratelimited`), `limited503` (503 with it), `wait` (429 with
/// it and `retry-after: 1`).
fn scripted(id: usize, seen: Seen) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || serve(id, s, &seen));
        }
    });
    addr
}

/// One request on `s`, answered as its plan says, then the connection closed.
fn serve(id: usize, s: TcpStream, seen: &Attempts) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut h: HashMap<String, String> = HashMap::new();
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).unwrap_or(0) == 0 {
                return;
            }
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                h.insert(n.to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len = h.get("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let key = h.get("x-key").cloned().unwrap_or_default();
        let n = {
            let mut seen = seen.lock().unwrap();
            let v = seen.entry(key).or_default();
            v.push((
                id,
                h.get("x-envoy-attempt-count").cloned().unwrap_or_default(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            v.len()
        };
        let plan = h.get("x-plan").cloned().unwrap_or_else(|| "200".into());
        let steps: Vec<&str> = plan.split(',').collect();
        let step = steps[(n - 1).min(steps.len() - 1)];
        let reply = |status: u16, extra: &str| {
            format!(
                "HTTP/1.1 {status} X\r\n{extra}content-length: 2\r\nconnection: close\r\n\r\nok"
            )
        };
        let out = match step {
            "reset" => return,
            "slow" => {
                std::thread::sleep(Duration::from_secs(1));
                reply(200, "")
            }
            "hdr" => reply(200, "x-try-again: yes\r\n"),
            "limited" => reply(429, "x-envoy-ratelimited: true\r\n"),
            "limited503" => reply(503, "x-envoy-ratelimited: true\r\n"),
            "wait" => reply(429, "x-envoy-ratelimited: true\r\nretry-after: 1\r\n"),
            g if g.starts_with("grpc") => reply(200, &format!("grpc-status: {}\r\n", &g[4..])),
            code => reply(code.parse().unwrap(), ""),
        };
        // Each connection serves one request: no proxy holds a pooled connection, so a
        // `reset` always meets a fresh one (zerohop replays a bodiless request once when a
        // pooled connection turns out closed, which Envoy does not).
        let _ = w.write_all(out.as_bytes());
    }
}

fn config(ups: &[SocketAddr], admin_port: u16) -> String {
    let endpoints = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| {
                format!(
                    "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
                    a.port()
                )
            })
            .collect::<String>()
    };
    let cluster = |name: &str, lb: &str, extra: &str, addrs: &[SocketAddr]| {
        format!(
            "  - name: {name}\n    lb_policy: {lb}\n{extra}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{}",
            endpoints(addrs)
        )
    };
    let dead = refused_port();
    let clusters = [
        cluster("svc", "ROUND_ROBIN", "", ups),
        cluster("rnd", "RANDOM", "", ups),
        cluster("ring", "RING_HASH", "", ups),
        cluster("half", "ROUND_ROBIN", "", &[dead, ups[0]]),
        cluster("dead", "ROUND_ROBIN", "", &[dead]),
        cluster(
            "budget0",
            "ROUND_ROBIN",
            "    circuit_breakers: { thresholds: [ { retry_budget: { budget_percent: { value: 0 }, min_retry_concurrency: 0 } } ] }\n",
            ups,
        ),
        cluster(
            "budget1",
            "ROUND_ROBIN",
            "    circuit_breakers: { thresholds: [ { retry_budget: { budget_percent: { value: 0 }, min_retry_concurrency: 1 } } ] }\n",
            ups,
        ),
        cluster(
            "nobudget",
            "ROUND_ROBIN",
            "    circuit_breakers: { thresholds: [ { max_retries: 0 } ] }\n",
            ups,
        ),
    ]
    .concat();
    let manager = format!(
        r#"          route_config:
            virtual_hosts:
            - name: counted
              domains: ["counted"]
              include_request_attempt_count: true
              include_attempt_count_in_response: true
              retry_policy: {{ retry_on: 5xx, num_retries: 2 }}
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: svc }}
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/5xx" }}
                route: {{ cluster: svc, retry_policy: {{ retry_on: 5xx, num_retries: 2 }} }}
              - match: {{ prefix: "/gateway" }}
                route: {{ cluster: svc, retry_policy: {{ retry_on: gateway-error, num_retries: 2 }} }}
              - match: {{ prefix: "/codes" }}
                route:
                  cluster: svc
                  retry_policy:
                    retry_on: "retriable-status-codes,retriable-4xx"
                    retriable_status_codes: [418]
                    num_retries: 2
              - match: {{ prefix: "/headers" }}
                route:
                  cluster: svc
                  retry_policy:
                    retry_on: retriable-headers
                    retriable_headers: [ {{ name: x-try-again, string_match: {{ exact: "yes" }} }} ]
              - match: {{ prefix: "/grpc" }}
                route: {{ cluster: svc, retry_policy: {{ retry_on: "unavailable,resource-exhausted", num_retries: 1 }} }}
              - match: {{ prefix: "/reset" }}
                route: {{ cluster: svc, retry_policy: {{ retry_on: reset, num_retries: 1 }} }}
              - match: {{ prefix: "/pertry" }}
                route:
                  cluster: svc
                  timeout: 5s
                  retry_policy: {{ retry_on: 5xx, num_retries: 1, per_try_timeout: 0.3s }}
              - match: {{ prefix: "/idempotent" }}
                route:
                  cluster: svc
                  retry_policy:
                    retry_on: 5xx
                    retriable_request_headers: [ {{ name: x-idempotent }} ]
              - match: {{ prefix: "/limited-wait" }}
                route:
                  cluster: svc
                  retry_policy:
                    retry_on: envoy-ratelimited
                    rate_limited_retry_back_off: {{ reset_headers: [ {{ name: retry-after }} ], max_interval: 5s }}
              - match: {{ prefix: "/limited-5xx" }}
                route: {{ cluster: svc, retry_policy: {{ retry_on: 5xx }} }}
              - match: {{ prefix: "/limited" }}
                route: {{ cluster: svc, retry_policy: {{ retry_on: envoy-ratelimited }} }}
              - match: {{ prefix: "/previous" }}
                route:
                  cluster: rnd
                  retry_policy:
                    retry_on: 5xx
                    num_retries: 2
                    retry_host_predicate: [ {{ name: envoy.retry_host_predicates.previous_hosts, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate }} }} ]
                    host_selection_retry_max_attempts: 20
              - match: {{ prefix: "/hashed" }}
                route:
                  cluster: ring
                  hash_policy: [ {{ header: {{ header_name: x-user }} }} ]
                  retry_policy:
                    retry_on: 5xx
                    num_retries: 2
                    retry_host_predicate: [ {{ name: envoy.retry_host_predicates.previous_hosts, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate }} }} ]
                    host_selection_retry_max_attempts: 5
              - match: {{ prefix: "/half" }}
                route: {{ cluster: half, retry_policy: {{ retry_on: connect-failure, num_retries: 3 }} }}
              - match: {{ prefix: "/dead" }}
                route: {{ cluster: dead, retry_policy: {{ retry_on: connect-failure, num_retries: 2 }} }}
              - match: {{ prefix: "/budget0" }}
                route: {{ cluster: budget0, retry_policy: {{ retry_on: 5xx }} }}
              - match: {{ prefix: "/budget1" }}
                route: {{ cluster: budget1, retry_policy: {{ retry_on: 5xx }} }}
              - match: {{ prefix: "/nobudget" }}
                route: {{ cluster: nobudget, retry_policy: {{ retry_on: 5xx }} }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: svc }}
          http_filters:
{ROUTER}"#
    );
    manager_bootstrap(&admin_prefix(admin_port), 0, &manager, &clusters)
}

/// (host, path, plan, extra headers, body).
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const CASES: &[Case] = &[
    ("svc", "/5xx", "503,200", &[], ""),
    ("svc", "/5xx", "500", &[], ""),
    ("svc", "/5xx", "404", &[], ""),
    ("svc", "/5xx", "503,200", &[], "hello"),
    ("svc", "/gateway", "500", &[], ""),
    ("svc", "/gateway", "502,504,200", &[], ""),
    ("svc", "/codes", "418,409,200", &[], ""),
    ("svc", "/codes", "429", &[], ""),
    ("svc", "/headers", "hdr,200", &[], ""),
    ("svc", "/grpc", "grpc14,200", &[], ""),
    ("svc", "/grpc", "grpc1,200", &[], ""),
    ("svc", "/grpc", "grpc8,grpc8", &[], ""),
    ("svc", "/reset", "reset,200", &[], ""),
    ("svc", "/plain", "reset,200", &[], ""),
    ("svc", "/pertry", "slow,200", &[], ""),
    ("svc", "/pertry", "slow", &[], ""),
    ("svc", "/idempotent", "503,200", &[], ""),
    (
        "svc",
        "/idempotent",
        "503,200",
        &[("x-idempotent", "1")],
        "",
    ),
    ("svc", "/limited", "limited,200", &[], ""),
    ("svc", "/limited-5xx", "limited503,200", &[], ""),
    ("svc", "/limited-wait", "wait,200", &[], ""),
    ("svc", "/previous", "503,503,200", &[], ""),
    // A hashing balancer asked for another host walks on round the ring, as Envoy's (the
    // same key through both proxies: the ring is the same, so are the hosts).
    ("svc", "/hashed", "503,503,200", &[("x-user", "u-1")], ""),
    ("svc", "/hashed", "503,503,200", &[("x-user", "u-2")], ""),
    ("svc", "/nobudget", "503,200", &[], ""),
    ("svc", "/budget0", "503,200", &[], ""),
    ("svc", "/budget1", "503,200", &[], ""),
    // A client's retry headers are Envoy's internal ones: removed, never honoured.
    (
        "svc",
        "/plain",
        "503,200",
        &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "3")],
        "",
    ),
    ("counted", "/", "503,503,200", &[], ""),
    ("counted", "/", "200", &[("x-envoy-attempt-count", "7")], ""),
    ("svc", "/dead", "200", &[], ""),
];

/// Every case's outcome: what the client got, and the attempts the upstreams saw.
fn run(addr: SocketAddr, seen: &Seen, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (host, path, plan, extra, body)) in CASES.iter().enumerate() {
        let key = format!("{tag}{i}");
        let mut req = format!(
            "{} {path} HTTP/1.1\r\nhost: {host}\r\nx-key: {key}\r\nx-plan: {plan}\r\n",
            if body.is_empty() { "GET" } else { "POST" }
        );
        for (n, v) in extra.iter() {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        let mut c = Client::connect(addr);
        let r = c.raw(req.as_bytes()).expect("an answer");
        let attempts = seen.lock().unwrap().remove(&key).unwrap_or_default();
        let hosts: std::collections::HashSet<usize> = attempts.iter().map(|a| a.0).collect();
        let requests: Vec<String> = attempts
            .iter()
            .map(|(_, count, body)| format!("[count={count} body={body}]"))
            .collect();
        out.push(format!(
            "{host}{path} {plan} {extra:?}: {} {:?} attempt-count={:?}; {} attempts to {} hosts {}",
            r.status,
            r.text(),
            r.header("x-envoy-attempt-count"),
            attempts.len(),
            hosts.len(),
            requests.join(""),
        ));
    }
    out
}

/// Half the endpoints of `half` refuse connections: every request gets through. (Run after
/// the counters are read: how many retries it takes depends on where each proxy's round
/// robin starts, which Envoy draws at random.)
fn half(addr: SocketAddr) -> String {
    let mut ok = 0;
    for _ in 0..6 {
        let mut c = Client::connect(addr);
        ok += (c.get("svc", "/half", &[]).status == 200) as usize;
    }
    format!("/half: {ok} of 6 answered 200")
}

const COUNTERS: &[(Counter, &str)] = &[
    (Counter::UpstreamRqRetry, "upstream_rq_retry"),
    (Counter::UpstreamRqRetrySuccess, "upstream_rq_retry_success"),
    (
        Counter::UpstreamRqRetryLimitExceeded,
        "upstream_rq_retry_limit_exceeded",
    ),
    (
        Counter::UpstreamRqRetryOverflow,
        "upstream_rq_retry_overflow",
    ),
    (
        Counter::UpstreamRqPerTryTimeout,
        "upstream_rq_per_try_timeout",
    ),
    (
        Counter::UpstreamRqRetryBackoffRatelimited,
        "upstream_rq_retry_backoff_ratelimited",
    ),
];

/// Envoy's `cluster.<name>.<stat>` summed over its clusters.
fn envoy_total(admin_port: u16, stat: &str) -> u64 {
    let (_, text) = admin::request(admin_port, "GET", "/stats");
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.starts_with("cluster.") && n.ends_with(&format!(".{stat}")))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn retries_follow_envoys_policy() {
    let seen: Seen = Arc::default();
    let ups: Vec<SocketAddr> = (0..3).map(|i| scripted(i, seen.clone())).collect();
    let proxy = Proxy::start(&config(&ups, envoy::free_port()));
    let z = run(proxy.addr("web"), &seen, "z");
    for l in &z {
        eprintln!("[zerohop] {l}");
    }
    let zc: Vec<(&str, u64)> = COUNTERS
        .iter()
        .map(|(c, name)| (*name, proxy.total(*c)))
        .collect();
    eprintln!("[zerohop] {zc:?}");
    let zh = half(proxy.addr("web"));
    assert_eq!(zh, "/half: 6 of 6 answered 200");
    // What must hold whatever Envoy does.
    let line = |prefix: &str| z.iter().find(|l| l.starts_with(prefix)).unwrap().clone();
    assert!(
        line("svc/5xx 503,200 []: 200").contains("2 attempts"),
        "{z:#?}"
    );
    assert!(line("svc/5xx 500 []: 500").contains("3 attempts"), "{z:#?}");
    assert!(
        line("svc/previous").contains("3 attempts to 3 hosts"),
        "{z:#?}"
    );
    assert!(
        line("svc/pertry slow []: 504").contains("2 attempts"),
        "{z:#?}"
    );
    assert!(
        line("svc/dead").contains("retried and the latest reset reason: remote connection failure"),
        "{z:#?}"
    );
    if !envoy::available() {
        return;
    }
    let eadmin = envoy::free_port();
    let (_envoy, eaddr) = envoy::start(&config(&ups, eadmin));
    let e = run(eaddr, &seen, "e");
    for l in &e {
        eprintln!("[envoy]   {l}");
    }
    let ec: Vec<(&str, u64)> = COUNTERS
        .iter()
        .map(|(_, name)| (*name, envoy_total(eadmin, name)))
        .collect();
    eprintln!("[envoy]   {ec:?}");
    assert_eq!(zh, half(eaddr), "connect failures retried differently");
    assert_eq!(z, e, "zerohop and Envoy differ");
    assert_eq!(zc, ec, "the retry counters differ");
}
