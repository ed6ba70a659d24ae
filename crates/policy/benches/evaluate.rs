//! L7 decision cost: what the HTTP path pays per request head to normalize the target, walk the
//! rules and charge the rate limit.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use weir_identity::SpiffeId;
use weir_policy::{
    decide, normalize_path, Action, HeaderMatch, HttpPolicy, HttpRule, HttpVerdict, PathMatch, RateLimit, RateLimiter,
    RequestFacts,
};

fn id(s: &str) -> SpiffeId {
    s.parse().expect("valid SPIFFE ID")
}

fn rule(from: &[&SpiffeId], methods: &[&str], path: PathMatch, headers: Vec<HeaderMatch>, action: Action) -> HttpRule {
    HttpRule {
        from: from.iter().map(|&s| s.clone()).collect(),
        methods: methods.iter().map(|&m| m.to_owned()).collect(),
        path,
        headers,
        action,
    }
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.to_owned())
}

/// Ten rules in the order an operator would write them: blanket denies first, then a header
/// deny every request is checked against, then per-identity allows; default deny.
fn policy(web: &SpiffeId, batch: &SpiffeId, admin: &SpiffeId) -> HttpPolicy {
    let header =
        |name: &str, value: Option<&[u8]>| HeaderMatch { name: name.to_owned(), value: value.map(<[u8]>::to_vec) };
    let p = HttpPolicy {
        rules: vec![
            rule(&[], &[], prefix("/admin"), vec![], Action::Deny),
            rule(&[], &[], prefix("/internal/"), vec![], Action::Deny),
            rule(&[], &[], PathMatch::Any, vec![header("x-debug-override", None)], Action::Deny),
            rule(&[], &["GET"], PathMatch::Exact("/healthz".to_owned()), vec![], Action::Allow),
            rule(&[admin], &[], prefix("/api/v2"), vec![], Action::Allow),
            rule(&[web, batch], &["POST"], prefix("/api/v1/orders"), vec![], Action::Allow),
            rule(&[batch], &["PUT", "DELETE"], prefix("/api/v1/jobs"), vec![], Action::Allow),
            rule(&[web], &["GET"], prefix("/api/v1/tenants"), vec![header("x-tenant", Some(b"acme"))], Action::Allow),
            rule(&[web], &["GET", "HEAD"], prefix("/api/v1/users"), vec![], Action::Allow),
            rule(&[], &["GET"], prefix("/static/"), vec![], Action::Allow),
        ],
        default: Action::Deny,
        rate_limits: vec![
            RateLimit {
                from: Some(batch.clone()),
                path_prefix: "/api/v1/jobs".to_owned(),
                per_second: 100,
                burst: 200,
            },
            // High enough that a few µs of fake time per iteration always refills the bucket.
            RateLimit { from: None, path_prefix: "/api".to_owned(), per_second: 1_000_000, burst: 1_000 },
        ],
    };
    p.validate().expect("bench policy is valid");
    p
}

fn headers() -> Vec<(String, Vec<u8>)> {
    [
        ("Host", "users.mesh.internal"),
        ("User-Agent", "curl/8.5.0"),
        ("Accept", "application/json"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Connection", "keep-alive"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("X-Request-Id", "3b1f6c9e-8f0b-4b7e-9b3a-2f4c1d7e6a5b"),
        ("X-Tenant", "acme"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.as_bytes().to_vec()))
    .collect()
}

const CLEAN: &str = "/api/v1/users/abc?include=profile";
const MESSY: &str = "/api//v1/./users/%61bc";

fn policy_benches(c: &mut Criterion) {
    let web = id("spiffe://weir.local/ns/default/sa/web");
    let batch = id("spiffe://weir.local/ns/default/sa/batch");
    let admin = id("spiffe://weir.local/ns/ops/sa/admin");
    let stranger = id("spiffe://weir.local/ns/other/sa/stranger");
    let policy = policy(&web, &batch, &admin);
    let headers = headers();
    let facts = |source, method, target| RequestFacts { source, method, target, headers: &headers };

    // (name, request, expected verdict): checked once up front so the loop measures the real path.
    let cases = [
        ("allow_typical", facts(&web, "GET", CLEAN), HttpVerdict::Allow),
        ("allow_needs_normalization", facts(&web, "GET", MESSY), HttpVerdict::Allow),
        ("deny_prefix_first_rule", facts(&web, "GET", "/admin/settings"), HttpVerdict::Deny { rule: Some(0) }),
        ("default_deny_all_rules", facts(&stranger, "PATCH", "/api/v1/users/abc"), HttpVerdict::Deny { rule: None }),
    ];

    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    for (name, f, expected) in &cases {
        let mut limiter = RateLimiter::new();
        let mut now = Instant::now();
        assert_eq!(decide(&policy, &mut limiter, f, now), *expected, "{name}");
        g.bench_function(*name, |b| {
            b.iter(|| {
                now += Duration::from_micros(2);
                decide(&policy, &mut limiter, black_box(f), now)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("evaluate");
    g.throughput(Throughput::Elements(1));
    for (name, f, expected) in &cases {
        assert_eq!(policy.evaluate(f), *expected, "{name}");
        g.bench_function(*name, |b| b.iter(|| policy.evaluate(black_box(f))));
    }
    g.finish();

    let mut g = c.benchmark_group("normalize_path");
    g.throughput(Throughput::Elements(1));
    assert_eq!(normalize_path(MESSY).as_deref(), Ok("/api/v1/users/abc"));
    g.bench_function("clean", |b| b.iter(|| normalize_path(black_box(CLEAN))));
    g.bench_function("needs_normalization", |b| b.iter(|| normalize_path(black_box(MESSY))));
    g.finish();
}

criterion_group!(benches, policy_benches);
criterion_main!(benches);
