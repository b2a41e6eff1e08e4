//! The admin endpoints in Envoy's shapes, compared with Envoy 1.40's own answers to the same
//! bootstrap: `/config_dump` (with `?resource=` and `?include_eds`), `/server_info`,
//! `/runtime` and `POST /runtime_modify`, and routes whose `runtime_fraction` reads the
//! runtime's layers. Envoy comes from PyPI; CI sets ZEROHOP_REQUIRE_PEERS=1, so there a
//! missing Envoy fails the test.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::admin::{json, request as admin};
use support::envoy::{self, Envoy};
use support::http::{upstream, Client};
use support::Proxy;

/// One proxy of either kind, its admin port and its listener.
struct Running {
    admin: u16,
    listen: SocketAddr,
    _zerohop: Option<Proxy>,
    _envoy: Option<Envoy>,
}

/// Runs `config(admin, listen)` through zerohop, and through Envoy when it is installed.
fn both(config: impl Fn(u16, u16) -> String) -> Option<(Running, Running)> {
    if !envoy::available() {
        return None;
    }
    let (port, listen) = (envoy::free_port(), envoy::free_port());
    let z = Running {
        admin: port,
        listen: ([127, 0, 0, 1], listen).into(),
        _zerohop: Some(Proxy::start(&config(port, listen))),
        _envoy: None,
    };
    let (port, listen) = (envoy::free_port(), envoy::free_port());
    let mut e = envoy::spawn(&config(port, listen));
    let addr: SocketAddr = ([127, 0, 0, 1], listen).into();
    envoy::wait_accepting(&mut e, addr, Duration::from_secs(30));
    let e = Running {
        admin: port,
        listen: addr,
        _zerohop: None,
        _envoy: Some(e),
    };
    // Both answer on admin before going on.
    for r in [&z, &e] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while admin(r.admin, "GET", "/ready").0 != 200 {
            assert!(Instant::now() < deadline, "admin on {} not ready", r.admin);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Some((z, e))
}

/// What differs between two runs of one config: times, and the ports each run was given.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("last_updated");
            if let Some(p) = o.get_mut("port_value") {
                *p = 0.into();
            }
            o.values_mut().for_each(normalize);
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn by_type(dump: &Value) -> Vec<(String, Value)> {
    dump["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|c| {
            let t = c["@type"].as_str().unwrap().rsplit('.').next().unwrap();
            let mut c = c.clone();
            normalize(&mut c);
            (t.to_owned(), c)
        })
        .collect()
}

fn dump_config(admin: u16, listen: u16, upstream: u16) -> String {
    format!(
        r#"node: {{ id: node-1, cluster: web }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
  listeners:
  - name: front
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: auto
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/api", headers: [{{ name: x-canary, present_match: true }}] }}
                route: {{ cluster: dns, timeout: 2.5s, prefix_rewrite: "/" }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: a, timeout: {{ seconds: 3, nanos: 500000000 }} }}
                request_headers_to_add: [{{ header: {{ key: x-a, value: "1" }} }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: a
    connect_timeout: 0.25s
    type: STATIC
    lb_policy: round_robin
    load_assignment:
      cluster_name: a
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
          load_balancing_weight: 3
  - name: dns
    connect_timeout: {{ seconds: 1 }}
    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 30s
    load_assignment:
      cluster_name: dns
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: localhost, port_value: {upstream} }} }} }}
"#
    )
}

/// `/config_dump` of a static bootstrap, section by section, as Envoy prints it: the same
/// dumps in the same order, each listener, cluster and inline route configuration as proto
/// JSON (durations as `"3.500s"`, enums by name, defaults left out, `@type` on each `Any`).
#[test]
fn config_dump_is_envoys() {
    let up = upstream("a");
    let port = up.addr.port();
    let Some((z, e)) = both(|admin, listen| dump_config(admin, listen, port)) else {
        return;
    };
    let (zd, ed) = (json(z.admin, "/config_dump"), json(e.admin, "/config_dump"));
    let (zs, es) = (by_type(&zd), by_type(&ed));
    let types = |v: &[(String, Value)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(types(&zs), types(&es), "the dumps and their order");
    for ((t, zv), (_, ev)) in zs.iter().zip(&es) {
        if t == "BootstrapConfigDump" {
            // Envoy adds its own build and extension list to the node; the rest is the file.
            for field in ["static_resources", "admin"] {
                assert_eq!(
                    zv["bootstrap"][field], ev["bootstrap"][field],
                    "{t}.{field}"
                );
            }
            assert_eq!(zv["bootstrap"]["node"]["id"], ev["bootstrap"]["node"]["id"]);
            assert_eq!(zv["bootstrap"]["node"]["user_agent_name"], "zerohop");
            continue;
        }
        assert_eq!(zv, ev, "{t}");
    }
    // A dump's field: its elements, each with the element's @type.
    for resource in [
        "static_clusters",
        "static_listeners",
        "static_route_configs",
    ] {
        let path = format!("/config_dump?resource={resource}");
        let (mut zr, mut er) = (json(z.admin, &path), json(e.admin, &path));
        normalize(&mut zr);
        normalize(&mut er);
        assert_eq!(zr, er, "{path}");
    }
    let path = "/config_dump?resource=no_such_field";
    assert_eq!(admin(z.admin, "GET", path), admin(e.admin, "GET", path));

    // With endpoints: the hosts in force, the DNS cluster's resolved.
    let hosts = |port: u16| {
        let d = json(port, "/config_dump?include_eds");
        let eds = d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["@type"]
                    .as_str()
                    .unwrap()
                    .ends_with("EndpointsConfigDump")
            })
            .cloned()
            .expect("EndpointsConfigDump");
        let mut out = Vec::new();
        for c in eds["static_endpoint_configs"].as_array().unwrap() {
            let la = &c["endpoint_config"];
            for l in la["endpoints"].as_array().unwrap() {
                for h in l["lb_endpoints"].as_array().unwrap() {
                    let sa = &h["endpoint"]["address"]["socket_address"];
                    out.push(format!(
                        "{} {}:{} weight {} {}",
                        la["cluster_name"],
                        sa["address"],
                        sa["port_value"],
                        h["load_balancing_weight"],
                        h["health_status"]
                    ));
                }
            }
        }
        let types: Vec<String> = d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["@type"].as_str().unwrap().to_owned())
            .collect();
        (types, out)
    };
    let zh = hosts(z.admin);
    assert_eq!(zh, hosts(e.admin));
    assert_eq!(zh.1.len(), 2, "{zh:?}");

    // /server_info: the node, the state, the concurrency.
    let (zi, ei) = (json(z.admin, "/server_info"), json(e.admin, "/server_info"));
    assert_eq!(zi["state"], ei["state"]);
    assert_eq!(zi["node"]["id"], ei["node"]["id"]);
    assert_eq!(zi["node"]["cluster"], ei["node"]["cluster"]);
    assert_eq!(
        zi["command_line_options"]["concurrency"],
        ei["command_line_options"]["concurrency"]
    );

    // No layered_runtime: no admin layer to modify; and modifying needs POST.
    let modify = "/runtime_modify?k=1";
    assert_eq!(
        admin(z.admin, "POST", modify).0,
        admin(e.admin, "POST", modify).0
    );
    assert_eq!(
        admin(z.admin, "GET", modify).0,
        admin(e.admin, "GET", modify).0
    );
    let _ = Client::connect(z.listen);
}

fn runtime_config(admin: u16, listen: u16) -> String {
    format!(
        r#"admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
layered_runtime:
  layers:
  - name: static
    static_layer:
      routing: {{ canary: 0, beta: {{ numerator: 0, denominator: TEN_THOUSAND }} }}
      flag: true
      ratio: 1.5
      text: hello
  - name: admin
    admin_layer: {{}}
static_resources:
  listeners:
  - name: front
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: "/"
                  runtime_fraction: {{ default_value: {{ numerator: 100 }}, runtime_key: routing.canary }}
                direct_response: {{ status: 200, body: {{ inline_string: canary }} }}
              - match:
                  prefix: "/"
                  runtime_fraction: {{ default_value: {{ numerator: 10000, denominator: TEN_THOUSAND }}, runtime_key: routing.beta }}
                direct_response: {{ status: 200, body: {{ inline_string: beta }} }}
              - match:
                  prefix: "/"
                  runtime_fraction: {{ default_value: {{ numerator: 0 }}, runtime_key: routing.unset }}
                direct_response: {{ status: 200, body: {{ inline_string: never }} }}
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: stable }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
    )
}

/// What one proxy does through a sequence of runtime changes: which route answers, the
/// status of each `/runtime_modify`, and what `/runtime` shows.
fn runtime_transcript(r: &Running) -> Vec<String> {
    let mut t = Vec::new();
    let route = |t: &mut Vec<String>, label: &str| {
        let body = Client::connect(r.listen).get("x", "/", &[]).text();
        t.push(format!("{label}: {body}"));
    };
    let modify = |t: &mut Vec<String>, q: &str| {
        let (status, _) = admin(r.admin, "POST", &format!("/runtime_modify?{q}"));
        t.push(format!("POST /runtime_modify?{q} -> {status}"));
    };
    let runtime = |t: &mut Vec<String>| {
        let v = json(r.admin, "/runtime");
        t.push(format!("layers {}", v["layers"]));
        let mut keys: Vec<_> = v["entries"].as_object().unwrap().iter().collect();
        keys.sort_by_key(|(k, _)| k.as_str());
        for (k, e) in keys {
            // Envoy prints a fractional percent as protobuf debug text: compared by layer.
            let shown = |s: &Value| match s.as_str() {
                Some(s) if s.contains("numerator") => "<fraction>".to_owned(),
                _ => s.to_string(),
            };
            let layers: Vec<String> = e["layer_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(shown)
                .collect();
            t.push(format!("  {k} = {} {layers:?}", shown(&e["final_value"])));
        }
    };
    route(&mut t, "static layer canary 0, beta 0/10000");
    runtime(&mut t);
    t.push(format!(
        "GET /runtime_modify -> {}",
        admin(r.admin, "GET", "/runtime_modify?routing.canary=100").0
    ));
    modify(&mut t, "routing.canary=100");
    route(&mut t, "admin layer canary 100");
    modify(&mut t, "routing.canary=250");
    route(&mut t, "canary above 100");
    modify(&mut t, "routing.canary=0&routing.beta=100");
    route(&mut t, "canary 0, beta 100 (a percentage)");
    modify(&mut t, "routing.canary=50&routing.beta=0");
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let body = Client::connect(r.listen).get("x", "/", &[]).text();
        *counts.entry(body).or_insert(0u32) += 1;
    }
    // Half and half; the odds of falling outside 60..240 of 300 are below 1e-20.
    t.push(format!(
        "canary 50: {:?}",
        counts
            .iter()
            .map(|(k, n)| (k.clone(), (60..=240).contains(n)))
            .collect::<Vec<_>>()
    ));
    modify(&mut t, "routing.canary=&routing.beta=");
    route(&mut t, "admin layer cleared");
    modify(&mut t, "new.key=7");
    runtime(&mut t);
    t
}

/// `runtime_fraction` on routes reads the runtime's layers (static, then admin on top),
/// whole numbers as percentages, a `{numerator, denominator}` as a fraction; `/runtime_modify`
/// changes the admin layer and the next request sees it; `/runtime` lists each key by layer.
#[test]
fn runtime_fraction_follows_the_runtime_as_envoys() {
    let Some((z, e)) = both(runtime_config) else {
        return;
    };
    let zt = runtime_transcript(&z);
    for line in &zt {
        eprintln!("[zerohop] {line}");
    }
    assert!(zt[0].ends_with(": stable"), "{zt:?}");
    let et = runtime_transcript(&e);
    assert_eq!(zt, et, "zerohop and Envoy differ");
}
