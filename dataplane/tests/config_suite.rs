//! The config suite: bootstraps in the style of Envoy's examples (`tests/configs/suite/`),
//! each loaded by `envoy --mode validate` and `zerohop-control --check`, then run by Envoy
//! 1.40 and by zerohop with the requests its header lists sent to both: the status, the
//! upstream reached, the request line and the headers the upstream saw, the body of a local
//! reply and the response headers must agree (`support::http::observed`).
//!
//! A file's first lines say what it covers and what to send:
//!
//! ```text
//! # what: one line
//! # request: HOST PATH [NAME=VALUE ...]
//! ```
//!
//! In the file, `{A}` and `{B}` are the ports of upstreams `a` and `b` (on 127.0.0.1),
//! `{DNS}` the port of a DNS server that answers `a.test` and `b.test` with 127.0.0.1, and the
//! listener named `web` is on port 0 (a free port for Envoy), and `{ADMIN}` a free port
//! (another for each proxy). Envoy comes from PyPI; CI sets
//! ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails the test.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::dns::DnsServer;
use support::envoy;
use support::http::{observed, upstream, Client};
use support::Proxy;

/// JSON files carry no comments: what they cover and what to send.
const JSON_CASES: &[(&str, &str, &[&str])] = &[(
    "19_json_camel_case.json",
    "a JSON bootstrap with camelCase field names",
    &["x /", "x /any/path"],
)];

/// Host, path, and extra request headers.
type Request = (String, String, Vec<(String, String)>);

struct Case {
    path: PathBuf,
    what: String,
    requests: Vec<Request>,
    /// `# counter: NAME=N`: zerohop's counter after the requests (Envoy's name for it).
    counters: Vec<(String, u64)>,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/suite");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let mut text = std::fs::read_to_string(&path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy();
            if let Some((_, what, requests)) = JSON_CASES.iter().find(|(f, ..)| *f == file) {
                text = format!("# what: {what}\n");
                for r in *requests {
                    text.push_str(&format!("# request: {r}\n"));
                }
            }
            let mut what = String::new();
            let mut requests = Vec::new();
            let mut counters = Vec::new();
            for line in text.lines().take_while(|l| l.starts_with('#')) {
                if let Some(w) = line.strip_prefix("# what: ") {
                    what = w.to_owned();
                } else if let Some(c) = line.strip_prefix("# counter: ") {
                    let (n, v) = c.split_once('=').expect("NAME=N");
                    counters.push((n.to_owned(), v.parse().expect("a count")));
                } else if let Some(r) = line.strip_prefix("# request: ") {
                    let mut words = r.split_whitespace();
                    let host = words.next().expect("a host").to_owned();
                    let target = words.next().expect("a path").to_owned();
                    let headers = words
                        .map(|h| {
                            let (n, v) = h.split_once('=').expect("NAME=VALUE");
                            (n.to_owned(), v.to_owned())
                        })
                        .collect();
                    requests.push((host, target, headers));
                }
            }
            assert!(!what.is_empty(), "{}: needs `# what:`", path.display());
            assert!(
                !requests.is_empty(),
                "{}: needs `# request:`",
                path.display()
            );
            Case {
                path,
                what,
                requests,
                counters,
            }
        })
        .collect()
}

fn accepted(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().expect("runs");
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ")),
    }
}

#[test]
fn every_suite_config_loads_and_serves_as_in_envoy() {
    if !envoy::available() {
        return;
    }
    let cases = cases();
    assert!(cases.len() >= 30, "the suite has {} configs", cases.len());
    let (a, b) = (upstream("a"), upstream("b"));
    let dns = DnsServer::start();
    let localhost: IpAddr = [127, 0, 0, 1].into();
    dns.set("a.test", &[localhost], 30);
    dns.set("b.test", &[localhost], 30);
    let mut problems = Vec::new();
    for case in &cases {
        let name = case
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&case.path)
            .unwrap()
            .replace("{A}", &a.addr.port().to_string())
            .replace("{B}", &b.addr.port().to_string())
            .replace("{DNS}", &dns.addr.port().to_string());
        let admin = |text: &str| text.replace("{ADMIN}", &envoy::free_port().to_string());
        let (text, etext) = (admin(&text), admin(&text));
        let file = support::scratch(&name);
        std::fs::write(&file, &text).unwrap();
        let f = file.to_str().unwrap();
        if let Err(e) = accepted(Command::new("envoy").args(["--mode", "validate", "-c", f])) {
            problems.push(format!("{name} ({}): envoy refuses it: {e}", case.what));
            continue;
        }
        if let Err(e) = accepted(Command::new(support::control_bin()).args(["--check", "-c", f])) {
            problems.push(format!("{name} ({}): zerohop refuses it: {e}", case.what));
            continue;
        }
        let zerohop = Proxy::start_with(
            &text,
            support::Opts {
                config_name: Some(name.clone()),
                ..Default::default()
            },
        );
        let (_envoy, eaddr) = envoy::start_named(&etext, &name);
        for (host, target, headers) in &case.requests {
            let extra: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let z = observed(&Client::connect(zerohop.addr("web")).get(host, target, &extra));
            let e = observed(&Client::connect(eaddr).get(host, target, &extra));
            if z != e {
                problems.push(format!(
                    "{name} ({}): {host}{target}\n    envoy:   {e:?}\n    zerohop: {z:?}",
                    case.what
                ));
            }
        }
        for (counter, want) in &case.counters {
            let c = zerohop_proto::stats::Counter::ALL
                .into_iter()
                .find(|c| c.name() == counter)
                .unwrap_or_else(|| panic!("{name}: no counter {counter}"));
            let got = zerohop.total(c);
            if got != *want {
                problems.push(format!("{name}: {counter} is {got}, want {want}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in {} configs:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}
