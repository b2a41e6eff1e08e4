//! Config tests of the HTTP features a route or a filter adds: runtime fractions, the
//! compressor filter, request mirroring.

use super::*;
use zerohop_proto::{Fraction, HttpFilterConfig, NetworkFilter, RouteAction};

const BASE: &str = include_str!("../../tests/fixtures/tcp_proxy.yaml");

fn err(yaml: &str) -> ConfigError {
    load(yaml, Format::Yaml).expect_err("config should be refused")
}

#[test]
fn layered_runtime_static_and_admin_layers() {
    let yaml = format!(
        "{BASE}\nlayered_runtime:\n  layers:\n  - name: s\n    static_layer: {{ a: {{ b: 5, c: {{ numerator: 3, denominator: TEN_THOUSAND }} }}, f: true, x: 1.5 }}\n  - name: admin\n    admin_layer: {{}}\n"
    );
    let b = load(&yaml, Format::Yaml).unwrap();
    let rt = &b.runtime;
    assert!(rt.has_admin_layer());
    assert_eq!(rt.keys(), ["a.b", "a.c", "f", "x"]);
    let text = |k: &str| rt.lookup(k).1.map(|e| e.display());
    assert_eq!(text("a.b").as_deref(), Some("5"));
    assert_eq!(text("f").as_deref(), Some("true"));
    assert_eq!(text("x").as_deref(), Some("1.5"));
    let default = Fraction {
        numerator: 7,
        denominator: 100,
    };
    // A whole number is a percentage; a struct a fraction; a missing key the default.
    assert_eq!(
        rt.fraction("a.b", default),
        Fraction {
            numerator: 5,
            denominator: 100
        }
    );
    assert_eq!(
        rt.fraction("a.c", default),
        Fraction {
            numerator: 3,
            denominator: 10_000
        }
    );
    assert_eq!(rt.fraction("missing", default), default);
    assert_eq!(rt.fraction("x", default), default, "not a whole number");

    for (layer, field) in [
        ("disk_layer: { symlink_root: /srv/runtime }", "disk_layer"),
        (
            "rtds_layer: { name: r, rtds_config: { ads: {} } }",
            "rtds_layer",
        ),
    ] {
        let e = err(&format!(
            "{BASE}\nlayered_runtime: {{ layers: [{{ name: d, {layer} }}] }}\n"
        ));
        assert_eq!(
            e.path,
            format!("layered_runtime.layers[0](d).{field}"),
            "{e}"
        );
        assert!(e.message.contains("not supported by zerohop"), "{e}");
    }
    let e = err(&format!(
        "{BASE}\nlayered_runtime: {{ layers: [{{ name: s, static_layer: {{ k: [1, 2] }} }}] }}\n"
    ));
    assert_eq!(e.path, "layered_runtime.layers[0].static_layer.k", "{e}");
}

fn with_filter(filter: &str) -> String {
    let http = include_str!("../../tests/fixtures/http.yaml");
    http.replacen(
        "          http_filters:\n",
        &format!("          http_filters:\n{filter}"),
        1,
    )
}

#[test]
fn compressor_filter_compiles_with_envoys_defaults() {
    let gzip = "          - name: gz\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor\n              compressor_library: { name: g, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip } }\n";
    let b = load(&with_filter(gzip), Format::Yaml).unwrap();
    let NetworkFilter::Http(h) = &b.snapshot.listeners[0].filter_chains[0].filters[0] else {
        panic!("http expected")
    };
    let HttpFilterConfig::Compressor(c) = &h.http_filters[0].config else {
        panic!("compressor expected: {:?}", h.http_filters)
    };
    assert_eq!(
        c.library,
        zerohop_proto::CompressorLibrary::Gzip {
            level: 6,
            window_bits: 12,
            chunk_size: 4096
        }
    );
    assert_eq!(c.min_content_length, 30);
    assert!(c.enabled);
    assert!(c.content_types.iter().any(|t| t == "application/json"));

    // What zerohop does not do is refused by name.
    for (extra, field) in [
        ("memory_level: 3", "memory_level"),
        ("compression_strategy: RLE", "compression_strategy"),
    ] {
        let f = gzip.replace(
            "compression.gzip.compressor.v3.Gzip }",
            &format!("compression.gzip.compressor.v3.Gzip, {extra} }}"),
        );
        let e = err(&with_filter(&f));
        assert!(e.path.ends_with(&format!("typed_config.{field}")), "{e}");
        assert!(e.message.contains("not supported by zerohop"), "{e}");
    }
    let f = gzip.replace(
        "              compressor_library:",
        "              request_direction_config: {}\n              compressor_library:",
    );
    let e = err(&with_filter(&f));
    assert!(e.path.ends_with("request_direction_config"), "{e}");
    let f = gzip.replace(
        "compression.gzip.compressor.v3.Gzip }",
        "compression.gzip.compressor.v3.Gzip, window_bits: 8 }",
    );
    assert!(err(&with_filter(&f)).message.contains("from 9 to 15"));
    let decompressor = "          - name: d\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor\n              decompressor_library: { name: g, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip } }\n";
    let e = err(&with_filter(decompressor));
    assert!(e.message.contains("not supported by zerohop"), "{e}");
}

#[test]
fn request_mirror_policies_compile_and_refuse_what_zerohop_lacks() {
    let http = include_str!("../../tests/fixtures/http.yaml");
    let with = |policy: &str| {
        http.replacen(
            "route: { cluster: a }",
            &format!("route: {{ cluster: a, request_mirror_policies: [{policy}] }}"),
            1,
        )
    };
    let b = load(
        &with("{ cluster: b, runtime_fraction: { default_value: { numerator: 25 } } }"),
        Format::Yaml,
    )
    .unwrap();
    let mirrors = b
        .snapshot
        .listeners
        .iter()
        .flat_map(|l| &l.filter_chains)
        .flat_map(|c| &c.filters)
        .filter_map(|f| match f {
            NetworkFilter::Http(h) => Some(&h.route_config),
            _ => None,
        })
        .flat_map(|rc| &rc.virtual_hosts)
        .flat_map(|vh| &vh.routes)
        .find_map(|r| match &r.action {
            RouteAction::Forward(f) if !f.mirrors.is_empty() => Some(&f.mirrors),
            _ => None,
        })
        .expect("a mirrored route");
    assert_eq!(mirrors[0].fraction.map(|f| f.numerator), Some(25));
    assert!(mirrors[0].shadow_suffix);
    let e = err(&with("{ cluster: nope }"));
    assert!(
        e.path.ends_with("request_mirror_policies[0].cluster"),
        "{e}"
    );
    let e = err(&with("{ cluster: b, trace_sampled: false }"));
    assert!(e.path.ends_with("trace_sampled"), "{e}");
    assert!(e.message.contains("not supported by zerohop"), "{e}");
}
