//! Envoy's substitution format strings, compiled once and applied to records: the text
//! form (`text_format_source`, the default format) and the JSON form (`json_format`), with
//! the command operators zerohop records. An operator zerohop cannot fill is refused when
//! the configuration is compiled, by name, as Envoy refuses an unknown one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use zerohop_proto::accesslog::{
    Record, RecordKind, ResponseFlags, MAX_HEADERS, RESPONSE_SLOTS, TRAILER_SLOTS,
};

use super::time::TimeFormat;

/// Envoy's default access log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Which header map an operator reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Which {
    Request,
    Response,
    Trailer,
}

/// The headers a logger set's formats and filters read: each name's slot in the records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captures {
    pub request: Vec<String>,
    pub response: Vec<String>,
    pub trailers: Vec<String>,
    /// `%UPSTREAM_LOCAL_ADDRESS%` is printed: the shards read it from the socket.
    pub upstream_local: bool,
}

impl Captures {
    /// The slot of `name` (lower-cased) in `which`, added if new.
    pub fn slot(&mut self, which: Which, name: &str) -> Result<u8, String> {
        let (list, base) = match which {
            Which::Request => (&mut self.request, 0),
            Which::Response => (&mut self.response, RESPONSE_SLOTS),
            Which::Trailer => (&mut self.trailers, TRAILER_SLOTS),
        };
        let name = name.to_ascii_lowercase();
        let i = match list.iter().position(|n| *n == name) {
            Some(i) => i,
            None if list.len() < MAX_HEADERS => {
                list.push(name);
                list.len() - 1
            }
            None => return Err(format!("more than {MAX_HEADERS} distinct headers")),
        };
        Ok(base + i as u8)
    }
}

/// One command operator.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    StartTime(TimeFormat),
    /// `%REQ(X?Y)%` and kin: the first header's value, else the alternative's.
    Header {
        first: u8,
        alt: Option<u8>,
    },
    Protocol,
    ResponseCode,
    ResponseCodeDetails,
    ResponseFlags,
    BytesReceived,
    BytesSent,
    Duration,
    RequestDuration,
    ResponseDuration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    UpstreamTransportFailureReason,
    /// An address, with or without its port, or only the port.
    DownstreamRemote(AddrPart),
    DownstreamLocal(AddrPart),
    RequestedServerName,
    RouteName,
    ConnectionId,
    Hostname,
    AttemptCount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrPart {
    Whole,
    Ip,
    Port,
}

/// What an operator yields: JSON keeps numbers as numbers and an absent value as `null`.
#[derive(Debug, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Num(u64),
    Absent,
}

/// What formatting reads besides the record.
#[derive(Debug)]
pub struct Ctx {
    pub hostname: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Piece {
    Text(String),
    Op { op: Op, max: Option<usize> },
}

/// A compiled format string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Compiles `s`, assigning the headers it reads their slots in `captures`.
    pub fn parse(s: &str, captures: &mut Captures) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(at) = rest.find('%') {
            text.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                text.push('%');
                rest = r;
                continue;
            }
            let (op, max, after) = parse_op(rest, captures)?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Op { op, max });
            rest = after;
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template(pieces))
    }

    /// The operator when the template is exactly one (JSON keeps its type then).
    fn single(&self) -> Option<(&Op, Option<usize>)> {
        match &self.0[..] {
            [Piece::Op { op, max }] => Some((op, *max)),
            _ => None,
        }
    }

    /// Appends the text form; an absent value is `-`, or nothing with `omit_empty`.
    pub fn render(&self, rec: &Record<'_>, ctx: &Ctx, omit_empty: bool, out: &mut String) {
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Op { op, max } => match value(op, rec, ctx, *max) {
                    Value::Str(s) => out.push_str(&s),
                    Value::Num(n) => out.push_str(&n.to_string()),
                    Value::Absent if omit_empty => {}
                    Value::Absent => out.push('-'),
                },
            }
        }
    }
}

/// Parses one operator after its opening `%`: returns it, its `:Z` length, and the rest.
fn parse_op<'s>(
    s: &'s str,
    captures: &mut Captures,
) -> Result<(Op, Option<usize>, &'s str), String> {
    let name_len = s
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let name = &s[..name_len];
    let mut rest = &s[name_len..];
    if name.is_empty() {
        return Err(format!(
            "'%' must start a command operator or be written '%%': {s:?}"
        ));
    }
    let mut arg = None;
    if let Some(r) = rest.strip_prefix('(') {
        // The first ')' followed by the operator's end or its length.
        let close = r
            .match_indices(')')
            .map(|(i, _)| i)
            .find(|&i| matches!(r.as_bytes().get(i + 1), Some(b'%' | b':')))
            .ok_or_else(|| format!("%{name}(...) is not closed"))?;
        arg = Some(&r[..close]);
        rest = &r[close + 1..];
    }
    let mut max = None;
    if let Some(r) = rest.strip_prefix(':') {
        let digits = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        let n: usize = r[..digits]
            .parse()
            .map_err(|_| format!("%{name}: the length after ':' must be a number"))?;
        max = Some(n);
        rest = &r[digits..];
    }
    let rest = rest
        .strip_prefix('%')
        .ok_or_else(|| format!("command operator %{name} is not closed with '%'"))?;
    let no_arg = |op: Op| match arg {
        None => Ok(op),
        Some(_) => Err(format!("%{name}% takes no argument")),
    };
    let header = |which: Which, captures: &mut Captures| -> Result<Op, String> {
        let arg = arg.ok_or_else(|| format!("%{name}(...)% needs a header name"))?;
        let (first, alt) = match arg.split_once('?') {
            Some((a, b)) => (a, Some(b)),
            None => (arg, None),
        };
        if first.is_empty() || alt.is_some_and(str::is_empty) {
            return Err(format!("%{name}({arg})%: empty header name"));
        }
        let first = captures.slot(which, first)?;
        let alt = alt.map(|a| captures.slot(which, a)).transpose()?;
        Ok(Op::Header { first, alt })
    };
    let op = match name {
        "START_TIME" => Op::StartTime(match arg {
            Some(f) => TimeFormat::parse(f).map_err(|e| format!("%START_TIME({f})%: {e}"))?,
            None => TimeFormat::envoy_default(),
        }),
        "REQ" => header(Which::Request, captures)?,
        "RESP" => header(Which::Response, captures)?,
        // The shards do not capture trailers yet: refused rather than always `-`.
        "TRAILER" => {
            return Err("command operator %TRAILER(...)% is not supported by zerohop yet".into())
        }
        "PROTOCOL" => no_arg(Op::Protocol)?,
        "RESPONSE_CODE" => no_arg(Op::ResponseCode)?,
        "RESPONSE_CODE_DETAILS" => no_arg(Op::ResponseCodeDetails)?,
        "RESPONSE_FLAGS" => no_arg(Op::ResponseFlags)?,
        "BYTES_RECEIVED" => no_arg(Op::BytesReceived)?,
        "BYTES_SENT" => no_arg(Op::BytesSent)?,
        "DURATION" => no_arg(Op::Duration)?,
        "REQUEST_DURATION" => no_arg(Op::RequestDuration)?,
        "RESPONSE_DURATION" => no_arg(Op::ResponseDuration)?,
        "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => no_arg(Op::UpstreamHost)?,
        "UPSTREAM_CLUSTER" => no_arg(Op::UpstreamCluster)?,
        "UPSTREAM_LOCAL_ADDRESS" => {
            captures.upstream_local = true;
            no_arg(Op::UpstreamLocalAddress)?
        }
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => no_arg(Op::UpstreamTransportFailureReason)?,
        "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
            no_arg(Op::DownstreamRemote(AddrPart::Whole))?
        }
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
        | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
            no_arg(Op::DownstreamRemote(AddrPart::Ip))?
        }
        "DOWNSTREAM_REMOTE_PORT" | "DOWNSTREAM_DIRECT_REMOTE_PORT" => {
            no_arg(Op::DownstreamRemote(AddrPart::Port))?
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => no_arg(Op::DownstreamLocal(AddrPart::Whole))?,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => no_arg(Op::DownstreamLocal(AddrPart::Ip))?,
        "DOWNSTREAM_LOCAL_PORT" => no_arg(Op::DownstreamLocal(AddrPart::Port))?,
        "REQUESTED_SERVER_NAME" => no_arg(Op::RequestedServerName)?,
        "ROUTE_NAME" => no_arg(Op::RouteName)?,
        "CONNECTION_ID" => no_arg(Op::ConnectionId)?,
        "HOSTNAME" => no_arg(Op::Hostname)?,
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => no_arg(Op::AttemptCount)?,
        other => {
            return Err(format!(
                "command operator %{other}% is not supported by zerohop"
            ))
        }
    };
    Ok((op, max, rest))
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

fn text<'a>(s: &'a str) -> Value<'a> {
    match s.is_empty() {
        true => Value::Absent,
        false => Value::Str(Cow::Borrowed(s)),
    }
}

fn addr(a: Option<SocketAddr>, part: AddrPart) -> Value<'static> {
    let Some(a) = a else { return Value::Absent };
    match part {
        AddrPart::Whole => Value::Str(Cow::Owned(a.to_string())),
        AddrPart::Ip => Value::Str(Cow::Owned(a.ip().to_string())),
        AddrPart::Port => Value::Num(u64::from(a.port())),
    }
}

/// What `op` yields for `rec`, a string cut to `max` bytes (at a character boundary).
pub fn value<'a>(op: &Op, rec: &Record<'a>, ctx: &'a Ctx, max: Option<usize>) -> Value<'a> {
    let http = rec.kind == RecordKind::Http;
    let v = match op {
        Op::StartTime(f) => Value::Str(Cow::Owned(f.format(rec.start_unix_ns))),
        Op::Header { first, alt } => {
            let found = rec
                .header(*first)
                .or_else(|| alt.and_then(|a| rec.header(a)));
            match found {
                Some(v) => Value::Str(String::from_utf8_lossy(v)),
                None => Value::Absent,
            }
        }
        Op::Protocol => match rec.protocol.as_str() {
            Some(p) => Value::Str(Cow::Borrowed(p)),
            None => Value::Absent,
        },
        Op::ResponseCode => Value::Num(u64::from(rec.response_code)),
        // Envoy names the transport's failure inside the reset's reason.
        Op::ResponseCodeDetails => match rec.details.strip_suffix('}') {
            Some(d) if !rec.failure_reason.is_empty() => {
                Value::Str(Cow::Owned(format!("{d}|{}}}", rec.failure_reason)))
            }
            _ => text(rec.details),
        },
        Op::ResponseFlags => Value::Str(Cow::Owned(
            ResponseFlags::from_bits(rec.flags).short_names(),
        )),
        Op::BytesReceived => Value::Num(rec.bytes_received),
        Op::BytesSent => Value::Num(rec.bytes_sent),
        Op::Duration => Value::Num(ms(rec.duration_ns)),
        Op::RequestDuration => rec
            .request_duration_ns
            .map_or(Value::Absent, |n| Value::Num(ms(n))),
        Op::ResponseDuration => rec
            .response_duration_ns
            .map_or(Value::Absent, |n| Value::Num(ms(n))),
        Op::UpstreamHost => addr(rec.upstream_host, AddrPart::Whole),
        Op::UpstreamCluster => text(rec.upstream_cluster),
        Op::UpstreamLocalAddress => addr(rec.upstream_local, AddrPart::Whole),
        Op::UpstreamTransportFailureReason => text(rec.failure_reason),
        Op::DownstreamRemote(part) => addr(rec.downstream_remote, *part),
        Op::DownstreamLocal(part) => addr(rec.downstream_local, *part),
        Op::RequestedServerName => text(rec.sni),
        Op::RouteName => text(rec.route_name),
        Op::ConnectionId => Value::Num(rec.connection_id),
        Op::Hostname => Value::Str(Cow::Borrowed(&ctx.hostname)),
        Op::AttemptCount if http => Value::Num(u64::from(rec.attempts)),
        Op::AttemptCount => Value::Absent,
    };
    match (v, max) {
        (Value::Str(s), Some(n)) if s.len() > n => {
            let mut end = n;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::Str(Cow::Owned(s[..end].to_string()))
        }
        (v, _) => v,
    }
}

/// `json_format`: keys to format strings, nested objects, or literal values.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonValue {
    Template(Template),
    Object(BTreeMap<String, JsonValue>),
    Literal(serde_json::Value),
}

impl JsonValue {
    /// Compiles a `json_format` object (as JSON).
    pub fn parse(v: &serde_json::Value, captures: &mut Captures) -> Result<JsonValue, String> {
        Ok(match v {
            serde_json::Value::String(s) => JsonValue::Template(Template::parse(s, captures)?),
            serde_json::Value::Object(m) => JsonValue::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), JsonValue::parse(v, captures)?)))
                    .collect::<Result<_, String>>()?,
            ),
            serde_json::Value::Array(_) => {
                return Err("json_format: lists are not supported by zerohop".into())
            }
            // A Struct's numbers are doubles: whole ones print as integers, as Envoy's.
            serde_json::Value::Number(n) => JsonValue::Literal(match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    serde_json::Value::from(f as i64)
                }
                _ => serde_json::Value::Number(n.clone()),
            }),
            other => JsonValue::Literal(other.clone()),
        })
    }

    /// The value for `rec`; `None` when omitted (`omit_empty_values`).
    pub fn render(
        &self,
        rec: &Record<'_>,
        ctx: &Ctx,
        omit_empty: bool,
    ) -> Option<serde_json::Value> {
        match self {
            JsonValue::Literal(v) => Some(v.clone()),
            JsonValue::Object(m) => {
                let obj: serde_json::Map<String, serde_json::Value> = m
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.render(rec, ctx, omit_empty)?)))
                    .collect();
                (!(omit_empty && obj.is_empty())).then_some(serde_json::Value::Object(obj))
            }
            JsonValue::Template(t) => match t.single() {
                Some((op, max)) => match value(op, rec, ctx, max) {
                    Value::Str(s) => Some(serde_json::Value::String(s.into_owned())),
                    Value::Num(n) => Some(serde_json::Value::from(n)),
                    Value::Absent if omit_empty => None,
                    Value::Absent => Some(serde_json::Value::Null),
                },
                None => {
                    let mut s = String::new();
                    t.render(rec, ctx, omit_empty, &mut s);
                    (!(omit_empty && s.is_empty())).then_some(serde_json::Value::String(s))
                }
            },
        }
    }
}

/// A logger's format: text, or JSON (one object per line).
#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    Text {
        template: Template,
        omit_empty: bool,
    },
    Json {
        object: JsonValue,
        omit_empty: bool,
    },
}

impl Format {
    /// One log line for `rec`, appended to `out`.
    pub fn write(&self, rec: &Record<'_>, ctx: &Ctx, out: &mut String) {
        match self {
            Format::Text {
                template,
                omit_empty,
            } => template.render(rec, ctx, *omit_empty, out),
            Format::Json { object, omit_empty } => {
                let v = object
                    .render(rec, ctx, *omit_empty)
                    .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
                out.push_str(&v.to_string());
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_proto::accesslog::push_header;

    fn ctx() -> Ctx {
        Ctx {
            hostname: "box".into(),
        }
    }

    #[test]
    fn operators_fill_in_and_absent_ones_print_a_dash() {
        let mut caps = Captures::default();
        let t = Template::parse(
            "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH):3% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION% %RESP(X-Y)% 100%% %UPSTREAM_HOST% %HOSTNAME%\n",
            &mut caps,
        )
        .unwrap();
        assert_eq!(caps.request, [":method", "x-envoy-original-path", ":path"]);
        assert_eq!(caps.response, ["x-y"]);
        let mut block = Vec::new();
        push_header(&mut block, 0, b"GET");
        push_header(&mut block, 2, b"/abcdef");
        let rec = Record {
            protocol: zerohop_proto::accesslog::Protocol::Http11,
            response_code: 404,
            flags: ResponseFlags::NO_ROUTE_FOUND.bits(),
            duration_ns: 2_999_999,
            headers: &block,
            ..Record::default()
        };
        let mut out = String::new();
        t.render(&rec, &ctx(), false, &mut out);
        assert_eq!(out, "GET /ab HTTP/1.1 404 NR 2 - 100% - box\n");
        out.clear();
        t.render(&rec, &ctx(), true, &mut out);
        assert_eq!(out, "GET /ab HTTP/1.1 404 NR 2  100%  box\n");
        // Several operators with arguments on one line.
        let t = Template::parse("%REQ(A):1% %REQ(B?A)% %REQ(C)%", &mut caps).unwrap();
        assert_eq!(t.0.len(), 5, "{t:?}");
    }

    #[test]
    fn unknown_or_malformed_operators_are_refused_by_name() {
        let mut caps = Captures::default();
        for (bad, says) in [
            ("%NOPE%", "%NOPE% is not supported"),
            ("%REQ%", "needs a header name"),
            ("%PROTOCOL(x)%", "takes no argument"),
            ("%REQ(a)", "not closed"),
            ("50% off", "must start a command operator"),
            ("%REQ(a):x%", "must be a number"),
            ("%TRAILER(grpc-status)%", "%TRAILER(...)% is not supported"),
        ] {
            let e = Template::parse(bad, &mut caps).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn json_keeps_types_and_nulls() {
        let mut caps = Captures::default();
        let cfg = serde_json::json!({
            "code": "%RESPONSE_CODE%", "host": "%UPSTREAM_HOST%",
            "line": "%REQ(:METHOD)% x", "n": {"lit": 7}
        });
        let f = Format::Json {
            object: JsonValue::parse(&cfg, &mut caps).unwrap(),
            omit_empty: false,
        };
        let mut block = Vec::new();
        push_header(&mut block, 0, b"PUT");
        let rec = Record {
            response_code: 200,
            headers: &block,
            ..Record::default()
        };
        let mut out = String::new();
        f.write(&rec, &ctx(), &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 200, "host": null, "line": "PUT x", "n": {"lit": 7}})
        );
    }
}
