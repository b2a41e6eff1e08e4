//! Unit tests of the xDS client's protocol state, and the xds_response fuzz seeds.

use super::*;

mod tests {
    use super::*;
    use crate::config::dynamic_tests::{any, assignment, eds_cluster, listener, router};
    use crate::config::{load, Format};
    use crate::xds::wire::Resource;

    fn client(api: &str) -> Client {
        let yaml = include_str!("../../tests/fixtures/ads.yaml").replace("DELTA_GRPC", api);
        Client::new(load(&yaml, Format::Yaml).unwrap().dynamic.unwrap())
    }

    fn sotw(r: Request) -> DiscoveryRequest {
        match r {
            Request::Sotw(r) => r,
            other => panic!("expected a SotW request, got {other:?}"),
        }
    }

    fn delta(r: Request) -> DeltaDiscoveryRequest {
        match r {
            Request::Delta(r) => r,
            other => panic!("expected a delta request, got {other:?}"),
        }
    }

    fn cds(version: &str, nonce: &str, clusters: Vec<serde_json::Value>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources: clusters.into_iter().map(any).collect(),
            type_url: Kind::Cluster.type_url().into(),
            nonce: nonce.into(),
        }
    }

    #[test]
    fn sotw_ack_nack_subscriptions_and_removal() {
        let mut c = client("GRPC");
        let first: Vec<_> = c.connected(&StreamId::Ads).into_iter().map(sotw).collect();
        assert_eq!(first.len(), 2, "CDS and LDS, wildcard");
        assert_eq!(first[0].type_url, Kind::Cluster.type_url());
        assert_eq!(first[1].type_url, Kind::Listener.type_url());
        assert!(first[0].resource_names.is_empty() && first[0].version_info.is_empty());
        assert!(
            first[0].node.is_some(),
            "the first request carries the node"
        );
        assert!(first[1].node.is_none(), "set_node_on_first_message_only");

        let p = c
            .sotw(&StreamId::Ads, cds("1", "n1", vec![eds_cluster("web")]))
            .unwrap();
        assert_eq!((p.applied, p.errors.len()), (1, 0));
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| sotw(r)).collect();
        assert_eq!(out[0].version_info, "1");
        assert_eq!(out[0].response_nonce, "n1");
        assert!(out[0].error_detail.is_none());
        assert_eq!(out[1].type_url, Kind::Endpoint.type_url());
        assert_eq!(out[1].resource_names, ["web"], "EDS follows the cluster");
        assert!(!c.initialized(), "web warms, LDS has not answered");

        // An invalid cluster: NACK with the last accepted version; the valid one applies.
        let mut bad = eds_cluster("bad");
        bad["lb_policy"] = "CLUSTER_PROVIDED".into();
        let p = c
            .sotw(
                &StreamId::Ads,
                cds("2", "n2", vec![eds_cluster("web"), eds_cluster("api"), bad]),
            )
            .unwrap();
        assert_eq!((p.applied, p.errors.len()), (2, 1));
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| sotw(r)).collect();
        assert_eq!(out[0].version_info, "1");
        assert_eq!(out[0].response_nonce, "n2");
        let detail = &out[0].error_detail.as_ref().unwrap().message;
        assert!(
            detail.starts_with("Cluster \"bad\": Cluster(bad).lb_policy"),
            "{detail}"
        );
        assert_eq!(out[1].resource_names, ["api", "web"]);
        assert_eq!(out[1].response_nonce, "", "no EDS response seen yet");

        // Absent from the next response: removed, and unsubscribed.
        let p = c
            .sotw(&StreamId::Ads, cds("3", "n3", vec![eds_cluster("api")]))
            .unwrap();
        assert_eq!(p.removed, 1);
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| sotw(r)).collect();
        assert_eq!(out[0].version_info, "3");
        assert_eq!(out[1].resource_names, ["api"]);

        // Reconnect: the accepted version, the subscriptions held.
        let again: Vec<_> = c.connected(&StreamId::Ads).into_iter().map(sotw).collect();
        assert_eq!(again[0].version_info, "3");
        assert_eq!(again[1].type_url, Kind::Endpoint.type_url());
        assert_eq!(again[1].resource_names, ["api"]);
    }

    #[test]
    fn delta_versions_removal_and_reconnect() {
        let mut c = client("DELTA_GRPC");
        let first: Vec<_> = c.connected(&StreamId::Ads).into_iter().map(delta).collect();
        assert!(first[0].resource_names_subscribe.is_empty(), "wildcard");
        let resource = |name: &str, version: &str, json| Resource {
            name: name.into(),
            version: version.into(),
            resource: Some(any(json)),
            ..Default::default()
        };
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    resources: vec![resource("web", "a1", eds_cluster("web"))],
                    type_url: Kind::Cluster.type_url().into(),
                    nonce: "n1".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| delta(r)).collect();
        assert_eq!(out[0].response_nonce, "n1");
        assert!(out[0].error_detail.is_none());
        assert_eq!(out[1].resource_names_subscribe, ["web"]);
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    resources: vec![resource("web", "e1", assignment("web", 8080))],
                    type_url: Kind::Endpoint.type_url().into(),
                    nonce: "n2".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        c.settle(p);
        assert_eq!(c.snapshot().clusters.len(), 1, "web is warm");

        // A name that does not match the resource is refused.
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    resources: vec![resource("other", "a2", eds_cluster("web"))],
                    type_url: Kind::Cluster.type_url().into(),
                    nonce: "n3".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| delta(r)).collect();
        assert!(out[0]
            .error_detail
            .as_ref()
            .unwrap()
            .message
            .contains("differs"));

        // Reconnect: what is held, with its versions.
        let again: Vec<_> = c.connected(&StreamId::Ads).into_iter().map(delta).collect();
        assert_eq!(again[0].initial_resource_versions.get("web").unwrap(), "a1");
        assert_eq!(again[1].type_url, Kind::Endpoint.type_url());
        assert_eq!(again[1].resource_names_subscribe, ["web"]);
        assert_eq!(again[1].initial_resource_versions.get("web").unwrap(), "e1");

        // Removal: the cluster goes, its assignment is unsubscribed.
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    removed_resources: vec!["web".into()],
                    type_url: Kind::Cluster.type_url().into(),
                    nonce: "n4".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(p.removed, 1);
        let out: Vec<_> = c.settle(p).into_iter().map(|(_, r)| delta(r)).collect();
        assert_eq!(out[1].resource_names_unsubscribe, ["web"]);
        assert!(c.snapshot().clusters.is_empty());
    }

    /// A listener whose certificate comes over ADS and whose CA comes from an SDS
    /// server (`sds-grpc` on a Unix socket): it warms until both arrive, each on its
    /// stream, and the SDS stream takes secrets only.
    #[test]
    fn secrets_by_ads_and_by_an_sds_server_warm_a_listener() {
        let (cert, key) = crate::config::test_certificate();
        let yaml = format!(
            "{}  - name: sds-grpc\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment: {{ cluster_name: sds-grpc, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ pipe: {{ path: /tmp/sds }} }} }} }} ] }} ] }}\n",
            include_str!("../../tests/fixtures/ads.yaml")
        );
        let mut c = Client::new(load(&yaml, Format::Yaml).unwrap().dynamic.unwrap());
        c.connected(&StreamId::Ads);
        let mut l = listener("in", 15006, serde_json::json!([router()]));
        l["filter_chains"][0]["transport_socket"] = serde_json::json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [{"name": "cert", "sds_config": {"ads": {}}}],
                    "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": {
                        "api_config_source": {"api_type": "GRPC", "grpc_services": [
                            {"envoy_grpc": {"cluster_name": "sds-grpc"}}]}}},
                },
            },
        });
        l["filter_chains"][0]["filters"][0]["typed_config"]
            .as_object_mut()
            .unwrap()
            .remove("rds");
        l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"] =
            serde_json::json!({"name": "r"});
        let lds = |v: &str, n: &str| DeltaDiscoveryResponse {
            resources: vec![Resource {
                name: "in".into(),
                version: v.into(),
                resource: Some(any(l.clone())),
                ..Default::default()
            }],
            type_url: Kind::Listener.type_url().into(),
            nonce: n.into(),
            ..Default::default()
        };
        let p = c.delta(&StreamId::Ads, lds("1", "n1")).unwrap();
        assert_eq!(p.errors, vec![], "checked without its secrets");
        let out = c.settle(p);
        let sds: Vec<_> = out
            .iter()
            .filter(
                |(_, r)| matches!(r, Request::Delta(d) if d.type_url == Kind::Secret.type_url()),
            )
            .collect();
        assert_eq!(sds.len(), 1, "the ADS secret is subscribed to: {out:?}");
        assert!(c.snapshot().listeners.is_empty(), "warming");
        let sid = StreamId::Sds {
            source: crate::config::SecretSource::Grpc {
                cluster: "sds-grpc".into(),
                api: AdsApi::Sotw,
                node_first_only: false,
            },
            name: "ROOTCA".into(),
        };
        assert_eq!(c.wanted_streams(), vec![StreamId::Ads, sid.clone()]);
        let first: Vec<_> = c.connected(&sid).into_iter().map(sotw).collect();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].type_url, Kind::Secret.type_url());
        assert_eq!(first[0].resource_names, ["ROOTCA"]);
        assert!(first[0].node.is_some());
        // Only secrets on an SDS stream.
        let nack = c
            .sotw(&sid, cds("1", "x1", vec![eds_cluster("web")]))
            .unwrap_err();
        assert!(sotw(*nack)
            .error_detail
            .unwrap()
            .message
            .contains("SDS stream"));
        let secret = |name: &str, body: serde_json::Value| {
            let mut s = serde_json::json!({
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": name,
            });
            s.as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            any(s)
        };
        let p = c
            .sotw(
                &sid,
                DiscoveryResponse {
                    version_info: "1".into(),
                    resources: vec![secret(
                        "ROOTCA",
                        serde_json::json!({
                        "validation_context": {"trusted_ca": {"inline_string": cert}}}),
                    )],
                    type_url: Kind::Secret.type_url().into(),
                    nonce: "s1".into(),
                },
            )
            .unwrap();
        c.settle(p);
        assert!(c.snapshot().listeners.is_empty(), "still warming for cert");
        let p = c
            .delta(
                &StreamId::Ads,
                DeltaDiscoveryResponse {
                    resources: vec![Resource {
                        name: "cert".into(),
                        version: "c1".into(),
                        resource: Some(secret(
                            "cert",
                            serde_json::json!({"tls_certificate": {
                            "certificate_chain": {"inline_string": cert},
                            "private_key": {"inline_string": key}}}),
                        )),
                        ..Default::default()
                    }],
                    type_url: Kind::Secret.type_url().into(),
                    nonce: "s2".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(p.errors, vec![]);
        c.settle(p);
        let snapshot = c.snapshot();
        let tls = snapshot.listeners[0].filter_chains[0].tls.as_ref().unwrap();
        assert_eq!(tls.common.certificates.len(), 1, "warm: both secrets held");
        assert_eq!(tls.common.validation.as_ref().unwrap().trusted_ca.len(), 1);
    }

    #[test]
    fn an_unknown_type_is_nacked() {
        let mut c = client("GRPC");
        let nack = c
            .sotw(
                &StreamId::Ads,
                DiscoveryResponse {
                    type_url: "type.googleapis.com/envoy.service.runtime.v3.Runtime".into(),
                    nonce: "s1".into(),
                    ..Default::default()
                },
            )
            .unwrap_err();
        let nack = sotw(*nack);
        assert_eq!(nack.response_nonce, "s1");
        assert!(nack.error_detail.unwrap().message.contains("not supported"));
    }
}

/// Writes the xds_response fuzz target's seeds (fuzz/seeds/xds_response):
/// `cargo test -p zerohop-control -- --ignored write_xds_fuzz_seeds`.
mod seeds {
    use super::*;
    use crate::config::dynamic_tests::{any, assignment, eds_cluster, listener, router, routes};
    use crate::xds::wire::Resource;
    use prost::Message as _;

    fn framed(mode: u8, responses: Vec<Vec<u8>>) -> Vec<u8> {
        let mut out = vec![mode];
        for r in responses {
            out.extend_from_slice(&(r.len() as u16).to_le_bytes());
            out.extend_from_slice(&r);
        }
        out
    }

    #[test]
    #[ignore = "writes fuzz seeds"]
    fn write_xds_fuzz_seeds() {
        let sets = [
            (Kind::Cluster, vec![eds_cluster("web"), eds_cluster("api")]),
            (Kind::Endpoint, vec![assignment("web", 8080)]),
            (
                Kind::Listener,
                vec![listener("in", 15006, serde_json::json!([router()]))],
            ),
            (Kind::Route, vec![routes("web")]),
            (
                Kind::Secret,
                vec![serde_json::json!({
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                    "name": "cert",
                    "tls_certificate": {
                        "certificate_chain": {"inline_string": crate::config::test_certificate().0},
                        "private_key": {"inline_string": crate::config::test_certificate().1},
                    },
                })],
            ),
        ];
        let sotw: Vec<Vec<u8>> = sets
            .iter()
            .enumerate()
            .map(|(i, (kind, res))| {
                DiscoveryResponse {
                    version_info: format!("{i}"),
                    resources: res.iter().cloned().map(any).collect(),
                    type_url: kind.type_url().into(),
                    nonce: format!("n{i}"),
                }
                .encode_to_vec()
            })
            .collect();
        let delta: Vec<Vec<u8>> = sets
            .iter()
            .enumerate()
            .map(|(i, (kind, res))| {
                DeltaDiscoveryResponse {
                    resources: res
                        .iter()
                        .cloned()
                        .map(|r| Resource {
                            resource: Some(any(r)),
                            version: format!("v{i}"),
                            ..Default::default()
                        })
                        .collect(),
                    type_url: kind.type_url().into(),
                    nonce: format!("n{i}"),
                    removed_resources: if i == 3 { vec!["api".into()] } else { vec![] },
                    ..Default::default()
                }
                .encode_to_vec()
            })
            .collect();
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/xds_response");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sotw"), framed(0, sotw)).unwrap();
        std::fs::write(dir.join("delta"), framed(1, delta)).unwrap();
    }
}
