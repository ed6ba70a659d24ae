//! Head parsing cost: what the L7 path pays per request instead of touching the body.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use weir_http::{parse_request, parse_response, Limits, Parsed};

const REQUEST: &[u8] = b"GET /api/v1/users/12345?include=profile HTTP/1.1\r\n\
Host: users.mesh.internal\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
X-Request-Id: 3b1f6c9e-8f0b-4b7e-9b3a-2f4c1d7e6a5b\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: application/json\r\n\
Content-Length: 1024\r\n\
Cache-Control: no-cache\r\n\
Date: Fri, 27 Nov 2026 12:00:00 GMT\r\n\r\n";

fn heads(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("head");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_request_typical", |b| {
        b.iter(|| match parse_request(black_box(REQUEST), &limits) {
            Ok(Parsed::Complete { len, .. }) => len,
            other => panic!("{other:?}"),
        })
    });
    g.bench_function("parse_response_typical", |b| {
        b.iter(|| match parse_response(black_box(RESPONSE), &limits, "GET") {
            Ok(Parsed::Complete { len, .. }) => len,
            other => panic!("{other:?}"),
        })
    });
    // The floor: httparse alone, no framing checks, nothing owned.
    g.bench_function("httparse_only_baseline", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 100];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(black_box(REQUEST)).map(|s| s.is_complete())
        })
    });
    let Ok(Parsed::Complete { head, .. }) = parse_request(REQUEST, &limits) else { panic!("parses") };
    g.bench_function("encode_forwarded_request", |b| {
        b.iter(|| {
            weir_http::encode_request(
                black_box(&head),
                "/api/v1/users/12345?include=profile",
                &[("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01")],
            )
            .len()
        })
    });
    g.finish();
}

criterion_group!(benches, heads);
criterion_main!(benches);
