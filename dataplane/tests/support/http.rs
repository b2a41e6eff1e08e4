//! HTTP test peers: an upstream that describes each request it receives (so tests can see
//! the rewritten path and headers), counts its connections and serves a few special paths;
//! a raw HTTP/1.1 client; and the shared HTTP fixture with its ports substituted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const FIXTURE: &str = include_str!("../../../control/tests/fixtures/http.yaml");

/// The fixture with its listener on port 0 and clusters `a` and `b` at these addresses.
pub fn fixture(a: SocketAddr, b: SocketAddr) -> String {
    FIXTURE
        .replace("port_value: 10080", "port_value: 0")
        .replace("port_value: 18081", &format!("port_value: {}", a.port()))
        .replace("port_value: 18082", &format!("port_value: {}", b.port()))
}

pub struct Upstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub conns: Arc<AtomicUsize>,
    /// Requests received so far.
    pub requests: Arc<AtomicUsize>,
    /// Connections open now (the peer has not closed them).
    pub open: Arc<AtomicUsize>,
}

/// Reads one request head (lines up to the empty one); `None` at EOF.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines[1..].iter().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads a request body (Content-Length or chunked); returns (length, CRC-32), or `None`
/// if the connection ended first or the chunking is broken.
fn read_body(r: &mut BufReader<TcpStream>, lines: &[String]) -> Option<(u64, u32)> {
    let mut h = crc32fast::Hasher::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut take =
        |r: &mut BufReader<TcpStream>, mut n: u64, h: &mut crc32fast::Hasher| -> Option<()> {
            while n > 0 {
                let want = buf.len().min(n as usize);
                let got = r.read(&mut buf[..want]).ok().filter(|&g| g > 0)?;
                h.update(&buf[..got]);
                n -= got as u64;
            }
            Some(())
        };
    if header(lines, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            if r.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let n = u64::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if n == 0 {
                let mut end = String::new();
                while r.read_line(&mut end).ok()? > 0 && end != "\r\n" {
                    end.clear();
                }
                break;
            }
            take(r, n, &mut h)?;
            total += n;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).ok()?;
        }
    } else if let Some(n) = header(lines, "content-length") {
        let n: u64 = n.parse().ok()?;
        take(r, n, &mut h)?;
        total = n;
    }
    Some((total, h.finalize()))
}

/// An upstream named `name`. Every response carries `x-upstream: NAME` and a secret header;
/// the body describes the request: its line, then each header, then the body's size and
/// CRC. Special paths: any containing `/slow` answers after 1 s, `/big/N` sends N deterministic bytes,
/// `/chunked-response` a chunked body, `/ws` switches protocols and echoes, `/bad-framing`
/// answers with both Content-Length and Transfer-Encoding, `/bad-lengths` with two different
/// Content-Lengths, `/bad-lf` with a bare LF in its head, `/bad-chunk` with an empty chunk-size
/// line after its first chunk.
pub fn upstream(name: &'static str) -> Upstream {
    upstream_on(name, TcpListener::bind("127.0.0.1:0").unwrap())
}

/// [`upstream`] on a listener the caller bound (another loopback address, a given port).
pub fn upstream_on(name: &'static str, l: TcpListener) -> Upstream {
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (c, q, o) = (conns.clone(), requests.clone(), open.clone());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let (q, o) = (q.clone(), o.clone());
            std::thread::spawn(move || {
                serve(name, s, &q);
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Upstream {
        addr,
        conns,
        requests,
        open,
    }
}

fn serve(name: &str, s: TcpStream, requests: &AtomicUsize) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    while let Some(lines) = read_head(&mut r) {
        let path = lines[0].split(' ').nth(1).unwrap_or("").to_owned();
        if path == "/ws" {
            requests.fetch_add(1, Ordering::SeqCst);
            w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n").unwrap();
            // Echo whatever arrives, through the tunnel, until the client closes.
            let mut buf = [0u8; 4096];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if w.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
        let Some((len, crc)) = read_body(&mut r, &lines) else {
            return;
        };
        requests.fetch_add(1, Ordering::SeqCst);
        if path.contains("/slow") {
            std::thread::sleep(Duration::from_secs(1));
        }
        let head =
            format!("HTTP/1.1 200 OK\r\nx-upstream: {name}\r\nx-upstream-secret: s3cr3t\r\n");
        if let Some(n) = path.strip_prefix("/big/") {
            let n: u64 = n.parse().unwrap();
            w.write_all(format!("{head}content-length: {n}\r\n\r\n").as_bytes())
                .unwrap();
            let mut block = Box::new([0u8; super::BLOCK]);
            let mut left = n;
            let mut i = 0;
            while left > 0 {
                super::block(7, i, &mut block);
                let k = left.min(super::BLOCK as u64) as usize;
                if w.write_all(&block[..k]).is_err() {
                    return;
                }
                left -= k as u64;
                i += 1;
            }
            continue;
        }
        let mut body = format!("{}\n", lines[0]);
        for l in &lines[1..] {
            body.push_str(l);
            body.push('\n');
        }
        body.push_str(&format!("body-bytes: {len}\nbody-crc: {crc}\n"));
        let out = match path.as_str() {
            "/chunked-response" => {
                let mut out = format!("{head}transfer-encoding: chunked\r\n\r\n");
                for part in body.as_bytes().chunks(7) {
                    out.push_str(&format!("{:x}\r\n{}\r\n", part.len(), String::from_utf8_lossy(part)));
                }
                out.push_str("0\r\n\r\n");
                out
            }
            "/bad-framing" => format!("{head}content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            "/bad-lengths" => format!("{head}content-length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
            "/bad-lf" => "HTTP/1.1 200 OK\nx-upstream: a\r\ncontent-length: 0\r\n\r\n".to_owned(),
            "/bad-chunk" => format!("{head}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n\r\nworld\r\n0\r\n\r\n"),
            "/te-gzip" => format!("{head}transfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            "/te-gzip-only" => format!("{head}transfer-encoding: gzip\r\n\r\nhello"),
            _ => format!("{head}content-length: {}\r\n\r\n{body}", body.len()),
        };
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// A response as a client sees it.
#[derive(Debug)]
pub struct Response {
    /// The status line's protocol, e.g. `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The request line the upstream saw.
    pub fn upstream_request_line(&self) -> String {
        self.text().lines().next().unwrap_or("").to_owned()
    }

    /// Headers the upstream saw (lower-case names, in order).
    pub fn upstream_headers(&self) -> Vec<(String, String)> {
        self.text()
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("body-bytes:"))
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
            })
            .collect()
    }
}

/// A keep-alive HTTP/1.1 client on one connection.
pub struct Client {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    /// Sends raw bytes and reads one response.
    pub fn raw(&mut self, bytes: &[u8]) -> Option<Response> {
        self.w.write_all(bytes).ok()?;
        self.response()
    }

    pub fn get(&mut self, host: &str, path: &str, extra: &[(&str, &str)]) -> Response {
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n");
        for (n, v) in extra {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.raw(req.as_bytes()).expect("a response")
    }

    /// Reads one response; `None` if the connection closed first.
    pub fn response(&mut self) -> Option<Response> {
        let mut line = String::new();
        if self.r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let version = line.split(' ').next()?.to_owned();
        let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).ok()?;
            let l = l.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':')?;
            headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
            // no body
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                self.r.read_line(&mut size).ok()?;
                let n = usize::from_str_radix(size.trim(), 16).ok()?;
                if n == 0 {
                    let mut end = String::new();
                    self.r.read_line(&mut end).ok()?;
                    break;
                }
                let mut chunk = vec![0u8; n + 2];
                self.r.read_exact(&mut chunk).ok()?;
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = get("content-length") {
            body = vec![0u8; n.parse().ok()?];
            self.r.read_exact(&mut body).ok()?;
        } else {
            self.r.read_to_end(&mut body).ok()?;
        }
        Some(Response {
            version,
            status,
            headers,
            body,
        })
    }

    /// True when the server closed the connection (EOF within `timeout`).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.r.get_ref().set_read_timeout(Some(timeout)).unwrap();
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0))
            || matches!(self.r.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// What must agree between the two proxies for one request.
pub fn observed(r: &Response) -> Vec<String> {
    let mut out = vec![format!("status {}", r.status)];
    if let Some(u) = r.header("x-upstream") {
        out.push(format!("upstream {u}"));
        out.push(format!("request line {}", r.upstream_request_line()));
        let up = r.upstream_headers();
        for name in [
            "host",
            "x-shop",
            "x-added",
            "x-remove-me",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-canary",
            "user-agent",
            "x-envoy-downstream-service-cluster",
            "x-envoy-downstream-service-node",
        ] {
            let values: Vec<String> = up
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .collect();
            out.push(format!("upstream saw {name}: {values:?}"));
        }
        // A generated id (a UUID) differs between the proxies; a client's kept one does not.
        let id = up.iter().find(|(n, _)| n == "x-request-id").map(|(_, v)| {
            match v.len() == 36 && v.bytes().filter(|&b| b == b'-').count() == 4 {
                true => "generated".to_owned(),
                false => v.clone(),
            }
        });
        out.push(format!("upstream saw x-request-id: {id:?}"));
        let external = up
            .iter()
            .find(|(n, _)| n == "x-envoy-external-address")
            .map(|(_, v)| v.clone());
        out.push(format!(
            "upstream saw x-envoy-external-address: {external:?}"
        ));
    } else {
        out.push(format!("body {:?}", r.text()));
    }
    // Every header name, both ways (values differ where they carry times or ids).
    let mut down: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    down.sort();
    out.push(format!("response header names {down:?}"));
    if r.header("x-upstream").is_some() {
        let mut up: Vec<String> = r.upstream_headers().into_iter().map(|(n, _)| n).collect();
        up.sort();
        out.push(format!("upstream header names {up:?}"));
    }
    for name in [
        "location",
        "x-resp",
        "x-proxied-by",
        "x-upstream-secret",
        "server",
    ] {
        out.push(format!("response {name}: {:?}", r.header(name)));
    }
    out
}

/// A bootstrap with one HTTP/1.1 listener `web` on 127.0.0.1:`port` (0: any): its
/// connection manager's extra fields `hcm` (indented 10), its routes `routes` (route
/// entries, indented 14, under one catch-all virtual host) and the router; then the
/// cluster entries `clusters` (indented 2). `prefix` goes before `static_resources`.
pub fn http_bootstrap(prefix: &str, port: u16, hcm: &str, routes: &str, clusters: &str) -> String {
    let manager = format!(
        r#"{hcm}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
{ROUTER}"#
    );
    manager_bootstrap(prefix, port, &manager, clusters)
}

/// The router as the last entry of `http_filters` (indented 10).
pub const ROUTER: &str = "          - name: envoy.filters.http.router\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n";

/// A bootstrap with one HTTP/1.1 listener `web` on 127.0.0.1:`port` (0: any) whose
/// connection manager (`stat_prefix: web`) has the fields `manager` (indented 10: its route
/// configuration, its filters, ...); then the cluster entries `clusters` (indented 2).
/// `prefix` goes before `static_resources`.
pub fn manager_bootstrap(prefix: &str, port: u16, manager: &str, clusters: &str) -> String {
    format!(
        r#"{prefix}static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
{manager}  clusters:
{clusters}"#
    )
}

/// An `admin` entry on 127.0.0.1:`port`, to go before `static_resources`.
pub fn admin_prefix(port: u16) -> String {
    format!("admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n")
}

/// A STATIC cluster entry `name` with one endpoint on 127.0.0.1:`port`.
pub fn static_cluster(name: &str, port: u16) -> String {
    format!(
        r#"  - name: {name}
    type: STATIC
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#
    )
}

/// curl's `-i` output: status line, headers, blank line, body.
pub fn parse_curl(raw: &[u8]) -> Response {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap().to_owned();
    let status = parts.next().unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        version,
        status,
        headers,
        body: raw[at + 4..].to_vec(),
    }
}
