//! SDS test support: certificates made with rcgen, the secrets and listeners the scripted
//! xDS server serves, a rustls client that reports the certificate it was served, a
//! fixed-rate load that counts failures, and a Kubernetes-style secret volume.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};

use super::tls::make_ca;

pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Names for the DER of each certificate in `certs`: `cert1`, `cert2`, ...
pub fn cert_names(certs: &[(String, String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    certs
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("cert{}", i + 1), c.2.clone()))
        .collect()
}

/// A CA and what it signs.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let (cert, key) = make_ca(name);
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf with `sans`: (certificate PEM, key PEM, certificate DER).
    pub fn leaf(&self, name: &str, sans: Vec<SanType>) -> (String, String, Vec<u8>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    pub fn server(&self, name: &str) -> (String, String, Vec<u8>) {
        self.leaf(
            name,
            vec![SanType::DnsName("localhost".try_into().unwrap())],
        )
    }

    pub fn spiffe(&self, name: &str, id: &str) -> (String, String, Vec<u8>) {
        self.leaf(name, vec![SanType::URI(id.try_into().unwrap())])
    }
}

pub fn cert_secret(name: &str, (cert, key, _): &(String, String, Vec<u8>)) -> Value {
    json!({
        "@type": SECRET,
        "name": name,
        "tls_certificate": {
            "certificate_chain": {"inline_string": cert},
            "private_key": {"inline_string": key},
        },
    })
}

pub fn ca_secret(name: &str, ca: &Ca) -> Value {
    json!({
        "@type": SECRET,
        "name": name,
        "validation_context": {"trusted_ca": {"inline_string": ca.pem()}},
    })
}

/// An HTTP listener on 127.0.0.1:`port` whose TLS context is `tls` (a
/// DownstreamTlsContext without its `@type`), routing everything to cluster `b`.
pub fn tls_listener(port: u16, tls: Value) -> Value {
    let mut typed = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    });
    typed
        .as_object_mut()
        .unwrap()
        .extend(tls.as_object().unwrap().clone());
    json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "tls",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": typed},
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "tls",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                },
            }],
        }],
    })
}

/// An `SdsSecretConfig` for `name` from `source` (`ads`, or the static cluster `sds`).
pub fn sds(name: &str, source: &str) -> Value {
    let config = match source {
        "ads" => json!({"ads": {}, "resource_api_version": "V3"}),
        api => json!({
            "resource_api_version": "V3",
            "initial_fetch_timeout": "0s",
            "api_config_source": {
                "api_type": api,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "sds"}}],
            },
        }),
    };
    json!({"name": name, "sds_config": config})
}

/// A static cluster `sds` at `address` (an Envoy `Address` in YAML), appended to a
/// bootstrap's clusters (the last section of `x::bootstrap`).
pub fn with_sds_cluster(bootstrap: &str, address: &str) -> String {
    format!(
        r#"{bootstrap}  - name: sds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: sds
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {address} }} }} ] }} ]
"#
    )
}

/// A TLS client trusting `roots` (PEM), presenting `client` when given.
pub fn client_config(
    roots: &[String],
    client: Option<&(String, String, Vec<u8>)>,
) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(c.unwrap()).unwrap();
        }
    }
    #[allow(deprecated)] // Reason: ring is the provider zerohop itself uses.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    match client {
        None => b.with_no_client_auth(),
        Some((cert, key, _)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    }
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn tls_connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Result<Tls, String> {
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn =
        rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
            .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(tls)
}

/// One GET on `tls`, keep-alive: the status.
pub fn get(tls: &mut Tls) -> Result<u16, String> {
    tls.write_all(b"GET /sds HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err("closed".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head[9..12]
        .parse()
        .map_err(|_| format!("bad head {head:?}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(status)
}

/// A new connection, one GET: the server's leaf (DER), or why it failed.
pub fn fetch(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Result<Vec<u8>, String> {
    let mut tls = tls_connect(addr, config)?;
    let leaf = tls.conn.peer_certificates().unwrap()[0].to_vec();
    match get(&mut tls)? {
        200 => Ok(leaf),
        s => Err(format!("status {s}")),
    }
}

/// What a client sees of a handshake or request, in words both transcripts share.
pub fn seen(r: Result<Vec<u8>, String>, names: &[(String, Vec<u8>)]) -> String {
    match r {
        Ok(der) => match names.iter().find(|(_, d)| *d == der) {
            Some((n, _)) => format!("served {n}"),
            None => "served an unknown certificate".into(),
        },
        Err(_) => "refused".into(),
    }
}

/// Load at a fixed rate while certificates rotate: new connections every 20 ms and one
/// keep-alive connection asking every 20 ms.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let mut kept = tls_connect(addr, &config).expect("the keep-alive connection");
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let keepalive = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match get(&mut kept) {
                    Ok(200) => o.fetch_add(1, Ordering::Relaxed),
                    other => {
                        f.lock().unwrap().push(format!("keep-alive: {other:?}"));
                        return;
                    }
                };
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let fresh = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match fetch(addr, &config) {
                    Ok(_) => o.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        f.lock().unwrap().push(format!("new connection: {e}"));
                        0
                    }
                };
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Load {
            stop,
            ok,
            failed,
            threads: vec![keepalive, fresh],
        }
    }

    /// Stops the load and reports it; `strict`: it must have run (over 100 requests) with
    /// no failure.
    pub fn check(self, who: &str, strict: bool) {
        let (ok, failed) = self.finish();
        eprintln!(
            "[{who}] load: {ok} requests, {} failed: {failed:?}",
            failed.len()
        );
        if strict {
            assert!(ok > 100, "the load ran ({ok})");
            assert_eq!(
                failed,
                Vec::<String>::new(),
                "no request fails during rotation"
            );
        }
    }

    /// (requests that succeeded, failures).
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

/// A Kubernetes secret volume: `dir/cert.pem` and `dir/key.pem` are symlinks into `..data`,
/// itself a symlink to a timestamped directory; an update writes a new directory and
/// renames a new `..data` over the old one (the kubelet's atomic writer).
pub struct SecretVolume {
    pub dir: std::path::PathBuf,
    updates: u32,
}

impl SecretVolume {
    pub fn new(first: &(String, String, Vec<u8>)) -> SecretVolume {
        let dir = super::scratch("volume");
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = SecretVolume { dir, updates: 0 };
        v.write(first);
        for f in ["cert.pem", "key.pem"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), v.dir.join(f)).unwrap();
        }
        v
    }

    pub fn write(&mut self, (cert, key, _): &(String, String, Vec<u8>)) {
        self.updates += 1;
        let data = format!("..{}", self.updates);
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        std::fs::write(self.dir.join(&data).join("cert.pem"), cert).unwrap();
        std::fs::write(self.dir.join(&data).join("key.pem"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}
