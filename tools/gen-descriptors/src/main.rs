//! Compiles the Envoy v3 API protos that `envoy-types` ships in its crate source into one
//! FileDescriptorSet (`control/descriptors/envoy.bin`).
//!
//! Usage: `cargo run --manifest-path tools/gen-descriptors/Cargo.toml -- OUT`
//! The `envoy-types` crate is a dependency here only so that cargo downloads its source;
//! the proto tree is located next to it in the cargo registry.

use std::path::PathBuf;

/// The root files zerohop decodes; their imports are pulled in transitively.
const ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/service/secret/v3/sds.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/buffer/v3/buffer.proto",
    "envoy/extensions/filters/http/compressor/v3/compressor.proto",
    "envoy/extensions/filters/http/decompressor/v3/decompressor.proto",
    "envoy/extensions/compression/gzip/compressor/v3/gzip.proto",
    "envoy/extensions/compression/gzip/decompressor/v3/gzip.proto",
    "envoy/extensions/compression/brotli/compressor/v3/brotli.proto",
    "envoy/extensions/compression/brotli/decompressor/v3/brotli.proto",
    "envoy/extensions/compression/zstd/compressor/v3/zstd.proto",
    "envoy/extensions/compression/zstd/decompressor/v3/zstd.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/csrf/v3/csrf.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/network/dns_resolver/cares/v3/cares_dns_resolver.proto",
    "envoy/extensions/network/dns_resolver/getaddrinfo/v3/getaddrinfo_dns_resolver.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto",
    "envoy/extensions/load_balancing_policies/ring_hash/v3/ring_hash.proto",
    "envoy/extensions/load_balancing_policies/maglev/v3/maglev.proto",
    "envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.proto",
    "envoy/extensions/load_balancing_policies/random/v3/random.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
    "envoy/config/trace/v3/zipkin.proto",
    "udpa/type/v1/typed_struct.proto",
    "xds/type/v3/typed_struct.proto",
];

/// Roots compiled in a pass of their own, then merged: they name `common.ratelimit.v3.*`
/// relative to their package, which protoc resolves among their imports alone, while one
/// pool holding every root also has `envoy.extensions.filters.common` (the fault filter's)
/// for the first component to land on.
const SEPARATE: &[&str] = &[
    "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/network/local_ratelimit/v3/local_rate_limit.proto",
];

fn main() {
    let out = std::env::args().nth(1).expect("usage: gen-descriptors OUT");
    let root = envoy_types_proto_root();
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "client_model",
        "opentelemetry-proto",
        "cel-spec",
    ]
    .iter()
    .map(|d| root.join(d))
    .filter(|p| p.exists())
    .collect();
    let mut includes = includes;
    includes.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protos"));
    // Encoded by protox itself (custom options such as the validation rules are kept), and
    // merged as encoded: a FileDescriptorSet is its `file` entries one after another.
    let compile = |roots: &[&str]| {
        let mut compiler = protox::Compiler::new(&includes).expect("include paths");
        compiler.include_imports(true).include_source_info(false);
        compiler.open_files(roots).expect("compile Envoy protos");
        compiler.encode_file_descriptor_set()
    };
    let mut bytes = compile(ROOTS);
    let mut names: Vec<String> = entries(&bytes).into_iter().map(|(n, _)| n).collect();
    let more = compile(SEPARATE);
    for (name, entry) in entries(&more) {
        if !names.contains(&name) {
            bytes.extend_from_slice(entry);
            names.push(name);
        }
    }
    std::fs::write(&out, &bytes).expect("write output");
    eprintln!("wrote {} ({} bytes, {} files)", out, bytes.len(), names.len());
}

/// The `file` entries of an encoded FileDescriptorSet: each file's name and its bytes
/// (tag, length and message).
fn entries(set: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < set.len() {
        let start = at;
        assert_eq!(set[at], 0x0a, "a FileDescriptorSet holds only `file` entries");
        at += 1;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = set[at];
            at += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let file: prost_types::FileDescriptorProto =
            prost::Message::decode(&set[at..at + len]).expect("a FileDescriptorProto");
        at += len;
        out.push((file.name.unwrap_or_default(), &set[start..at]));
    }
    out
}

fn envoy_types_proto_root() -> PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    for entry in std::fs::read_dir(home.join("registry/src")).expect("cargo registry") {
        let dir = entry.unwrap().path().join("envoy-types-0.7.7/proto");
        if dir.exists() {
            return dir;
        }
    }
    panic!("envoy-types-0.7.7 source not found in the cargo registry (run `cargo fetch` here)");
}
