//! The listener filters' classifiers on arbitrary first bytes: `http_inspector`'s and
//! `tls_inspector`'s (the ClientHello parsed by rustls). Never a panic, and a verdict
//! reached on a prefix stands when more bytes arrive (a listener filter decides as soon as
//! it can, so a later byte must not change its mind).
#![no_main]
use libfuzzer_sys::fuzz_target;
use zerohop::conn::inspect::{classify, client_hello, Verdict};

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
    let hello = client_hello(data);
    for n in 1..data.len().min(512) {
        if let Some(early) = client_hello(&data[..n]) {
            assert_eq!(Some(early.clone()), hello, "decided {early:?} on {n} bytes");
        }
    }
});
