//! Micro-benchmarks of the hot-path pieces that exist so far: `cargo bench -p zerohop-bench`.
//!
//! - snapshot decode (what every shard does per generation), at 10 / 1,000 / 10,000 clusters
//!   of 10 endpoints;
//! - building a shard's tables for a generation (balancers, target picks), at 1,000 clusters;
//! - picking an endpoint (per connection) for each load-balancing policy, and picking a
//!   weighted target cluster.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use zerohop::cluster::{Balancer, Rng, WeightedPick};
use zerohop::shard::config::ShardConfig;
use zerohop_proto::*;

fn snapshot(clusters: usize, eps: usize) -> Snapshot {
    let clusters: Vec<Cluster> = (0..clusters)
        .map(|c| Cluster {
            name: format!("cluster-{c}"),
            connect_timeout: Duration::from_secs(1),
            lb_policy: LbPolicy::RoundRobin,
            endpoints: (0..eps)
                .map(|e| Endpoint {
                    address: SocketAddr::from(([10, (c >> 8) as u8, c as u8, e as u8 + 1], 8080)),
                    weight: 1,
                })
                .collect(),
        })
        .collect();
    let listeners = vec![Listener {
        name: "front".into(),
        address: ([127, 0, 0, 1], 10000).into(),
        filter: NetworkFilter::TcpProxy(TcpProxy {
            stat_prefix: "front".into(),
            targets: vec![WeightedCluster {
                cluster: ClusterId(0),
                weight: 1,
            }],
            idle_timeout: Some(Duration::from_secs(3600)),
        }),
    }];
    Snapshot {
        listeners,
        clusters,
    }
}

fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Endpoint {
            address: ([127, 0, 0, 1], 9000 + i as u16).into(),
            weight,
        })
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
    let prev = ShardConfig::build(1, s.clone(), None).expect("valid snapshot");
    c.bench_function("shard_config_build/1000", |b| {
        b.iter_batched(
            || s.clone(),
            |s| ShardConfig::build(2, s, Some(&prev)),
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
    ];
    for (name, policy, weights) in cases {
        let b = Balancer::new(policy, &endpoints(&weights));
        g.bench_function(name, |bench| bench.iter(|| black_box(b.pick(&rng))));
    }
    g.finish();
    let w = WeightedPick::new([90, 10]);
    c.bench_function("weighted_cluster_pick/2", |b| {
        b.iter(|| black_box(w.pick(&rng)))
    });
}

criterion_group!(benches, decode, build, pick);
criterion_main!(benches);
