//! Certificates over SDS (issue #16) against Envoy 1.40: the scripted xDS server
//! (tests/xds/ads_server.py) serves secrets over the ADS stream (state of the world and
//! delta) and as an SDS server of its own (`SecretDiscoveryService`, on a Unix socket as
//! Istio's pilot-agent serves `sds-grpc`, or over TCP to a static listener). Each run records
//! what a client sees: the listener warming (its port closed) until its secret arrives, the
//! certificate it is served, and after each of three rotations how soon new handshakes get
//! the new certificate; zerohop's transcript must equal Envoy's. Under zerohop a fixed-rate
//! load of new connections and one keep-alive connection runs through the rotations: no
//! request may fail and the open connection must stay open. The Istio-shaped run checks
//! mutual TLS with a combined validation context (SPIFFE SAN from the listener, the CA from
//! SDS) and a rotated CA; the last run rotates files under a `watched_directory` the way a
//! Kubernetes secret volume is updated. CI sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::SanType;
use serde_json::{json, Value};
use support::envoy::{self, Envoy};
use support::http::upstream;
use support::sds::*;
use support::xds::{self as x, AdsServer};
use support::{Opts, Proxy};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Zerohop,
    Envoy,
}

/// Starts `peer` on `yaml` in the background: zerohop's start returns once it serves a
/// first generation, which waits for the listener's secret (or the initial fetch timeout).
fn start(peer: Peer, yaml: String) -> std::thread::JoinHandle<Running> {
    std::thread::spawn(move || match peer {
        Peer::Zerohop => Running::Zerohop(Proxy::start_with(&yaml, Opts::default())),
        Peer::Envoy => Running::Envoy(envoy::spawn(&yaml)),
    })
}

/// Held to keep the peer running; dropped, it stops.
#[allow(dead_code)] // Reason: only ever dropped.
enum Running {
    Zerohop(Proxy),
    Envoy(Envoy),
}

/// Until `f` holds, or `timeout`.
fn until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Where the secrets come from in a rotation run.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// The listener by LDS, its secret over the same ADS stream (`GRPC` or `DELTA_GRPC`).
    Ads(&'static str),
    /// A static listener, its secret from an SDS server over TCP (`GRPC` or `DELTA_GRPC`).
    StaticSds(&'static str),
}

/// One rotation run: warming, then the first certificate and three rotations; returns
/// the transcript (and asserts the load never failed under zerohop).
fn rotation_run(peer: Peer, source: Source) -> Vec<String> {
    let ca = Ca::new("rotation CA");
    let certs: Vec<_> = (1..=4).map(|i| ca.server(&format!("cert{i}"))).collect();
    let names = cert_names(&certs);
    let up = upstream("b");
    let port = envoy::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut ads = AdsServer::start().expect("the xDS server");
    let admin = envoy::free_port();
    let (yaml, sds_type) = match source {
        Source::Ads(api) => {
            ads.set("cds", "1", vec![x::static_cluster("b", &[up.addr])]);
            let tls = json!({"common_tls_context": {"tls_certificate_sds_secret_configs": [sds("cert", "ads")]}});
            ads.set("lds", "1", vec![tls_listener(port, tls)]);
            (x::bootstrap(ads.addr(), api, admin), "sds")
        }
        Source::StaticSds(api) => {
            let tls = json!({"common_tls_context": {"tls_certificate_sds_secret_configs": [sds("cert", api)]}});
            let mut listener = tls_listener(port, tls);
            listener.as_object_mut().unwrap().remove("@type");
            let yaml = format!(
                "admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\nnode: {{ id: sds-test, cluster: sds-test }}\nstatic_resources:\n  listeners: [ {} ]\n  clusters:\n  - name: b\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment: {{ cluster_name: b, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {} }} }} ] }} ] }}\n",
                admin,
                listener,
                x::socket_address(up.addr),
            );
            (
                with_sds_cluster(&yaml, &x::socket_address(ads.addr())),
                "sds",
            )
        }
    };
    let mut out = Vec::new();
    let running = start(peer, yaml);
    // Warming: the secret is asked for, and until it arrives the port stays closed.
    ads.wait(WAIT, |e| {
        e["event"] == "request" && e["type"] == sds_type && e.to_string().contains("\"cert\"")
    });
    std::thread::sleep(Duration::from_millis(500));
    let closed = TcpStream::connect(addr).is_err();
    out.push(format!(
        "before the secret: port {}",
        if closed { "closed" } else { "open" }
    ));
    ads.set(sds_type, "1", vec![cert_secret("cert", &certs[0])]);
    let config = Arc::new(client_config(&[ca.pem()], None));
    let first = until(WAIT, || fetch(addr, &config).is_ok());
    out.push(format!(
        "after the secret: {}",
        seen(fetch(addr, &config), &names)
    ));
    assert!(
        first.is_some(),
        "{peer:?} never served the first certificate"
    );
    let _running = running.join().unwrap();
    let load = Load::start(addr, config.clone());
    for (i, cert) in certs.iter().enumerate().skip(1) {
        std::thread::sleep(Duration::from_millis(700));
        let version = (i + 1).to_string();
        ads.set(sds_type, &version, vec![cert_secret("cert", cert)]);
        let took = until(Duration::from_secs(5), || {
            fetch(addr, &config).is_ok_and(|d| d == cert.2)
        });
        eprintln!("[{peer:?} {source:?}] rotation {i}: new handshakes see it after {took:?}");
        let within = took.is_some_and(|t| t < Duration::from_secs(1));
        out.push(format!(
            "rotation {i}: new handshakes {} within 1 s",
            if within {
                "served the new certificate"
            } else {
                "did not see it"
            }
        ));
        let ack = ads.answer(sds_type, &version, WAIT);
        out.push(format!(
            "rotation {i}: acknowledged: {}",
            ack["error"].is_null()
        ));
    }
    out.extend(dumped_secrets(admin));
    load.check(&format!("{peer:?} {source:?}"), peer == Peer::Zerohop);
    out
}

/// `/config_dump?resource=dynamic_active_secrets`, in words: each secret's name, its
/// version, and what the dump shows of its private key (Envoy redacts it).
fn dumped_secrets(admin: u16) -> Vec<String> {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!(
            "http://127.0.0.1:{admin}/config_dump?resource=dynamic_active_secrets"
        ))
        .output()
        .expect("curl");
    let dump: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let configs = dump["configs"].as_array().cloned().unwrap_or_default();
    configs
        .iter()
        .map(|c| {
            let key = &c["secret"]["tls_certificate"]["private_key"];
            format!(
                "config_dump: {} {} version {:?}, chain shown: {}, private key {}",
                c["@type"]
                    .as_str()
                    .unwrap_or("")
                    .rsplit('.')
                    .next()
                    .unwrap_or(""),
                c["name"],
                c["version_info"].as_str().map(|v| v.len()),
                c["secret"]["tls_certificate"]["certificate_chain"]["inline_string"].is_string(),
                key,
            )
        })
        .collect()
}

fn rotation_as_envoys(source: Source) {
    if !envoy::available() || AdsServer::start().is_none() {
        return;
    }
    let z = rotation_run(Peer::Zerohop, source);
    assert_eq!(z[0], "before the secret: port closed", "{z:#?}");
    assert_eq!(z[1], "after the secret: served cert1", "{z:#?}");
    assert!(
        z.iter()
            .filter(|l| l.contains("served the new certificate"))
            .count()
            == 3,
        "{z:#?}"
    );
    let e = rotation_run(Peer::Envoy, source);
    support::same(&format!("{source:?}"), &z, &e);
}

#[test]
fn sds_over_ads_delta_rotates_as_envoys() {
    rotation_as_envoys(Source::Ads("DELTA_GRPC"));
}

#[test]
fn sds_over_ads_sotw_rotates_as_envoys() {
    rotation_as_envoys(Source::Ads("GRPC"));
}

#[test]
fn sds_server_for_a_static_listener_rotates_as_envoys() {
    rotation_as_envoys(Source::StaticSds("GRPC"));
    rotation_as_envoys(Source::StaticSds("DELTA_GRPC"));
}

/// Istio's shape: listeners by delta ADS; the workload certificate (`default`) and the
/// root (`ROOTCA`) from pilot-agent's SDS server on a Unix socket (`sds-grpc`, state of
/// the world); mutual TLS with the SPIFFE SAN in the default validation context on the
/// inbound listener, and originated by an outbound cluster with the same secrets (a hop
/// through both). Who gets in, before and after the root rotates to another CA.
fn istio_run(peer: Peer) -> Vec<String> {
    let (ca, other) = (Ca::new("mesh CA"), Ca::new("next mesh CA"));
    let server = ca.leaf(
        "workload",
        vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::URI(
                "spiffe://cluster.local/ns/a/sa/workload"
                    .try_into()
                    .unwrap(),
            ),
        ],
    );
    let client = ca.spiffe("client", "spiffe://cluster.local/ns/a/sa/b");
    let intruder = ca.spiffe("intruder", "spiffe://cluster.local/ns/evil/sa/x");
    let next = other.spiffe("next", "spiffe://cluster.local/ns/a/sa/b");
    let up = upstream("b");
    let port = envoy::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let socket = support::scratch("sds.sock");
    let mut sds_server = AdsServer::start_on(Some(&socket)).expect("the SDS server");
    let mut ads = AdsServer::start().expect("the ADS server");
    sds_server.set(
        "sds",
        "1",
        vec![cert_secret("default", &server), ca_secret("ROOTCA", &ca)],
    );
    let tls = json!({
        "require_client_certificate": true,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [sds("default", "GRPC")],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/ns/a/"}}]},
                "validation_context_sds_secret_config": sds("ROOTCA", "GRPC"),
            },
        },
    });
    // The sidecar's outbound side: a plaintext listener whose cluster originates mutual TLS
    // (ISTIO_MUTUAL's shape) to the inbound listener above, with the same two secrets.
    let plain_port = envoy::free_port();
    let plain: SocketAddr = ([127, 0, 0, 1], plain_port).into();
    let mut outbound = x::static_cluster("mtls", &[addr]);
    outbound["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "localhost",
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [sds("default", "GRPC")],
                "combined_validation_context": {
                    "default_validation_context": {"match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": "localhost"}}]},
                    "validation_context_sds_secret_config": sds("ROOTCA", "GRPC"),
                },
            },
        },
    });
    ads.set(
        "cds",
        "2",
        vec![x::static_cluster("b", &[up.addr]), outbound],
    );
    let mut plain_listener = x::http_listener("plain", plain_port, "out");
    plain_listener["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] =
        "plain".into();
    ads.set("rds", "1", vec![x::routes("out", &[("/", "mtls")])]);
    ads.set("lds", "1", vec![tls_listener(port, tls), plain_listener]);
    let yaml = with_sds_cluster(
        &x::bootstrap(ads.addr(), "DELTA_GRPC", envoy::free_port()),
        &format!("{{ pipe: {{ path: {} }} }}", socket.display()),
    );
    let _running = start(peer, yaml).join().unwrap();
    let roots = [ca.pem()];
    let cfg = |c: Option<&(String, String, Vec<u8>)>| Arc::new(client_config(&roots, c));
    let outbound = |out: &mut Vec<String>, when: &str| {
        let status = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .arg(format!("http://{plain}/out"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.push(format!("{when}: outbound mutual TLS: {status}"));
    };
    let try_all = |out: &mut Vec<String>, when: &str| {
        for (who, c) in [
            ("the SPIFFE client", Some(&client)),
            ("no certificate", None),
            ("the wrong SAN", Some(&intruder)),
            ("the next CA's client", Some(&next)),
        ] {
            let r = fetch(addr, &cfg(c)).map(|_| ());
            out.push(format!(
                "{when}: {who}: {}",
                if r.is_ok() { "200" } else { "refused" }
            ));
        }
    };
    let mut out = Vec::new();
    assert!(
        until(WAIT, || fetch(addr, &cfg(Some(&client))).is_ok()).is_some(),
        "{peer:?} never served mutual TLS"
    );
    try_all(&mut out, "root 1");
    assert!(
        until(WAIT, || {
            let mut o = Vec::new();
            outbound(&mut o, "");
            o[0].ends_with("200")
        })
        .is_some(),
        "{peer:?}: the outbound listener never served"
    );
    outbound(&mut out, "root 1");
    sds_server.set(
        "sds",
        "2",
        vec![cert_secret("default", &server), ca_secret("ROOTCA", &other)],
    );
    let rotated = until(Duration::from_secs(5), || {
        fetch(addr, &cfg(Some(&next))).is_ok()
    });
    out.push(format!(
        "root rotated within 1 s: {}",
        rotated.is_some_and(|t| t < Duration::from_secs(1))
    ));
    try_all(&mut out, "root 2");
    outbound(&mut out, "root 2");
    let streams: Vec<String> = sds_server
        .events()
        .iter()
        .filter(|e| e["event"] == "stream")
        .map(|e| e["api"].as_str().unwrap_or("").to_owned())
        .collect();
    out.push(format!("SDS streams: {streams:?}"));
    out
}

#[test]
fn istio_sds_grpc_mutual_tls_as_envoys() {
    if !envoy::available() || AdsServer::start().is_none() {
        return;
    }
    let z = istio_run(Peer::Zerohop);
    assert!(
        z.contains(&"root 1: the SPIFFE client: 200".to_owned()),
        "{z:#?}"
    );
    assert!(
        z.contains(&"root 2: the next CA's client: 200".to_owned()),
        "{z:#?}"
    );
    let e = istio_run(Peer::Envoy);
    support::same("Istio sds-grpc", &z, &e);
}

/// An SDS secret (over ADS) that names files in a secret volume with `watched_directory`:
/// three updates of the volume, each served to new handshakes within a second, with the
/// SDS resource itself unchanged.
fn file_rotation_run(peer: Peer) -> Vec<String> {
    let ca = Ca::new("volume CA");
    let certs: Vec<_> = (1..=4).map(|i| ca.server(&format!("cert{i}"))).collect();
    let names = cert_names(&certs);
    let mut volume = SecretVolume::new(&certs[0]);
    let up = upstream("b");
    let port = envoy::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut ads = AdsServer::start().expect("the xDS server");
    ads.set("cds", "1", vec![x::static_cluster("b", &[up.addr])]);
    let tls =
        json!({"common_tls_context": {"tls_certificate_sds_secret_configs": [sds("cert", "ads")]}});
    ads.set("lds", "1", vec![tls_listener(port, tls)]);
    let file = |f: &str| volume.dir.join(f).display().to_string();
    ads.set(
        "sds",
        "1",
        vec![json!({
            "@type": SECRET,
            "name": "cert",
            "tls_certificate": {
                "certificate_chain": {"filename": file("cert.pem")},
                "private_key": {"filename": file("key.pem")},
                "watched_directory": {"path": volume.dir.display().to_string()},
            },
        })],
    );
    let yaml = x::bootstrap(ads.addr(), "DELTA_GRPC", envoy::free_port());
    let _running = start(peer, yaml).join().unwrap();
    let config = Arc::new(client_config(&[ca.pem()], None));
    let mut out = Vec::new();
    assert!(
        until(WAIT, || fetch(addr, &config).is_ok()).is_some(),
        "{peer:?} never served"
    );
    out.push(format!("first: {}", seen(fetch(addr, &config), &names)));
    let load = Load::start(addr, config.clone());
    for (i, cert) in certs.iter().enumerate().skip(1) {
        std::thread::sleep(Duration::from_millis(700));
        volume.write(cert);
        let took = until(Duration::from_secs(5), || {
            fetch(addr, &config).is_ok_and(|d| d == cert.2)
        });
        eprintln!("[{peer:?} files] update {i}: new handshakes see it after {took:?}");
        out.push(format!(
            "volume update {i}: {} within 1 s",
            if took.is_some_and(|t| t < Duration::from_secs(1)) {
                "served the new certificate"
            } else {
                "did not serve it"
            }
        ));
    }
    load.check(&format!("{peer:?} files"), peer == Peer::Zerohop);
    out
}

#[test]
fn sds_secret_files_rotate_by_watched_directory_as_envoys() {
    if !envoy::available() || AdsServer::start().is_none() {
        return;
    }
    let z = file_rotation_run(Peer::Zerohop);
    assert_eq!(z[0], "first: served cert1", "{z:#?}");
    let e = file_rotation_run(Peer::Envoy);
    support::same("files in a watched directory", &z, &e);
}
