//! `envoy.filters.http.local_ratelimit` against Envoy 1.40: the same config and requests
//! through both, comparing each answer (status, body, the rate limit's headers) and the
//! filter's counters. Envoy comes from PyPI; CI sets ZEROHOP_REQUIRE_PEERS=1, so there a
//! missing Envoy fails the test.

mod support;

use std::net::SocketAddr;

use support::envoy;
use support::http::{Client, ROUTER};
use support::{admin, Proxy};
use zerohop_proto::stats::Counter;

const FILTER: &str = r#"          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: limiter
              token_bucket: { max_tokens: 3, tokens_per_fill: 3, fill_interval: 60s }
              filter_enabled: { default_value: { numerator: 100, denominator: HUNDRED } }
              filter_enforced: { default_value: { numerator: 100, denominator: HUNDRED } }
              response_headers_to_add:
              - header: { key: x-local-rate-limit, value: "true" }
              enable_retry_after_header: true
"#;

fn config(admin_port: u16, upstream: u16) -> String {
    let per_route = |bucket: &str, enabled: u32| {
        format!(
            r#"                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                    stat_prefix: route
                    status: {{ code: ServiceUnavailable }}
                    {bucket}
                    filter_enabled: {{ default_value: {{ numerator: {enabled}, denominator: HUNDRED }} }}
                    filter_enforced: {{ default_value: {{ numerator: 100, denominator: HUNDRED }} }}
"#
        )
    };
    let manager = format!(
        r#"          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/own" }}
                route: {{ cluster: backend }}
{}              - match: {{ prefix: "/off" }}
                route: {{ cluster: backend }}
{}              - match: {{ prefix: "/unset" }}
                route: {{ cluster: backend }}
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                    stat_prefix: unset
                    token_bucket: {{ max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: backend }}
          http_filters:
{FILTER}{ROUTER}"#,
        per_route(
            "token_bucket: { max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s }",
            100
        ),
        per_route(
            "token_bucket: { max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s }",
            0
        ),
    );
    support::http::manager_bootstrap(
        &support::http::admin_prefix(admin_port),
        0,
        &manager,
        &support::http::static_cluster("backend", upstream),
    )
}

/// Each answer: status, body, and the headers the rate limit sets.
fn run(front: SocketAddr) -> Vec<String> {
    let mut c = Client::connect(front);
    let paths = [
        "/a", "/a", "/a", "/a", "/a", "/own", "/own", "/off", "/off", "/off",
    ];
    paths
        .iter()
        .map(|p| {
            let r = c.get("svc", p, &[]);
            if r.status == 200 {
                return format!("{p}: 200");
            }
            let h = |n: &str| r.header(n).unwrap_or("-").to_owned();
            format!(
                "{p}: {} {:?} x-envoy-ratelimited={} x-local-rate-limit={} retry-after={} content-type={}",
                r.status,
                r.text(),
                h("x-envoy-ratelimited"),
                h("x-local-rate-limit"),
                // Seconds to the next fill: up to 60, by each proxy's own clock.
                h("retry-after"),
                h("content-type"),
            )
        })
        .collect()
}

#[test]
fn requests_over_the_bucket_are_answered_as_envoy_answers_them() {
    let up = support::http::upstream("backend");
    let proxy = Proxy::start(&config(envoy::free_port(), up.addr.port()));
    let z = run(proxy.addr("web"));
    let counters = [
        Counter::HttpLocalRateLimitEnabled,
        Counter::HttpLocalRateLimitOk,
        Counter::HttpLocalRateLimitRateLimited,
        Counter::HttpLocalRateLimitEnforced,
    ]
    .map(|c| proxy.total(c));
    eprintln!("[zerohop] {z:#?} {counters:?}");
    assert_eq!(z[..5].iter().filter(|l| l.ends_with(": 200")).count(), 3);
    assert!(z[3].starts_with("/a: 429 \"local_rate_limited\" x-envoy-ratelimited=- x-local-rate-limit=true retry-after=20"));
    assert_eq!(z[5], "/own: 200");
    assert!(
        z[6].starts_with("/own: 503"),
        "the route's own bucket and status"
    );
    assert!(
        z[7..].iter().all(|l| l.ends_with(": 200")),
        "not enabled on /off"
    );
    // 5 + 2 checked, 3 + 1 within, 2 + 1 over; both configs enforce.
    assert_eq!(counters, [7, 4, 3, 3]);
    if !envoy::available() {
        return;
    }
    let eadmin = envoy::free_port();
    let (_envoy, eaddr) = envoy::start(&config(eadmin, up.addr.port()));
    let e = run(eaddr);
    let (_, stats) = admin::request(eadmin, "GET", "/stats");
    let stat = |prefix: &str, name: &str| {
        admin::stat(&stats, &format!("{prefix}.http_local_rate_limit.{name}"))
    };
    let e_counters = ["enabled", "ok", "rate_limited", "enforced"]
        .map(|n| stat("limiter", n) + stat("route", n));
    eprintln!("[envoy]   {e:#?} {e_counters:?}");
    assert_eq!(z, e, "zerohop and Envoy differ");
    assert_eq!(counters, e_counters, "the counters differ");
}

/// `envoy.filters.network.local_ratelimit` before a tcp_proxy: each connection takes a
/// token; without one it is closed before it reaches the upstream, in both proxies.
#[test]
fn connections_over_the_bucket_are_closed_as_envoy_closes_them() {
    use std::io::{Read, Write};
    let echo = support::echo_upstream();
    let config = |admin_port: u16| {
        let limit = r#"    - filters:
      - name: envoy.filters.network.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
          stat_prefix: conns
          token_bucket: { max_tokens: 2, tokens_per_fill: 1, fill_interval: 60s }
      - name: envoy.filters.network.tcp_proxy"#;
        format!(
            "{}{}",
            support::http::admin_prefix(admin_port),
            support::tcp_proxy_config(&[echo], "", "1s").replace(
                "    - filters:\n      - name: envoy.filters.network.tcp_proxy",
                limit
            )
        )
    };
    let run = |front: SocketAddr| -> Vec<bool> {
        (0..4)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(front).unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .unwrap();
                let mut echo = [0u8; 5];
                s.write_all(b"ping\n").is_ok()
                    && s.read_exact(&mut echo).is_ok()
                    && &echo == b"ping\n"
            })
            .collect()
    };
    let proxy = Proxy::start(&config(envoy::free_port()));
    // The test's wait for Envoy to listen is a connection, which takes a token there: one
    // here too.
    drop(std::net::TcpStream::connect(proxy.addr("front")).unwrap());
    let z = run(proxy.addr("front"));
    let z_limited = proxy.total(Counter::LocalRateLimitRateLimited);
    eprintln!("[zerohop] echoed {z:?}, rate_limited {z_limited}");
    assert_eq!(z, [true, false, false, false]);
    assert_eq!(z_limited, 3);
    if !envoy::available() {
        return;
    }
    let eadmin = envoy::free_port();
    let (_envoy, eaddr) = envoy::start(&config(eadmin));
    let e = run(eaddr);
    let (_, stats) = admin::request(eadmin, "GET", "/stats");
    let e_limited = admin::stat(&stats, "local_rate_limit.conns.rate_limited");
    eprintln!("[envoy]   echoed {e:?}, rate_limited {e_limited}");
    assert_eq!(z, e, "zerohop and Envoy differ");
    assert_eq!(z_limited, e_limited, "the counters differ");
}
