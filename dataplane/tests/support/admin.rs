//! Requests to an admin port, zerohop's or Envoy's (Envoy answers chunked).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `(status, body)` of one request (`(0, "")` when nothing answers).
pub fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let sent = write!(
        c,
        "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let mut out = String::new();
    if sent.is_err() || c.read_to_string(&mut out).is_err() {
        return (0, String::new());
    }
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    )
}

/// `GET path`: the body of a 200, else `None`.
pub fn get(port: u16, path: &str) -> Option<String> {
    match request(port, "GET", path) {
        (200, body) => Some(body),
        _ => None,
    }
}

/// `GET path` answered 200 with JSON.
pub fn json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = request(port, "GET", path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// A chunked body's data.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n + 2 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The value of stat `name` in a `/stats` text (Envoy's `name: value` lines); 0 when absent.
pub fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
