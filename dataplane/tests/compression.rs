//! `envoy.filters.http.compressor` with gzip, brotli and zstd, against Envoy 1.40: the same
//! bootstrap and requests through both, and for each response the status, the encoding
//! chosen, `vary`, `etag`, how the body is delimited, what the upstream was told the client
//! accepts, and the body once decoded must agree. Envoy comes from PyPI; CI sets
//! ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails the test.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use support::envoy;
use support::http::Client;
use support::Proxy;

/// The body the upstream sends for `len` bytes: text that compresses well.
fn text(len: usize) -> Vec<u8> {
    let line = b"the quick brown fox jumps over the lazy dog 0123456789\n";
    line.iter().copied().cycle().take(len).collect()
}

/// An upstream whose answer the query string shapes: `len` (body bytes), `type`
/// (content-type, `-` for none), `etag`, `cc` (cache-control), `ce` (content-encoding),
/// `vary`, `status`, `chunked=1` (chunked framing). It reports the `accept-encoding` it saw
/// in `x-saw-ae`.
fn shaped_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

fn serve(s: TcpStream) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut seen_ae = "-".to_owned();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("accept-encoding") {
                    seen_ae = v.trim().to_owned();
                }
            }
        }
        let query = target.split_once('?').map(|x| x.1).unwrap_or("");
        let get = |k: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(&format!("{k}=")))
                .map(|v| {
                    v.replace("%22", "\"")
                        .replace("%20", " ")
                        .replace("%2C", ",")
                })
        };
        let len: usize = get("len").and_then(|v| v.parse().ok()).unwrap_or(2000);
        let status = get("status").unwrap_or_else(|| "200".into());
        let body = text(len);
        let mut head = format!("HTTP/1.1 {status} X\r\nx-saw-ae: {seen_ae}\r\n");
        match get("type").as_deref() {
            Some("-") => {}
            Some(t) => head.push_str(&format!("content-type: {t}\r\n")),
            None => head.push_str("content-type: text/plain; charset=utf-8\r\n"),
        }
        for (q, h) in [
            ("etag", "etag"),
            ("cc", "cache-control"),
            ("ce", "content-encoding"),
            ("vary", "vary"),
        ] {
            if let Some(v) = get(q) {
                head.push_str(&format!("{h}: {v}\r\n"));
            }
        }
        let mut out = head.into_bytes();
        if get("chunked").is_some() {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            for part in body.chunks(1000) {
                out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(format!("content-length: {len}\r\n\r\n").as_bytes());
            out.extend_from_slice(&body);
        }
        if w.write_all(&out).is_err() {
            return;
        }
    }
}

fn config(listen: u16, upstream: u16) -> String {
    let direct = String::from_utf8(text(2000)).unwrap().replace('\n', " ");
    format!(
        r#"static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/nogzip" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  gzip:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute
                    disabled: true
              - match: {{ prefix: "/remove" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  gzip:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute
                    overrides: {{ response_direction_config: {{ remove_accept_encoding_header: true }} }}
              - match: {{ prefix: "/direct" }}
                direct_response: {{ status: 200, body: {{ inline_string: "{direct}" }} }}
                response_headers_to_add: [{{ header: {{ key: vary, value: Origin }} }}]
              - match: {{ prefix: "/short" }}
                direct_response: {{ status: 503, body: {{ inline_string: "no" }} }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: up }}
          http_filters:
          - name: gzip
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config:
                common_config:
                  min_content_length: 100
                  content_type: [text/plain, application/json]
                  enabled: {{ default_value: true, runtime_key: gzip_enabled }}
              compressor_library:
                name: text
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
                  compression_level: BEST_SPEED
                  window_bits: 10
          - name: brotli
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config:
                weaken_etag_on_compress: true
                uncompressible_response_codes: [206]
              compressor_library:
                name: br
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli
                  quality: 4
                  window_bits: 16
          - name: zstd
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              content_length: 40
              disable_on_etag_header: true
              compressor_library:
                name: zs
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd
                  compression_level: 5
                  enable_checksum: true
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: up
    type: STATIC
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#
    )
}

/// Path and `accept-encoding` (empty: none sent).
const CASES: &[(&str, &str)] = &[
    ("/r", "gzip"),
    ("/r", "br"),
    ("/r", "zstd"),
    ("/r", "gzip;q=0.5, br;q=0.9"),
    ("/r", "gzip, br, zstd"),
    ("/r", "*"),
    ("/r", "gzip;q=0, *"),
    ("/r", "identity"),
    ("/r", "deflate"),
    ("/r", ""),
    ("/r?len=60", "gzip"),
    ("/r?len=60", "zstd"),
    ("/r?len=60", "br"),
    ("/r?len=20", "br"),
    ("/r?type=image/png", "gzip"),
    ("/r?type=image/png", "br"),
    ("/r?type=-", "gzip"),
    ("/r?type=application/json;%20charset=utf-8", "gzip"),
    ("/r?cc=no-transform", "gzip"),
    ("/r?cc=public%2C%20no-transform", "br"),
    ("/r?ce=br", "br"),
    ("/r?etag=%22abc%22", "gzip"),
    ("/r?etag=%22abc%22", "br"),
    ("/r?etag=%22abc%22", "zstd"),
    ("/r?etag=W/%22abc%22", "gzip"),
    ("/r?vary=Origin", "gzip"),
    ("/r?vary=Accept-Encoding", "gzip"),
    ("/r?vary=Origin", "identity"),
    ("/r?chunked=1&len=5000", "gzip"),
    ("/r?chunked=1&len=5000", "br"),
    ("/r?len=300000", "gzip"),
    ("/r?len=300000", "br"),
    ("/r?len=300000&chunked=1", "zstd"),
    ("/r?status=404", "gzip"),
    ("/r?status=206", "br"),
    ("/r?status=206", "gzip"),
    ("/nogzip", "gzip"),
    ("/nogzip", "br"),
    ("/nogzip", "gzip;q=0.2, br"),
    ("/remove", "gzip"),
    ("/remove", "br"),
    ("/direct", "gzip"),
    ("/direct", "zstd"),
    ("/direct", ""),
    ("/short", "gzip"),
];

/// What must agree, one line per request.
fn observe(addr: SocketAddr) -> Vec<String> {
    let mut c = Client::connect(addr);
    let mut out = Vec::new();
    for (path, ae) in CASES {
        let extra: Vec<(&str, &str)> = match ae.is_empty() {
            true => vec![],
            false => vec![("accept-encoding", ae)],
        };
        let r = c.get("x", path, &extra);
        let h = |n: &str| r.header(n).unwrap_or("-").to_owned();
        let encoding = h("content-encoding");
        // `ce=`: the upstream labels its own (plain) body; it must pass as it is.
        let decode = match path.contains("ce=") {
            true => "-",
            false => encoding.as_str(),
        };
        let body = match decode {
            "gzip" => {
                let mut b = Vec::new();
                flate2::read::GzDecoder::new(&r.body[..])
                    .read_to_end(&mut b)
                    .expect("gzip body decodes");
                b
            }
            "br" => {
                let mut b = Vec::new();
                brotli::BrotliDecompress(&mut &r.body[..], &mut b).expect("brotli body decodes");
                b
            }
            "zstd" => zstd::decode_all(&r.body[..]).expect("zstd body decodes"),
            _ => r.body.clone(),
        };
        let len: usize = path
            .split("len=")
            .nth(1)
            .and_then(|v| v.split('&').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        // The direct response's body is the same text with spaces for newlines.
        let want = match path.starts_with("/direct") {
            true => String::from_utf8_lossy(&text(len))
                .replace('\n', " ")
                .into_bytes(),
            false => text(len),
        };
        let framing = match (r.header("content-length"), r.header("transfer-encoding")) {
            (Some(_), None) => "length",
            (None, Some(_)) => "chunked",
            _ => "other",
        };
        out.push(format!(
            "{path} [{ae}] -> {} encoding={encoding} vary={} etag={} {framing} upstream-saw-ae={} body-intact={}",
            r.status,
            h("vary"),
            h("etag"),
            h("x-saw-ae"),
            body == want || path.starts_with("/short"),
        ));
    }
    out
}

#[test]
fn compressor_filters_as_envoys() {
    let up = shaped_upstream();
    let proxy = Proxy::start(&config(0, up.port()));
    let z = observe(proxy.addr("web"));
    for line in &z {
        eprintln!("[zerohop] {line}");
    }
    // zerohop alone: what each case must do.
    let line = |i: usize| z[i].as_str();
    assert!(
        line(0).contains("encoding=gzip") && line(0).contains("chunked"),
        "{}",
        line(0)
    );
    assert!(line(1).contains("encoding=br"), "{}", line(1));
    assert!(line(2).contains("encoding=zstd"), "{}", line(2));
    assert!(z.iter().all(|l| l.ends_with("body-intact=true")), "{z:#?}");
    let stats = proxy.counters();
    let total = |c: zerohop_proto::stats::Counter| stats.iter().map(|s| s[c.index()]).sum::<u64>();
    assert!(total(zerohop_proto::stats::Counter::CompressorCompressed) > 10);
    assert!(
        total(zerohop_proto::stats::Counter::CompressorTotalCompressedBytes)
            < total(zerohop_proto::stats::Counter::CompressorTotalUncompressedBytes) / 4
    );
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&config(0, up.port()));
    let e = observe(addr);
    for (zl, el) in z.iter().zip(&e) {
        if zl != el {
            eprintln!("differ:\n  zerohop {zl}\n  envoy   {el}");
        }
    }
    assert_eq!(z, e, "zerohop and Envoy differ");
}
