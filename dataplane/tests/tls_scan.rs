//! testssl.sh (Debian's `testssl.sh`) against a zerohop TLS listener (issue #16): nothing
//! rated medium or worse. CI installs it and sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::process::Command;

use rcgen::{CertificateParams, KeyPair, SanType};
use support::tls::{bootstrap, make_ca};
use support::Proxy;

/// The civil date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// testssl.sh (Debian's `testssl.sh`) against a zerohop TLS listener: nothing rated medium or
/// worse. The certificate is one a deployment would have (trusted through `--add-ca`, valid
/// for a year, with a CRL distribution point), and the route adds the security headers an
/// application's responses carry, so that what is left is the proxy's own TLS.
#[test]
fn testssl_finds_nothing_medium_or_worse() {
    let have = Command::new("testssl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("ZEROHOP_REQUIRE_PEERS").is_none(),
            "testssl is required here (ZEROHOP_REQUIRE_PEERS)"
        );
        eprintln!("testssl not installed (apt-get install testssl.sh): skipped");
        return;
    }
    let dir = support::scratch("testssl");
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, ca_key) = make_ca("zerohop scan CA");
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    // Valid from yesterday for 390 days: under the 398 days browsers accept.
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let date = |days| {
        let (y, m, d) = civil(days);
        rcgen::date_time_ymd(y, m, d)
    };
    assert_eq!(civil(20_429), (2025, 12, 7), "the calendar");
    p.not_before = date(today - 1);
    p.not_after = date(today + 389);
    p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec!["http://crl.example/ca.crl".to_owned()],
    }];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    for (f, text) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(f), text).unwrap();
    }
    let routes = r#"              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "scanned" } }
                response_headers_to_add:
                - header: { key: strict-transport-security, value: "max-age=31536000; includeSubDomains" }
                - header: { key: x-frame-options, value: DENY }
                - header: { key: x-content-type-options, value: nosniff }
                - header: { key: content-security-policy, value: "default-src 'none'" }
                - header: { key: referrer-policy, value: no-referrer }
"#;
    let tls = format!(
        r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {{ filename: {d}/cert.pem }}
              private_key: {{ filename: {d}/key.pem }}
"#,
        d = dir.display()
    );
    let proxy = Proxy::start(&bootstrap(&tls, routes, ""));
    let json = dir.join("scan.json");
    let _ = std::fs::remove_file(&json);
    let out = Command::new("testssl")
        .args(["--quiet", "--color", "0", "--warnings", "off", "--fast"])
        .arg("--add-ca")
        .arg(dir.join("ca.pem"))
        .arg("--jsonfile")
        .arg(&json)
        .arg(proxy.addr("web").to_string())
        .output()
        .expect("testssl");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "testssl wrote no report: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL")))
        .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
        .collect();
    assert!(bad.is_empty(), "testssl found: {bad:#?}");
    assert!(
        findings.iter().any(|f| f["id"] == "TLS1_3"),
        "the scan ran: {text}"
    );
}
