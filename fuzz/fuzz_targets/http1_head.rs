//! The request-head parser on arbitrary bytes, differential against httparse: never a panic;
//! what zerohop accepts, httparse accepts too, with the same method, target and headers; and
//! an accepted head never carries an ambiguous length. The fast head-end scan and the exact
//! one agree, under the default size limit and a small one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use zerohop::http1::head::{head_end_both, parse_request, Framing, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for l in [limits, Limits { max_head_bytes: 64, max_headers: 100 }] {
        let [fast, exact] = head_end_both(data, &l);
        assert_eq!(fast, exact, "fast and exact head-end scans differ");
    }
    let Ok(Some(head)) = parse_request(data, &limits) else {
        return;
    };
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut storage);
    let n = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("zerohop accepted what httparse did not: {other:?}"),
    };
    assert_eq!(n, head.len);
    assert_eq!(req.method.unwrap().as_bytes(), &data[head.method.clone()]);
    assert_eq!(req.path.unwrap().as_bytes(), &data[head.target.clone()]);
    assert_eq!(req.headers.len(), head.headers.len());
    let head_bytes = &data[..head.len];
    assert!(!head_bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "bare LF accepted");
    let names = |n: &str| req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).count();
    if names("transfer-encoding") > 0 {
        assert_eq!(names("content-length"), 0, "CL and TE both accepted");
        assert_eq!(head.framing, Framing::Chunked);
    }
});
