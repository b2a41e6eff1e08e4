//! The stream's tracing decision, once it is routed ([`super::super::trace`] decides;
//! this records what the span needs into the stream's info).

use zerohop_proto::tracing::TracingSpec;

use super::Stream;
use crate::accesslog::{capture, Pairs};
use crate::http::downstream::Downstream;
use crate::http::hcm::trace::{decide, Trace};
use crate::http::info::StreamInfo;
use crate::http::message::Request;
use crate::route::Route;

impl<'a, D: Downstream> Stream<'a, D> {
    /// Decides `req`'s tracing under `spec` and notes the span's name sources in `info`.
    pub(super) fn start_trace(
        &self,
        spec: &TracingSpec,
        req: &Request,
        route: Option<&'a Route>,
        info: &mut StreamInfo<'a>,
    ) -> Trace {
        let hcm = &self.http.manager;
        let replaced = hcm.use_remote_address && !hcm.preserve_external_request_id;
        let client = match replaced {
            true => None,
            false => req.header("x-request-id").map(str::as_bytes),
        };
        let t = decide(spec, req, client, hcm.generate_request_id, &self.shard.rng);
        info.span = t.span;
        if let Some(d) = route.and_then(|r| r.decorator.as_ref()) {
            info.operation = &d.operation;
        }
        // An ingress span is named by the caller's proxy's decorator when it sent one (kept
        // for the span, not forwarded), as Envoy's.
        if let Some(op) = req.header("x-envoy-decorator-operation") {
            if !spec.egress && !op.is_empty() {
                let pair = [(&b"x-envoy-decorator-operation"[..], op.as_bytes())];
                let names = &hcm.access_log.request_headers;
                capture(names, 0, &Pairs(&pair), &mut info.log_headers);
            }
        }
        t
    }
}
