use super::*;

fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// Captured from a real kernel: Debian's user-mode-linux 6.1.176 (CONFIG_TLS=m) booted by
/// tests/vm/run-in-uml.sh, running crates/probe/tests/ktls_guest.rs, which opens a rustls TLS
/// 1.3 connection to itself (AES-128-GCM), switches both ends to kTLS and prints each socket's
/// `INET_DIAG_ULP_INFO` payload from a sock_diag dump (`raw_ulp_payloads`). Both ends gave
/// these same 44 bytes (x86-64, little-endian).
const CAPTURED_UML_6_1_TLS13_SW: &[u8] = &[
    0x08, 0x00, 0x01, 0x00, b't', b'l', b's', 0x00, // INET_ULP_INFO_NAME "tls"
    0x24, 0x00, 0x02, 0x00, // INET_ULP_INFO_TLS, 36 bytes
    0x06, 0x00, 0x01, 0x00, 0x04, 0x03, 0x00, 0x00, // TLS_INFO_VERSION 0x0304
    0x06, 0x00, 0x02, 0x00, 0x33, 0x00, 0x00, 0x00, // TLS_INFO_CIPHER 51 (AES-GCM-128)
    0x06, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, // TLS_INFO_TXCONF TLS_CONF_SW
    0x06, 0x00, 0x04, 0x00, 0x02, 0x00, 0x00, 0x00, // TLS_INFO_RXCONF TLS_CONF_SW
];

#[test]
fn captured_kernel_bytes_software_tls13() {
    let u = parse(CAPTURED_UML_6_1_TLS13_SW).expect("the kernel's own bytes parse");
    let t = u.tls.expect("tls info");
    assert_eq!(u.name, "tls");
    assert_eq!((t.tx, t.rx, t.version, t.cipher), (TlsConf::Sw, TlsConf::Sw, Some(0x0304), Some(51)));
    assert_eq!((t.version_label().as_str(), t.cipher_label().as_str()), ("1.3", "AES-GCM-128"));
    assert!(!t.zerocopy_tx && !t.rx_no_pad);
    // Every strict prefix is either an error or (cut between attributes) lacks the TLS facts.
    for cut in 0..CAPTURED_UML_6_1_TLS13_SW.len() {
        let r = parse(&CAPTURED_UML_6_1_TLS13_SW[..cut]);
        assert!(r.is_err() || r.as_ref().is_ok_and(|u| u.tls.is_none()), "prefix {cut}: {r:?}");
    }
    // Flipped bytes anywhere: no panic.
    for i in 0..CAPTURED_UML_6_1_TLS13_SW.len() {
        let mut b = CAPTURED_UML_6_1_TLS13_SW.to_vec();
        b[i] ^= 0xff;
        let _ = parse(&b);
    }
}

#[test]
fn synthetic_tls_hw_record() {
    let mut tls = attr(TLS_INFO_VERSION, &0x0303u16.to_ne_bytes());
    tls.extend(attr(TLS_INFO_CIPHER, &52u16.to_ne_bytes()));
    tls.extend(attr(TLS_INFO_TXCONF, &4u16.to_ne_bytes()));
    tls.extend(attr(TLS_INFO_RXCONF, &3u16.to_ne_bytes()));
    tls.extend(attr(TLS_INFO_ZC_RO_TX, &[]));
    let mut p = attr(INET_ULP_INFO_NAME, b"tls\0");
    p.extend(attr(INET_ULP_INFO_TLS | 0x8000, &tls));
    let u = parse(&p).expect("well-formed");
    let t = u.tls.expect("tls info");
    assert_eq!(
        (u.name.as_str(), t.tx, t.rx, t.zerocopy_tx, t.rx_no_pad),
        ("tls", TlsConf::HwRecord, TlsConf::Hw, true, false)
    );
    assert_eq!((t.version_label().as_str(), t.cipher_label().as_str()), ("1.2", "AES-GCM-256"));
}

#[test]
fn mptcp_has_a_name_and_no_tls() {
    let u = parse(&attr(INET_ULP_INFO_NAME, b"mptcp\0")).expect("name only");
    assert_eq!((u.name.as_str(), u.tls), ("mptcp", None));
}

#[test]
fn malformed_inputs_are_errors() {
    let name = attr(INET_ULP_INFO_NAME, b"tls\0");
    assert_eq!(parse(&[]), Err(UlpError::MissingName));
    assert!(matches!(parse(&name[..3]), Err(UlpError::Truncated { .. })));
    assert!(matches!(parse(&name[..6]), Err(UlpError::Truncated { .. })));
    assert!(matches!(parse(&[2, 0, 1, 0]), Err(UlpError::BadLength { len: 2, .. })));
    assert_eq!(parse(&attr(INET_ULP_INFO_NAME, b"tls")), Err(UlpError::BadName), "no NUL");
    assert_eq!(parse(&attr(INET_ULP_INFO_NAME, b"\xff\0")), Err(UlpError::BadName));
    let mut bad_version = name.clone();
    bad_version.extend(attr(INET_ULP_INFO_TLS, &attr(TLS_INFO_VERSION, &[1, 2, 3])));
    assert_eq!(parse(&bad_version), Err(UlpError::BadValue { kind: "TLS_INFO_VERSION", len: 3, want: 2 }));
    let mut no_conf = name.clone();
    no_conf.extend(attr(INET_ULP_INFO_TLS, &attr(TLS_INFO_TXCONF, &2u16.to_ne_bytes())));
    assert_eq!(parse(&no_conf), Err(UlpError::MissingConf("TLS_INFO_RXCONF")));
    let mut nested_trunc = name;
    nested_trunc.extend(attr(INET_ULP_INFO_TLS, &[8, 0, 1, 0, 4]));
    assert!(matches!(parse(&nested_trunc), Err(UlpError::Truncated { .. })));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn every_truncation_of_a_valid_payload_is_handled(cut in 0usize..64) {
        let mut tls = attr(TLS_INFO_VERSION, &0x0304u16.to_ne_bytes());
        tls.extend(attr(TLS_INFO_TXCONF, &2u16.to_ne_bytes()));
        tls.extend(attr(TLS_INFO_RXCONF, &2u16.to_ne_bytes()));
        let mut p = attr(INET_ULP_INFO_NAME, b"tls\0");
        p.extend(attr(INET_ULP_INFO_TLS, &tls));
        let cut = cut.min(p.len());
        let r = parse(&p[..cut]);
        proptest::prop_assert!(cut == p.len() || r.is_err() || r.as_ref().is_ok_and(|u| u.tls.is_none()), "{cut}: {r:?}");
    }
}
