//! Config tests of `tracing` on the connection manager: what compiles into the shards'
//! sampling and control's tracer, and what zerohop refuses by name.

use super::*;
use zerohop_proto::NetworkFilter;

const HTTP: &str = include_str!("../../tests/fixtures/http.yaml");
const AT: &str = "          codec_type: AUTO\n";

fn with_tracing(tracing: &str) -> String {
    assert!(HTTP.contains(AT), "fixture lacks {AT}");
    HTTP.replacen(AT, &format!("{AT}          tracing: {tracing}\n"), 1)
}

const OTEL_GRPC: &str = r#"provider: { name: envoy.tracers.opentelemetry, typed_config: { "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, grpc_service: { envoy_grpc: { cluster_name: a } } } }"#;

#[test]
fn sampling_and_the_tracer_compile() {
    let yaml = with_tracing(&format!(
        "{{ random_sampling: {{ value: 12.5 }}, overall_sampling: {{ value: 50 }}, {OTEL_GRPC} }}"
    ));
    let b = load(&yaml, Format::Yaml).unwrap();
    let NetworkFilter::Http(h) = &b.snapshot.listeners[0].filter_chains[0].filters[0] else {
        panic!("http expected")
    };
    let t = h.tracing.as_ref().expect("tracing");
    assert_eq!(
        (t.client_sampling, t.random_sampling, t.overall_sampling),
        (10_000, 1_250, 5_000)
    );
    assert!(!t.egress);
    // A tracer without access loggers: only sampled streams are recorded.
    assert!(h.access_log.enabled());
    assert!(!h.access_log.every_stream);
    assert!(h
        .access_log
        .request_headers
        .iter()
        .any(|n| n == "x-request-id"));
}

#[test]
fn zipkin_compiles_with_b3() {
    let yaml = with_tracing(
        r#"{ provider: { name: envoy.tracers.zipkin, typed_config: { "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: a, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON, trace_id_128bit: true, shared_span_context: false } } }"#,
    );
    let b = load(&yaml, Format::Yaml).unwrap();
    let NetworkFilter::Http(h) = &b.snapshot.listeners[0].filter_chains[0].filters[0] else {
        panic!("http expected")
    };
    let t = h.tracing.as_ref().expect("tracing");
    assert_eq!(
        t.propagation,
        zerohop_proto::tracing::Propagation::B3 {
            trace_id_128: true,
            shared: false
        }
    );
}

#[test]
fn what_zerohop_does_not_trace_with_is_refused_by_name() {
    let cases = [
        (
            r#"{ provider: { name: envoy.tracers.zipkin, typed_config: { "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: a, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_PROTO } } }"#.to_string(),
            ".collector_endpoint_version",
            "HTTP_PROTO",
        ),
        (
            r#"{ provider: { name: envoy.tracers.zipkin, typed_config: { "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: a, collector_endpoint: /api/v2/spans, split_spans_for_request: true } } }"#.to_string(),
            ".split_spans_for_request",
            "not supported",
        ),
        (
            r#"{ provider: { name: envoy.tracers.datadog, typed_config: { "@type": type.googleapis.com/envoy.config.trace.v3.DatadogConfig, collector_cluster: a, service_name: s } } }"#.to_string(),
            ".tracing.provider.typed_config",
            "DatadogConfig",
        ),
        (
            format!("{{ verbose: true, {OTEL_GRPC} }}"),
            ".tracing.verbose",
            "not supported",
        ),
        (
            format!("{{ spawn_upstream_span: true, {OTEL_GRPC} }}"),
            ".tracing.spawn_upstream_span",
            "not supported",
        ),
        (
            format!("{{ random_sampling: {{ value: 101 }}, {OTEL_GRPC} }}"),
            ".tracing.random_sampling",
            "101",
        ),
        (
            OTEL_GRPC.replace("cluster_name: a", "cluster_name: nowhere").replace("provider", "{ provider") + " }",
            ".grpc_service.envoy_grpc.cluster_name",
            "nowhere",
        ),
        (
            "{ }".to_string(),
            ".tracing.provider",
            "needs a tracing provider",
        ),
    ];
    for (tracing, path, msg) in cases {
        let e = load(&with_tracing(&tracing), Format::Yaml).expect_err(&tracing);
        assert!(e.path.contains(path), "{tracing}: {e}");
        assert!(e.to_string().contains(msg), "{tracing}: {e}");
    }
}
