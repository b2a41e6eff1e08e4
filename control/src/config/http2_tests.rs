//! Config tests of the HTTP/2 codec's options: `codec_type`, `http2_protocol_options` with
//! Envoy's bounds, and what zerohop refuses by name.

use super::*;
use std::time::Duration;
use zerohop_proto::{NetworkFilter, UpstreamProtocol};

const HTTP: &str = include_str!("../../tests/fixtures/http.yaml");

#[test]
fn http2_protocol_options_compile() {
    let yaml = HTTP.replacen(
        "codec_type: AUTO",
        "codec_type: HTTP2\n          http2_protocol_options: { max_concurrent_streams: 7, initial_stream_window_size: 70000, initial_connection_window_size: 1048576, hpack_table_size: 0, connection_keepalive: { interval: 10s, timeout: 2s } }",
        1,
    );
    let b = load(&yaml, Format::Yaml).unwrap();
    let NetworkFilter::Http(h) = &b.snapshot.listeners[0].filter_chains[0].filters[0] else {
        panic!("http expected")
    };
    assert_eq!(h.codec, zerohop_proto::CodecType::Http2);
    let o = &h.http2;
    assert_eq!(o.max_concurrent_streams, 7);
    assert_eq!(o.initial_stream_window_size, 70000);
    assert_eq!(o.initial_connection_window_size, 1 << 20);
    assert_eq!(o.hpack_table_size, 0);
    let k = o.keepalive.unwrap();
    assert_eq!(k.interval, std::time::Duration::from_secs(10));
    assert_eq!(k.timeout, std::time::Duration::from_secs(2));
    // zerohop's defaults (Envoy's edge guidance), documented in the README.
    let b = load(HTTP, Format::Yaml).unwrap();
    let NetworkFilter::Http(h) = &b.snapshot.listeners[0].filter_chains[0].filters[0] else {
        panic!("http expected")
    };
    assert_eq!(h.http2, zerohop_proto::Http2Options::default());
    assert_eq!(h.http2.max_concurrent_streams, 100);
}

#[test]
fn http2_errors_name_the_field() {
    let cases = [
        (
            "codec_type: AUTO",
            "codec_type: HTTP3",
            ".codec_type",
            "HTTP3",
        ),
        (
            "codec_type: AUTO",
            "codec_type: HTTP2\n          http2_protocol_options: { max_concurrent_streams: 0 }",
            ".http2_protocol_options.max_concurrent_streams",
            "between 1 and",
        ),
        (
            "codec_type: AUTO",
            "codec_type: HTTP2\n          http2_protocol_options: { initial_stream_window_size: 100 }",
            ".http2_protocol_options.initial_stream_window_size",
            "between 65535 and",
        ),
        (
            "codec_type: AUTO",
            "codec_type: HTTP2\n          http2_protocol_options: { max_outbound_frames: 100 }",
            ".http2_protocol_options.max_outbound_frames",
            "not supported",
        ),
        (
            "codec_type: AUTO",
            "codec_type: HTTP2\n          http2_protocol_options: { override_stream_error_on_invalid_http_message: false }",
            ".http2_protocol_options.override_stream_error_on_invalid_http_message",
            "false is not supported",
        ),
        (
            "codec_type: AUTO",
            "codec_type: HTTP2\n          http2_protocol_options: { connection_keepalive: { interval: 1s } }",
            ".http2_protocol_options.connection_keepalive.timeout",
            "needs a timeout",
        ),
    ];
    for (from, to, path, msg) in cases {
        assert!(HTTP.contains(from), "fixture lacks {from}");
        let e = load(&HTTP.replacen(from, to, 1), Format::Yaml).expect_err(to);
        assert!(e.path.ends_with(path), "{to}: {e}");
        assert!(e.to_string().contains(msg), "{to}: {e}");
    }
}

#[test]
fn http2_clusters_compile() {
    let cluster_a = "  - name: a\n    connect_timeout: 1s\n";
    assert!(HTTP.contains(cluster_a), "fixture lacks cluster a");
    // `explicit` completes `explicit_http_config: { ...`.
    let with = |explicit: &str| {
        HTTP.replacen(
            cluster_a,
            &format!("{cluster_a}    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {{ {explicit}\n"),
            1,
        )
    };
    // HTTP/2 upstream: explicit options, and the deprecated field on the cluster.
    let b = load(
        &with("http2_protocol_options: { initial_stream_window_size: 70000 } }\n        common_http_protocol_options: { idle_timeout: 1s }"),
        Format::Yaml,
    )
    .unwrap();
    let UpstreamProtocol::Http2(common, h2) = &b.snapshot.clusters[0].protocol else {
        panic!("HTTP/2 expected: {:?}", b.snapshot.clusters[0].protocol)
    };
    assert_eq!(common.idle_timeout, Some(Duration::from_secs(1)));
    assert_eq!(h2.initial_stream_window_size, 70000);
    assert_eq!(
        h2.max_concurrent_streams, 2_147_483_647,
        "Envoy's upstream default"
    );
    let deprecated = HTTP.replacen(
        cluster_a,
        &format!("{cluster_a}    http2_protocol_options: {{ hpack_table_size: 0 }}\n"),
        1,
    );
    let b = load(&deprecated, Format::Yaml).unwrap();
    assert!(matches!(
        b.snapshot.clusters[0].protocol,
        UpstreamProtocol::Http2(_, o) if o.hpack_table_size == 0
    ));

    let e = load(
        &with("http2_protocol_options: { max_outbound_frames: 5 } }"),
        Format::Yaml,
    )
    .unwrap_err();
    assert!(
        e.path
            .ends_with("explicit_http_config.http2_protocol_options.max_outbound_frames"),
        "{e}"
    );
}
