//! The scripted ADS server (tests/xds/ads_server.py, grpcio + xds-protos), driven through
//! the bench's driver (bench/src/ads.rs, shared by `#[path]`), and the resources the xDS
//! tests send.
//!
//! Its Python is `ZEROHOP_XDS_PYTHON`, else `target/ci/xds-venv/bin/python3`, the venv
//! `.ci/run` creates from tests/xds/requirements.txt.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

#[path = "../../../bench/src/ads.rs"]
mod ads;

/// The driver, its errors turned into test failures.
pub struct AdsServer(ads::AdsServer);

impl std::ops::Deref for AdsServer {
    type Target = ads::AdsServer;
    fn deref(&self) -> &ads::AdsServer {
        &self.0
    }
}

impl AdsServer {
    /// `None` when the server's Python is missing (and peers are not required).
    pub fn start() -> Option<AdsServer> {
        AdsServer::start_on(None)
    }

    /// On a Unix socket at `unix` instead of TCP.
    pub fn start_on(unix: Option<&Path>) -> Option<AdsServer> {
        let python = ads::default_python();
        if !ads::python_ready(&python) {
            assert!(
                std::env::var_os("ZEROHOP_REQUIRE_PEERS").is_none(),
                "{} with grpcio and xds-protos is required here (ZEROHOP_REQUIRE_PEERS)",
                python.display()
            );
            eprintln!(
                "no xDS test server Python at {} (python3 -m venv target/ci/xds-venv && target/ci/xds-venv/bin/pip install -r tests/xds/requirements.txt): test skipped",
                python.display()
            );
            return None;
        }
        Some(AdsServer(ads::AdsServer::start(&python, unix).unwrap()))
    }

    pub fn set(&mut self, ty: &str, version: &str, resources: Vec<Value>) {
        self.0.set(ty, version, resources).unwrap()
    }

    pub fn restart(&mut self, down: f64) {
        self.0.restart(down).unwrap()
    }

    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.0.wait(timeout, pred).unwrap()
    }

    pub fn wait_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.0.wait_from(from, timeout, pred).unwrap()
    }

    /// The client's answer (ACK or NACK) to the response of `ty` at `version`.
    pub fn answer(&self, ty: &str, version: &str, timeout: Duration) -> Value {
        self.answer_for(ty, version, None, timeout)
    }

    /// Like [`AdsServer::answer`], for the response of that version that carried `name`
    /// (a by-name type is sent again when the subscription grows).
    pub fn answer_for(
        &self,
        ty: &str,
        version: &str,
        name: Option<&str>,
        timeout: Duration,
    ) -> Value {
        let carried = |names: &[Value]| name.is_none_or(|n| names.iter().any(|x| x == n));
        self.0.exchange(ty, version, carried, timeout).unwrap().1
    }
}

/// A bootstrap whose ADS server is `ads` (`GRPC` or `DELTA_GRPC`), with an admin port and a
/// 5 s `initial_fetch_timeout`.
pub fn bootstrap(ads: SocketAddr, api: &str, admin_port: u16) -> String {
    ads::bootstrap("xds-test", &ads::socket_address(ads), api, admin_port, "5s")
}

#[allow(unused_imports)] // Reason: only the xds test binary uses them.
pub use ads::{bootstrap as bootstrap_with, socket_address};

/// An EDS cluster (over ADS).
pub fn eds_cluster(name: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
    })
}

/// A STATIC cluster on `endpoints`.
pub fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> Value {
    let mut la = assignment(name, endpoints);
    la.as_object_mut().unwrap().remove("@type");
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": la,
    })
}

/// A ClusterLoadAssignment for `cluster`.
pub fn assignment(cluster: &str, endpoints: &[SocketAddr]) -> Value {
    let lb: Vec<Value> = endpoints
        .iter()
        .map(|a| {
            json!({"endpoint": {"address": {"socket_address": {
                "address": a.ip().to_string(), "port_value": a.port()}}}})
        })
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": cluster,
        "endpoints": [{"lb_endpoints": lb}],
    })
}

/// An HTTP listener on 127.0.0.1:`port` taking route configuration `routes` by RDS.
pub fn http_listener(name: &str, port: u16, routes: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "rds": {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": routes},
                "http_filters": [
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            },
        }]}],
    })
}

/// A route configuration: each `(prefix, cluster)` in order, for any host.
pub fn routes(name: &str, table: &[(&str, &str)]) -> Value {
    let routes: Vec<Value> = table
        .iter()
        .map(
            |(prefix, cluster)| json!({"match": {"prefix": prefix}, "route": {"cluster": cluster}}),
        )
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": name,
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
    })
}

/// `listener` with an HTTP filter of a type neither zerohop nor Envoy implements before its
/// router, marked `is_optional` or not.
pub fn with_unknown_filter(mut listener: Value, optional: bool) -> Value {
    let filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array_mut()
        .unwrap();
    filters.insert(
        0,
        json!({
            "name": "acme.rewrite",
            "is_optional": optional,
            "typed_config": {
                "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                "type_url": "type.googleapis.com/acme.filters.Rewrite",
                "value": {"mode": "strict"},
            },
        }),
    );
    listener
}

/// The tests' Python with grpcio (the xDS venv), for gRPC peers (tests/grpc/peer.py); `None`
/// when it is missing (and peers are not required).
pub fn grpc_python() -> Option<std::path::PathBuf> {
    let python = ads::default_python();
    super::python_has(&python, "import grpc", "grpcio").then_some(python)
}
