//! `http_inspector`'s classifier on arbitrary first bytes: never a panic, and a verdict
//! reached on a prefix stands when more bytes arrive (the listener filter decides as soon
//! as it can, so a later byte must not change its mind).
#![no_main]
use libfuzzer_sys::fuzz_target;
use zerohop::conn::inspect::{classify, Verdict};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let whole = classify(data);
    for n in 1..data.len() {
        match classify(&data[..n]) {
            Verdict::More => {}
            early => assert_eq!(early, whole, "decided {early:?} on {n} bytes, {whole:?} on all"),
        }
    }
});
