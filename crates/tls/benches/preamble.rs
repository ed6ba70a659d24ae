//! Preamble cost: what each mesh connection pays to name its service and hear back, before kTLS.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use weir_tls::preamble::{Protocol, Request, Status, REQUEST_HEADER_LEN};

fn decode(bytes: &[u8]) -> Request {
    let header: &[u8; REQUEST_HEADER_LEN] =
        bytes[..REQUEST_HEADER_LEN].try_into().expect("encoded request has a header");
    let more = Request::decode_header(header).expect("valid header");
    Request::decode_body(&bytes[REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + more]).expect("valid body")
}

fn preamble(c: &mut Criterion) {
    let req = Request { service: "checkout.payments.svc.cluster.local".to_owned(), protocol: Protocol::Http1 };
    let encoded = req.encode().expect("valid request");
    assert_eq!(decode(&encoded), req);

    let mut g = c.benchmark_group("preamble");
    g.throughput(Throughput::Elements(1));
    g.bench_function("request_encode", |b| b.iter(|| black_box(&req).encode().expect("valid request")));
    g.bench_function("request_decode", |b| b.iter(|| decode(black_box(&encoded))));
    g.bench_function("request_round_trip", |b| b.iter(|| decode(&black_box(&req).encode().expect("valid request"))));
    g.bench_function("status_encode", |b| b.iter(|| black_box(Status::Denied).encode()));
    let status = Status::Ok.encode();
    g.bench_function("status_decode", |b| b.iter(|| Status::decode(black_box(&status)).expect("valid status")));
    g.finish();
}

criterion_group!(benches, preamble);
criterion_main!(benches);
