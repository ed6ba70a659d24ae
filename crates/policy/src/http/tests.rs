use super::*;
use std::time::Duration;

fn id(s: &str) -> SpiffeId {
    s.parse().expect("valid test id")
}

fn alice() -> SpiffeId {
    id("spiffe://td/ns/x/sa/alice")
}

fn bob() -> SpiffeId {
    id("spiffe://td/ns/x/sa/bob")
}

fn rule(action: Action, path: PathMatch) -> HttpRule {
    HttpRule { from: vec![], methods: vec![], path, headers: vec![], action }
}

fn policy(rules: Vec<HttpRule>, default: Action) -> HttpPolicy {
    HttpPolicy { rules, default, rate_limits: vec![] }
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.to_owned())
}

fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.to_owned())
}

fn eval(p: &HttpPolicy, source: &SpiffeId, method: &str, target: &str) -> HttpVerdict {
    p.evaluate(&RequestFacts { source, method, target, headers: &[] })
}

fn eval_headers(p: &HttpPolicy, headers: &[(&str, &str)]) -> HttpVerdict {
    let headers: Vec<(String, Vec<u8>)> = headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect();
    p.evaluate(&RequestFacts { source: &alice(), method: "GET", target: "/", headers: &headers })
}

const DENY_DEFAULT: HttpVerdict = HttpVerdict::Deny { rule: None };

#[test]
fn first_matching_rule_wins() {
    let p = policy(vec![rule(Action::Deny, prefix("/admin")), rule(Action::Allow, PathMatch::Any)], Action::Deny);
    assert_eq!(eval(&p, &alice(), "GET", "/admin/users"), HttpVerdict::Deny { rule: Some(0) });
    assert_eq!(eval(&p, &alice(), "GET", "/public"), HttpVerdict::Allow);

    let p = policy(vec![rule(Action::Allow, PathMatch::Any), rule(Action::Deny, prefix("/admin"))], Action::Deny);
    assert_eq!(eval(&p, &alice(), "GET", "/admin/users"), HttpVerdict::Allow, "the earlier allow shadows the deny");

    let p = policy(vec![rule(Action::Allow, exact("/a")), rule(Action::Deny, PathMatch::Any)], Action::Allow);
    assert_eq!(eval(&p, &alice(), "GET", "/b"), HttpVerdict::Deny { rule: Some(1) }, "index of the matching rule");
}

#[test]
fn default_applies_when_no_rule_matches() {
    assert_eq!(eval(&policy(vec![], Action::Allow), &alice(), "GET", "/x"), HttpVerdict::Allow);
    assert_eq!(eval(&policy(vec![], Action::Deny), &alice(), "GET", "/x"), DENY_DEFAULT);
    let p = policy(vec![rule(Action::Allow, exact("/ok"))], Action::Deny);
    assert_eq!(eval(&p, &alice(), "GET", "/ok"), HttpVerdict::Allow);
    assert_eq!(eval(&p, &alice(), "GET", "/other"), DENY_DEFAULT);
    let p = policy(vec![rule(Action::Deny, exact("/no"))], Action::Allow);
    assert_eq!(eval(&p, &alice(), "GET", "/no"), HttpVerdict::Deny { rule: Some(0) });
    assert_eq!(eval(&p, &alice(), "GET", "/other"), HttpVerdict::Allow);
}

#[test]
fn from_and_methods() {
    let mut r = rule(Action::Allow, PathMatch::Any);
    r.from = vec![alice()];
    r.methods = vec!["GET".into(), "HEAD".into()];
    let p = policy(vec![r], Action::Deny);
    assert_eq!(eval(&p, &alice(), "GET", "/"), HttpVerdict::Allow);
    assert_eq!(eval(&p, &alice(), "HEAD", "/"), HttpVerdict::Allow);
    assert_eq!(eval(&p, &alice(), "POST", "/"), DENY_DEFAULT);
    assert_eq!(eval(&p, &alice(), "get", "/"), DENY_DEFAULT, "methods are case-sensitive");
    assert_eq!(eval(&p, &bob(), "GET", "/"), DENY_DEFAULT);
    assert_eq!(eval(&p, &id("spiffe://other/ns/x/sa/alice"), "GET", "/"), DENY_DEFAULT);
}

#[test]
fn exact_and_segment_aware_prefix() {
    let p = policy(vec![rule(Action::Allow, exact("/a"))], Action::Deny);
    assert_eq!(eval(&p, &alice(), "GET", "/a"), HttpVerdict::Allow);
    for t in ["/a/", "/a/b", "/ab", "/"] {
        assert_eq!(eval(&p, &alice(), "GET", t), DENY_DEFAULT, "{t}");
    }

    let p = policy(vec![rule(Action::Allow, prefix("/api"))], Action::Deny);
    for t in ["/api", "/api/", "/api/x/y", "/api?q=1"] {
        assert_eq!(eval(&p, &alice(), "GET", t), HttpVerdict::Allow, "{t}");
    }
    for t in ["/apix", "/ap", "/", "/x/api"] {
        assert_eq!(eval(&p, &alice(), "GET", t), DENY_DEFAULT, "{t}");
    }

    let p = policy(vec![rule(Action::Allow, prefix("/api/"))], Action::Deny);
    assert_eq!(eval(&p, &alice(), "GET", "/api/x"), HttpVerdict::Allow);
    assert_eq!(eval(&p, &alice(), "GET", "/api"), DENY_DEFAULT, "a '/'-terminated prefix is a string prefix");

    let p = policy(vec![rule(Action::Allow, prefix("/"))], Action::Deny);
    assert_eq!(eval(&p, &alice(), "GET", "/anything/at/all"), HttpVerdict::Allow);
}

#[test]
fn header_conditions() {
    let mut r = rule(Action::Allow, PathMatch::Any);
    r.headers = vec![
        HeaderMatch { name: "X-Role".into(), value: Some(b"admin".to_vec()) },
        HeaderMatch { name: "x-trace".into(), value: None },
    ];
    let p = policy(vec![r], Action::Deny);
    assert_eq!(eval_headers(&p, &[("x-role", "admin"), ("X-TRACE", "")]), HttpVerdict::Allow, "names case-insensitive");
    assert_eq!(eval_headers(&p, &[("X-Role", "admin")]), DENY_DEFAULT, "all conditions must hold");
    assert_eq!(eval_headers(&p, &[("x-trace", "1")]), DENY_DEFAULT);
    assert_eq!(eval_headers(&p, &[("x-role", "Admin"), ("x-trace", "1")]), DENY_DEFAULT, "values are exact");
    assert_eq!(eval_headers(&p, &[("x-role", "admin "), ("x-trace", "1")]), DENY_DEFAULT);
    assert_eq!(eval_headers(&p, &[("x-roles", "admin"), ("x-trace", "1")]), DENY_DEFAULT, "name is exact too");
    assert_eq!(
        eval_headers(&p, &[("x-role", "user"), ("x-role", "admin"), ("x-trace", "1")]),
        HttpVerdict::Allow,
        "any field of a repeated name may match"
    );
}

#[test]
fn every_condition_of_a_rule_is_required() {
    let mut deny = rule(Action::Deny, prefix("/admin"));
    deny.from = vec![bob()];
    deny.methods = vec!["DELETE".into()];
    deny.headers = vec![HeaderMatch { name: "x-force".into(), value: Some(b"1".to_vec()) }];
    let p = policy(vec![deny], Action::Allow);
    let run = |source: &SpiffeId, method: &str, target: &str, force: &str| {
        let headers = [("X-Force".to_owned(), force.as_bytes().to_vec())];
        p.evaluate(&RequestFacts { source, method, target, headers: &headers })
    };
    assert_eq!(run(&bob(), "DELETE", "/admin/x", "1"), HttpVerdict::Deny { rule: Some(0) });
    assert_eq!(run(&alice(), "DELETE", "/admin/x", "1"), HttpVerdict::Allow);
    assert_eq!(run(&bob(), "GET", "/admin/x", "1"), HttpVerdict::Allow);
    assert_eq!(run(&bob(), "DELETE", "/public", "1"), HttpVerdict::Allow);
    assert_eq!(run(&bob(), "DELETE", "/admin/x", "0"), HttpVerdict::Allow);
}

#[test]
fn normalization_table() {
    let ok = [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/a?x=/../admin", "/a"),
        ("/a#frag", "/a"),
        ("/./admin", "/admin"),
        ("//admin", "/admin"),
        ("///admin//x", "/admin/x"),
        ("/x/../admin", "/admin"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/..", "/"),
        ("/../../admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/%41%7a%30%2D%2e%5f%7E", "/Az0-._~"),
        ("/%2e%2e/admin", "/admin"),
        ("/x/%2E%2e/admin", "/admin"),
        ("/x/.%2e/admin", "/admin"),
        ("/%2e/admin", "/admin"),
        ("/a%20b", "/a%20b"),
        ("/a%3f%3Fb", "/a%3F%3Fb"),
        ("/%c3%a9", "/%C3%A9"),
        ("/%252e%252e/admin", "/%252e%252e/admin"),
        ("/...", "/..."),
        ("/.hidden", "/.hidden"),
        ("http://example.com/a/../admin?q", "/admin"),
        ("HTTPS://example.com:8443//admin", "/admin"),
        ("http://example.com", "/"),
        ("http://example.com?x", "/"),
        ("*", "*"),
    ];
    for (input, want) in ok {
        let got = normalize_path(input);
        assert_eq!(got.as_deref(), Ok(want), "{input}");
        assert_eq!(normalize_path(want).as_deref(), Ok(want), "normalization is idempotent for {input}");
    }

    let rejected = [
        "/admin%2Fx",
        "/admin%2fx",
        "/a%5Cb",
        "/a%5cb",
        "/a\\b",
        "/a%00b",
        "/%zz",
        "/%2",
        "/%",
        "/%%41",
        "admin",
        "",
        "?x",
        "example.com:443",
        "ftp://host/admin",
        "http:/admin",
        "/a b",
        "/a\tb",
        "/caf\u{e9}",
        "http://host\\/admin",
    ];
    for input in rejected {
        assert!(normalize_path(input).is_err(), "{input:?} should be rejected, got {:?}", normalize_path(input));
    }
}

#[test]
fn deny_on_admin_catches_every_bypass_variant() {
    let variants = [
        "/admin",
        "/admin/",
        "/admin/users",
        "/./admin",
        "//admin",
        "/x/../admin",
        "/%61dmin",
        "/%61%64%6D%69%6E/x",
        "/%2e%2e/admin",
        "/x/%2e%2E/admin",
        "/admin/./",
        "/admin?debug=1",
        "/admin#top",
        "http://evil.example/admin",
        "http://evil.example//x/../admin",
    ];
    let p = policy(vec![rule(Action::Deny, prefix("/admin")), rule(Action::Allow, PathMatch::Any)], Action::Deny);
    let mut limiter = RateLimiter::new();
    let now = Instant::now();
    for target in variants {
        let facts = RequestFacts { source: &alice(), method: "GET", target, headers: &[] };
        assert_eq!(decide(&p, &mut limiter, &facts, now), HttpVerdict::Deny { rule: Some(0) }, "{target}");
    }
    for target in ["/admin%2Fx", "/admin\\x", "/%zzadmin", "/admin%00"] {
        let facts = RequestFacts { source: &alice(), method: "GET", target, headers: &[] };
        let v = decide(&p, &mut limiter, &facts, now);
        assert!(matches!(v, HttpVerdict::BadTarget(_)), "{target}: {v:?}");
        assert_eq!(v.status(), 400);
    }
    let facts = RequestFacts { source: &alice(), method: "GET", target: "/administrator", headers: &[] };
    assert_eq!(decide(&p, &mut limiter, &facts, now), HttpVerdict::Allow, "prefix is segment-aware");

    let p = policy(vec![rule(Action::Deny, exact("/admin")), rule(Action::Allow, PathMatch::Any)], Action::Deny);
    for target in ["/./admin", "//admin", "/x/../admin", "/%61dmin", "/%2e%2e/admin", "http://h/admin?x"] {
        assert_eq!(eval(&p, &alice(), "GET", target), HttpVerdict::Deny { rule: Some(0) }, "{target}");
    }
}

#[test]
fn asterisk_target_only_for_options() {
    let p = policy(vec![], Action::Allow);
    assert_eq!(eval(&p, &alice(), "OPTIONS", "*"), HttpVerdict::Allow);
    assert!(matches!(eval(&p, &alice(), "GET", "*"), HttpVerdict::BadTarget(_)));
    let p = policy(vec![rule(Action::Allow, prefix("/"))], Action::Deny);
    assert_eq!(eval(&p, &alice(), "OPTIONS", "*"), DENY_DEFAULT, "* is not a path under /");
}

#[test]
fn status_and_labels() {
    let cases = [
        (HttpVerdict::Allow, 200, "allow"),
        (HttpVerdict::Deny { rule: Some(3) }, 403, "deny"),
        (DENY_DEFAULT, 403, "deny"),
        (HttpVerdict::BadTarget("x"), 400, "bad_target"),
        (HttpVerdict::RateLimited { retry_after_secs: 2 }, 429, "rate_limited"),
    ];
    for (v, status, label) in cases {
        assert_eq!((v.status(), v.as_label()), (status, label), "{v:?}");
    }
}

#[test]
fn validate_flags_rules_that_cannot_match() {
    let limit = |path_prefix: &str, per_second, burst| RateLimit {
        from: None,
        path_prefix: path_prefix.into(),
        per_second,
        burst,
    };
    let good = HttpPolicy {
        rules: vec![rule(Action::Deny, prefix("/admin")), rule(Action::Allow, exact("/a%20b"))],
        default: Action::Deny,
        rate_limits: vec![limit("/api", 1, 1)],
    };
    assert_eq!(good.validate(), Ok(()));
    for path in
        [exact("/%61dmin"), prefix("/a/../b"), prefix("//admin"), exact("/a%2Fb"), prefix("admin"), exact("/a?x")]
    {
        let p = policy(vec![rule(Action::Deny, path.clone())], Action::Allow);
        assert!(p.validate().is_err(), "{path:?}");
    }
    let mut r = rule(Action::Deny, PathMatch::Any);
    r.headers = vec![HeaderMatch { name: String::new(), value: None }];
    assert!(policy(vec![r], Action::Allow).validate().is_err());
    for bad in [limit("/api", 0, 1), limit("/api", 1, 0), limit("/%61pi", 1, 1)] {
        let p = HttpPolicy { rules: vec![], default: Action::Allow, rate_limits: vec![bad.clone()] };
        assert!(p.validate().is_err(), "{bad:?}");
    }
}

fn limited(from: Option<SpiffeId>, path_prefix: &str, per_second: u32, burst: u32) -> HttpPolicy {
    HttpPolicy {
        rules: vec![],
        default: Action::Allow,
        rate_limits: vec![RateLimit { from, path_prefix: path_prefix.into(), per_second, burst }],
    }
}

#[test]
fn burst_then_limited_then_refilled() {
    let p = limited(None, "/api", 2, 3);
    let mut l = RateLimiter::new();
    let t0 = Instant::now();
    for i in 0..3 {
        assert_eq!(l.check(&p, &alice(), "/api/x", t0), Ok(()), "request {i} within burst");
    }
    let retry = l.check(&p, &alice(), "/api/x", t0).expect_err("burst exhausted");
    assert!(retry >= 1);
    assert_eq!(l.check(&p, &alice(), "/other", t0), Ok(()), "other routes are not limited");

    // 2/s: a token every 500ms.
    assert!(l.check(&p, &alice(), "/api", t0 + Duration::from_millis(499)).is_err());
    assert_eq!(l.check(&p, &alice(), "/api", t0 + Duration::from_millis(500)), Ok(()));
    assert!(l.check(&p, &alice(), "/api", t0 + Duration::from_millis(500)).is_err());

    // Idle for a long time refills only up to the burst.
    let later = t0 + Duration::from_secs(3600);
    for _ in 0..3 {
        assert_eq!(l.check(&p, &alice(), "/api", later), Ok(()));
    }
    assert!(l.check(&p, &alice(), "/api", later).is_err());

    // A clock that goes backwards neither panics nor refills.
    assert!(l.check(&p, &alice(), "/api", t0).is_err());
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    let p = limited(None, "/", 1, 1);
    let mut l = RateLimiter::new();
    let t0 = Instant::now();
    assert_eq!(l.check(&p, &alice(), "/", t0), Ok(()));
    assert_eq!(l.check(&p, &alice(), "/", t0), Err(1));
    assert_eq!(l.check(&p, &alice(), "/", t0 + Duration::from_millis(999)), Err(1), "1ms left still says 1s");
    assert_eq!(l.check(&p, &alice(), "/", t0 + Duration::from_secs(1)), Ok(()));
}

#[test]
fn buckets_are_per_identity_and_per_limit() {
    let p = limited(None, "/api", 1, 1);
    let mut l = RateLimiter::new();
    let t0 = Instant::now();
    assert_eq!(l.check(&p, &alice(), "/api", t0), Ok(()));
    assert!(l.check(&p, &alice(), "/api", t0).is_err());
    assert_eq!(l.check(&p, &bob(), "/api", t0), Ok(()), "bob has his own bucket");
    assert!(l.check(&p, &bob(), "/api", t0).is_err());
    assert!(l.check(&p, &alice(), "/%61pi/x", t0).is_err(), "the path is normalized before matching");

    let mut p = limited(Some(alice()), "/api", 1, 1);
    p.rate_limits.push(RateLimit { from: None, path_prefix: "/api".into(), per_second: 1, burst: 2 });
    let mut l = RateLimiter::new();
    assert_eq!(l.check(&p, &alice(), "/api", t0), Ok(()));
    assert!(l.check(&p, &alice(), "/api", t0).is_err(), "alice gets the first (stricter) limit");
    for _ in 0..2 {
        assert_eq!(l.check(&p, &bob(), "/api", t0), Ok(()), "bob falls through to the second limit");
    }
    assert!(l.check(&p, &bob(), "/api", t0).is_err());
}

#[test]
fn decide_charges_only_allowed_requests() {
    let mut p = limited(None, "/", 1, 2);
    p.rules = vec![rule(Action::Deny, prefix("/admin"))];
    let mut l = RateLimiter::new();
    let t0 = Instant::now();
    let a = alice();
    let facts = |target| RequestFacts { source: &a, method: "GET", target, headers: &[] };
    for _ in 0..10 {
        assert_eq!(decide(&p, &mut l, &facts("/admin"), t0), HttpVerdict::Deny { rule: Some(0) });
        assert!(matches!(decide(&p, &mut l, &facts("/a%2Fb"), t0), HttpVerdict::BadTarget(_)));
    }
    assert_eq!(decide(&p, &mut l, &facts("/x"), t0), HttpVerdict::Allow);
    assert_eq!(decide(&p, &mut l, &facts("/x"), t0), HttpVerdict::Allow);
    let v = decide(&p, &mut l, &facts("/x"), t0);
    assert_eq!(v, HttpVerdict::RateLimited { retry_after_secs: 1 });
    assert_eq!(v.status(), 429);
    assert_eq!(decide(&p, &mut l, &facts("/admin"), t0), HttpVerdict::Deny { rule: Some(0) }, "deny still wins");
}

#[test]
fn bucket_map_is_bounded_and_fails_closed() {
    let p = limited(None, "/", 1, 2);
    let mut l = RateLimiter::new();
    let t0 = Instant::now();
    let sources: Vec<SpiffeId> = (0..MAX_BUCKETS).map(|i| id(&format!("spiffe://td/ns/x/sa/s{i}"))).collect();
    for s in &sources {
        assert_eq!(l.check(&p, s, "/", t0), Ok(()));
    }
    assert_eq!(l.len(), MAX_BUCKETS);

    // Every bucket is part-used, so none can be dropped: a new source is refused.
    assert_eq!(l.check(&p, &alice(), "/", t0), Err(1));
    assert_eq!(l.len(), MAX_BUCKETS);
    assert_eq!(l.check(&p, &sources[0], "/", t0), Ok(()), "known sources still get their bucket");

    // Once they have refilled they are idle and make room.
    let later = t0 + Duration::from_secs(5);
    assert_eq!(l.check(&p, &alice(), "/", later), Ok(()));
    assert_eq!(l.len(), 1);

    l.clear();
    assert!(l.is_empty());
}

#[test]
fn the_fast_path_for_normal_paths_agrees_with_full_normalization() {
    let paths = [
        "/",
        "/a",
        "/a/",
        "/a/b",
        "/a/b/",
        "/.a",
        "/..a",
        "/a/..b",
        "/a.b/c",
        "/a//",
        "//",
        "/a/.",
        "/a/..",
        "/./a",
        "/a/./b",
        "/a%20b",
        "/~x/y-z_1",
        "/a/b/../c",
    ];
    for p in paths {
        let full = super::remove_dot_segments(&super::decode_unreserved(p).expect("decodes"));
        if super::is_normal(p) {
            assert_eq!(full, p, "{p} was taken as normal");
        } else {
            assert_eq!(normalize_path(p).expect("normalizes"), full, "{p}");
        }
    }
}
