//! A Zipkin span in its JSON v2 form, as Envoy's Zipkin tracer reports it: ids in hex
//! (a 128-bit trace id as 32 digits), `kind`, `name`, `timestamp` and `duration` in
//! microseconds, the `localEndpoint` (the node's cluster and the host's address), the
//! tags, `shared` on a server span that shares its caller's id, and the closing annotation
//! (`ss` / `cr`) at the end time.

use serde_json::{json, Map, Value};
use zerohop_proto::accesslog::Record;
use zerohop_proto::tracing::SpanIds;

use super::Zipkin;

/// The span as one JSON object (a report is an array of them).
pub fn span(
    z: &Zipkin,
    rec: &Record<'_>,
    ids: &SpanIds,
    name: &str,
    tags: &[(String, String)],
) -> String {
    let hex = |n: u64| format!("{n:016x}");
    let trace = match ids.trace_hi {
        0 => hex(ids.trace_lo),
        hi => format!("{}{}", hex(hi), hex(ids.trace_lo)),
    };
    let start = rec.start_unix_ns / 1_000;
    let end = (rec.start_unix_ns + rec.duration_ns) / 1_000;
    let client = ids.egress();
    let mut o = Map::new();
    o.insert("traceId".into(), trace.into());
    if ids.parent != 0 {
        o.insert("parentId".into(), hex(ids.parent).into());
    }
    o.insert("id".into(), hex(ids.span).into());
    o.insert(
        "kind".into(),
        if client { "CLIENT" } else { "SERVER" }.into(),
    );
    if !name.is_empty() {
        o.insert("name".into(), name.into());
    }
    o.insert("timestamp".into(), start.into());
    o.insert("duration".into(), (end - start).into());
    let mut endpoint = Map::new();
    if let Some(ip) = z.local_ip {
        endpoint.insert("ipv4".into(), ip.to_string().into());
        endpoint.insert("port".into(), 0.into());
    }
    if !z.service.is_empty() {
        endpoint.insert("serviceName".into(), z.service.clone().into());
    }
    o.insert("localEndpoint".into(), Value::Object(endpoint));
    if !tags.is_empty() {
        let t: Map<String, Value> = tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        o.insert("tags".into(), Value::Object(t));
    }
    if !client && ids.shared() {
        o.insert("shared".into(), true.into());
    }
    let closing = if client { "cr" } else { "ss" };
    o.insert(
        "annotations".into(),
        json!([{ "timestamp": end, "value": closing }]),
    );
    Value::Object(o).to_string()
}
