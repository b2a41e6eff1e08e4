//! Tracing (issue #18) against Envoy 1.40: two proxy hops (the front an outbound listener,
//! the back an inbound one), each a connection manager with a tracer, to a collector the
//! test runs (tests/tracing/otlp_collector.py, with `opentelemetry-proto` from PyPI, in the
//! venv `ZEROHOP_TRACE_PYTHON` or target/ci/trace-venv that .ci/run makes):
//! `envoy.tracers.opentelemetry` (the front exporting over OTLP/gRPC, the back over
//! OTLP/HTTP, W3C context) and `envoy.tracers.zipkin` (JSON v2 over HTTP, B3 context, single
//! and multi-header). The same requests through two zerohops and through two Envoys must
//! give the same spans: the same services, names, kinds, parent/child links (to the
//! client's context, to the front's span), tags, and the same context at the upstream.
//! Then a collector that stalls 5 s: requests are not held by it.
//! CI sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::envoy;
use support::http::{admin_prefix, manager_bootstrap, static_cluster, upstream, Client, ROUTER};
use support::Proxy;

/// The collector's Python: `ZEROHOP_TRACE_PYTHON`, else the venv .ci/run makes from
/// tests/tracing/requirements.txt; `None` (test skipped) when it lacks grpcio or a current
/// `opentelemetry-proto` and peers are not required.
fn trace_python() -> Option<std::path::PathBuf> {
    let python = std::env::var_os("ZEROHOP_TRACE_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/ci/trace-venv/bin/python3")
        });
    let check = "import grpc; from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans; ResourceSpans().scope_spans";
    support::python_has(&python, check, "grpcio and opentelemetry-proto").then_some(python)
}

/// The collector: its ports and the spans it printed.
struct Collector {
    child: Child,
    grpc: u16,
    http: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Collector {
    fn start(python: &std::path::Path, stall: Option<f64>) -> Collector {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/tracing/otlp_collector.py");
        let mut cmd = Command::new(python);
        cmd.arg(script);
        if let Some(s) = stall {
            cmd.args(["--stall", &s.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("collector");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let ports: Vec<u16> = first
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).expect(&line);
                sink.lock().unwrap().push(v);
            }
        });
        Collector {
            child,
            grpc: ports[0],
            http: ports[1],
            spans,
        }
    }

    /// The spans once there are `n` (or after 20 s).
    fn wait(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.spans.lock().unwrap().clone();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The collector clusters: gRPC (HTTP/2) and HTTP.
fn collector_clusters(c: &Collector) -> String {
    format!(
        "{}    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {{ http2_protocol_options: {{}} }}\n{}",
        static_cluster("otel_grpc", c.grpc),
        static_cluster("otel_http", c.http)
    )
}

/// Spans are reported one by one (Envoy's runtime keys, which zerohop reads too).
fn runtime() -> &'static str {
    "layered_runtime:\n  layers:\n  - name: static\n    static_layer:\n      tracing.opentelemetry.min_flush_spans: 1\n      tracing.zipkin.min_flush_spans: 1\n"
}

/// A hop: its connection manager traces to the collector (`exporter`: grpc or http for
/// OpenTelemetry, zipkin) as `service`, and routes to cluster `next` on `next_port`.
fn hop(admin: u16, port: u16, service: &str, exporter: &str, c: &Collector, next: u16) -> String {
    let otel = |transport: &str| {
        format!(
            r#"name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: {service}
                {transport}"#
        )
    };
    let provider = match exporter {
        "grpc" => otel("grpc_service: { envoy_grpc: { cluster_name: otel_grpc }, timeout: 1s }"),
        "http" => otel("http_service: { http_uri: { uri: \"http://collector.test/v1/traces\", cluster: otel_http, timeout: 1s } }"),
        _ => r#"name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: otel_http
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON"#
            .to_string(),
    };
    let manager = format!(
        r#"          tracing:
            random_sampling: {{ value: 100 }}
            custom_tags:
            - {{ tag: team, literal: {{ value: edge }} }}
            - {{ tag: tenant, request_header: {{ name: x-tenant, default_value: none }} }}
            provider:
              {provider}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/dec" }}
                route: {{ cluster: next }}
                decorator: {{ operation: checkout }}
              - match: {{ prefix: "/t/" }}
                route: {{ cluster: next }}
          http_filters:
{ROUTER}"#
    );
    let clusters = format!("{}{}", static_cluster("next", next), collector_clusters(c));
    // The node names the Zipkin spans' service.
    let node = format!("node: {{ id: {service}-node, cluster: {service}-cluster }}\n");
    let cfg = manager_bootstrap(
        &format!("{}{node}{}", admin_prefix(admin), runtime()),
        port,
        &manager,
        &clusters,
    );
    // The front is the caller's sidecar: an outbound listener, so egress (client) spans
    // whose decorator goes on to the back's ingress span.
    match service {
        "front" => cfg.replacen(
            "  - name: web\n",
            "  - name: web\n    traffic_direction: OUTBOUND\n",
            1,
        ),
        _ => cfg,
    }
}

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_TRACE_64: &str = "8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
const CLIENT_PARENT: &str = "2222222222222222";

/// The requests (path, extra headers) of a context format, each on its own connection.
fn cases(format: &str) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let base = vec![
        ("/t/plain", vec![]),
        ("/dec/1", vec![("x-tenant", "acme".to_string())]),
        ("/missing", vec![]),
    ];
    let more: Vec<(&str, Vec<(&str, String)>)> = match format {
        "w3c" => vec![
            (
                "/t/parent",
                vec![
                    ("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")),
                    ("tracestate", "vendor=1".to_string()),
                ],
            ),
            (
                "/t/unsampled",
                vec![("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"))],
            ),
            ("/t/bad", vec![("traceparent", "00-zz-yy-01".to_string())]),
        ],
        _ => vec![
            (
                "/t/parent",
                vec![
                    ("x-b3-traceid", CLIENT_TRACE.to_string()),
                    ("x-b3-spanid", CLIENT_SPAN.to_string()),
                    ("x-b3-parentspanid", CLIENT_PARENT.to_string()),
                    ("x-b3-sampled", "1".to_string()),
                ],
            ),
            (
                "/t/short",
                vec![
                    ("x-b3-traceid", CLIENT_TRACE_64.to_string()),
                    ("x-b3-spanid", CLIENT_SPAN.to_string()),
                ],
            ),
            (
                "/t/unsampled",
                vec![
                    ("x-b3-traceid", CLIENT_TRACE.to_string()),
                    ("x-b3-spanid", CLIENT_SPAN.to_string()),
                    ("x-b3-sampled", "0".to_string()),
                ],
            ),
            (
                "/t/single",
                vec![(
                    "b3",
                    format!("{CLIENT_TRACE}-{CLIENT_SPAN}-1-{CLIENT_PARENT}"),
                )],
            ),
            ("/t/flag", vec![("b3", "0".to_string())]),
            ("/t/bad", vec![("b3", "zz-yy-1".to_string())]),
        ],
    };
    base.into_iter().chain(more).collect()
}

/// A context header's value with the ids the test knows named and the others' lengths.
fn shape(v: &str) -> String {
    v.split('-')
        .map(|part| match part {
            CLIENT_TRACE => "CLIENT_TRACE".to_string(),
            CLIENT_TRACE_64 => "CLIENT_TRACE_64".to_string(),
            CLIENT_SPAN => "CLIENT_SPAN".to_string(),
            CLIENT_PARENT => "CLIENT_PARENT".to_string(),
            p if p.len() >= 16 && p.bytes().all(|b| b.is_ascii_hexdigit()) => {
                format!("hex{}", p.len())
            }
            p => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The requests of `format` through `addr`, and what the upstream saw of the context.
fn traffic(addr: SocketAddr, format: &str) -> Vec<String> {
    let context = [
        "traceparent",
        "tracestate",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "b3",
        "x-envoy-decorator-operation",
    ];
    let mut out = Vec::new();
    for (path, extra) in cases(format) {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = Client::connect(addr).get("trace.test", path, &extra);
        let seen = r.upstream_headers();
        let get = |n: &str| seen.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let id = get("x-request-id").unwrap_or_default();
        let ctx: Vec<String> = context
            .iter()
            .filter_map(|n| Some(format!("{n}={}", shape(&get(n)?))))
            .collect();
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        out.push(format!(
            "{path}: {} id[14]={:?} {} headers={}",
            r.status,
            id.chars().nth(14),
            ctx.join(" "),
            names.join(","),
        ));
    }
    out
}

/// The spans of one run, grouped per request path, with what is random or a port replaced
/// by how it relates: the trace (the client's or a new one, the same for all spans of a
/// request), the parent (none, the client's span, the front's span).
fn normalize(spans: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut by_path: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for s in spans {
        let url = s["attrs"]["http.url"].as_str().unwrap_or("").to_owned();
        let path = url
            .split_once("trace.test")
            .map_or(url.clone(), |(_, p)| p.to_owned());
        by_path.entry(path).or_default().push(s);
    }
    let mut out = BTreeMap::new();
    for (path, mut group) in by_path {
        group.sort_by_key(|s| s["service"].as_str().unwrap_or("").to_owned());
        let front = group
            .iter()
            .find(|s| {
                s["service"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("front"))
            })
            .map(|s| s["span_id"].as_str().unwrap().to_owned());
        let lines = group
            .iter()
            .map(|s| {
                let trace = s["trace_id"].as_str().unwrap();
                let parent = s["parent"].as_str().unwrap();
                let relation = |id: &str| match id {
                    "" => "none".to_string(),
                    CLIENT_SPAN => "client".to_string(),
                    CLIENT_PARENT => "client's parent".to_string(),
                    p if Some(p) == front.as_deref() => "front".to_string(),
                    p => format!("other:{p}"),
                };
                let parent = relation(parent);
                // A Zipkin server span may share its caller's id.
                let id = s["span_id"].as_str().unwrap();
                let id = match relation(id) {
                    r if r.starts_with("other") => "own".to_string(),
                    r => r,
                };
                let mut attrs: BTreeMap<String, String> = serde_json::from_value(s["attrs"].clone()).unwrap();
                if let Some(id) = attrs.get_mut("guid:x-request-id") {
                    *id = format!("uuid[14]={:?}", id.chars().nth(14));
                }
                if let Some(a) = attrs.get_mut("upstream_address") {
                    let ip = a.parse::<SocketAddr>().map(|a| a.ip().to_string());
                    *a = ip.unwrap_or_else(|_| a.clone());
                }
                let (start, end) = (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap());
                assert!(end >= start && end - start < 10_000_000_000, "{s}");
                let trace = match trace {
                    CLIENT_TRACE => "client".to_string(),
                    CLIENT_TRACE_64 => "client64".to_string(),
                    t => format!("new{}", t.len()),
                };
                format!(
                    "{} via {} name={:?} kind={} id={id} trace={trace} parent={parent} tracestate={:?} status={} attrs={attrs:?} zipkin={}",
                    s["service"],
                    s["transport"],
                    s["name"],
                    s["kind"],
                    s["trace_state"],
                    s["status"],
                    s.get("zipkin").map_or(String::new(), |z| z.to_string()),
                )
            })
            .collect();
        // One trace per request.
        let traces: std::collections::BTreeSet<_> =
            group.iter().map(|s| s["trace_id"].to_string()).collect();
        assert_eq!(traces.len(), 1, "{path}: {group:#?}");
        out.insert(path, lines);
    }
    out
}

/// The exporters of the two hops (front, back), the requests' context format, and how many
/// spans they make.
struct Tracer {
    exporters: (&'static str, &'static str),
    format: &'static str,
    spans: usize,
    counter: &'static str,
}

/// OpenTelemetry: plain, dec and parent through both hops, missing at the front only.
const OTEL: Tracer = Tracer {
    exporters: ("grpc", "http"),
    format: "w3c",
    spans: 7,
    counter: "tracing.opentelemetry.spans_sent",
};

/// Zipkin: plain, dec, parent, short and single through both hops, missing at the front.
const ZIPKIN: Tracer = Tracer {
    exporters: ("zipkin", "zipkin"),
    format: "b3",
    spans: 11,
    counter: "tracing.zipkin.spans_sent",
};

/// Two hops (front -> back -> upstream) of zerohop or Envoy; what the upstream saw and
/// the spans the collector got.
fn run(
    envoy: bool,
    python: &std::path::Path,
    t: &Tracer,
) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let up = upstream("a");
    let c = Collector::start(python, None);
    let (front, back) = (envoy::free_port(), envoy::free_port());
    let back_cfg = hop(
        envoy::free_port(),
        back,
        "back",
        t.exporters.1,
        &c,
        up.addr.port(),
    );
    let front_admin = envoy::free_port();
    let front_cfg = hop(front_admin, front, "front", t.exporters.0, &c, back);
    let addr: SocketAddr = ([127, 0, 0, 1], front).into();
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    if envoy {
        for (cfg, port, name) in [
            (&back_cfg, back, "back.yaml"),
            (&front_cfg, front, "front.yaml"),
        ] {
            let mut e = envoy::spawn_named(cfg, name);
            envoy::wait_accepting(
                &mut e,
                ([127, 0, 0, 1], port).into(),
                Duration::from_secs(30),
            );
            keep.push(Box::new(e));
        }
    } else {
        keep.push(Box::new(Proxy::start(&back_cfg)));
        keep.push(Box::new(Proxy::start(&front_cfg)));
    }
    let seen = traffic(addr, t.format);
    let spans = c.wait(t.spans);
    std::thread::sleep(Duration::from_millis(300));
    let spans = {
        let more = c.spans.lock().unwrap().clone();
        if more.len() > spans.len() {
            more
        } else {
            spans
        }
    };
    if !envoy {
        let (_, stats) = support::admin::request(front_admin, "GET", "/stats");
        assert!(support::admin::stat(&stats, t.counter) >= 4, "{stats}");
    }
    (seen, normalize(&spans))
}

#[test]
fn opentelemetry_spans_through_two_hops_are_envoys() {
    compare(&OTEL);
}

#[test]
fn zipkin_spans_through_two_hops_are_envoys() {
    compare(&ZIPKIN);
}

fn compare(t: &Tracer) {
    let Some(python) = trace_python() else {
        return;
    };
    let (zseen, zspans) = run(false, &python, t);
    for l in &zseen {
        eprintln!("[zerohop] {l}");
    }
    for (p, l) in &zspans {
        for s in l {
            eprintln!("[zerohop] {p}: {s}");
        }
    }
    assert_eq!(
        zspans.values().map(Vec::len).sum::<usize>(),
        t.spans,
        "{zspans:#?}"
    );
    if !envoy::available() {
        return;
    }
    let (eseen, espans) = run(true, &python, t);
    for (p, l) in &espans {
        for s in l {
            eprintln!("[envoy]   {p}: {s}");
        }
    }
    support::same("upstream context", &zseen, &eseen);
    let flat = |m: &BTreeMap<String, Vec<String>>| -> Vec<String> {
        m.iter()
            .flat_map(|(p, l)| l.iter().map(move |s| format!("{p}: {s}")))
            .collect()
    };
    support::same("spans", &flat(&zspans), &flat(&espans));
}

/// A collector that answers every export after 5 s: requests go on at their pace, spans
/// wait (or are dropped and counted), nothing fails.
#[test]
fn a_stalled_collector_holds_no_request() {
    let Some(python) = trace_python() else {
        return;
    };
    let up = upstream("a");
    let c = Collector::start(&python, Some(5.0));
    let admin = envoy::free_port();
    let port = envoy::free_port();
    let proxy = Proxy::start(&hop(admin, port, "front", "http", &c, up.addr.port()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut slowest = Duration::ZERO;
    let mut client = Client::connect(addr);
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        let r = client.get("trace.test", "/t/x", &[]);
        assert_eq!(r.status, 200, "{}", proxy.log());
        slowest = slowest.max(t.elapsed());
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    // The exporter is stuck 5 s on its first report; no request waited for it.
    assert!(
        slowest < Duration::from_millis(2500),
        "slowest request {slowest:?}"
    );
    let (_, stats) = support::admin::request(admin, "GET", "/stats");
    let sent = support::admin::stat(&stats, "tracing.opentelemetry.spans_sent");
    let dropped = support::admin::stat(&stats, "zerohop.tracing.spans_dropped");
    eprintln!("{n} requests, slowest {slowest:?}; spans sent {sent}, dropped {dropped}");
    assert!(n > 100, "{n}");
    // The stalled exports still arrive.
    assert!(!c.wait(1).is_empty());
}
