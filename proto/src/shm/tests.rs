use super::*;

fn small() -> Geometry {
    Geometry {
        slot_count: 2,
        slot_size: 4096,
        shard_capacity: 4,
        health_slots: 16,
        stat_words: 512,
        log_bytes: 4096,
    }
}

#[test]
fn publish_then_read_then_ack() {
    let seg = Segment::new_in_memory(small()).unwrap();
    assert_eq!(seg.read_current(0), ReadOutcome::Empty);
    assert_eq!(seg.publish(b"one").unwrap(), 1);
    assert_eq!(
        seg.read_current(0),
        ReadOutcome::New {
            generation: 1,
            bytes: b"one".to_vec()
        }
    );
    assert_eq!(seg.read_current(1), ReadOutcome::Unchanged);
    assert_eq!(seg.register_dataplane(2, 42), 0);
    assert!(!seg.all_applied(1));
    seg.ack(0, 1, 0);
    seg.ack(1, 1, 0);
    assert!(seg.all_applied(1));
    assert_eq!(seg.publish(b"two").unwrap(), 2);
    assert_eq!(
        seg.read_current(1),
        ReadOutcome::New {
            generation: 2,
            bytes: b"two".to_vec()
        }
    );
}

#[test]
fn corrupted_slot_is_refused() {
    let seg = Segment::new_in_memory(small()).unwrap();
    seg.publish(b"snapshot bytes").unwrap();
    seg.corrupt_current_slot_for_test(3, 0xff);
    assert_eq!(
        seg.read_current(0),
        ReadOutcome::Corrupt {
            generation: 1,
            reason: "checksum mismatch"
        }
    );
}

#[test]
fn oversized_snapshot_is_refused_by_the_writer() {
    let seg = Segment::new_in_memory(small()).unwrap();
    assert!(matches!(
        seg.publish(&[0; 4097]),
        Err(PublishError::TooLarge { .. })
    ));
}

#[test]
fn file_segment_is_shared_and_reattached() {
    // The start time beside the pid: CI runs the suite twice (root, then an unprivileged
    // user), and a pid reused from the first pass would meet a root-owned file.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("zerohop-shm-test-{}-{t:x}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let a = Segment::create_or_attach(&dir, small()).unwrap();
    a.publish(b"x").unwrap();
    let b = Segment::open(&dir).unwrap();
    assert_eq!(b.current_generation(), 1);
    b.shard_counters(3)[0].store(7, Ordering::Relaxed);
    assert_eq!(a.shard_counters(3)[0].load(Ordering::Relaxed), 7);
    drop(a);
    let c = Segment::create_or_attach(&dir, small()).unwrap();
    assert_eq!(
        c.publish(b"y").unwrap(),
        2,
        "a re-attached writer continues the sequence"
    );
    assert!(Segment::create_or_attach(
        &dir,
        Geometry {
            slot_count: 3,
            ..small()
        }
    )
    .is_err());
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn garbage_headers_are_refused() {
    assert!(Segment::from_words(vec![0u64; 8].into_boxed_slice()).is_err());
    assert!(Segment::from_words(vec![u64::MAX; 1024].into_boxed_slice()).is_err());
    let mut words = vec![0u64; 1024].into_boxed_slice();
    words[0] = MAGIC;
    assert!(Segment::from_words(words).is_err());
}

#[test]
fn a_second_data_plane_gets_lines_of_its_own_while_the_first_runs() {
    let seg = Segment::new_in_memory(small()).unwrap();
    let me = std::process::id(); // alive
    assert_eq!(seg.register_dataplane(2, me), 0);
    seg.ack(0, 5, 0);
    seg.shard_counters(1)[0].store(9, Ordering::Relaxed);
    // A new process beside a live one: lines 2..4, zeroed, and readers follow it.
    assert_eq!(seg.register_dataplane(2, u32::MAX - 1), 2);
    assert_eq!(seg.shard_ack(0).0, 0);
    assert_eq!(seg.read_counters(), vec![vec![0; Counter::ALL.len()]; 2]);
    // The first one's lines are untouched until it goes.
    assert_eq!(seg.shard_counters(1)[0].load(Ordering::Relaxed), 9);
    // Registering when the previous data plane is gone starts at line 0 again.
    assert_eq!(seg.register_dataplane(2, 7), 0);
}

#[test]
fn the_fuzz_seed_segment_image_is_valid() {
    // fuzz/seeds/snapshot_read/raw-valid is a segment image (after its mode byte) that the
    // reader must accept, so that fuzzing starts from a valid structure.
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/seeds/snapshot_read/raw-valid"
    ))
    .unwrap();
    let mut words = vec![0u64; 16384];
    for (w, chunk) in words.iter_mut().zip(raw[1..].chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    let seg = Segment::from_words(words.into_boxed_slice()).expect("valid header");
    match seg.read_current(0) {
        ReadOutcome::New { bytes, .. } => assert!(crate::codec::decode(&bytes).is_ok()),
        other => panic!("{other:?}"),
    }
}

/// Rewrites fuzz/seeds/snapshot_read after a layout or snapshot format change (the test above
/// then checks them): `cargo test -p zerohop-proto -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "a generator, run by hand after a layout or format change"]
fn write_fuzz_seeds() {
    use crate::snapshot::*;
    let snapshot = Snapshot {
        clusters: vec![Cluster {
            stats: Default::default(),
            name: "backend".into(),
            connect_timeout: std::time::Duration::from_millis(250),
            lb_policy: LbPolicy::RoundRobin,
            endpoints: vec![Endpoint::new("127.0.0.1:8080".parse().unwrap(), 1)],
            protocol: UpstreamProtocol::default(),
            transport: TransportSocket::default(),
            circuit_breakers: CircuitBreakers::default(),
            outlier_detection: None,
            healthy_panic_threshold: 50.0f64.to_bits(),
            health_checks: Vec::new(),
        }],
        listeners: vec![Listener::simple(
            "front",
            "127.0.0.1:10000".parse().unwrap(),
            NetworkFilter::TcpProxy(TcpProxy {
                stats: Default::default(),
                access_log: Default::default(),
                stat_prefix: "front".into(),
                targets: vec![WeightedCluster {
                    cluster: ClusterId(0),
                    weight: 1,
                }],
                idle_timeout: None,
            }),
        )],
    };
    let bytes = crate::codec::encode(&snapshot);
    let seg = Segment::new_in_memory(Geometry {
        slot_count: 2,
        slot_size: 4096,
        shard_capacity: 1,
        health_slots: 16,
        stat_words: 512,
        log_bytes: 4096,
    })
    .unwrap();
    seg.publish(&bytes).unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/snapshot_read");
    let mut raw = vec![0u8];
    raw.extend(seg.image_for_test());
    std::fs::write(format!("{dir}/raw-valid"), raw).unwrap();
    let mut published = vec![1u8];
    published.extend(bytes);
    std::fs::write(format!("{dir}/published"), published).unwrap();
}

fn shm_path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "/dev/shm/zerohop-unit-{name}-{}",
        std::process::id()
    ))
}

#[test]
fn a_removed_segment_is_recreated_under_the_same_mapping() {
    let path = shm_path("removed");
    let seg = Segment::create_or_attach(&path, small()).unwrap();
    seg.publish(b"one").unwrap();
    seg.publish(b"two").unwrap();
    let base = seg.register_dataplane(2, std::process::id());
    seg.ack(base + 1, 2, 0);
    seg.shard_counters(base)[3].store(77, Ordering::Relaxed);
    assert_eq!(seg.path_state(&path), PathState::Ours);

    std::fs::remove_file(&path).unwrap();
    assert_eq!(seg.path_state(&path), PathState::Missing);
    let reg = seg.registration();
    seg.recreate(&path, Some((2, b"two")), reg).unwrap();
    assert_eq!(seg.path_state(&path), PathState::Ours);
    assert_eq!(seg.incarnation(), 1);

    // A new process attaching sees what the old mapping held, and the old mapping's
    // writes land in the new file.
    let other = Segment::create_or_attach(&path, small()).unwrap();
    assert_eq!(
        other.read_current(0),
        ReadOutcome::New {
            generation: 2,
            bytes: b"two".to_vec()
        }
    );
    assert_eq!(other.registration(), reg);
    assert_eq!(other.shard_ack(1).0, 2);
    assert_eq!(other.shard_counters(base)[3].load(Ordering::Relaxed), 77);
    seg.shard_counters(base)[3].store(78, Ordering::Relaxed);
    assert_eq!(other.shard_counters(base)[3].load(Ordering::Relaxed), 78);
    assert_eq!(other.publish(b"three").unwrap(), 3);
    assert_eq!(
        seg.read_current(2),
        ReadOutcome::New {
            generation: 3,
            bytes: b"three".to_vec()
        }
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn garbage_over_the_header_is_seen_and_not_continued() {
    use std::io::{Seek, SeekFrom, Write};
    let path = shm_path("garbage");
    let seg = Segment::create_or_attach(&path, small()).unwrap();
    seg.publish(b"one").unwrap();
    seg.register_dataplane(1, std::process::id());
    // The magic stays; everything after it is noise (what a stray write leaves).
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(8)).unwrap();
    let noise: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    f.write_all(&noise).unwrap();
    assert!(matches!(seg.path_state(&path), PathState::Damaged(_)));

    // Control re-attaching does not continue from it: it starts a fresh segment.
    {
        let fresh = Segment::create_or_attach(&path, small()).unwrap();
        assert_eq!(fresh.current_generation(), 0);
        assert_eq!(seg.path_state(&path), PathState::Replaced);
    }
    // The data plane puts its own back.
    let reg = Registration {
        pid: std::process::id(),
        base: 0,
        shards: 1,
    };
    seg.recreate(&path, Some((1, b"one")), reg).unwrap();
    assert_eq!(seg.path_state(&path), PathState::Ours);
    let other = Segment::create_or_attach(&path, small()).unwrap();
    assert_eq!(other.current_generation(), 1);
    assert_eq!(other.publish(b"two").unwrap(), 2);
    let _ = std::fs::remove_file(&path);
}
