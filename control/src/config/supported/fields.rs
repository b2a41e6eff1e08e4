//! The table of [`FIELDS`]: every Envoy message zerohop reads, and the fields of it that
//! zerohop implements.

/// Message type -> the fields zerohop implements for it.
pub(super) const FIELDS: &[(&str, &[&str])] = &[
    (
        "envoy.config.bootstrap.v3.Bootstrap",
        &[
            "node",
            "static_resources",
            "admin",
            "dynamic_resources",
            "cluster_manager",
            "layered_runtime",
        ],
    ),
    // The runtime: static and admin layers (config/runtime.rs).
    ("envoy.config.bootstrap.v3.LayeredRuntime", &["layers"]),
    (
        "envoy.config.bootstrap.v3.RuntimeLayer",
        &["name", "static_layer", "admin_layer"],
    ),
    ("envoy.config.bootstrap.v3.RuntimeLayer.AdminLayer", &[]),
    (
        "envoy.config.core.v3.RuntimeFractionalPercent",
        &["default_value", "runtime_key"],
    ),
    ("envoy.type.v3.FractionalPercent", &["numerator", "denominator"]),
    // xDS (issue #6).
    (
        "envoy.config.bootstrap.v3.Bootstrap.DynamicResources",
        &["lds_config", "cds_config", "ads_config"],
    ),
    (
        "envoy.config.core.v3.ConfigSource",
        &[
            "ads",
            "api_config_source",
            "initial_fetch_timeout",
            "resource_api_version",
        ],
    ),
    ("envoy.config.core.v3.AggregatedConfigSource", &[]),
    (
        "envoy.config.core.v3.ApiConfigSource",
        &[
            "api_type",
            "transport_api_version",
            "grpc_services",
            "set_node_on_first_message_only",
        ],
    ),
    // `timeout`: a tracer's collector honours it; the xDS and SDS streams refuse it.
    ("envoy.config.core.v3.GrpcService", &["envoy_grpc", "timeout"]),
    (
        "envoy.config.core.v3.GrpcService.EnvoyGrpc",
        &["cluster_name"],
    ),
    ("envoy.config.core.v3.Pipe", &["path"]),
    // On the connection manager (the HTTP/2 codec); on a cluster only the ADS server's,
    // where compile refuses any field set.
    (
        "envoy.config.core.v3.Http2ProtocolOptions",
        &[
            "max_concurrent_streams",
            "initial_stream_window_size",
            "initial_connection_window_size",
            "hpack_table_size",
            "connection_keepalive",
            "override_stream_error_on_invalid_http_message",
        ],
    ),
    (
        "envoy.config.core.v3.KeepaliveSettings",
        &["interval", "timeout"],
    ),
    (
        "envoy.config.cluster.v3.Cluster.EdsClusterConfig",
        &["eds_config", "service_name"],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.Rds",
        &["config_source", "route_config_name"],
    ),
    // Istio's filters arrive as TypedStruct; compile accepts them only as the no-op filters
    // it lists (http::ISTIO_NO_OPS).
    ("udpa.type.v1.TypedStruct", &["type_url", "value"]),
    ("xds.type.v3.TypedStruct", &["type_url", "value"]),
    (
        "envoy.config.bootstrap.v3.Bootstrap.StaticResources",
        &["listeners", "clusters"],
    ),
    // access_log_path: only /dev/null (compile refuses a real path: no admin access log).
    (
        "envoy.config.bootstrap.v3.Admin",
        &["address", "access_log_path"],
    ),
    ("envoy.config.core.v3.Node", &["id", "cluster", "metadata", "locality"]),
    // Metadata: no zone-aware load balancing reads it yet.
    ("envoy.config.core.v3.Locality", &["region", "zone", "sub_zone"]),
    ("envoy.config.route.v3.Decorator", &["operation", "propagate"]),
    // `local_cluster_name`: checked to name a static cluster, as Envoy checks it; nothing
    // reads it yet (zone-aware routing is not implemented).
    ("envoy.config.bootstrap.v3.ClusterManager", &["local_cluster_name"]),
    ("envoy.config.core.v3.Address", &["socket_address", "pipe"]),
    (
        "envoy.config.core.v3.SocketAddress",
        &["address", "port_value"],
    ),
    (
        "envoy.config.listener.v3.Listener",
        &[
            "name",
            "address",
            "filter_chains",
            "default_filter_chain",
            "listener_filters",
            "listener_filters_timeout",
            "continue_on_listener_filters_timeout",
            // Metadata: no feature of zerohop reads it (Envoy's tracing and a few
            // filters do; they are refused).
            "traffic_direction",
        ],
    ),
    (
        "envoy.config.listener.v3.FilterChain",
        &["name", "filters", "filter_chain_match", "transport_socket"],
    ),
    // TLS (config::tls).
    ("envoy.config.core.v3.TransportSocket", &["name", "typed_config"]),
    (
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
        &[],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        &[
            "common_tls_context",
            "require_client_certificate",
            "disable_stateless_session_resumption",
            "disable_stateful_session_resumption",
        ],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        &["common_tls_context", "sni", "max_session_keys"],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
        &[
            "tls_certificates",
            "tls_params",
            "alpn_protocols",
            "validation_context",
            "tls_certificate_sds_secret_configs",
            "validation_context_sds_secret_config",
            "combined_validation_context",
        ],
    ),
    // Secrets (config::secret): static_resources.secrets and SDS.
    (
        "envoy.extensions.transport_sockets.tls.v3.Secret",
        &["name", "tls_certificate", "validation_context"],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig",
        &["name", "sds_config"],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext",
        &["default_validation_context", "validation_context_sds_secret_config"],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.TlsCertificate",
        &["certificate_chain", "private_key", "watched_directory"],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.TlsParameters",
        &[
            "tls_minimum_protocol_version",
            "tls_maximum_protocol_version",
            "cipher_suites",
            "ecdh_curves",
        ],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
        &[
            "trusted_ca",
            "crl",
            "match_typed_subject_alt_names",
            "match_subject_alt_names",
            "watched_directory",
        ],
    ),
    // Where an SDS secret's files are watched (config::secret::watched_paths).
    ("envoy.config.core.v3.WatchedDirectory", &["path"]),
    (
        "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher",
        &["san_type", "matcher"],
    ),
    (
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        &[],
    ),
    // RBAC (config::rbac), for the HTTP and the network filter.
    (
        "envoy.extensions.filters.network.rbac.v3.RBAC",
        &["stat_prefix", "rules", "shadow_rules", "enforcement_type"],
    ),
    ("envoy.config.rbac.v3.RBAC", &["action", "policies"]),
    ("envoy.config.rbac.v3.Policy", &["permissions", "principals"]),
    (
        "envoy.config.rbac.v3.Permission",
        &[
            "any",
            "and_rules",
            "or_rules",
            "not_rule",
            "header",
            "url_path",
            "destination_ip",
            "destination_port",
            "destination_port_range",
            "requested_server_name",
        ],
    ),
    ("envoy.config.rbac.v3.Permission.Set", &["rules"]),
    (
        "envoy.config.rbac.v3.Principal",
        &[
            "any",
            "and_ids",
            "or_ids",
            "not_id",
            "authenticated",
            "direct_remote_ip",
            "remote_ip",
            "header",
            "url_path",
        ],
    ),
    ("envoy.config.rbac.v3.Principal.Set", &["ids"]),
    ("envoy.config.rbac.v3.Principal.Authenticated", &["principal_name"]),
    ("envoy.type.matcher.v3.PathMatcher", &["path"]),
    ("envoy.type.v3.Int32Range", &["start", "end"]),
    (
        "envoy.config.listener.v3.FilterChainMatch",
        &[
            "destination_port",
            "prefix_ranges",
            "server_names",
            "transport_protocol",
            "application_protocols",
            "direct_source_prefix_ranges",
            "source_type",
            "source_prefix_ranges",
            "source_ports",
        ],
    ),
    (
        "envoy.config.core.v3.CidrRange",
        &["address_prefix", "prefix_len"],
    ),
    (
        "envoy.config.listener.v3.ListenerFilter",
        &["name", "typed_config"],
    ),
    (
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        &[],
    ),
    ("envoy.config.listener.v3.Filter", &["name", "typed_config"]),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        &[
            "stat_prefix",
            "cluster",
            "weighted_clusters",
            "idle_timeout",
            "access_log",
        ],
    ),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster",
        &["clusters"],
    ),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight",
        &["name", "weight"],
    ),
    (
        "envoy.config.cluster.v3.Cluster",
        &[
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "load_assignment",
            "eds_cluster_config",
            "typed_extension_protocol_options",
            "transport_socket",
            // Deprecated in Envoy, still in wide use: HTTP/2 upstream.
            "http2_protocol_options",
            "circuit_breakers",
            "ring_hash_lb_config",
            "maglev_lb_config",
            "least_request_lb_config",
            "outlier_detection",
            "common_lb_config",
            // config::health; run by crate::health.
            "health_checks",
            // STRICT_DNS and LOGICAL_DNS (config::dns).
            "dns_lookup_family",
            "dns_refresh_rate",
            "dns_failure_refresh_rate",
            "dns_jitter",
            "respect_dns_ttl",
            "dns_resolvers",
            "use_tcp_for_dns_lookups",
            "dns_resolution_config",
            "typed_dns_resolver_config",
            "wait_for_warm_on_init",
        ],
    ),
    (
        "envoy.config.cluster.v3.Cluster.RefreshRate",
        &["base_interval", "max_interval"],
    ),
    (
        "envoy.config.core.v3.DnsResolutionConfig",
        &["resolvers", "dns_resolver_options"],
    ),
    (
        "envoy.config.core.v3.DnsResolverOptions",
        &["use_tcp_for_dns_lookups", "no_default_search_domain"],
    ),
    (
        "envoy.config.core.v3.TypedExtensionConfig",
        &["name", "typed_config"],
    ),
    (
        "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
        &[
            "resolvers",
            "use_resolvers_as_fallback",
            "dns_resolver_options",
            "query_timeout_seconds",
            "query_tries",
            "rotate_nameservers",
        ],
    ),
    (
        "envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig",
        &["num_retries"],
    ),
    // Per-shard shares of these thresholds: see the data plane's upstream::breaker.
    ("envoy.config.cluster.v3.CircuitBreakers", &["thresholds"]),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        &[
            "priority",
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
            "retry_budget",
        ],
    ),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget",
        &["budget_percent", "min_retry_concurrency"],
    ),
    ("envoy.type.v3.Percent", &["value"]),
    // HTTP/2 to the ADS server's cluster only (compile refuses it elsewhere).
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        &[
            "explicit_http_config",
            "common_http_protocol_options",
            "upstream_http_protocol_options",
        ],
    ),
    (
        "envoy.config.core.v3.UpstreamHttpProtocolOptions",
        &["auto_sni", "auto_san_validation", "override_auto_sni_header"],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        &["http2_protocol_options", "http_protocol_options"],
    ),
    // On the connection manager; compile refuses them in a cluster's options.
    (
        "envoy.config.core.v3.Http1ProtocolOptions",
        &["accept_http_10", "default_host_for_http_10"],
    ),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        &["cluster_name", "endpoints"],
    ),
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        &["lb_endpoints"],
    ),
    (
        "envoy.config.endpoint.v3.LbEndpoint",
        &["endpoint", "load_balancing_weight", "health_status"],
    ),
    // `hostname`: the host's name, as Envoy shows it; zerohop has no feature that reads it
    // (auto_host_rewrite is refused; a health check's host is its own `host`, else the
    // cluster's name), so it is kept as metadata.
    (
        "envoy.config.endpoint.v3.Endpoint",
        &["address", "hostname", "health_check_config"],
    ),
    (
        "envoy.config.endpoint.v3.Endpoint.HealthCheckConfig",
        &["port_value", "address"],
    ),
    // Active health checks (config::health, crate::health).
    (
        "envoy.config.core.v3.HealthCheck",
        &[
            "timeout",
            "interval",
            "initial_jitter",
            "interval_jitter",
            "interval_jitter_percent",
            "unhealthy_threshold",
            "healthy_threshold",
            "reuse_connection",
            "no_traffic_interval",
            "no_traffic_healthy_interval",
            "unhealthy_interval",
            "unhealthy_edge_interval",
            "healthy_edge_interval",
            "always_log_health_check_failures",
            "always_log_health_check_success",
            "http_health_check",
            "tcp_health_check",
            "grpc_health_check",
        ],
    ),
    (
        "envoy.config.core.v3.HealthCheck.HttpHealthCheck",
        &[
            "host",
            "path",
            "send",
            "receive",
            "response_buffer_size",
            "request_headers_to_add",
            "request_headers_to_remove",
            "expected_statuses",
            "retriable_statuses",
            "codec_client_type",
            "method",
        ],
    ),
    (
        "envoy.config.core.v3.HealthCheck.TcpHealthCheck",
        &["send", "receive"],
    ),
    (
        "envoy.config.core.v3.HealthCheck.GrpcHealthCheck",
        &["service_name", "authority"],
    ),
    ("envoy.config.core.v3.HealthCheck.Payload", &["text", "binary"]),
    ("envoy.type.v3.Int64Range", &["start", "end"]),
    // HTTP (issue #4).
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        &[
            "stat_prefix",
            "codec_type",
            "route_config",
            "rds",
            "http_filters",
            "max_request_headers_kb",
            "common_http_protocol_options",
            "request_headers_timeout",
            "stream_idle_timeout",
            "request_timeout",
            "generate_request_id",
            "use_remote_address",
            "http_protocol_options",
            "http2_protocol_options",
            "upgrade_configs",
            "server_name",
            "server_header_transformation",
            "normalize_path",
            "merge_slashes",
            "path_with_escaped_slashes_action",
            "skip_xff_append",
            "xff_num_trusted_hops",
            "preserve_external_request_id",
            "add_user_agent",
            "access_log",
            "tracing",
        ],
    ),
    // `filters` (an upgrade's own filter chain) is not implemented: refused by name.
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
        &["upgrade_type", "enabled"],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        &["name", "typed_config", "is_optional"],
    ),
    // Each HTTP filter's own messages are listed in its file (config::filters).
    (
        "envoy.config.route.v3.FilterConfig",
        &["config", "is_optional", "disabled"],
    ),
    // The connection manager's (downstream) and a cluster's (upstream) common options;
    // compile refuses max_requests_per_connection on the connection manager.
    (
        "envoy.config.core.v3.HttpProtocolOptions",
        &[
            "idle_timeout",
            "max_headers_count",
            "max_requests_per_connection",
            // On the connection manager; compile refuses it in a cluster's options.
            "max_stream_duration",
        ],
    ),
    (
        "envoy.config.route.v3.RouteConfiguration",
        &[
            "name",
            "virtual_hosts",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "typed_per_filter_config",
        ],
    ),
    (
        "envoy.config.route.v3.VirtualHost",
        &[
            "name",
            "domains",
            "routes",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "typed_per_filter_config",
            "retry_policy",
            "include_request_attempt_count",
            "include_attempt_count_in_response",
            "per_request_buffer_limit_bytes",
            "request_body_buffer_limit",
        ],
    ),
    (
        "envoy.config.route.v3.Route",
        &[
            "name",
            "match",
            "route",
            "direct_response",
            "redirect",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "typed_per_filter_config",
            // The span's name with tracing (config/tracing.rs).
            "decorator",
            "per_request_buffer_limit_bytes",
            "request_body_buffer_limit",
        ],
    ),
    (
        "envoy.config.route.v3.RouteMatch",
        &[
            "prefix",
            "path",
            "safe_regex",
            "case_sensitive",
            "headers",
            "query_parameters",
            "runtime_fraction",
            "grpc",
        ],
    ),
    ("envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions", &[]),
    (
        "envoy.config.route.v3.HeaderMatcher",
        &[
            "name",
            "string_match",
            "exact_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "safe_regex_match",
            "present_match",
            "invert_match",
        ],
    ),
    (
        "envoy.config.route.v3.QueryParameterMatcher",
        &["name", "string_match", "present_match"],
    ),
    (
        "envoy.type.matcher.v3.StringMatcher",
        &[
            "exact",
            "prefix",
            "suffix",
            "contains",
            "safe_regex",
            "ignore_case",
        ],
    ),
    (
        "envoy.type.matcher.v3.RegexMatcher",
        &["google_re2", "regex"],
    ),
    ("envoy.type.matcher.v3.RegexMatcher.GoogleRE2", &[]),
    (
        "envoy.type.matcher.v3.RegexMatchAndSubstitute",
        &["pattern", "substitution"],
    ),
    (
        "envoy.config.route.v3.RouteAction",
        &[
            "cluster",
            "weighted_clusters",
            "prefix_rewrite",
            "regex_rewrite",
            "host_rewrite_literal",
            "timeout",
            "upgrade_configs",
            "request_mirror_policies",
            "retry_policy",
            "hash_policy",
        ],
    ),
    // filter_state hashing is refused by name; so are a cookie's ttl, path and attributes
    // (zerohop sets no cookie).
    (
        "envoy.config.route.v3.RouteAction.HashPolicy",
        &["header", "cookie", "connection_properties", "query_parameter", "terminal"],
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.Header",
        &["header_name"],
    ),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Cookie", &["name"]),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties",
        &["source_ip"],
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter",
        &["name"],
    ),
    (
        "envoy.config.cluster.v3.Cluster.RingHashLbConfig",
        &["minimum_ring_size", "maximum_ring_size", "hash_function"],
    ),
    ("envoy.config.cluster.v3.Cluster.MaglevLbConfig", &["table_size"]),
    // Only the panic threshold (config::outlier); zone-aware and locality-weighted
    // balancing, slow start and the rest are refused by name.
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig",
        &["healthy_panic_threshold"],
    ),
    // Every detector: consecutive failures, success rate and failure percentage
    // (config::outlier; the data plane's upstream::hosts).
    (
        "envoy.config.cluster.v3.OutlierDetection",
        &[
            "consecutive_5xx",
            "interval",
            "base_ejection_time",
            "max_ejection_percent",
            "enforcing_consecutive_5xx",
            "enforcing_success_rate",
            "success_rate_minimum_hosts",
            "success_rate_request_volume",
            "success_rate_stdev_factor",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            "split_external_local_origin_errors",
            "consecutive_local_origin_failure",
            "enforcing_consecutive_local_origin_failure",
            "enforcing_local_origin_success_rate",
            "failure_percentage_threshold",
            "enforcing_failure_percentage",
            "enforcing_failure_percentage_local_origin",
            "failure_percentage_minimum_hosts",
            "failure_percentage_request_volume",
            "max_ejection_time",
            "max_ejection_time_jitter",
            "always_eject_one_host",
        ],
    ),
    (
        "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig",
        &["choice_count", "active_request_bias"],
    ),
    (
        "envoy.config.core.v3.RuntimeDouble",
        &["default_value", "runtime_key"],
    ),
    // trace_sampled (no tracing yet), cluster_header and header mutations are refused.
    (
        "envoy.config.route.v3.RouteAction.RequestMirrorPolicy",
        &["cluster", "runtime_fraction", "disable_shadow_host_suffix_append"],
    ),
    // `connect_config` (CONNECT) is not implemented: refused by name.
    (
        "envoy.config.route.v3.RouteAction.UpgradeConfig",
        &["upgrade_type", "enabled"],
    ),
    ("envoy.config.route.v3.WeightedCluster", &["clusters"]),
    (
        "envoy.config.route.v3.WeightedCluster.ClusterWeight",
        &["name", "weight"],
    ),
    (
        "envoy.config.route.v3.DirectResponseAction",
        &["status", "body"],
    ),
    (
        "envoy.config.core.v3.DataSource",
        &["filename", "inline_bytes", "inline_string"],
    ),
    (
        "envoy.config.route.v3.RedirectAction",
        &[
            "https_redirect",
            "scheme_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "response_code",
            "strip_query",
        ],
    ),
    (
        "envoy.config.core.v3.HeaderValueOption",
        &["header", "append", "append_action"],
    ),
    ("envoy.config.core.v3.HeaderValue", &["key", "value"]),
    // envoy.filters.network.local_ratelimit (config::listener); its TokenBucket is the
    // HTTP filter's (config::filters::local_ratelimit).
    (
        "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
        &["stat_prefix", "token_bucket", "runtime_enabled"],
    ),
    (
        "envoy.config.core.v3.RuntimeFeatureFlag",
        &["default_value", "runtime_key"],
    ),
];
