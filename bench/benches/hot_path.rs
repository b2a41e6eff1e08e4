//! Micro-benchmarks of the hot-path pieces that exist so far: `cargo bench -p zerohop-bench`.
//!
//! - snapshot decode (what the data plane's config thread does per generation), at 10 /
//!   1,000 / 10,000 clusters of 10 endpoints;
//! - building a generation (balancer tables, route tables, chain selectors), at 1,000
//!   clusters, from nothing and from a previous generation that differs in one endpoint;
//! - picking an endpoint (per connection) for each load-balancing policy, and picking a
//!   weighted target cluster;
//! - TLS: the event-loop time a handshake holds a shard at once (the server's answer to a
//!   ClientHello: key exchange, signature, its whole first flight), full and resumed.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use zerohop::config::{Slots, Terminal};
use zerohop::upstream::lb::hash::HashKey;
use zerohop::upstream::lb::{LbState, LbTable, Rng, WeightedPick};
use zerohop_proto::*;

fn snapshot(clusters: usize, eps: usize) -> Snapshot {
    let clusters: Vec<Cluster> = (0..clusters)
        .map(|c| Cluster {
            stats: Default::default(),
            name: format!("cluster-{c}"),
            connect_timeout: Duration::from_secs(1),
            lb_policy: LbPolicy::RoundRobin,
            endpoints: (0..eps)
                .map(|e| {
                    Endpoint::new(
                        SocketAddr::from(([10, (c >> 8) as u8, c as u8, e as u8 + 1], 8080)),
                        1,
                    )
                })
                .collect(),
            protocol: UpstreamProtocol::default(),
            transport: TransportSocket::default(),
            circuit_breakers: CircuitBreakers::default(),
            outlier_detection: None,
            healthy_panic_threshold: 50.0f64.to_bits(),
            health_checks: Vec::new(),
        })
        .collect();
    let listeners = vec![Listener::simple(
        "front",
        ([127, 0, 0, 1], 10000).into(),
        NetworkFilter::TcpProxy(TcpProxy {
            stats: Default::default(),
            access_log: Default::default(),
            stat_prefix: "front".into(),
            targets: vec![WeightedCluster {
                cluster: ClusterId(0),
                weight: 1,
            }],
            idle_timeout: Some(Duration::from_secs(3600)),
        }),
    )];
    Snapshot {
        listeners,
        clusters,
    }
}

fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Endpoint::new(([127, 0, 0, 1], 9000 + i as u16).into(), weight))
        .collect()
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot_decode");
    for n in [10, 1_000, 10_000] {
        let bytes = codec::encode(&snapshot(n, 10));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |b, bytes| {
            b.iter(|| codec::decode(black_box(bytes)).unwrap())
        });
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let s = snapshot(1_000, 10);
    c.bench_function("generation_build/1000/fresh", |b| {
        b.iter_batched(
            || (Slots::default(), s.clone()),
            |(mut slots, s)| slots.build(1, s).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    // The usual update: one endpoint's weight changed, everything else reused.
    let mut next = s.clone();
    next.clusters[7].endpoints[0].weight = 3;
    c.bench_function("generation_build/1000/one_change", |b| {
        b.iter_batched(
            || {
                let mut slots = Slots::default();
                let first = slots.build(1, s.clone()).unwrap();
                (slots, first, next.clone())
            },
            |(mut slots, first, next)| (slots.build(2, next).unwrap(), first),
            criterion::BatchSize::LargeInput,
        )
    });
}

fn pick(c: &mut Criterion) {
    let rng = Rng::new(42);
    let mut g = c.benchmark_group("endpoint_pick");
    let cases = [
        ("round_robin/10", LbPolicy::RoundRobin, vec![1; 10]),
        (
            "weighted_round_robin/10",
            LbPolicy::RoundRobin,
            (1..=10).collect(),
        ),
        (
            "weighted_round_robin/100",
            LbPolicy::RoundRobin,
            (1..=100).collect(),
        ),
        (
            "random/10",
            LbPolicy::Random,
            (1..=10).collect::<Vec<u32>>(),
        ),
        (
            "ring_hash/100",
            LbPolicy::RingHash {
                min_ring_size: 1024,
                max_ring_size: 8 << 20,
            },
            (1..=100).map(|w| 1 + w % 3).collect(),
        ),
        (
            "least_request/100",
            LbPolicy::LeastRequest {
                choice_count: 2,
                active_request_bias: 1.0f64.to_bits(),
            },
            vec![1; 100],
        ),
        (
            "weighted_least_request/100",
            LbPolicy::LeastRequest {
                choice_count: 2,
                active_request_bias: 1.0f64.to_bits(),
            },
            (1..=100).map(|w| 1 + w % 3).collect(),
        ),
        (
            "maglev/100",
            LbPolicy::Maglev { table_size: 65537 },
            (1..=100).map(|w| 1 + w % 3).collect(),
        ),
    ];
    for (name, policy, weights) in cases {
        let t = LbTable::new(policy, &endpoints(&weights));
        let mut state = LbState::default();
        // The hashing balancers take a different key each pick (as requests bring theirs).
        let mut key = 0u64;
        g.bench_function(name, |bench| {
            bench.iter(|| {
                key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                black_box(state.pick(&t, 1, &rng, Some(HashKey::new(key))))
            })
        });
    }
    // What a header hash policy costs on top: XXH64 of a 36-byte value.
    let value = b"7b0e3f4a-4c1d-4b59-9c1a-1b8a2f9e6d10";
    g.bench_function("xxh64_header_value/36", |bench| {
        bench.iter(|| black_box(zerohop::upstream::lb::hash::hash_key(&[black_box(value)])))
    });
    g.finish();
    let w = WeightedPick::new([90, 10]);
    c.bench_function("weighted_cluster_pick/2", |b| {
        b.iter(|| black_box(w.pick(&rng)))
    });
}

/// A browser-like request head: request line and 8 headers.
const REQUEST: &[u8] = b"GET /api/v1/items/42?expand=owner HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: application/json\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: session=0123456789abcdef0123456789abcdef\r\nX-Request-Id: 7b0e3f4a-4c1d-4b59-9c1a-1b8a2f9e6d10\r\nConnection: keep-alive\r\n\r\n";

fn http(c: &mut Criterion) {
    use zerohop::http1::head::{parse_request, Limits};
    let limits = Limits::default();
    let mut g = c.benchmark_group("http1_parse_request");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("8 headers", |b| {
        b.iter(|| parse_request(black_box(REQUEST), &limits).unwrap().unwrap())
    });
    g.finish();

    // The shared HTTP fixture's route table: 4 virtual hosts, 16 routes.
    let yaml = include_str!("../../control/tests/fixtures/http.yaml");
    let boot = zerohop_control::config::load(yaml, zerohop_control::config::Format::Yaml).unwrap();
    let g = Slots::default().build(1, boot.snapshot).unwrap();
    let Terminal::Http(http) = &g.listeners[0].chains[0].terminal else {
        unreachable!("the fixture's first listener is HTTP")
    };
    let table = &http.routes;
    fn no_headers(_: &str) -> Option<&'static str> {
        None
    }
    fn canary(n: &str) -> Option<&'static str> {
        (n == "x-canary").then_some("yes")
    }
    let mut g = c.benchmark_group("route_match");
    type Lookup = fn(&str) -> Option<&'static str>;
    let cases: [(&str, &str, &str, Lookup); 4] = [
        (
            "exact host, first route",
            "api.example.com",
            "/v1/users",
            no_headers,
        ),
        ("wildcard host", "x.example.com", "/a", no_headers),
        ("header match, 3rd route", "other", "/h", canary),
        ("catch-all, 12th route", "other", "/zzz", no_headers),
    ];
    for (name, host, path, header) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                let req = zerohop::route::Request {
                    host: black_box(host),
                    path: black_box(path),
                    query: None,
                    header: &header,
                    random: 0,
                };
                table.route(&req).is_some()
            })
        });
    }
    g.finish();
}

/// The server's work on a client's first flight, as one shard does it between two awaits:
/// read the ClientHello, process it, write ServerHello to Finished (and, resumed, without
/// the certificate and its signature).
fn tls(c: &mut Criterion) {
    use criterion::BatchSize;
    use std::sync::Arc;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let t = DownstreamTls {
        common: TlsCommon {
            certificates: vec![TlsCertificate {
                chain: vec![cert.der().to_vec()],
                key: key.serialize_der(),
                key_format: KeyFormat::Pkcs8,
            }],
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            cipher_suites: Vec::new(),
            ecdh_curves: Vec::new(),
            alpn: vec!["http/1.1".to_owned()],
            validation: None,
        },
        require_client_certificate: false,
        disable_stateless_session_resumption: false,
        disable_stateful_session_resumption: false,
    };
    let server = zerohop::tls::server_config(&t).unwrap();
    #[allow(deprecated)] // Reason: ring, as the data plane's.
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let hello = |client: &Arc<rustls::ClientConfig>| {
        let mut cl =
            rustls::ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap();
        let mut out = Vec::new();
        cl.write_tls(&mut out).unwrap();
        (cl, out)
    };
    let answer = |bytes: &[u8]| {
        let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
        s.read_tls(&mut &bytes[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut out = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut out).unwrap();
        }
        (s, out)
    };
    let mut g = c.benchmark_group("tls");
    g.bench_function("server first flight, full handshake", |b| {
        b.iter_batched(|| hello(&client).1, |h| answer(&h).1, BatchSize::SmallInput)
    });
    // A complete handshake first, so that the client holds a ticket to resume with.
    let resuming_hello = || {
        let (mut cl, h) = hello(&client);
        let (mut s, flight) = answer(&h);
        cl.read_tls(&mut &flight[..]).unwrap();
        cl.process_new_packets().unwrap();
        let mut fin = Vec::new();
        while cl.wants_write() {
            cl.write_tls(&mut fin).unwrap();
        }
        s.read_tls(&mut &fin[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut tickets = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut tickets).unwrap();
        }
        cl.read_tls(&mut &tickets[..]).unwrap();
        cl.process_new_packets().unwrap();
        hello(&client).1
    };
    g.bench_function("server first flight, resumed", |b| {
        b.iter_batched(resuming_hello, |h| answer(&h).1, BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, decode, build, pick, http, tls);
criterion_main!(benches);
