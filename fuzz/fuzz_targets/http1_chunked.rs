//! The chunked decoder on arbitrary bytes, fed whole and then split at every chunk boundary
//! the input picks: never a panic, the same verdict, payload and length either way.
#![no_main]
use libfuzzer_sys::fuzz_target;
use zerohop::http1::chunked::ChunkedDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = ChunkedDecoder::decode_all(body);
    // The same body arriving in pieces of `split` bytes (at least 1).
    let step = usize::from(split).max(1);
    let mut d = ChunkedDecoder::default();
    let (mut have, mut at, mut payload) = (0usize, 0usize, Vec::new());
    let pieces = loop {
        if d.is_done() {
            break Ok(Some((payload, at)));
        }
        match d.decode(&body[at..have]) {
            Err(e) => break Err(e),
            Ok(s) => {
                if let Some(r) = s.payload.clone() {
                    payload.extend_from_slice(&body[at + r.start..at + r.end]);
                } else if s.consumed == 0 {
                    if have == body.len() {
                        break Ok(None);
                    }
                    have = (have + step).min(body.len());
                }
                at += s.consumed;
            }
        }
    };
    match (&whole, &pieces) {
        (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b),
        (Ok(None), Ok(None)) => {}
        // A line split across pieces can only be judged once whole: errors must agree in kind.
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?} vs pieces {pieces:?}"),
    }
});
