//! The TFTP inspector end to end on built datagrams: requests and the pinholes they open,
//! transfers followed block by block, the policy's refusals, and the packets RFC 1350 calls an
//! unknown transfer ID.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::{Harness, opened, pinhole_events, violations};
use pinhole::conntrack::PortMatch;
use pinhole::event::{CloseCause, Event, PinholeAction};
use pinhole::testkit::{self, sock, tftp};
use pinhole::{Decision, Reason, Verdict};

const CLIENT: &str = "198.51.100.10:50000";
const SERVER: &str = "192.0.2.10:69";
const TID: &str = "192.0.2.10:41000";
const CLIENT6: &str = "[2001:db8:100::10]:50000";
const SERVER6: &str = "[2001:db8:2::10]:69";
const TID6: &str = "[2001:db8:2::10]:41000";

/// One client talking to one server: the request port, the server's transfer ID.
struct Tftp {
    h: Harness,
    client: SocketAddr,
    server: SocketAddr,
    tid: SocketAddr,
}

impl Tftp {
    fn with(h: Harness, client: &str, server: &str, tid: &str) -> Self {
        Tftp {
            h,
            client: sock(client),
            server: sock(server),
            tid: sock(tid),
        }
    }

    fn new() -> Self {
        Tftp::with(Harness::default_policy(), CLIENT, SERVER, TID)
    }

    fn v6() -> Self {
        Tftp::with(Harness::default_policy(), CLIENT6, SERVER6, TID6)
    }

    /// With `[rule.tftp]` options, and `tables` (more TOML: `[limits]`, `[timeouts]`).
    fn options(options: &str, tables: &str) -> Self {
        let policy = format!(
            "[[rule]]\nname = \"tftp-in\"\naction = \"allow\"\ninspect = \"tftp\"\n[rule.tftp]\n{options}\n{tables}\n"
        );
        Tftp::with(Harness::new(&policy), CLIENT, SERVER, TID)
    }

    /// A request from the client to the TFTP port.
    fn request(&mut self, payload: &[u8]) -> Decision {
        let frame = testkit::udp(self.client, self.server, payload);
        self.h.send(&frame)
    }

    /// A packet of the transfer from the server's transfer ID.
    fn server(&mut self, payload: &[u8]) -> Decision {
        let frame = testkit::udp(self.tid, self.client, payload);
        self.h.send(&frame)
    }

    /// A packet of the transfer from the client to the server's transfer ID.
    fn client(&mut self, payload: &[u8]) -> Decision {
        let frame = testkit::udp(self.client, self.tid, payload);
        self.h.send(&frame)
    }

    fn server_ok(&mut self, payload: &[u8]) -> Decision {
        let d = self.server(payload);
        assert_eq!((d.verdict, d.reason), (Verdict::Accept, None), "{d:?}");
        d
    }

    fn client_ok(&mut self, payload: &[u8]) -> Decision {
        let d = self.client(payload);
        assert_eq!((d.verdict, d.reason), (Verdict::Accept, None), "{d:?}");
        d
    }

    /// Reads `blocks` full 512-byte blocks and a final block of `last` bytes.
    fn read_file(&mut self, blocks: u16, last: usize) {
        for block in 1..=blocks {
            self.server_ok(&tftp::data(block, 512));
            self.client_ok(&tftp::ack(block));
        }
        self.server_ok(&tftp::data(blocks + 1, last));
        self.client_ok(&tftp::ack(blocks + 1));
    }
}

/// Asserts a drop for `reason` that is also reported as a TFTP violation.
fn violation(d: &Decision, reason: Reason) {
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Drop, Some(reason)),
        "{d:?}"
    );
    assert_eq!(violations(d), vec![reason], "{d:?}");
}

fn violation_detail(d: &Decision) -> String {
    d.events
        .iter()
        .find_map(|e| match e {
            Event::Violation { detail, .. } => Some(detail.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn notices(d: &Decision) -> Vec<(&'static str, String)> {
    d.events
        .iter()
        .filter_map(|e| match e {
            Event::Notice { kind, detail, .. } => Some((*kind, detail.clone())),
            _ => None,
        })
        .collect()
}

fn closed(events: &[Event]) -> Vec<(String, CloseCause)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::FlowClosed { flow, cause, .. } => Some((flow.to_string(), *cause)),
            _ => None,
        })
        .collect()
}

// ---- requests and pinholes -----------------------------------------------------------------------

#[test]
fn a_read_request_opens_one_pinhole_from_the_server_to_the_client_port() {
    let mut t = Tftp::new();
    let d = t.request(&tftp::rrq("c2600-ik9o3s3-mz.bin", "octet", &[]));
    assert_eq!((d.verdict, d.reason), (Verdict::Accept, None));
    assert_eq!(
        opened(&d),
        vec![(
            t.server.ip(),
            PortMatch::Any,
            t.client.ip(),
            t.client.port()
        )]
    );
    // The first reply comes from the server's new port and uses the pinhole.
    let d = t.server_ok(&tftp::data(1, 512));
    assert_eq!(pinhole_events(&d.events, PinholeAction::Use).len(), 1);
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::FlowOpened {
            via_pinhole: true,
            ..
        }
    )));
    assert_eq!(t.h.engine.pinholes().len(), 0, "single use");
    t.client_ok(&tftp::ack(1));
    t.server_ok(&tftp::data(2, 100));
    t.client_ok(&tftp::ack(2));
    let c = t.h.engine.counters();
    assert_eq!((c.pinholes_opened, c.pinholes_used), (1, 1));
}

#[test]
fn modes_are_read_in_any_case() {
    let mut t = Tftp::new();
    for (port, mode) in [(50001, "OCTET"), (50002, "NetAscii"), (50003, "mail")] {
        t.client = SocketAddr::new(t.client.ip(), port);
        let d = t.request(&tftp::rrq("f", mode, &[]));
        assert_eq!(d.verdict, Verdict::Accept, "{mode}: {d:?}");
    }
}

#[test]
fn a_write_transfer_starts_with_ack_0_and_ends_with_the_short_block() {
    let mut t = Tftp::new();
    t.request(&tftp::wrq("router1-confg", "octet", &[]));
    // On a write the server sends no DATA; a refused first packet leaves the pinhole open.
    violation(&t.server(&tftp::data(1, 512)), Reason::TftpUnexpectedOpcode);
    assert_eq!(t.h.engine.pinholes().len(), 1);
    t.server_ok(&tftp::ack(0));
    t.client_ok(&tftp::data(1, 512));
    t.server_ok(&tftp::ack(1));
    violation(&t.server(&tftp::ack(3)), Reason::TftpBlockOutOfSequence);
    violation(&t.server(&tftp::data(2, 10)), Reason::TftpUnexpectedOpcode);
    t.client_ok(&tftp::data(2, 0));
    t.server_ok(&tftp::ack(2));
    // Done: the server's retransmitted last ACK still passes during the 10 s dally.
    t.server_ok(&tftp::ack(2));
    assert!(closed(&t.h.advance(9).events).is_empty());
    let expired = t.h.advance(2);
    assert_eq!(
        closed(&expired.events),
        vec![(
            "udp 192.0.2.10:41000 -> 198.51.100.10:50000".to_owned(),
            CloseCause::Timeout
        )]
    );
}

#[test]
fn the_transfer_closes_after_a_short_dally_once_the_last_block_is_acknowledged() {
    let mut t = Tftp::options("dally = 2", "");
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    t.read_file(3, 7);
    // A lost final ACK: the server sends the last block again, the client acknowledges again.
    t.server_ok(&tftp::data(4, 7));
    t.client_ok(&tftp::ack(4));
    assert!(closed(&t.h.advance(1).events).is_empty());
    assert_eq!(
        closed(&t.h.advance(2).events),
        vec![(
            "udp 192.0.2.10:41000 -> 198.51.100.10:50000".to_owned(),
            CloseCause::Timeout
        )]
    );
    // Anything from the old transfer ID is a new flow no rule allows.
    t.h.drop(
        &testkit::udp(t.tid, t.client, &tftp::data(4, 7)),
        Reason::DefaultDeny,
    );
}

/// Regression (found by benches/live.sh): a client looping requests from one port, answered
/// by tftpd-hpa from a transfer ID it used before. The finished transfer still dallying on
/// that tuple must not take the new transfer's blocks, or the new pinhole stays pending and
/// the client's quota fills up (`tftp_request_limit` after `max_pending_per_client` loops).
#[test]
fn a_new_request_from_the_same_port_ends_the_finished_transfer_reusing_its_tid() {
    let mut t = Tftp::options("max_pending_per_client = 2", "");
    for round in 0..5 {
        let d = t.request(&tftp::rrq("image.bin", "octet", &[]));
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Accept, None),
            "round {round}"
        );
        if round > 0 {
            assert_eq!(
                closed(&d.events),
                vec![(
                    "udp 192.0.2.10:41000 -> 198.51.100.10:50000".to_owned(),
                    CloseCause::Reused
                )],
                "round {round}: the dallying transfer ends"
            );
        }
        let d = t.server_ok(&tftp::data(1, 512));
        assert_eq!(
            pinhole_events(&d.events, PinholeAction::Use).len(),
            1,
            "round {round}"
        );
        t.client_ok(&tftp::ack(1));
        t.server_ok(&tftp::data(2, 3));
        t.client_ok(&tftp::ack(2));
        assert_eq!(
            t.h.engine.pinholes().len(),
            0,
            "round {round}: nothing left pending"
        );
    }
    // A transfer still running on that port is not ended by a request: its blocks keep
    // passing, and the new request's pinhole waits for a reply from another port.
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    t.server_ok(&tftp::data(1, 512));
    let d = t.request(&tftp::rrq("other.bin", "octet", &[]));
    assert!(closed(&d.events).is_empty(), "{d:?}");
    t.client_ok(&tftp::ack(1));
    t.server_ok(&tftp::data(2, 512));
}

#[test]
fn an_idle_transfer_times_out_after_transfer_timeout() {
    let mut t = Tftp::options("transfer_timeout = 20", "[timeouts]\nudp_unreplied = 100");
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    t.server_ok(&tftp::data(1, 512));
    assert!(closed(&t.h.advance(19).events).is_empty());
    t.client_ok(&tftp::ack(1));
    assert!(closed(&t.h.advance(19).events).is_empty());
    assert_eq!(
        closed(&t.h.advance(2).events),
        vec![(
            "udp 192.0.2.10:41000 -> 198.51.100.10:50000".to_owned(),
            CloseCause::Timeout
        )]
    );
}

#[test]
fn a_request_pinhole_expires_after_request_timeout() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    assert!(pinhole_events(&t.h.advance(9).events, PinholeAction::Expire).is_empty());
    let expired = t.h.advance(2);
    assert_eq!(
        pinhole_events(&expired.events, PinholeAction::Expire),
        vec![(
            t.server.ip(),
            PortMatch::Any,
            t.client.ip(),
            t.client.port()
        )]
    );
    t.h.drop(
        &testkit::udp(t.tid, t.client, &tftp::data(1, 512)),
        Reason::DefaultDeny,
    );

    let mut t = Tftp::options("request_timeout = 3", "");
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    assert_eq!(
        pinhole_events(&t.h.advance(4).events, PinholeAction::Expire).len(),
        1
    );
}

#[test]
fn a_retransmitted_request_refreshes_its_pinhole_instead_of_opening_another() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    t.h.advance(5);
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    assert_eq!(t.h.engine.pinholes().len(), 1);
    // Open for 10 s from the retransmission.
    t.h.advance(8);
    t.server_ok(&tftp::data(1, 3));
}

#[test]
fn unknown_options_are_passed_and_reported() {
    let mut t = Tftp::new();
    let d = t.request(&tftp::rrq(
        "image.bin",
        "octet",
        &[("multicast", ""), ("blksize", "1428")],
    ));
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(opened(&d).len(), 1);
    let notices = notices(&d);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].0, "unknown_option");
    assert!(notices[0].1.contains("multicast"), "{notices:?}");
}

#[test]
fn a_reply_from_the_tftp_port_itself_is_only_an_error() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    violation(
        &t.h.send(&testkit::udp(t.server, t.client, &tftp::data(1, 512))),
        Reason::TftpUnexpectedOpcode,
    );
    let d = t.h.accept(&testkit::udp(
        t.server,
        t.client,
        &tftp::error(2, "Access violation"),
    ));
    assert_eq!(notices(&d)[0].0, "transfer_error");
    assert!(notices(&d)[0].1.contains("error 2 (Access violation)"));
}

#[test]
fn only_requests_go_to_the_tftp_port() {
    let mut t = Tftp::new();
    for payload in [
        tftp::data(1, 512),
        tftp::ack(0),
        tftp::oack(&[("blksize", "512")]),
    ] {
        let d = t.request(&payload);
        violation(&d, Reason::TftpUnexpectedOpcode);
    }
    assert_eq!(
        t.h.engine.flows().len(),
        0,
        "a refused request leaves no flow"
    );
    assert_eq!(t.h.engine.pinholes().len(), 0);
}

// ---- malformed requests ----------------------------------------------------------------------------

#[test]
fn malformed_requests_are_violations_with_their_own_reason() {
    let cases: Vec<(Vec<u8>, Reason)> = vec![
        (vec![0], Reason::TftpTruncated),
        (vec![0, 1, b'f', 0, b'o'], Reason::TftpMissingNul),
        (b"\x00\x00f\x00octet\x00".to_vec(), Reason::TftpBadOpcode),
        (b"\x00\x07f\x00octet\x00".to_vec(), Reason::TftpBadOpcode),
        (b"\x00\x01\x00octet\x00".to_vec(), Reason::TftpEmptyFilename),
        (tftp::rrq("f", "binary", &[]), Reason::TftpBadMode),
        (
            tftp::rrq("f", "octet", &[("blksize", "7")]),
            Reason::TftpBadOption,
        ),
        (
            tftp::rrq("f", "octet", &[("blksize", "65465")]),
            Reason::TftpBadOption,
        ),
        (
            tftp::rrq("f", "octet", &[("timeout", "0")]),
            Reason::TftpBadOption,
        ),
        (
            tftp::rrq("f", "octet", &[("tsize", "x")]),
            Reason::TftpBadOption,
        ),
        (
            tftp::rrq("f", "octet", &[("windowsize", "0")]),
            Reason::TftpBadOption,
        ),
        (
            tftp::rrq("f", "octet", &[("blksize", "512"), ("BLKSIZE", "512")]),
            Reason::TftpBadOption,
        ),
        (
            b"\x00\x01f\x00octet\x00blksize".to_vec(),
            Reason::TftpMissingNul,
        ),
    ];
    for (port, (payload, reason)) in (51000..).zip(cases) {
        let mut t = Tftp::new();
        t.client = SocketAddr::new(t.client.ip(), port);
        let d = t.request(&payload);
        violation(&d, reason);
        assert_eq!(t.h.engine.flows().len(), 0, "{payload:02x?}");
        assert_eq!(t.h.engine.pinholes().len(), 0, "{payload:02x?}");
        assert_eq!(t.h.engine.counters().violations, 1);
    }
}

// ---- policy ------------------------------------------------------------------------------------------

#[test]
fn reads_and_writes_can_each_be_refused_naming_the_rule() {
    let mut t = Tftp::options("write = false", "");
    let d = t.request(&tftp::wrq("router1-confg", "octet", &[]));
    violation(&d, Reason::TftpWriteDenied);
    let detail = violation_detail(&d);
    assert!(detail.contains("rule \"tftp-in\""), "{detail}");
    assert!(detail.contains("router1-confg"), "{detail}");
    assert_eq!(t.h.engine.flows().len(), 0);
    let d = t.request(&tftp::rrq("image.bin", "octet", &[]));
    assert_eq!(opened(&d).len(), 1);

    let mut t = Tftp::options("read = false", "");
    let d = t.request(&tftp::rrq("image.bin", "octet", &[]));
    violation(&d, Reason::TftpReadDenied);
    assert!(violation_detail(&d).contains("rule \"tftp-in\""));
    let d = t.request(&tftp::wrq("router1-confg", "octet", &[]));
    assert_eq!(opened(&d).len(), 1);
}

#[test]
fn filename_patterns_allow_and_deny() {
    let mut t = Tftp::options(
        "allow_files = [\"images/*.bin\", \"configs/*\"]\ndeny_files = [\"*..*\"]",
        "",
    );
    for (port, name, allowed) in [
        (50001, "images/c2600-ik9o3s3-mz.bin", true),
        (50002, "configs/router1-confg", true),
        (50003, "images/../../etc/shadow.bin", false),
        (50004, "etc/passwd", false),
        (50005, "images/readme.txt", false),
    ] {
        t.client = SocketAddr::new(t.client.ip(), port);
        let d = t.request(&tftp::rrq(name, "octet", &[]));
        if allowed {
            assert_eq!(opened(&d).len(), 1, "{name}: {d:?}");
        } else {
            violation(&d, Reason::TftpFileDenied);
            assert!(violation_detail(&d).contains("tftp-in"), "{name}");
        }
    }
    t.client = SocketAddr::new(t.client.ip(), 50003);
    let d = t.request(&tftp::rrq("images/../x.bin", "octet", &[]));
    assert!(
        violation_detail(&d).contains("deny_files \"*..*\""),
        "{d:?}"
    );
}

#[test]
fn pending_requests_are_capped_per_client_and_by_the_pinhole_table() {
    let mut t = Tftp::options("max_pending_per_client = 2", "[limits]\nmax_pinholes = 3");
    for port in [50001, 50002] {
        t.client = SocketAddr::new(t.client.ip(), port);
        assert_eq!(opened(&t.request(&tftp::rrq("f", "octet", &[]))).len(), 1);
    }
    t.client = SocketAddr::new(t.client.ip(), 50003);
    let d = t.request(&tftp::rrq("f", "octet", &[]));
    violation(&d, Reason::TftpRequestLimit);
    assert!(violation_detail(&d).contains("2 requests already pending for 198.51.100.10"));
    // Another client has its own quota, until the table itself is full.
    let other = "198.51.100.11";
    t.client = sock(&format!("{other}:50001"));
    assert_eq!(opened(&t.request(&tftp::rrq("f", "octet", &[]))).len(), 1);
    t.client = sock(&format!("{other}:50002"));
    let d = t.request(&tftp::rrq("f", "octet", &[]));
    violation(&d, Reason::TftpRequestLimit);
    assert!(violation_detail(&d).contains("pinhole table full"), "{d:?}");
    // A reply uses a pinhole and frees room for the client.
    t.client = sock("198.51.100.10:50001");
    t.server_ok(&tftp::data(1, 5));
    t.client = sock("198.51.100.10:50003");
    assert_eq!(opened(&t.request(&tftp::rrq("f", "octet", &[]))).len(), 1);
}

#[test]
fn the_policy_may_deny_tftp_before_inspection() {
    let mut h = Harness::new(
        "[[rule]]\nname = \"no-tftp\"\nproto = \"udp\"\nports = [69]\naction = \"deny\"\n",
    );
    h.drop(
        &testkit::udp(sock(CLIENT), sock(SERVER), &tftp::rrq("f", "octet", &[])),
        Reason::PolicyDeny,
    );
}

// ---- transfer ID (RFC 1350 section 4) --------------------------------------------------------------

#[test]
fn before_the_reply_only_the_server_address_may_use_the_pinhole() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    let d = t.h.send(&testkit::udp(
        sock("203.0.113.9:41000"),
        t.client,
        &tftp::data(1, 512),
    ));
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Drop, Some(Reason::PinholeWrongPeer))
    );
    assert_eq!(
        t.h.engine.pinholes().len(),
        1,
        "still waiting for the server"
    );
    t.server_ok(&tftp::data(1, 512));
}

#[test]
fn server_ports_limit_the_transfer_id() {
    let mut t = Tftp::options("server_ports = \"30000-30009\"", "");
    let d = t.request(&tftp::rrq("image.bin", "octet", &[]));
    assert_eq!(
        opened(&d),
        vec![(
            t.server.ip(),
            PortMatch::Range(30000, 30009),
            t.client.ip(),
            t.client.port()
        )]
    );
    let d = t.server(&tftp::data(1, 512));
    violation(&d, Reason::TftpTidOutOfRange);
    t.tid = sock("192.0.2.10:30009");
    t.server_ok(&tftp::data(1, 512));
    t.client_ok(&tftp::ack(1));
}

#[test]
fn after_the_reply_anything_else_aimed_at_the_client_port_is_an_unknown_tid() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    t.server_ok(&tftp::data(1, 512));
    for from in ["192.0.2.10:41001", "203.0.113.9:41000", "192.0.2.10:69"] {
        let d =
            t.h.send(&testkit::udp(sock(from), t.client, &tftp::data(2, 512)));
        if from.ends_with(":69") {
            // The request flow's own reply direction: only an ERROR may come from port 69.
            violation(&d, Reason::TftpUnexpectedOpcode);
        } else {
            violation(&d, Reason::TftpUnknownTid);
        }
    }
    // The transfer itself carries on.
    t.client_ok(&tftp::ack(1));
    t.server_ok(&tftp::data(2, 0));
    t.client_ok(&tftp::ack(2));
}

#[test]
fn unsolicited_data_is_dropped() {
    let mut t = Tftp::new();
    let d = t.server(&tftp::data(1, 512));
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Drop, Some(Reason::DefaultDeny))
    );
    let d = t.client(&tftp::ack(1));
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Drop, Some(Reason::DefaultDeny))
    );
}

// ---- transfer tracking -------------------------------------------------------------------------------

#[test]
fn retransmitted_and_duplicate_blocks_pass_far_out_of_sequence_ones_do_not() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    t.server_ok(&tftp::data(1, 512));
    t.server_ok(&tftp::data(1, 512));
    t.client_ok(&tftp::ack(1));
    t.client_ok(&tftp::ack(1));
    t.server_ok(&tftp::data(2, 512));
    t.server_ok(&tftp::data(1, 512));
    violation(
        &t.server(&tftp::data(9, 512)),
        Reason::TftpBlockOutOfSequence,
    );
    violation(&t.client(&tftp::ack(7)), Reason::TftpBlockOutOfSequence);
    violation(&t.client(&tftp::data(2, 512)), Reason::TftpUnexpectedOpcode);
    violation(&t.server(&tftp::ack(1)), Reason::TftpUnexpectedOpcode);
    violation(&t.server(&tftp::data(2, 513)), Reason::TftpOversizedBlock);
    violation(
        &t.server(&tftp::rrq("x", "octet", &[])),
        Reason::TftpUnexpectedOpcode,
    );
    violation(&t.server(&[0, 3, 0]), Reason::TftpTruncated);
    t.client_ok(&tftp::ack(2));
    t.server_ok(&tftp::data(3, 1));
    violation(&t.server(&tftp::data(4, 1)), Reason::TftpBlockOutOfSequence);
    t.client_ok(&tftp::ack(3));
    assert_eq!(t.h.engine.counters().violations, 8);
}

#[test]
fn an_error_ends_the_transfer() {
    let mut t = Tftp::options("dally = 2", "");
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    t.server_ok(&tftp::data(1, 512));
    let d = t.client_ok(&tftp::error(3, "Disk full or allocation exceeded"));
    let notices = notices(&d);
    assert_eq!(notices[0].0, "transfer_error");
    assert!(
        notices[0]
            .1
            .contains("client sent error 3 (Disk full or allocation exceeded)")
    );
    let d = t.server(&tftp::data(2, 512));
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Drop, Some(Reason::TftpTransferEnded))
    );
    assert!(violations(&d).is_empty(), "not a violation");
    assert_eq!(closed(&t.h.advance(3).events).len(), 1);
}

#[test]
fn a_missing_file_is_an_error_from_the_transfer_id() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("no-such-file.txt", "netascii", &[]));
    let d = t.server_ok(&tftp::error(1, "File not found"));
    assert!(notices(&d)[0].1.contains("error 1 (File not found)"));
}

#[test]
fn oack_sets_block_and_window_size() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq(
        "image.bin",
        "octet",
        &[("blksize", "1024"), ("windowsize", "4"), ("tsize", "0")],
    ));
    t.server_ok(&tftp::oack(&[
        ("blksize", "1024"),
        ("windowsize", "4"),
        ("tsize", "5000"),
    ]));
    // The client acknowledges the OACK with block 0 (lost here: the server sends the OACK
    // again, the client acknowledges again), then up to four blocks come per ACK.
    t.client_ok(&tftp::ack(0));
    t.server_ok(&tftp::oack(&[
        ("blksize", "1024"),
        ("windowsize", "4"),
        ("tsize", "5000"),
    ]));
    violation(
        &t.server(&tftp::oack(&[("blksize", "1024")])),
        Reason::TftpUnexpectedOpcode,
    );
    t.client_ok(&tftp::ack(0));
    for block in 1..=4 {
        t.server_ok(&tftp::data(block, 1024));
    }
    violation(
        &t.server(&tftp::data(5, 1024)),
        Reason::TftpBlockOutOfSequence,
    );
    t.client_ok(&tftp::ack(4));
    for block in 5..=8 {
        t.server_ok(&tftp::data(block, 1024));
    }
    // A lost block: the client acknowledges the last one it has, the server resends from it.
    t.client_ok(&tftp::ack(6));
    t.server_ok(&tftp::data(7, 1024));
    t.server_ok(&tftp::data(8, 1024));
    t.client_ok(&tftp::ack(8));
    violation(&t.server(&tftp::data(9, 1025)), Reason::TftpOversizedBlock);
    t.server_ok(&tftp::data(9, 904));
    t.client_ok(&tftp::ack(9));
    // Done: a second OACK has no place.
    violation(
        &t.server(&tftp::oack(&[("blksize", "1024")])),
        Reason::TftpUnexpectedOpcode,
    );
}

#[test]
fn an_oack_must_answer_what_was_asked() {
    type Options = &'static [(&'static str, &'static str)];
    let cases: [(Options, Options, Reason); 5] = [
        (
            &[("blksize", "1024")],
            &[("blksize", "1428")],
            Reason::TftpBadOption,
        ),
        (
            &[("blksize", "1024")],
            &[("windowsize", "4")],
            Reason::TftpBadOption,
        ),
        (
            &[("tsize", "0")],
            &[("timeout", "5")],
            Reason::TftpBadOption,
        ),
        (&[], &[("blksize", "512")], Reason::TftpUnexpectedOpcode),
        (&[("blksize", "1024")], &[], Reason::TftpBadOption),
    ];
    for (asked, answered, reason) in cases {
        let mut t = Tftp::new();
        t.request(&tftp::rrq("image.bin", "octet", asked));
        violation(&t.server(&tftp::oack(answered)), reason);
    }
    // A server may ignore the options (RFC 2347 section 3): DATA 1 with the default size.
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[("blksize", "1024")]));
    violation(&t.server(&tftp::data(1, 1024)), Reason::TftpOversizedBlock);
    t.server_ok(&tftp::data(1, 512));
    // A smaller block than asked is fine (RFC 2348).
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[("blksize", "1024")]));
    t.server_ok(&tftp::oack(&[("blksize", "800")]));
    violation(&t.server(&tftp::data(1, 800)), Reason::TftpUnexpectedOpcode);
    t.client_ok(&tftp::ack(0));
    t.server_ok(&tftp::data(1, 800));
}

#[test]
fn a_write_with_options_starts_with_the_oack() {
    let mut t = Tftp::new();
    t.request(&tftp::wrq(
        "router1-confg",
        "octet",
        &[("blksize", "1428"), ("tsize", "2000")],
    ));
    t.server_ok(&tftp::oack(&[("blksize", "1428"), ("tsize", "2000")]));
    violation(&t.client(&tftp::ack(0)), Reason::TftpUnexpectedOpcode);
    t.client_ok(&tftp::data(1, 1428));
    // DATA 1 lost: the server resends its OACK, the client resends DATA 1.
    t.server_ok(&tftp::oack(&[("blksize", "1428"), ("tsize", "2000")]));
    t.client_ok(&tftp::data(1, 1428));
    t.server_ok(&tftp::ack(1));
    violation(
        &t.server(&tftp::oack(&[("blksize", "1428"), ("tsize", "2000")])),
        Reason::TftpUnexpectedOpcode,
    );
    t.client_ok(&tftp::data(2, 572));
    t.server_ok(&tftp::ack(2));
}

#[test]
fn block_numbers_roll_over_past_65535() {
    // Block numbers wrap to 0 (tftpd-hpa, curl) or to 1 (some older servers); both pass.
    for wrap_to in [0_u16, 1] {
        let mut t = Tftp::new();
        t.request(&tftp::rrq("image.bin", "octet", &[("blksize", "8")]));
        t.server_ok(&tftp::oack(&[("blksize", "8")]));
        t.client_ok(&tftp::ack(0));
        let mut block: u16 = 0;
        for _ in 0..65_540 {
            block = block.wrapping_add(1);
            if block == 0 && wrap_to == 1 {
                block = 1;
            }
            t.server_ok(&tftp::data(block, 8));
            t.client_ok(&tftp::ack(block));
        }
        // Block 65540 (wire number 4 or 5) is next: block 3 of the new round is not.
        violation(
            &t.server(&tftp::data(block.wrapping_add(3), 8)),
            Reason::TftpBlockOutOfSequence,
        );
        t.server_ok(&tftp::data(block.wrapping_add(1), 2));
        t.client_ok(&tftp::ack(block.wrapping_add(1)));
        assert_eq!(t.h.engine.counters().violations, 1, "wrap to {wrap_to}");
    }
}

#[test]
fn ipv6_read_with_options_and_unknown_tid() {
    let mut t = Tftp::v6();
    let d = t.request(&tftp::rrq("image.bin", "octet", &[("tsize", "0")]));
    assert_eq!(
        opened(&d),
        vec![(
            t.server.ip(),
            PortMatch::Any,
            t.client.ip(),
            t.client.port()
        )]
    );
    t.server_ok(&tftp::oack(&[("tsize", "600")]));
    t.client_ok(&tftp::ack(0));
    t.server_ok(&tftp::data(1, 512));
    let d = t.h.send(&testkit::udp(
        sock("[2001:db8:2::10]:41001"),
        t.client,
        &tftp::data(2, 512),
    ));
    violation(&d, Reason::TftpUnknownTid);
    t.client_ok(&tftp::ack(1));
    t.server_ok(&tftp::data(2, 88));
    t.client_ok(&tftp::ack(2));

    let mut t = Tftp::v6();
    violation(
        &t.request(&tftp::rrq("", "octet", &[])),
        Reason::TftpEmptyFilename,
    );
}

// ---- both directions on the edge router ---------------------------------------------------------

fn edge_router() -> Harness {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/edge-router.toml"),
    )
    .unwrap();
    Harness::new(&text)
}

#[test]
fn edge_router_outside_clients_read_images_but_may_not_write() {
    // tftpd-hpa on the server runs with --port-range 30000:30009, as the rules say.
    let mut t = Tftp::with(edge_router(), CLIENT, SERVER, "192.0.2.10:30004");
    let d = t.request(&tftp::rrq("c2600-ik9o3s3-mz.bin", "octet", &[]));
    assert_eq!(opened(&d).len(), 1);
    t.read_file(2, 100);
    t.client = sock("198.51.100.10:50001");
    let d = t.request(&tftp::wrq("c2600-ik9o3s3-mz.bin", "octet", &[]));
    violation(&d, Reason::TftpWriteDenied);
    assert!(violation_detail(&d).contains("tftp-to-server"));
    // A reply from outside the server's TID range is refused.
    t.client = sock("198.51.100.10:50002");
    t.tid = sock("192.0.2.10:41000");
    t.request(&tftp::rrq("c2600-ik9o3s3-mz.bin", "octet", &[]));
    violation(&t.server(&tftp::data(1, 512)), Reason::TftpTidOutOfRange);
}

#[test]
fn edge_router_a_device_inside_writes_its_backup_to_a_server_outside() {
    let mut t = Tftp::with(
        edge_router(),
        "192.0.2.20:50000",
        "198.51.100.50:69",
        "198.51.100.50:47000",
    );
    let d = t.request(&tftp::wrq("router1-confg", "octet", &[]));
    assert_eq!(
        opened(&d),
        vec![(
            t.server.ip(),
            PortMatch::Any,
            t.client.ip(),
            t.client.port()
        )]
    );
    t.server_ok(&tftp::ack(0));
    t.client_ok(&tftp::data(1, 512));
    t.server_ok(&tftp::ack(1));
    t.client_ok(&tftp::data(2, 10));
    t.server_ok(&tftp::ack(2));
    // Another outside host cannot reach the device's transfer port.
    let d = t.h.send(&testkit::udp(
        sock("198.51.100.51:47000"),
        t.client,
        &tftp::ack(3),
    ));
    violation(&d, Reason::TftpUnknownTid);
}

// ---- review findings: negotiated timeouts, quotas, options, windows, trailing bytes ---------

#[test]
fn a_spoofed_request_cannot_block_traffic_the_rules_allow() {
    // An outside host spoofs a request from 8.8.8.8:53; the server answers it from its TID.
    let mut t = Tftp::with(edge_router(), "8.8.8.8:53", SERVER, "192.0.2.10:30004");
    t.request(&tftp::rrq("no-such-file", "octet", &[]));
    t.server_ok(&tftp::error(1, "File not found"));
    // A device inside still reaches 8.8.8.8:53 (rule inside-out).
    t.h.accept(&testkit::udp(
        sock("192.0.2.20:5353"),
        sock("8.8.8.8:53"),
        b"\x12\x34\x01\x00",
    ));
    // The server's other ports are still an unknown transfer ID.
    let d = t.h.send(&testkit::udp(
        sock("192.0.2.10:30005"),
        sock("8.8.8.8:53"),
        &tftp::data(1, 512),
    ));
    violation(&d, Reason::TftpUnknownTid);
}

#[test]
fn the_negotiated_timeout_keeps_a_slow_transfer_alive() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[("timeout", "60")]));
    t.server_ok(&tftp::oack(&[("timeout", "60")]));
    t.client_ok(&tftp::ack(0));
    t.server_ok(&tftp::data(1, 512));
    // The ACK is lost; the server retransmits after its 60 s timeout (the rule's
    // transfer_timeout is 30 s): the flow is still there.
    assert!(
        closed(&t.h.advance(65).events)
            .iter()
            .all(|(f, _)| !f.contains("41000"))
    );
    t.server_ok(&tftp::data(1, 512));
    t.client_ok(&tftp::ack(1));
    t.server_ok(&tftp::data(2, 3));
    t.client_ok(&tftp::ack(2));
    // Done: the dally is stretched too, to twice the timeout.
    assert!(closed(&t.h.advance(100).events).is_empty());
    assert_eq!(closed(&t.h.advance(21).events).len(), 1);
}

#[test]
fn a_retransmitted_request_at_the_quota_refreshes_and_a_refused_one_leaves_no_flow() {
    let mut t = Tftp::options("max_pending_per_client = 1", "");
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    let d = t.request(&tftp::rrq("image.bin", "octet", &[]));
    assert_eq!((d.verdict, d.reason), (Verdict::Accept, None), "{d:?}");
    t.client = sock("198.51.100.10:50001");
    let d = t.request(&tftp::rrq("image.bin", "octet", &[]));
    violation(&d, Reason::TftpRequestLimit);
    assert_eq!(
        t.h.engine.flows().len(),
        1,
        "the refused request left no flow"
    );
    assert_eq!(t.h.engine.counters().pinholes_refused, 1);
}

#[test]
fn the_request_flow_outlives_its_pinholes() {
    let mut t = Tftp::options("request_timeout = 60", "");
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    // udp_unreplied is 30 s; the pinhole waits 60 s, and so does its request flow.
    assert!(t.h.advance(45).events.is_empty());
    t.server_ok(&tftp::data(1, 512));
}

#[test]
fn options_the_inspector_does_not_know_may_be_acknowledged_if_asked_for() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[("multicast", "")]));
    t.server_ok(&tftp::oack(&[("multicast", "239.1.1.1,1758,1")]));
    t.client_ok(&tftp::ack(0));
    t.server_ok(&tftp::data(1, 512));

    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[("tsize", "0")]));
    let d = t.server(&tftp::oack(&[("tsize", "9"), ("x-vendor", "1")]));
    violation(&d, Reason::TftpBadOption);
    assert!(violation_detail(&d).contains("x-vendor"), "{d:?}");
}

#[test]
fn tftpd_hpa_blksize2_sets_the_block_size() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq(
        "image.bin",
        "octet",
        &[("blksize2", "3000"), ("tsize", "0")],
    ));
    t.server_ok(&tftp::oack(&[("blksize2", "2048"), ("tsize", "5000")]));
    t.client_ok(&tftp::ack(0));
    violation(&t.server(&tftp::data(1, 2049)), Reason::TftpOversizedBlock);
    t.server_ok(&tftp::data(1, 2048));
    t.client_ok(&tftp::ack(1));

    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[("blksize2", "3000")]));
    violation(
        &t.server(&tftp::oack(&[("blksize2", "3000")])),
        Reason::TftpBadOption,
    );
}

#[test]
fn rollover_to_1_passes_with_a_window() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq(
        "image.bin",
        "octet",
        &[("blksize", "8"), ("windowsize", "8"), ("rollover", "1")],
    ));
    t.server_ok(&tftp::oack(&[
        ("blksize", "8"),
        ("windowsize", "8"),
        ("rollover", "1"),
    ]));
    t.client_ok(&tftp::ack(0));
    // Windows of 8 blocks; wire block numbers go 65535, 1, 2, ... after the first round.
    let mut block: u16 = 0;
    let mut sent = 0u32;
    while sent < 65_560 {
        for _ in 0..8 {
            block = match block {
                u16::MAX => 1,
                b => b + 1,
            };
            t.server_ok(&tftp::data(block, 8));
            sent += 1;
        }
        t.client_ok(&tftp::ack(block));
    }
    t.server_ok(&tftp::data(block.wrapping_add(1), 0));
    t.client_ok(&tftp::ack(block.wrapping_add(1)));
    assert_eq!(t.h.engine.counters().violations, 0);
}

#[test]
fn acks_and_errors_carry_nothing_else_and_an_error_is_final() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    t.server_ok(&tftp::data(1, 512));
    let mut ack = tftp::ack(1);
    ack.extend_from_slice(b"smuggled");
    violation(&t.client(&ack), Reason::TftpTrailingBytes);
    let mut padded = tftp::ack(1);
    padded.extend_from_slice(&[0; 14]);
    t.client_ok(&padded);
    t.client_ok(&tftp::error(0, "user cancelled"));
    let d = t.server(&tftp::error(5, "Unknown transfer ID"));
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Drop, Some(Reason::TftpTransferEnded))
    );
}

#[test]
fn port_69_answers_each_request_with_at_most_one_error() {
    let mut t = Tftp::new();
    t.request(&tftp::rrq("image.bin", "octet", &[]));
    let from_69 = |t: &mut Tftp| {
        let frame = testkit::udp(t.server, t.client, &tftp::error(2, "Access violation"));
        t.h.send(&frame)
    };
    assert_eq!(from_69(&mut t).verdict, Verdict::Accept);
    violation(&from_69(&mut t), Reason::TftpUnexpectedOpcode);
    // A new request may draw a new error.
    t.request(&tftp::rrq("other.bin", "octet", &[]));
    assert_eq!(from_69(&mut t).verdict, Verdict::Accept);
}

#[test]
fn the_uefi_size_probe_ends_with_error_8_and_the_real_read_follows() {
    // UEFI firmware asks for the size first: RRQ with tsize=0 and blksize, reads the OACK,
    // ends that transfer with ERROR 8 (RFC 2347: option negotiation refused / aborted by the
    // client), then reads the file with a fresh request.
    let mut t = Tftp::new();
    let d = t.request(&tftp::rrq(
        "bootx64.efi",
        "octet",
        &[("tsize", "0"), ("blksize", "1468")],
    ));
    assert_eq!(opened(&d).len(), 1, "{d:?}");
    t.server_ok(&tftp::oack(&[("tsize", "906240"), ("blksize", "1468")]));
    let d = t.client_ok(&tftp::error(8, "transfer aborted by user"));
    assert!(
        violations(&d).is_empty(),
        "the probe's ERROR 8 is no violation: {d:?}"
    );
    // The real read: a new client port, a new transfer ID.
    t.client = sock("198.51.100.10:50001");
    t.tid = sock("192.0.2.10:41001");
    let d = t.request(&tftp::rrq("bootx64.efi", "octet", &[("blksize", "1468")]));
    assert_eq!(opened(&d).len(), 1, "{d:?}");
    t.server_ok(&tftp::oack(&[("blksize", "1468")]));
    t.client_ok(&tftp::ack(0));
    for block in 1..=3 {
        t.server_ok(&tftp::data(block, 1468));
        t.client_ok(&tftp::ack(block));
    }
    t.server_ok(&tftp::data(4, 10));
    t.client_ok(&tftp::ack(4));
    // Some firmware repeats the probe from the same port it read from before: also fine.
    t.tid = sock("192.0.2.10:41002");
    let d = t.request(&tftp::rrq(
        "bootx64.efi",
        "octet",
        &[("tsize", "0"), ("blksize", "1468")],
    ));
    assert_eq!(opened(&d).len(), 1, "{d:?}");
    t.server_ok(&tftp::oack(&[("tsize", "906240"), ("blksize", "1468")]));
    t.client_ok(&tftp::error(8, "transfer aborted by user"));
}
