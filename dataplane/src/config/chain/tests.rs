use super::*;

fn cidr(s: &str) -> CidrRange {
    let (a, n) = s.split_once('/').unwrap();
    CidrRange {
        address: a.parse().unwrap(),
        prefix_len: n.parse().unwrap(),
    }
}

fn facts<'a>(local: &str, peer: &str) -> ConnFacts<'a> {
    ConnFacts {
        local: local.parse().unwrap(),
        peer: peer.parse().unwrap(),
        server_name: None,
        transport_protocol: "raw_buffer",
        application_protocols: &[],
    }
}

#[test]
fn a_single_open_chain_needs_no_facts() {
    let s = ChainSelector::new([&FilterChainMatch::default()], false);
    assert!(!s.needs_facts());
    let s = ChainSelector::new([], true);
    assert!(!s.needs_facts());
    assert_eq!(s.select(&facts("127.0.0.1:1", "127.0.0.1:2")), Some(0));
    let s = ChainSelector::new([], false);
    assert_eq!(s.select(&facts("127.0.0.1:1", "127.0.0.1:2")), None);
}

#[test]
fn the_most_specific_chain_wins_at_each_criterion() {
    let chains = [
        FilterChainMatch::default(),
        FilterChainMatch {
            destination_port: Some(80),
            ..Default::default()
        },
        FilterChainMatch {
            destination_port: Some(80),
            prefix_ranges: vec![cidr("10.0.0.0/8")],
            ..Default::default()
        },
        FilterChainMatch {
            destination_port: Some(80),
            prefix_ranges: vec![cidr("10.1.0.0/16")],
            ..Default::default()
        },
    ];
    let s = ChainSelector::new(&chains, true);
    assert_eq!(
        s.select(&facts("10.1.2.3:80", "1.1.1.1:5")),
        Some(3),
        "longest prefix"
    );
    assert_eq!(s.select(&facts("10.2.2.3:80", "1.1.1.1:5")), Some(2));
    assert_eq!(
        s.select(&facts("11.2.2.3:80", "1.1.1.1:5")),
        Some(1),
        "port alone"
    );
    assert_eq!(
        s.select(&facts("10.1.2.3:81", "1.1.1.1:5")),
        Some(0),
        "no port: the open chain"
    );
}

#[test]
fn a_narrowed_level_does_not_fall_back_to_broader_chains() {
    // Envoy's tree: once port 80 selected the port-80 chains, a later criterion that none
    // of them meets leaves the default chain, not the port-less one.
    let chains = [
        FilterChainMatch {
            destination_port: Some(80),
            source_prefix_ranges: vec![cidr("192.168.0.0/16")],
            ..Default::default()
        },
        FilterChainMatch::default(),
    ];
    let with_default = ChainSelector::new(&chains, true);
    assert_eq!(
        with_default.select(&facts("10.0.0.1:80", "192.168.1.1:5")),
        Some(0)
    );
    assert_eq!(
        with_default.select(&facts("10.0.0.1:80", "10.9.9.9:5")),
        Some(2),
        "default"
    );
    let without = ChainSelector::new(&chains, false);
    assert_eq!(without.select(&facts("10.0.0.1:80", "10.9.9.9:5")), None);
    assert_eq!(without.select(&facts("10.0.0.1:81", "10.9.9.9:5")), Some(1));
}

#[test]
fn server_names_transport_and_application_protocols() {
    let chains = [
        FilterChainMatch {
            server_names: vec!["*.example.com".into()],
            ..Default::default()
        },
        FilterChainMatch {
            server_names: vec!["api.example.com".into()],
            ..Default::default()
        },
        FilterChainMatch {
            transport_protocol: Some("raw_buffer".into()),
            application_protocols: vec!["http/1.1".into(), "h2c".into()],
            ..Default::default()
        },
        FilterChainMatch {
            transport_protocol: Some("raw_buffer".into()),
            ..Default::default()
        },
    ];
    let s = ChainSelector::new(&chains, false);
    let mut f = facts("127.0.0.1:1", "127.0.0.1:2");
    f.transport_protocol = "tls";
    f.server_name = Some("API.example.com");
    assert_eq!(s.select(&f), Some(1), "exact before wildcard");
    f.server_name = Some("a.b.example.com");
    assert_eq!(s.select(&f), Some(0), "wildcard");
    f.server_name = None;
    assert_eq!(
        s.select(&f),
        None,
        "tls without a server-name-less tls chain"
    );
    let mut f = facts("127.0.0.1:1", "127.0.0.1:2");
    let (h2c, http10) = (["h2c".to_owned()], ["http/1.0".to_owned()]);
    f.application_protocols = &h2c;
    assert_eq!(s.select(&f), Some(2));
    f.application_protocols = &http10;
    assert_eq!(
        s.select(&f),
        Some(3),
        "no chain names it: the one without the criterion"
    );
    f.application_protocols = &[];
    assert_eq!(s.select(&f), Some(3));
}

#[test]
fn source_type_ports_and_direct_source() {
    let chains = [
        FilterChainMatch {
            source_type: SourceType::SameIpOrLoopback,
            ..Default::default()
        },
        FilterChainMatch {
            source_type: SourceType::External,
            source_ports: vec![4000],
            ..Default::default()
        },
        FilterChainMatch {
            source_type: SourceType::External,
            ..Default::default()
        },
        FilterChainMatch {
            direct_source_prefix_ranges: vec![cidr("172.16.0.0/12")],
            ..Default::default()
        },
    ];
    let s = ChainSelector::new(&chains, false);
    assert_eq!(s.select(&facts("10.0.0.1:80", "127.0.0.1:5")), Some(0));
    assert_eq!(
        s.select(&facts("10.0.0.1:80", "127.0.0.2:4001")),
        Some(2),
        "as Envoy's, only 127.0.0.1 is loopback"
    );
    assert_eq!(
        s.select(&facts("10.0.0.1:80", "10.0.0.1:5")),
        Some(0),
        "same IP"
    );
    assert_eq!(s.select(&facts("10.0.0.1:80", "8.8.8.8:4000")), Some(1));
    assert_eq!(s.select(&facts("10.0.0.1:80", "8.8.8.8:4001")), Some(2));
    assert_eq!(
        s.select(&facts("10.0.0.1:80", "172.17.0.1:4001")),
        Some(3),
        "direct source first"
    );
    assert_eq!(
        s.select(&facts("[::ffff:10.0.0.1]:80", "[::ffff:172.17.0.1]:1")),
        Some(3),
        "v4-mapped addresses count as IPv4"
    );
}
