//! `dynamic_resources` and xDS resources: what the bootstrap compiles to, how each
//! resource is checked, and warming.

use super::*;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use zerohop_proto::{NetworkFilter, RouteAction, UpstreamProtocol};

const ADS: &str = include_str!("../../tests/fixtures/ads.yaml");

/// Encodes a resource written in Envoy's JSON mapping (with `@type`) as an `Any`.
pub(crate) fn any(json: serde_json::Value) -> prost_types::Any {
    let desc = descriptor_pool()
        .get_message_by_name("google.protobuf.Any")
        .unwrap();
    let m = DynamicMessage::deserialize(desc, json).expect("valid resource JSON");
    prost_types::Any::decode(m.encode_to_vec().as_slice()).unwrap()
}

fn dynamic() -> Dynamic {
    load(ADS, Format::Yaml).unwrap().dynamic.unwrap()
}

fn check(
    r: &Resources,
    d: &Dynamic,
    kind: Kind,
    json: serde_json::Value,
) -> Result<Checked, String> {
    r.check(d, kind, &any(json), "", &SecretSource::Ads)
        .map_err(|(n, e)| format!("{n}: {e}"))
}

pub(crate) fn eds_cluster(name: &str) -> serde_json::Value {
    serde_json::json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name, "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}}},
    })
}

pub(crate) fn assignment(name: &str, port: u16) -> serde_json::Value {
    serde_json::json!({
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": port}}}}]}],
    })
}

pub(crate) fn listener(name: &str, port: u16, filters: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "rds": {"config_source": {"ads": {}}, "route_config_name": "routes"},
                "http_filters": filters,
            },
        }]}],
    })
}

pub(crate) fn router() -> serde_json::Value {
    serde_json::json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

pub(crate) fn routes(cluster: &str) -> serde_json::Value {
    serde_json::json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": "routes",
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}],
    })
}

#[test]
fn an_ads_bootstrap_compiles_to_its_server_and_node() {
    let b = load(ADS, Format::Yaml).unwrap();
    let ads = b.dynamic.as_ref().unwrap().ads.as_ref().unwrap();
    assert_eq!(ads.api, AdsApi::Delta);
    assert_eq!(ads.target, AdsTarget::Unix("./etc/istio/proxy/XDS".into()));
    assert_eq!(ads.cluster_name, "xds-grpc");
    assert!(ads.lds && ads.cds && ads.node_first_only);
    assert_eq!(ads.initial_fetch_timeout, None, "0s waits for ever");
    // The pipe cluster is control's own: the data plane never sees it.
    assert!(b.snapshot.clusters.is_empty());
    let node = DynamicMessage::decode(
        descriptor_pool()
            .get_message_by_name("envoy.config.core.v3.Node")
            .unwrap(),
        b.dynamic.as_ref().unwrap().node.as_slice(),
    )
    .unwrap();
    let field = |f: &str| {
        node.get_field_by_name(f)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        field("id"),
        "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local"
    );
    assert_eq!(field("user_agent_name"), "zerohop");
    assert!(node.has_field_by_name("metadata"));
}

#[test]
fn ads_bootstrap_errors_name_the_field() {
    let tcp = ADS.replace(
        "{ pipe: { path: ./etc/istio/proxy/XDS } }",
        "{ socket_address: { address: 127.0.0.1, port_value: 15010 } }",
    );
    let b = load(&tcp, Format::Yaml).unwrap();
    assert_eq!(
        b.dynamic.unwrap().ads.unwrap().target,
        AdsTarget::Tcp("127.0.0.1:15010".parse().unwrap())
    );
    let cases = [
        (
            ADS.replace("cluster_name: xds-grpc }", "cluster_name: nowhere }"),
            "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name",
            "not a static cluster",
        ),
        (
            ADS.replace("transport_api_version: V3", "transport_api_version: V2"),
            "dynamic_resources.ads_config.transport_api_version",
            "V2 is not supported",
        ),
        (
            ADS.replace("DELTA_GRPC", "REST"),
            "dynamic_resources.ads_config.api_type",
            "REST is not supported",
        ),
        (
            // Without dynamic_resources the pipe cluster is an ordinary one: refused.
            ADS[..ADS.find("dynamic_resources").unwrap()].to_owned()
                + &ADS[ADS.find("static_resources").unwrap()..],
            "static_resources.clusters[0](xds-grpc)",
            "pipe (Unix socket) address is supported only",
        ),
    ];
    for (yaml, path, message) in cases {
        let e = load(&yaml, Format::Yaml).expect_err(path);
        assert!(e.path.starts_with(path), "{path}: {e}");
        assert!(e.to_string().contains(message), "{message}: {e}");
    }
    // Without dynamic_resources the ADS server's HTTP/2 cluster is an ordinary HTTP/2
    // cluster of the data plane.
    let h2 = tcp[..tcp.find("dynamic_resources").unwrap()].to_owned()
        + &tcp[tcp.find("static_resources").unwrap()..];
    let b = load(&h2, Format::Yaml).unwrap();
    assert!(matches!(
        b.snapshot.clusters[0].protocol,
        UpstreamProtocol::Http2(..)
    ));
}

#[test]
fn rds_needs_dynamic_resources() {
    let yaml = r#"
static_resources:
  listeners:
  - name: in
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          rds: { config_source: { ads: {} }, route_config_name: routes }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#;
    let e = load(yaml, Format::Yaml).unwrap_err();
    assert_eq!(
        e.path,
        "static_resources.listeners[0](in).filter_chains[0].filters[0](envoy.filters.network.http_connection_manager).typed_config.rds"
    );
    assert!(e.message.contains("dynamic_resources"), "{e}");
}

#[test]
fn each_resource_is_checked_alone_naming_resource_and_field() {
    let d = dynamic();
    let r = Resources::new(&d);
    assert!(check(&r, &d, Kind::Cluster, eds_cluster("web")).is_ok());
    let mut bad = eds_cluster("web");
    bad["lb_policy"] = "CLUSTER_PROVIDED".into();
    let e = check(&r, &d, Kind::Cluster, bad).unwrap_err();
    assert!(e.starts_with("web: Cluster(web).lb_policy"), "{e}");
    let e = check(&r, &d, Kind::Cluster, eds_cluster("xds-grpc")).unwrap_err();
    assert!(e.contains("defined statically"), "{e}");
    let mut unknown = eds_cluster("web");
    unknown["per_connection_buffer_limit_bytes"] = 1024.into();
    let e = check(&r, &d, Kind::Cluster, unknown).unwrap_err();
    assert!(
        e.contains("Cluster(web).per_connection_buffer_limit_bytes"),
        "{e}"
    );
    // A resource of another type in the response.
    let e = r
        .check(
            &d,
            Kind::Listener,
            &any(eds_cluster("web")),
            "",
            &SecretSource::Ads,
        )
        .map_err(|(_, e)| e.to_string())
        .unwrap_err();
    assert!(e.contains("in a Listener response"), "{e}");
    let mut own_timeout = eds_cluster("web");
    own_timeout["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] = "1s".into();
    let e = check(&r, &d, Kind::Cluster, own_timeout).unwrap_err();
    assert!(
        e.contains("Cluster(web).eds_cluster_config.eds_config.initial_fetch_timeout"),
        "{e}"
    );
    // A route to a cluster that has not arrived is fine (503 until it does).
    assert!(check(&r, &d, Kind::Route, routes("later")).is_ok());
    let mut regex = routes("web");
    regex["virtual_hosts"][0]["routes"][0]["match"] =
        serde_json::json!({"safe_regex": {"regex": "(unclosed"}});
    let e = check(&r, &d, Kind::Route, regex).unwrap_err();
    assert!(
        e.contains(
            "RouteConfiguration(routes).virtual_hosts[0](all).routes[0].match.safe_regex.regex"
        ),
        "{e}"
    );
}

#[test]
fn istio_filters_are_no_ops_unknown_filters_refused_unless_optional() {
    let d = dynamic();
    let r = Resources::new(&d);
    let typed_struct = |url: &str| {
        serde_json::json!({"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": url, "value": {"a": 1}})
    };
    let istio = serde_json::json!([
        {"name": "istio.metadata_exchange", "typed_config": typed_struct("type.googleapis.com/io.istio.http.peer_metadata.Config")},
        {"name": "istio.alpn", "typed_config": typed_struct("type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig")},
        {"name": "istio.stats", "typed_config": typed_struct("type.googleapis.com/stats.PluginConfig")},
        router(),
    ]);
    assert!(check(&r, &d, Kind::Listener, listener("in", 15006, istio)).is_ok());
    let unknown = |optional: bool| {
        serde_json::json!([
            {"name": "acme.auth", "is_optional": optional, "typed_config": typed_struct("type.googleapis.com/acme.Auth")},
            router(),
        ])
    };
    let e = check(
        &r,
        &d,
        Kind::Listener,
        listener("in", 15006, unknown(false)),
    )
    .unwrap_err();
    assert!(
        e.contains("http_filters[0](acme.auth).typed_config")
            && e.contains("acme.Auth is not supported"),
        "{e}"
    );
    assert!(check(&r, &d, Kind::Listener, listener("in", 15006, unknown(true))).is_ok());
    // A filter zerohop knows the type of but does not implement is refused too.
    let decompressor = serde_json::json!([
        {"name": "envoy.filters.http.decompressor", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor"}},
        router(),
    ]);
    let e = check(&r, &d, Kind::Listener, listener("in", 15006, decompressor)).unwrap_err();
    assert!(e.contains("Decompressor is not supported"), "{e}");
}

#[test]
fn clusters_warm_for_endpoints_and_listeners_for_routes() {
    let d = dynamic();
    let mut r = Resources::new(&d);
    let apply = |r: &mut Resources, kind, json| {
        let c = check(r, &d, kind, json).unwrap();
        r.apply(c);
    };
    apply(&mut r, Kind::Cluster, eds_cluster("web"));
    apply(
        &mut r,
        Kind::Listener,
        listener("in", 15006, serde_json::json!([router()])),
    );
    assert_eq!(r.warming(), 2);
    assert_eq!(r.wanted(&d, Kind::Endpoint), ["web".to_string()].into());
    assert_eq!(r.wanted(&d, Kind::Route), ["routes".to_string()].into());
    let s = r.assemble(&d);
    assert!(s.clusters.is_empty() && s.listeners.is_empty(), "{s:?}");

    apply(&mut r, Kind::Endpoint, assignment("web", 8080));
    apply(&mut r, Kind::Route, routes("web"));
    assert_eq!(r.warming(), 0);
    let s = r.assemble(&d);
    assert_eq!(s.clusters.len(), 1);
    assert_eq!(s.clusters[0].endpoints[0].address.port(), 8080);
    let NetworkFilter::Http(h) = &s.listeners[0].filter_chains[0].filters[0] else {
        panic!("http listener")
    };
    let RouteAction::Forward(f) = &h.route_config.virtual_hosts[0].routes[0].action else {
        panic!("forward")
    };
    assert_eq!(s.clusters[f.targets[0].cluster.index()].name, "web");

    // An update to a new service name warms beside the serving version.
    let mut moved = eds_cluster("web");
    moved["eds_cluster_config"]["service_name"] = "web-v2".into();
    apply(&mut r, Kind::Cluster, moved);
    assert_eq!(r.warming(), 1);
    assert_eq!(r.assemble(&d).clusters[0].endpoints[0].address.port(), 8080);
    apply(&mut r, Kind::Endpoint, assignment("web-v2", 9090));
    r.retain_wanted(&d);
    assert_eq!(r.assemble(&d).clusters[0].endpoints[0].address.port(), 9090);
    assert_eq!(r.names(Kind::Endpoint), ["web-v2".to_string()].into());

    // A route to a cluster that does not exist: an empty cluster, so 503.
    apply(&mut r, Kind::Route, routes("gone"));
    let s = r.assemble(&d);
    assert_eq!(s.clusters.len(), 2);
    assert_eq!(s.clusters[1].name, "gone");
    assert!(s.clusters[1].endpoints.is_empty());

    // The initial fetch gave up: what warms is served as it is.
    apply(&mut r, Kind::Cluster, eds_cluster("api"));
    r.finish_warming();
    assert_eq!(r.warming(), 0);
    assert!(r
        .assemble(&d)
        .clusters
        .iter()
        .any(|c| c.name == "api" && c.endpoints.is_empty()));
}
