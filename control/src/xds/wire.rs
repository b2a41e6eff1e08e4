//! The messages of `envoy.service.discovery.v3.AggregatedDiscoveryService`, as prost types.
//!
//! Only the discovery envelope is typed here; the resources inside stay `Any` and are decoded
//! reflectively by the same path as the bootstrap ([`crate::config`]). Field numbers are
//! those of `envoy/service/discovery/v3/discovery.proto`.
//!
//! `node` is carried as the encoded bytes of the bootstrap's `Node`: a message field and a
//! bytes field share wire type 2, so the reflective `Node` passes through without a typed copy.

use prost_types::Any;

// The resource type URLs are `config::Kind::type_url`.

/// gRPC path of the state-of-the-world stream.
pub const STREAM_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// gRPC path of the incremental (delta) stream.
pub const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// gRPC paths of `envoy.service.secret.v3.SecretDiscoveryService`, the stream an SDS
/// server named by an `api_config_source` serves (the same envelope).
pub const SDS_STREAM_PATH: &str = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets";
pub const SDS_DELTA_PATH: &str = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets";

/// `google.rpc.Status`, as `error_detail`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// gRPC's `INVALID_ARGUMENT`, the code Envoy puts in a NACK's `error_detail`.
pub const INVALID_ARGUMENT: i32 = 3;

#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryRequest {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub node: Option<Vec<u8>>,
    #[prost(string, repeated, tag = "3")]
    pub resource_names: Vec<String>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub response_nonce: String,
    #[prost(message, optional, tag = "6")]
    pub error_detail: Option<Status>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Any>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaDiscoveryRequest {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub node: Option<Vec<u8>>,
    #[prost(string, tag = "2")]
    pub type_url: String,
    #[prost(string, repeated, tag = "3")]
    pub resource_names_subscribe: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub resource_names_unsubscribe: Vec<String>,
    #[prost(btree_map = "string, string", tag = "5")]
    pub initial_resource_versions: std::collections::BTreeMap<String, String>,
    #[prost(string, tag = "6")]
    pub response_nonce: String,
    #[prost(message, optional, tag = "7")]
    pub error_detail: Option<Status>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaDiscoveryResponse {
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Resource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `envoy.service.discovery.v3.Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, repeated, tag = "4")]
    pub aliases: Vec<String>,
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<Any>,
}
