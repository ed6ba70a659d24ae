//! Property tests over untrusted bytes: the head parser and the chunk walker never panic, and
//! every chunked body we encode walks back to exactly its data. A short run is part of
//! `make test`; set PROPTEST_CASES for a long one.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use proptest::prelude::*;
use weir_http::chunked::{Decoder, Step};
use weir_http::{parse_request, parse_response, Limits};

fn walk(body: &[u8]) -> Option<Vec<u8>> {
    let mut d = Decoder::new();
    let (mut pos, mut data) = (0, Vec::new());
    loop {
        let (used, step) = d.advance(&body[pos..]).ok()?;
        pos += used;
        match step {
            Step::Done => return Some(data),
            Step::NeedMore => return None,
            Step::Data(n) => {
                let take = (n as usize).min(body.len() - pos);
                if take == 0 {
                    return None;
                }
                data.extend_from_slice(&body[pos..pos + take]);
                pos += take;
                d.data_moved(take as u64);
            }
        }
    }
}

/// 2000 cases per property in `make test`; `PROPTEST_CASES=N` for a long run.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let limits = Limits { max_head_bytes: 256, max_headers: 8 };
        let _ = parse_request(&bytes, &limits);
        let _ = parse_response(&bytes, &limits, "GET");
        let _ = walk(&bytes);
    }

    #[test]
    fn head_like_inputs_never_panic(
        method in "[A-Z]{1,7}",
        target in "/[ -~]{0,20}",
        fields in proptest::collection::vec(("[!-~]{1,12}", "[\\t -~]{0,20}"), 0..6),
        le in prop_oneof![Just("\r\n"), Just("\n"), Just("\r")],
    ) {
        let mut head = format!("{method} {target} HTTP/1.1{le}");
        for (n, v) in &fields {
            head.push_str(&format!("{n}: {v}{le}"));
        }
        head.push_str(le);
        let _ = parse_request(head.as_bytes(), &Limits::default());
    }

    #[test]
    fn encoded_chunked_bodies_walk_back_to_their_data(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..8)) {
        let mut body = Vec::new();
        for c in &chunks {
            body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            body.extend_from_slice(c);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        prop_assert_eq!(walk(&body), Some(chunks.concat()));
    }
}
