//! The proxy's error type: what went wrong, whose fault it was, and whether the request may
//! be tried again.
//!
//! Every failure on the request path becomes one [`ProxyError`]. Its [`Fault`] says which
//! side caused it (for logs, counters and Envoy's response flags), its [`Retry`] whether a
//! retry may help, decided as data rather than by matching a status code: a request that
//! met a pooled connection the upstream had just closed is safe to send again, the same
//! failure on a fresh connection is not ([`Retry::ReusedOnly`], as pingora's `RetryType`).
//! [`ProxyError::local_reply`] is the answer the client gets when nothing was sent yet.

use std::fmt;

use crate::http::info::ResponseFlags;

/// Envoy's local reply to an upstream reset before the response started, naming the reset
/// reason, and saying so when a retry policy had sent the request again.
macro_rules! reset {
    ($e:expr, $reason:literal) => {
        match $e.retried {
            false => concat!(
                "upstream connect error or disconnect/reset before headers. reset reason: ",
                $reason
            ),
            true => concat!(
                "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: ",
                $reason
            ),
        }
    };
}

/// Which side is to blame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client: malformed or too large input, a timeout waiting for it, a reset.
    Downstream,
    /// The upstream: refused, timed out, reset, or answered something malformed.
    Upstream,
    /// The configuration: no route, a cluster without endpoints.
    Config,
    /// zerohop itself.
    Internal,
}

/// Whether the request may be sent again after this error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    No,
    Yes,
    /// Only if the upstream connection had served a request before: a pooled connection the
    /// peer closed while it idled fails this way, and nothing reached the application.
    ReusedOnly,
}

impl Retry {
    /// The decision once it is known whether the connection was reused.
    pub fn decide(self, reused: bool) -> bool {
        match self {
            Retry::No => false,
            Retry::Yes => true,
            Retry::ReusedOnly => reused,
        }
    }
}

/// What happened. Each variant documents its cause and the client's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request head broke HTTP/1.1's framing rules (RFC 9112): 400, connection closed.
    MalformedRequest(&'static str),
    /// The request's `Transfer-Encoding` is not `chunked` alone: 501, connection closed, as
    /// Envoy's codec answers.
    UnsupportedTransferCoding,
    /// The request head exceeded `max_request_headers_kb` or `max_headers_count`: 431.
    HeadersTooLarge,
    /// An HTTP/1.0 request to a connection manager without `accept_http_10`: 426, as Envoy.
    Http10NotAccepted,
    /// The head did not arrive within `request_headers_timeout`: 408.
    RequestHeadersTimeout,
    /// The body did not arrive within `request_timeout` or `stream_idle_timeout`: 408.
    RequestTimeout,
    /// A chunked request body broke its framing: 400.
    MalformedBody,
    /// A body over the buffer filter's limit: 413.
    PayloadTooLarge,
    /// The client closed or reset before the exchange completed: nothing to answer.
    DownstreamClosed,
    /// No virtual host or route matched: 404 (Envoy's NR).
    NoRoute,
    /// The cluster has no endpoint: 503 `no healthy upstream` (UH).
    NoHealthyUpstream,
    /// The upstream refused the connection (UF).
    ConnectRefused,
    /// The connect did not complete within the cluster's `connect_timeout` (UF).
    ConnectTimeout,
    /// The connect failed another way: reset, unreachable, out of descriptors (UF).
    ConnectFailed,
    /// The upstream closed or reset before a whole response head (UC).
    UpstreamClosed,
    /// An HTTP/2 upstream reset the stream before its response head (UR).
    UpstreamReset,
    /// An HTTP/2 upstream refused the stream (REFUSED_STREAM, or above its GOAWAY's last
    /// stream): nothing of it was processed, so it may go again (UR).
    UpstreamRefusedStream,
    /// The retry policy's `per_try_timeout` ended the last attempt (UT): 504.
    PerTryTimeout,
    /// The upstream response broke HTTP/1.1's framing rules (UPE).
    MalformedResponse,
    /// No (whole) response within the route timeout (UT): 504.
    UpstreamTimeout,
    /// The connection manager's `max_stream_duration` passed before the response started,
    /// the request read whole: 504 `downstream duration timeout` (DT), as Envoy's (which
    /// answers 408 while the request is still arriving; zerohop bounds only the wait for
    /// the response and its body).
    MaxStreamDuration,
    /// The cluster's circuit breaker is full (connections, pending requests or requests):
    /// 503 at once (UO), as Envoy's overflow.
    UpstreamOverflow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyError {
    pub kind: Kind,
    pub fault: Fault,
    pub retry: Retry,
    /// A retry policy sent the request again before this ended it (Envoy's local reply then
    /// says "retried and the latest reset reason").
    pub retried: bool,
}

impl ProxyError {
    /// Envoy's `%UPSTREAM_TRANSPORT_FAILURE_REASON%` for a failed connect (its wording: the
    /// connect's error, delivered after the non-blocking connect); empty otherwise.
    pub fn transport_failure_reason(&self) -> &'static str {
        match self.kind {
            Kind::ConnectRefused => "delayed_connect_error:_Connection_refused",
            _ => "",
        }
    }

    pub fn new(kind: Kind) -> ProxyError {
        use Kind::*;
        let (fault, retry) = match kind {
            MalformedRequest(_)
            | UnsupportedTransferCoding
            | HeadersTooLarge
            | Http10NotAccepted
            | RequestHeadersTimeout
            | RequestTimeout
            | MalformedBody
            | PayloadTooLarge
            | DownstreamClosed => (Fault::Downstream, Retry::No),
            // A limit the configuration sets.
            MaxStreamDuration => (Fault::Config, Retry::No),
            NoRoute | NoHealthyUpstream => (Fault::Config, Retry::No),
            // Nothing reached the upstream: trying another connection is safe.
            ConnectRefused | ConnectTimeout | ConnectFailed => (Fault::Upstream, Retry::Yes),
            // The request may have reached the application, unless the connection was a
            // pooled one the peer had closed while it idled.
            UpstreamClosed => (Fault::Upstream, Retry::ReusedOnly),
            UpstreamReset => (Fault::Upstream, Retry::No),
            UpstreamRefusedStream => (Fault::Upstream, Retry::Yes),
            MalformedResponse | UpstreamTimeout | PerTryTimeout => (Fault::Upstream, Retry::No),
            // The cluster is saturated: another attempt would only add to it.
            UpstreamOverflow => (Fault::Upstream, Retry::No),
        };
        ProxyError {
            kind,
            fault,
            retry,
            retried: false,
        }
    }

    /// The status and body the client is answered with, when nothing was sent to it yet
    /// (`None`: close without an answer).
    pub fn local_reply(&self) -> Option<(u16, &'static str)> {
        use Kind::*;
        Some(match self.kind {
            MalformedRequest(why) => (400, why),
            UnsupportedTransferCoding => (501, "unsupported transfer encoding"),
            HeadersTooLarge => (431, "request header fields too large"),
            Http10NotAccepted => (426, "Upgrade Required"),
            RequestHeadersTimeout => (408, "request header read timeout"),
            RequestTimeout => (408, "request timeout"),
            MalformedBody => (400, "malformed chunked body"),
            PayloadTooLarge => (413, "Payload Too Large"),
            DownstreamClosed => return None,
            NoRoute => (404, ""),
            NoHealthyUpstream => (503, "no healthy upstream"),
            ConnectRefused | ConnectFailed => (503, reset!(self, "remote connection failure")),
            ConnectTimeout => (503, reset!(self, "connection timeout")),
            UpstreamClosed => (503, reset!(self, "connection termination")),
            UpstreamReset => (503, reset!(self, "remote reset")),
            UpstreamRefusedStream => (503, reset!(self, "remote refused stream reset")),
            MalformedResponse => (502, reset!(self, "protocol error")),
            UpstreamTimeout | PerTryTimeout => (504, "upstream request timeout"),
            MaxStreamDuration => (504, "downstream duration timeout"),
            UpstreamOverflow => (
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            ),
        })
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for this error.
    pub fn details(&self) -> &'static str {
        use Kind::*;
        match self.kind {
            MalformedRequest(_) | MalformedBody => "http1.codec_error",
            UnsupportedTransferCoding => "http1.invalid_transfer_encoding",
            HeadersTooLarge => "http1.headers_too_large",
            Http10NotAccepted => "http1.codec_error",
            RequestHeadersTimeout => "request_header_timeout",
            RequestTimeout => "stream_idle_timeout",
            PayloadTooLarge => "request_payload_too_large",
            DownstreamClosed => "downstream_remote_disconnect",
            NoRoute => "route_not_found",
            NoHealthyUpstream => "no_healthy_upstream",
            ConnectRefused | ConnectFailed => {
                "upstream_reset_before_response_started{remote_connection_failure}"
            }
            ConnectTimeout => "upstream_reset_before_response_started{connection_timeout}",
            UpstreamClosed => "upstream_reset_before_response_started{connection_termination}",
            UpstreamReset => "upstream_reset_before_response_started{remote_reset}",
            UpstreamRefusedStream => {
                "upstream_reset_before_response_started{remote_refused_stream_reset}"
            }
            MalformedResponse => "upstream_reset_before_response_started{protocol_error}",
            UpstreamTimeout => "upstream_response_timeout",
            PerTryTimeout => "upstream_per_try_timeout",
            MaxStreamDuration => "max_duration_timeout",
            UpstreamOverflow => "upstream_reset_before_response_started{overflow}",
        }
    }

    /// Envoy's response flag for this error.
    pub fn response_flag(&self) -> ResponseFlags {
        use Kind::*;
        match self.kind {
            MalformedRequest(_)
            | UnsupportedTransferCoding
            | HeadersTooLarge
            | Http10NotAccepted
            | MalformedBody => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            RequestHeadersTimeout | RequestTimeout => ResponseFlags::STREAM_IDLE_TIMEOUT,
            PayloadTooLarge => ResponseFlags::empty(),
            DownstreamClosed => ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
            NoRoute => ResponseFlags::NO_ROUTE_FOUND,
            NoHealthyUpstream => ResponseFlags::NO_HEALTHY_UPSTREAM,
            ConnectRefused | ConnectTimeout | ConnectFailed => {
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE
            }
            UpstreamClosed => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            UpstreamReset | UpstreamRefusedStream => ResponseFlags::UPSTREAM_REMOTE_RESET,
            MalformedResponse => ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            UpstreamTimeout | PerTryTimeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            MaxStreamDuration => ResponseFlags::DURATION_TIMEOUT,
            UpstreamOverflow => ResponseFlags::UPSTREAM_OVERFLOW,
        }
    }
}

impl From<Kind> for ProxyError {
    fn from(kind: Kind) -> ProxyError {
        ProxyError::new(kind)
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?} fault", self.kind, self.fault)?;
        match self.retry {
            Retry::No => f.write_str(")"),
            Retry::Yes => f.write_str(", retryable)"),
            Retry::ReusedOnly => f.write_str(", retryable on a reused connection)"),
        }
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_decided_by_the_error_and_the_connection() {
        let closed = ProxyError::new(Kind::UpstreamClosed);
        assert_eq!(closed.fault, Fault::Upstream);
        assert!(
            closed.retry.decide(true),
            "a reused connection closed under us"
        );
        assert!(
            !closed.retry.decide(false),
            "a fresh one: the request may have landed"
        );
        assert!(ProxyError::new(Kind::ConnectRefused).retry.decide(false));
        assert!(!ProxyError::new(Kind::UpstreamTimeout).retry.decide(true));
        assert!(!ProxyError::new(Kind::NoRoute).retry.decide(true));
        assert_eq!(ProxyError::new(Kind::NoRoute).fault, Fault::Config);
    }

    #[test]
    fn each_error_has_its_answer_and_flag() {
        let e = ProxyError::new(Kind::ConnectTimeout);
        assert_eq!(e.local_reply().map(|r| r.0), Some(503));
        let retried = ProxyError {
            retried: true,
            ..ProxyError::new(Kind::ConnectRefused)
        };
        assert_eq!(
            retried.local_reply(),
            Some((
                503,
                "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure"
            ))
        );
        assert_eq!(
            e.response_flag(),
            ResponseFlags::UPSTREAM_CONNECTION_FAILURE
        );
        assert_eq!(ProxyError::new(Kind::DownstreamClosed).local_reply(), None);
        assert_eq!(
            ProxyError::new(Kind::NoHealthyUpstream).local_reply(),
            Some((503, "no healthy upstream"))
        );
        assert_eq!(
            ProxyError::new(Kind::UpstreamTimeout)
                .response_flag()
                .short_names(),
            "UT"
        );
    }
}
