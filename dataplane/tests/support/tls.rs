//! TLS test support: certificates made with rcgen (a CA, a server, SPIFFE clients, one
//! from another CA, one revoked with its CRL), the transport socket and bootstrap they go
//! in, and curl over TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

use super::http::{http_bootstrap, observed};

/// A CA, and the leaf certificates it signed, as PEM files under the test's scratch dir.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = super::scratch(&format!("pki-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (other, other_key) = make_ca("another CA");
        let (ca, ca_key) = make_ca("zerohop test CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
        let serial = std::cell::Cell::new(1u8);
        let leaf = |name: &str, sans: Vec<SanType>, by: (&rcgen::Certificate, &KeyPair)| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            serial.set(serial.get() + 1);
            p.serial_number = Some(rcgen::SerialNumber::from_slice(&[serial.get()]));
            p.distinguished_name.push(DnType::CommonName, name);
            p.subject_alt_names = sans;
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, by.0, by.1).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        let uri = |u: &str| SanType::URI(u.try_into().unwrap());
        let dns = |d: &str| SanType::DnsName(d.try_into().unwrap());
        leaf(
            "server",
            vec![
                dns("localhost"),
                dns("backend.test"),
                SanType::IpAddress([127, 0, 0, 1].into()),
                uri("spiffe://cluster.local/ns/default/sa/backend"),
            ],
            (&ca, &ca_key),
        );
        leaf(
            "client",
            vec![uri("spiffe://cluster.local/ns/a/sa/b")],
            (&ca, &ca_key),
        );
        leaf(
            "intruder",
            vec![uri("spiffe://cluster.local/ns/evil/sa/x")],
            (&ca, &ca_key),
        );
        leaf(
            "stranger",
            vec![uri("spiffe://cluster.local/ns/a/sa/b")],
            (&other, &other_key),
        );
        // A certificate the CA revoked, and its CRL.
        leaf(
            "revoked",
            vec![uri("spiffe://cluster.local/ns/a/sa/b")],
            (&ca, &ca_key),
        );
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&[serial.get()]),
                revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca, &ca_key)
        .unwrap();
        std::fs::write(dir.join("crl.pem"), crl.pem().unwrap()).unwrap();
        Pki { dir }
    }

    pub fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

pub fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (cert, key)
}

/// A `DownstreamTlsContext` transport socket (indented 6, under a filter chain).
pub fn server_tls(pki: &Pki, extra: &str, validation: &str) -> String {
    format!(
        r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
{extra}          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {{ filename: {} }}
              private_key: {{ filename: {} }}
{validation}"#,
        pki.path("server.pem"),
        pki.path("server.key"),
    )
}

/// An HTTP listener `web` on port 0 with one filter chain: `tls` (its transport socket),
/// `routes` under a catch-all virtual host; then `clusters` (entries; none: empty).
pub fn bootstrap(tls: &str, routes: &str, clusters: &str) -> String {
    let clusters = match clusters {
        "" => " []\n".to_owned(),
        c => format!("\n{c}"),
    };
    http_bootstrap("", 0, "          codec_type: AUTO\n", routes, "")
        .replace("  clusters:\n", &format!("{tls}  clusters:{clusters}"))
}

/// curl to `https://localhost:port/path` trusting the test CA, with `args`: the response
/// (protocol, status, what the upstream saw), or the failure.
pub fn curl(pki: &Pki, addr: SocketAddr, path: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "--max-time",
            "10",
            "--cacert",
            &pki.path("ca.pem"),
        ])
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .args(args)
        .arg(format!("https://localhost:{}{path}", addr.port()))
        .output()
        .expect("curl");
    if !out.status.success() || out.stdout.is_empty() {
        return vec!["failed: no response".to_owned()];
    }
    let r = super::http::parse_curl(&out.stdout);
    let mut seen = vec![format!("{} {}", r.version, r.status)];
    seen.extend(observed(&r));
    let here = format!("localhost:{}", addr.port());
    seen.into_iter()
        .map(|l| l.replace(&here, "PROXY"))
        .collect()
}
