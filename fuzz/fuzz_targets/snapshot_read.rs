//! The data plane's reader of the shared-memory segment must refuse any byte string without
//! crashing: a segment header it did not write (raw mode), and snapshot bytes it did not
//! encode behind a valid slot (published mode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerohop_proto::codec;
use zerohop_proto::shm::{Geometry, ReadOutcome, Segment};

/// Large enough for a small valid geometry (2 slots of 4 KiB, 1 shard, its stat space and
/// 64 KiB code table).
const RAW_WORDS: usize = 16384;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        // Raw: the whole segment is attacker-controlled.
        let mut words = vec![0u64; RAW_WORDS];
        for (w, chunk) in words.iter_mut().zip(rest.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        if let Ok(seg) = Segment::from_words(words.into_boxed_slice()) {
            if let ReadOutcome::New { bytes, .. } = seg.read_current(0) {
                let _ = codec::decode(&bytes);
            }
            for s in 0..seg.active_shards() {
                let _ = seg.shard_ack(s);
                let _ = seg.shard_counters(s);
                let _ = seg.shard_space(s).len();
                let _ = zerohop_proto::stats::codes::read(seg.shard_codes(s)).count();
            }
            let _ = seg.stat_words_used();
        }
    } else {
        // Published: a well-formed segment whose slot holds arbitrary snapshot bytes.
        let seg = Segment::new_in_memory(Geometry { slot_count: 2, slot_size: 1 << 16, shard_capacity: 1, health_slots: 16, stat_words: 512, log_bytes: 4096 })
            .expect("valid geometry");
        if seg.publish(rest).is_ok() {
            match seg.read_current(0) {
                ReadOutcome::New { bytes, .. } => {
                    assert_eq!(bytes, rest);
                    if let Ok(s) = codec::decode(&bytes) {
                        assert_eq!(codec::decode(&codec::encode(&s)).unwrap(), s);
                    }
                }
                other => panic!("a freshly published slot reads as {other:?}"),
            }
        }
    }
});
