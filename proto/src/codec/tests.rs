use super::*;

fn sample() -> Snapshot {
    Snapshot {
        clusters: vec![
            Cluster {
                name: "backend".into(),
                connect_timeout: Duration::from_millis(250),
                lb_policy: LbPolicy::RoundRobin,
                endpoints: vec![
                    Endpoint {
                        address: "127.0.0.1:8080".parse().unwrap(),
                        weight: 1,
                    },
                    Endpoint {
                        address: "[::1]:8081".parse().unwrap(),
                        weight: 3,
                    },
                ],
            },
            Cluster {
                name: "empty".into(),
                connect_timeout: Duration::from_secs(5),
                lb_policy: LbPolicy::Random,
                endpoints: vec![],
            },
        ],
        listeners: vec![Listener {
            name: "l".into(),
            address: "0.0.0.0:10000".parse().unwrap(),
            filter: NetworkFilter::TcpProxy(TcpProxy {
                stat_prefix: "tcp".into(),
                targets: vec![
                    WeightedCluster {
                        cluster: ClusterId(0),
                        weight: 9,
                    },
                    WeightedCluster {
                        cluster: ClusterId(1),
                        weight: 1,
                    },
                ],
                idle_timeout: Some(Duration::from_secs(3600)),
            }),
        }],
    }
}

#[test]
fn round_trips() {
    let s = sample();
    assert_eq!(decode(&encode(&s)).unwrap(), s);
    assert_eq!(
        decode(&encode(&Snapshot::default())).unwrap(),
        Snapshot::default()
    );
}

#[test]
fn every_truncation_is_rejected() {
    let bytes = encode(&sample());
    for n in 0..bytes.len() {
        assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = encode(&sample());
    bytes.push(0);
    assert_eq!(decode(&bytes).unwrap_err().what, "trailing bytes");
}

#[test]
fn dangling_cluster_id_is_rejected() {
    let mut s = sample();
    let NetworkFilter::TcpProxy(t) = &mut s.listeners[0].filter;
    t.targets[0].cluster = ClusterId(7);
    assert_eq!(
        decode(&encode(&s)).unwrap_err().what,
        "cluster id out of range"
    );
}

#[test]
fn huge_count_does_not_allocate() {
    let mut bytes = encode(&Snapshot::default());
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(&bytes).unwrap_err().what,
        "count exceeds remaining bytes"
    );
}
