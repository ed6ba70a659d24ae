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

/// A nest as the kernel writes it (`nla_nest_start` sets NLA_F_NESTED).
fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    attr(kind | 0x8000, &parts.concat())
}

fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(payload);
    v
}

const QP_GET: u16 = (5 << 10) | 10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_MULTI: u16 = 2;

/// A user RC QP with attributes this parser skips (RQ_PSN, SQ_PSN, PATH_MIG_STATE, PDN and one
/// no kernel sends yet), and the kernel's GSI QP.
fn two_qps() -> Vec<u8> {
    let rc = nest(
        ATTR_RES_QP_ENTRY,
        &[
            attr(ATTR_PORT_INDEX, &1u32.to_ne_bytes()),
            attr(ATTR_RES_LQPN, &17u32.to_ne_bytes()),
            attr(73, &1u32.to_ne_bytes()),
            attr(ATTR_RES_PID, &162u32.to_ne_bytes()),
            attr(ATTR_RES_RQPN, &18u32.to_ne_bytes()),
            attr(23, &0x00b1_82e6u32.to_ne_bytes()),
            attr(24, &0x00b0_ada2u32.to_ne_bytes()),
            attr(25, &[3]),
            attr(ATTR_RES_TYPE, &[2]),
            attr(ATTR_RES_STATE, &[3]),
            attr(999, b"future"),
        ],
    );
    let gsi = nest(
        ATTR_RES_QP_ENTRY,
        &[
            attr(ATTR_PORT_INDEX, &1u32.to_ne_bytes()),
            attr(ATTR_RES_LQPN, &1u32.to_ne_bytes()),
            attr(ATTR_RES_KERN_NAME, b"ib_core\0"),
            attr(24, &0u32.to_ne_bytes()),
            attr(ATTR_RES_TYPE, &[1]),
            attr(ATTR_RES_STATE, &[3]),
        ],
    );
    [attr(ATTR_DEV_INDEX, &0u32.to_ne_bytes()), attr(ATTR_DEV_NAME, b"rxe0\0"), nest(ATTR_RES_QP, &[rc, gsi])].concat()
}

/// Captured from a real kernel: Debian's linux-image-amd64 6.1 in the qemu guest
/// (tests/vm/run-in-vm.sh), crates/probe/tests/rdma_guest.rs printing the `RES_QP_GET` dump of
/// `rxe0` while an `ibv_rc_pingpong` server (pid 147) and client (pid 150) were connected
/// (x86-64, little-endian).
const CAPTURED_QEMU_6_1_RXE_PINGPONG: &[u8] = &[
    0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, // DEV_INDEX 0
    0x09, 0x00, 0x02, 0x00, 0x72, 0x78, 0x65, 0x30, 0x00, 0x00, 0x00, 0x00, // DEV_NAME "rxe0"
    0xe4, 0x00, 0x13, 0x00, // RES_QP, 228 bytes (no NLA_F_NESTED on 6.1)
    0x54, 0x00, 0x14, 0x00, // RES_QP_ENTRY, 84 bytes: the server's QP
    0x08, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, // PORT_INDEX 1
    0x08, 0x00, 0x15, 0x00, 0x11, 0x00, 0x00, 0x00, // RES_LQPN 17
    0x08, 0x00, 0x3c, 0x00, 0x01, 0x00, 0x00, 0x00, // RES_PDN 1
    0x08, 0x00, 0x1c, 0x00, 0x93, 0x00, 0x00, 0x00, // RES_PID 147
    0x08, 0x00, 0x16, 0x00, 0x12, 0x00, 0x00, 0x00, // RES_RQPN 18
    0x08, 0x00, 0x17, 0x00, 0x8b, 0xd6, 0x49, 0x00, // RES_RQ_PSN
    0x08, 0x00, 0x18, 0x00, 0x21, 0x47, 0xb9, 0x00, // RES_SQ_PSN
    0x05, 0x00, 0x19, 0x00, 0x00, 0x00, 0x00, 0x00, // RES_PATH_MIG_STATE 0
    0x05, 0x00, 0x1a, 0x00, 0x02, 0x00, 0x00, 0x00, // RES_TYPE 2 (RC)
    0x05, 0x00, 0x1b, 0x00, 0x03, 0x00, 0x00, 0x00, // RES_STATE 3 (RTS)
    0x54, 0x00, 0x14, 0x00, // RES_QP_ENTRY, 84 bytes: the client's QP
    0x08, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, // PORT_INDEX 1
    0x08, 0x00, 0x15, 0x00, 0x12, 0x00, 0x00, 0x00, // RES_LQPN 18
    0x08, 0x00, 0x3c, 0x00, 0x02, 0x00, 0x00, 0x00, // RES_PDN 2
    0x08, 0x00, 0x1c, 0x00, 0x96, 0x00, 0x00, 0x00, // RES_PID 150
    0x08, 0x00, 0x16, 0x00, 0x11, 0x00, 0x00, 0x00, // RES_RQPN 17
    0x08, 0x00, 0x17, 0x00, 0x21, 0x47, 0xb9, 0x00, // RES_RQ_PSN
    0x08, 0x00, 0x18, 0x00, 0x8b, 0xd6, 0x49, 0x00, // RES_SQ_PSN
    0x05, 0x00, 0x19, 0x00, 0x00, 0x00, 0x00, 0x00, // RES_PATH_MIG_STATE 0
    0x05, 0x00, 0x1a, 0x00, 0x02, 0x00, 0x00, 0x00, // RES_TYPE 2 (RC)
    0x05, 0x00, 0x1b, 0x00, 0x03, 0x00, 0x00, 0x00, // RES_STATE 3 (RTS)
    0x38, 0x00, 0x14, 0x00, // RES_QP_ENTRY, 56 bytes: the kernel's GSI QP
    0x08, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, // PORT_INDEX 1
    0x08, 0x00, 0x15, 0x00, 0x01, 0x00, 0x00, 0x00, // RES_LQPN 1
    0x0c, 0x00, 0x1d, 0x00, 0x69, 0x62, 0x5f, 0x63, 0x6f, 0x72, 0x65, 0x00, // RES_KERN_NAME "ib_core"
    0x08, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, // RES_SQ_PSN 0
    0x05, 0x00, 0x1a, 0x00, 0x01, 0x00, 0x00, 0x00, // RES_TYPE 1 (GSI)
    0x05, 0x00, 0x1b, 0x00, 0x03, 0x00, 0x00, 0x00, // RES_STATE 3 (RTS)
];

#[test]
fn captured_kernel_bytes_two_pingpong_qps_and_the_gsi_qp() {
    let qps = parse_qps(CAPTURED_QEMU_6_1_RXE_PINGPONG).expect("the kernel's own bytes parse");
    let got: Vec<_> = qps
        .iter()
        .map(|q| {
            (
                q.device.as_str(),
                q.port,
                q.lqpn,
                q.rqpn,
                q.qp_type.name(),
                q.state.name(),
                q.pid,
                q.kernel_owner.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("rxe0", Some(1), 17, Some(18), "RC", "RTS", Some(147), None),
            ("rxe0", Some(1), 18, Some(17), "RC", "RTS", Some(150), None),
            ("rxe0", Some(1), 1, None, "GSI", "RTS", None, Some("ib_core")),
        ]
    );
}

#[test]
fn a_user_rc_qp_and_the_kernels_gsi_qp() {
    let qps = parse_qps(&two_qps()).expect("valid reply");
    assert_eq!(
        qps,
        [
            QueuePair {
                device: "rxe0".into(),
                port: Some(1),
                lqpn: 17,
                rqpn: Some(18),
                qp_type: QpType::RC,
                state: QpState::RTS,
                pid: Some(162),
                kernel_owner: None,
            },
            QueuePair {
                device: "rxe0".into(),
                port: Some(1),
                lqpn: 1,
                rqpn: None,
                qp_type: QpType(1),
                state: QpState::RTS,
                pid: None,
                kernel_owner: Some("ib_core".into()),
            },
        ]
    );
    assert_eq!((qps[0].qp_type.name(), qps[1].qp_type.name(), qps[0].state.name()), ("RC", "GSI", "RTS"));
}

#[test]
fn names_of_types_and_states() {
    assert_eq!(QpType(4).name(), "UD");
    assert_eq!(QpType(0xff).name(), "DRIVER");
    assert_eq!(QpType(42).name(), "UNKNOWN");
    assert_eq!(QpState(1).name(), "INIT");
    assert_eq!(QpState(6).name(), "ERR");
    assert_eq!(QpState(200).name(), "UNKNOWN");
}

#[test]
fn every_truncation_is_an_error_or_a_shorter_list_never_a_panic() {
    let full = two_qps();
    for cut in 0..full.len() {
        if let Ok(qps) = parse_qps(&full[..cut]) {
            // Only a cut between top-level attributes can parse, and it loses whole QPs.
            assert!(qps.len() < 2, "cut at {cut} gave {qps:?}");
        }
    }
    // Cut inside the QP table: the table's length points past the end.
    let err = parse_qps(&full[..full.len() - 6]).expect_err("truncated table");
    assert!(err.to_string().starts_with("malformed RDMA netlink reply"), "{err}");
}

#[test]
fn malformed_entries_are_errors() {
    let name = attr(ATTR_DEV_NAME, b"rxe0\0");
    let no_lqpn =
        nest(ATTR_RES_QP, &[nest(ATTR_RES_QP_ENTRY, &[attr(ATTR_RES_TYPE, &[2]), attr(ATTR_RES_STATE, &[3])])]);
    let err = parse_qps(&[name.clone(), no_lqpn].concat()).expect_err("no LQPN");
    assert!(err.to_string().contains("without RES_LQPN"), "{err}");
    let short_lqpn = nest(ATTR_RES_QP, &[nest(ATTR_RES_QP_ENTRY, &[attr(ATTR_RES_LQPN, &[1, 0])])]);
    let err = parse_qps(&[name.clone(), short_lqpn].concat()).expect_err("2-byte LQPN");
    assert!(err.to_string().contains("RES_LQPN: 2 bytes, 4 expected"), "{err}");
    let wide_type = nest(ATTR_RES_QP, &[nest(ATTR_RES_QP_ENTRY, &[attr(ATTR_RES_TYPE, &2u32.to_ne_bytes())])]);
    assert!(parse_qps(&[name, wide_type].concat()).is_err());
    let err = parse_qps(&nest(ATTR_RES_QP, &[])).expect_err("no device name");
    assert!(err.to_string().contains("without DEV_NAME"), "{err}");
    // An attribute whose length is below its own header.
    assert!(parse_qps(&[2, 0, 2, 0]).is_err());
}

#[test]
fn devices_from_a_get_reply() {
    let payload =
        [attr(ATTR_DEV_INDEX, &3u32.to_ne_bytes()), attr(ATTR_DEV_NAME, b"mlx5_0\0"), attr(4, &[0; 8])].concat();
    assert_eq!(parse_device(&payload).expect("device"), (3, "mlx5_0".to_owned()));
    assert!(parse_device(&attr(ATTR_DEV_NAME, b"rxe0\0")).is_err());
}

#[test]
fn a_dump_is_its_messages_until_done() {
    let mut out = Vec::new();
    let first = [message(QP_GET, NLM_F_MULTI, 7, &two_qps()), message(QP_GET, NLM_F_MULTI, 7, &two_qps())].concat();
    assert_eq!(parse_datagram(&first, 10, 7, &mut out).expect("datagram"), Dump::More);
    let done = message(NLMSG_DONE, NLM_F_MULTI, 7, &0i32.to_ne_bytes());
    assert_eq!(parse_datagram(&done, 10, 7, &mut out).expect("done"), Dump::Done);
    assert_eq!(out, [two_qps(), two_qps()]);
}

#[test]
fn kernel_refusals_and_stray_replies() {
    let mut out = Vec::new();
    // NLMSG_ERROR carries -errno and the request's header.
    let eperm = message(NLMSG_ERROR, 0, 1, &[(-1i32).to_ne_bytes().to_vec(), message(QP_GET, 0x301, 1, &[])].concat());
    match parse_datagram(&eperm, 10, 1, &mut out) {
        Err(RdmaNlError::Kernel(e)) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied),
        other => panic!("EPERM expected, got {other:?}"),
    }
    // A dump that fails part-way says so in NLMSG_DONE.
    let einval = message(NLMSG_DONE, NLM_F_MULTI, 1, &(-22i32).to_ne_bytes());
    match parse_datagram(&einval, 10, 1, &mut out) {
        Err(RdmaNlError::Kernel(e)) => assert_eq!(e.raw_os_error(), Some(22)),
        other => panic!("EINVAL expected, got {other:?}"),
    }
    let other_seq = message(QP_GET, NLM_F_MULTI, 2, &two_qps());
    assert!(matches!(parse_datagram(&other_seq, 10, 1, &mut out), Err(RdmaNlError::Malformed(_))));
    let other_op = message((5 << 10) | 1, NLM_F_MULTI, 1, &two_qps());
    assert!(matches!(parse_datagram(&other_op, 10, 1, &mut out), Err(RdmaNlError::Malformed(_))));
    let not_nldev = message(16, 0, 1, &[]);
    assert!(matches!(parse_datagram(&not_nldev, 10, 1, &mut out), Err(RdmaNlError::Malformed(_))));
    let whole = message(QP_GET, NLM_F_MULTI, 1, &two_qps());
    for cut in [0, 3, 15, whole.len() - 1] {
        assert!(parse_datagram(&whole[..cut], 10, 1, &mut out).is_err(), "cut at {cut}");
    }
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn the_request_is_an_nldev_dump_of_one_device() {
    let attrs = [DefaultNla::new(ATTR_DEV_INDEX, 2u32.to_ne_bytes().to_vec())];
    let mut payload = vec![0; attrs.as_slice().buffer_len()];
    attrs.as_slice().emit(&mut payload);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 4;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RdmaMessage { op: RDMA_NLDEV_CMD_RES_QP_GET, payload }),
    );
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    assert_eq!(buf, message(0x140a, 0x301, 4, &attr(ATTR_DEV_INDEX, &2u32.to_ne_bytes())));
}

/// On this kernel: a list, or an error that says what is missing. Hosts without RDMA (no
/// `CONFIG_INFINIBAND`, as this project's CI host) give the "no NETLINK_RDMA" reason.
#[test]
fn this_kernel_answers_or_says_why() {
    match queue_pairs() {
        Ok(qps) => assert!(qps.iter().all(|q| !q.device.is_empty()), "{qps:?}"),
        Err(RdmaNlError::Unsupported(e)) => {
            assert_eq!(e.raw_os_error(), Some(EPROTONOSUPPORT));
            let reason = RdmaNlError::Unsupported(e).to_string();
            assert!(reason.starts_with("no NETLINK_RDMA in this kernel"), "{reason}");
        }
        Err(e) => assert!(e.to_string().contains("RDMA netlink") || e.to_string().contains("NETLINK_RDMA"), "{e}"),
    }
}
