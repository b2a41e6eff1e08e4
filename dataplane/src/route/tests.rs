use zerohop_proto::*;

use super::*;

fn fwd(prefix_rewrite: Option<&str>, regex_rewrite: Option<(&str, &str)>) -> RouteAction {
    RouteAction::Forward(Forward {
        upgrades: vec![],
        mirrors: vec![],
        retry: None,
        hash_policy: vec![],
        buffer_limit: 1 << 20,
        attempt_count_upstream: false,
        attempt_count_downstream: false,
        targets: vec![WeightedCluster {
            cluster: ClusterId(0),
            weight: 1,
        }],
        prefix_rewrite: prefix_rewrite.map(str::to_owned),
        regex_rewrite: regex_rewrite.map(|(a, b)| (a.to_owned(), b.to_owned())),
        host_rewrite: None,
        timeout: None,
    })
}

fn route(name: &str, path: PathMatch, action: RouteAction) -> zerohop_proto::Route {
    zerohop_proto::Route {
        name: name.into(),
        matcher: RouteMatch {
            path,
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![],
            runtime_fraction: None,
            grpc: false,
        },
        action,
        headers: HeaderEdits::default(),
        per_filter: vec![],
        decorator: None,
    }
}

fn vhost(
    name: &str,
    domains: &[&str],
    routes: Vec<zerohop_proto::Route>,
) -> zerohop_proto::VirtualHost {
    zerohop_proto::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        headers: HeaderEdits::default(),
        per_filter: vec![],
    }
}

fn table(vhosts: Vec<zerohop_proto::VirtualHost>) -> RouteTable {
    let rc = RouteConfig {
        name: "rc".into(),
        virtual_hosts: vhosts,
        ..RouteConfig::default()
    };
    RouteTable::build(rc, &[]).unwrap()
}

fn find<'t>(
    t: &'t RouteTable,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<&'t str> {
    let (p, q) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let owned: Vec<(String, String)> = headers
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let lookup = |n: &str| owned.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let req = Request {
        host,
        path: p,
        query: q,
        header: &lookup,
        random: 0,
    };
    t.route(&req).map(|(_, r)| r.name.as_str())
}

#[test]
fn domains_exact_then_longest_suffix_then_longest_prefix_then_any() {
    let any = PathMatch::Prefix("/".into());
    let t = table(vec![
        vhost(
            "exact",
            &["api.example.com"],
            vec![route("exact", any.clone(), fwd(None, None))],
        ),
        vhost(
            "suffix",
            &["*.example.com"],
            vec![route("suffix", any.clone(), fwd(None, None))],
        ),
        vhost(
            "longer-suffix",
            &["*.b.example.com"],
            vec![route("longer-suffix", any.clone(), fwd(None, None))],
        ),
        vhost(
            "prefix",
            &["api.*"],
            vec![route("prefix", any.clone(), fwd(None, None))],
        ),
        vhost(
            "port",
            &["host:8080"],
            vec![route("port", any.clone(), fwd(None, None))],
        ),
        vhost("any", &["*"], vec![route("any", any, fwd(None, None))]),
    ]);
    assert_eq!(find(&t, "API.Example.com", "/", &[]), Some("exact"));
    assert_eq!(find(&t, "x.example.com", "/", &[]), Some("suffix"));
    assert_eq!(find(&t, "a.b.example.com", "/", &[]), Some("longer-suffix"));
    assert_eq!(find(&t, "api.other.org", "/", &[]), Some("prefix"));
    assert_eq!(
        find(&t, "example.com", "/", &[]),
        Some("any"),
        "a wildcard needs at least one character"
    );
    assert_eq!(find(&t, "host:8080", "/", &[]), Some("port"));
    assert_eq!(
        find(&t, "host", "/", &[]),
        Some("any"),
        "the port is part of the host, as in Envoy"
    );
}

#[test]
fn routes_in_order_by_path_headers_and_query() {
    let mut by_header = route("by-header", PathMatch::Prefix("/".into()), fwd(None, None));
    by_header.matcher.headers = vec![
        HeaderMatcher {
            name: "x-version".into(),
            rule: StringRule::Exact {
                value: "v2".into(),
                ignore_case: true,
            },
            invert: false,
        },
        HeaderMatcher {
            name: "x-debug".into(),
            rule: StringRule::Present(true),
            invert: true,
        },
    ];
    let mut by_query = route("by-query", PathMatch::Prefix("/".into()), fwd(None, None));
    by_query.matcher.query_parameters = vec![
        QueryMatcher {
            name: "debug".into(),
            rule: None,
        },
        QueryMatcher {
            name: "user".into(),
            rule: Some(StringRule::Regex("[0-9]+".into())),
        },
    ];
    let mut insensitive = route(
        "insensitive",
        PathMatch::Prefix("/CaSe".into()),
        fwd(None, None),
    );
    insensitive.matcher.case_sensitive = false;
    let t = table(vec![vhost(
        "v",
        &["*"],
        vec![
            route(
                "exact-path",
                PathMatch::Path("/exact".into()),
                fwd(None, None),
            ),
            route(
                "regex",
                PathMatch::Regex("/items/[0-9]+".into()),
                fwd(None, None),
            ),
            insensitive,
            by_header,
            by_query,
            route("api", PathMatch::Prefix("/api".into()), fwd(None, None)),
        ],
    )]);
    assert_eq!(find(&t, "h", "/exact", &[]), Some("exact-path"));
    assert_eq!(find(&t, "h", "/exact/more", &[]), None);
    assert_eq!(find(&t, "h", "/items/42", &[]), Some("regex"));
    assert_eq!(
        find(&t, "h", "/items/42x", &[]),
        None,
        "regexes match the whole path"
    );
    assert_eq!(find(&t, "h", "/case/x", &[]), Some("insensitive"));
    assert_eq!(
        find(&t, "h", "/x", &[("x-version", "V2")]),
        Some("by-header")
    );
    assert_eq!(
        find(&t, "h", "/x", &[("x-version", "v2"), ("x-debug", "1")]),
        None,
        "inverted match"
    );
    assert_eq!(find(&t, "h", "/x?debug&user=17", &[]), Some("by-query"));
    assert_eq!(find(&t, "h", "/x?debug&user=ab", &[]), None);
    assert_eq!(find(&t, "h", "/api/v1?user=1", &[]), Some("api"));
}

#[test]
fn rewrites() {
    let t = table(vec![vhost(
        "v",
        &["*"],
        vec![
            route("p", PathMatch::Prefix("/old/".into()), fwd(Some("/"), None)),
            route(
                "q",
                PathMatch::Prefix("/keep".into()),
                fwd(Some("/new"), None),
            ),
            route(
                "r",
                PathMatch::Prefix("/re/".into()),
                fwd(None, Some(("/re/([a-z]+)/([0-9]+)", "/\\2/\\1"))),
            ),
        ],
    )]);
    let vh = t.virtual_host("h").unwrap();
    let rw = |i: usize, p: &str, q: Option<&str>| vh.routes[i].rewrite_path(p, q).unwrap();
    assert_eq!(rw(0, "/old/a/b", Some("x=1")), "/a/b?x=1");
    assert_eq!(rw(1, "/keep/this", None), "/new/this");
    assert_eq!(rw(2, "/re/abc/123", None), "/123/abc");
    assert_eq!(re2_substitution("a$b\\1\\\\"), "a$$b${1}\\");
}

#[test]
fn header_edits_most_specific_first_least_specific_wins() {
    let add = |n: &str, v: &str, a| HeaderAdd {
        name: n.into(),
        value: v.into(),
        append: a,
    };
    let route_level = HeaderEdits {
        request_add: vec![
            add("x-a", "route", AppendAction::OverwriteIfExistsOrAdd),
            add("x-b", "route", AppendAction::AddIfAbsent),
        ],
        request_remove: vec!["x-drop".into()],
        ..Default::default()
    };
    let global = HeaderEdits {
        request_add: vec![
            add("x-a", "global", AppendAction::OverwriteIfExistsOrAdd),
            add("x-c", "1", AppendAction::AppendIfExistsOrAdd),
            add("x-none", "1", AppendAction::OverwriteIfExists),
        ],
        ..Default::default()
    };
    let levels = [route_level, HeaderEdits::default(), global];
    let mut h: HeaderList = vec![
        (b"x-drop", b"1"[..].into()),
        (b"x-b", b"client"[..].into()),
        (b"x-c", b"0"[..].into()),
    ];
    apply_edits(&mut h, &levels, false);
    let get = |n: &str| {
        h.iter()
            .filter(|(k, _)| *k == n.as_bytes())
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-drop"), Vec::<&str>::new());
    assert_eq!(get("x-a"), ["global"]);
    assert_eq!(get("x-b"), ["client"]);
    assert_eq!(get("x-c"), ["0", "1"]);
    assert_eq!(get("x-none"), Vec::<&str>::new());
}
