//! The engine end to end on built packets: every drop reason the core produces, flow
//! lifetimes, eviction, pinholes, fragments and ICMP errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pinhole::conntrack::{Opening, ParentRef, PinholeSpec, PortMatch};
use pinhole::event::{CloseCause, Event, PinholeAction};
use pinhole::testkit::{self, TcpBuilder, TcpSession, addr, flags, sock};
use pinhole::{Instant, Reason, Verdict};

mod common;
use common::Harness;

const CLIENT: &str = "198.51.100.10:40000";
const SERVER: &str = "192.0.2.10:21";

fn ftp_session() -> TcpSession {
    TcpSession::new(sock(CLIENT), sock(SERVER), 1_000_000, 7_000_000)
}

/// A session through the handshake and the banner.
fn established(h: &mut Harness) -> TcpSession {
    let mut s = ftp_session();
    for frame in s.handshake() {
        h.accept(&frame);
    }
    h.accept(&s.server_data(b"220 ready\r\n"));
    s
}

// ---- policy ------------------------------------------------------------------------------

#[test]
fn default_policy_admits_ftp_and_tftp_and_nothing_else() {
    let mut h = Harness::default_policy();
    let d = h.accept(&ftp_session().syn());
    assert!(
        matches!(d.events.as_slice(), [Event::FlowOpened { rule: Some(r), alg: Some(pinhole::alg::Alg::Ftp), .. }] if &**r == "ftp-control")
    );
    h.accept(&testkit::udp(
        sock("198.51.100.10:5000"),
        sock("192.0.2.10:69"),
        b"\x00\x01f\x00octet\x00",
    ));
    h.drop(
        &TcpSession::new(sock(CLIENT), sock("192.0.2.10:22"), 1, 2).syn(),
        Reason::DefaultDeny,
    );
    h.drop(
        &testkit::udp(sock("198.51.100.10:5000"), sock("192.0.2.10:53"), b"x"),
        Reason::DefaultDeny,
    );
    h.drop(
        &testkit::icmp_echo(addr("198.51.100.10"), addr("192.0.2.10"), 1, 1, true),
        Reason::DefaultDeny,
    );
    h.drop(
        &testkit::raw_ipv4(addr("198.51.100.10"), addr("192.0.2.10"), 47, b"gre"),
        Reason::DefaultDeny,
    );
}

#[test]
fn deny_rule_is_named_in_the_reason() {
    let mut h = Harness::new(
        "default_action = \"allow\"\n[[rule]]\nname = \"no-ssh\"\nproto = \"tcp\"\nports = [22]\naction = \"deny\"\n",
    );
    h.drop(
        &TcpSession::new(sock(CLIENT), sock("192.0.2.10:22"), 1, 2).syn(),
        Reason::PolicyDeny,
    );
    h.accept(&TcpSession::new(sock(CLIENT), sock("192.0.2.10:23"), 1, 2).syn());
}

// ---- TCP -----------------------------------------------------------------------------------

#[test]
fn replaces_permit_established() {
    let mut h = Harness::default_policy();
    // An ACK to an inside port with no handshake: "established" in an ACL, dropped here.
    h.drop(
        &testkit::tcp(sock(CLIENT), sock("192.0.2.10:445"), flags::ACK, 5, 5, b""),
        Reason::TcpNoHandshake,
    );
    h.drop(
        &testkit::tcp(
            sock(CLIENT),
            sock(SERVER),
            flags::ACK | flags::PSH,
            5,
            5,
            b"PORT 1,2,3,4,5,6\r\n",
        ),
        Reason::TcpNoHandshake,
    );
    h.drop(
        &testkit::tcp(
            sock(SERVER),
            sock(CLIENT),
            flags::SYN | flags::ACK,
            5,
            5,
            b"",
        ),
        Reason::TcpNoHandshake,
    );
    h.drop(
        &testkit::tcp(sock(CLIENT), sock(SERVER), flags::RST, 5, 0, b""),
        Reason::TcpNoHandshake,
    );
    assert_eq!(h.engine.flows().len(), 0);
}

#[test]
fn full_session_and_teardown() {
    let mut h = Harness::default_policy();
    let mut s = established(&mut h);
    h.accept(&s.client_data(b"USER anonymous\r\n"));
    h.accept(&s.server_data(b"331 ok\r\n"));
    h.accept(&s.client_fin());
    h.accept(&s.server_fin());
    h.accept(&s.client_ack());
    // Data after the FIN.
    h.drop(
        &s.client_raw(flags::ACK | flags::PSH, 0, b"late"),
        Reason::TcpDataAfterFin,
    );
    // Time-wait ends the flow with cause "fin".
    let expired = h.advance(121);
    assert!(
        matches!(
            expired.events.as_slice(),
            [Event::FlowClosed {
                cause: CloseCause::Fin,
                packets: 9,
                ..
            }]
        ),
        "{expired:?}"
    );
    assert_eq!(h.engine.flows().len(), 0);
}

#[test]
fn out_of_window_segments_are_dropped_and_the_session_continues() {
    let mut h = Harness::default_policy();
    let mut s = established(&mut h);
    h.drop(
        &s.client_raw(
            flags::ACK | flags::PSH,
            2_000_000,
            b"PORT 10,0,0,1,0,80\r\n",
        ),
        Reason::TcpOutOfWindow,
    );
    h.drop(
        &s.client_raw(flags::ACK | flags::PSH, -2_000_000, b"x"),
        Reason::TcpOutOfWindow,
    );
    // Acknowledging data the server never sent.
    let ack_ahead = TcpBuilder::new(
        s.client(),
        s.server(),
        flags::ACK,
        s.client_next(),
        s.server_next() + 5000,
        500,
    )
    .build(b"");
    h.drop(&ack_ahead, Reason::TcpOutOfWindow);
    h.accept(&s.client_data(b"USER a\r\n"));
}

#[test]
fn rst_must_be_in_window() {
    let mut h = Harness::default_policy();
    let mut s = established(&mut h);
    h.drop(
        &s.server_raw(flags::RST, 10_000_000, b""),
        Reason::TcpRstOutOfWindow,
    );
    h.accept(&s.client_data(b"NOOP\r\n"));
    h.accept(&s.client_rst());
    // The server's answers still pass the windows (RFC 5961: a challenge ACK, a segment in
    // flight); the flow stays closed. Outside the windows nothing passes.
    h.accept(&s.server_data(b"200 ok\r\n"));
    h.drop(
        &s.server_raw(flags::ACK, 10_000_000, b"x"),
        Reason::TcpOutOfWindow,
    );
    let expired = h.advance(11);
    assert!(matches!(
        expired.events.as_slice(),
        [Event::FlowClosed {
            cause: CloseCause::Reset,
            ..
        }]
    ));
}

#[test]
fn syn_in_established_and_invalid_flags() {
    let mut h = Harness::default_policy();
    let s = established(&mut h);
    h.drop(
        &s.client_raw(flags::SYN, 12345, b""),
        Reason::TcpSynInEstablished,
    );
    h.drop(
        &s.client_raw(flags::SYN | flags::FIN, 0, b""),
        Reason::TcpInvalidFlags,
    );
    h.drop(&s.client_raw(0, 0, b""), Reason::TcpInvalidFlags);
    // A SYN+FIN probe with no flow is an invalid-flags drop too, not a new flow.
    h.drop(
        &testkit::tcp(
            sock("198.51.100.99:1"),
            sock(SERVER),
            flags::SYN | flags::FIN,
            1,
            0,
            b"",
        ),
        Reason::TcpInvalidFlags,
    );
}

#[test]
fn handshake_violations() {
    let mut h = Harness::default_policy();
    let mut s = ftp_session();
    h.accept(&s.syn());
    let wrong = TcpBuilder::new(
        s.server(),
        s.client(),
        flags::SYN | flags::ACK,
        7_000_000,
        12,
        65_000,
    )
    .build(b"");
    h.drop(&wrong, Reason::TcpBadSynAck);
    h.drop(
        &s.client_raw(flags::ACK | flags::PSH, 0, b"USER x\r\n"),
        Reason::TcpHandshakeViolation,
    );
    h.accept(&s.syn_ack());
    h.accept(&s.client_ack());
}

#[test]
fn refused_connection_closes_the_flow() {
    let mut h = Harness::default_policy();
    let mut s = ftp_session();
    h.accept(&s.syn());
    let refusal = TcpBuilder::new(
        s.server(),
        s.client(),
        flags::RST | flags::ACK,
        0,
        s.client_next(),
        0,
    )
    .build(b"");
    h.accept(&refusal);
    // The client retries with a new ISN on the same tuple: a new flow.
    let retry = TcpBuilder::new(s.client(), s.server(), flags::SYN, 55, 0, 64_000).build(b"");
    let d = h.accept(&retry);
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::FlowClosed {
            cause: CloseCause::Reused,
            ..
        }
    )));
    assert!(
        d.events
            .iter()
            .any(|e| matches!(e, Event::FlowOpened { .. }))
    );
}

#[test]
fn unanswered_syn_times_out() {
    let mut h = Harness::default_policy();
    let mut s = ftp_session();
    h.accept(&s.syn());
    assert!(h.advance(29).events.is_empty());
    let expired = h.advance(2);
    assert!(matches!(
        expired.events.as_slice(),
        [Event::FlowClosed {
            cause: CloseCause::Timeout,
            ..
        }]
    ));
    h.drop(&s.syn_ack(), Reason::TcpNoHandshake);
}

#[test]
fn established_idle_timeout_follows_traffic() {
    let mut h = Harness::default_policy();
    let mut s = established(&mut h);
    h.advance(3000);
    h.accept(&s.client_data(b"NOOP\r\n"));
    assert!(
        h.advance(3000).events.is_empty(),
        "traffic refreshed the timeout"
    );
    assert_eq!(h.advance(601).events.len(), 1);
}

#[test]
fn midstream_pickup_is_off_by_default_and_works_when_on() {
    let mut s = ftp_session();
    let _ = s.handshake();
    let mid = s.server_data(b"150 here it comes\r\n");
    let mut h = Harness::default_policy();
    h.drop(&mid, Reason::TcpNoHandshake);

    let mut h = Harness::new(
        "[[rule]]\ninspect = \"ftp\"\naction = \"allow\"\n[tcp]\nmidstream_pickup = true\n",
    );
    // The rules are read from the sender's side only: the server's segment (source port 21)
    // opens nothing, as an outsider's ACK must not ride an inside-to-outside rule.
    h.drop(&mid, Reason::TcpNoHandshake);
    // The client's segment does, and the server's answer confirms the flow.
    let d = h.accept(&s.client_data(b"NOOP\r\n"));
    assert_eq!(d.flow.unwrap().dport, 21);
    let tuple = d.flow.unwrap();
    let handle = h.engine.flows().lookup(&tuple.key()).unwrap();
    assert!(h.engine.flows().get(handle).unwrap().state.is_embryonic());
    h.accept(&s.server_data(b"200 NOOP ok.\r\n"));
    assert!(!h.engine.flows().get(handle).unwrap().state.is_embryonic());
    h.accept(&s.client_data(b"QUIT\r\n"));
    h.drop(
        &s.client_raw(flags::SYN, 9, b""),
        Reason::TcpSynInEstablished,
    );
}

#[test]
fn unconfirmed_pickup_flows_time_out_like_handshakes() {
    let mut h = Harness::new(
        "[[rule]]\nproto = \"tcp\"\naction = \"allow\"\n[tcp]\nmidstream_pickup = true\n",
    );
    // A spoofed ACK from outside: picked up, but never answered.
    h.accept(&testkit::tcp(
        sock("203.0.113.66:443"),
        sock("192.0.2.50:3389"),
        flags::ACK,
        5,
        5,
        b"",
    ));
    assert_eq!(h.engine.flows().embryonic_len(), 1);
    assert_eq!(
        h.advance(31).events.len(),
        1,
        "gone after the handshake timeout, not an hour"
    );
}

// ---- table limits ----------------------------------------------------------------------------

#[test]
fn syn_flood_evicts_embryonic_flows_not_established_sessions() {
    let rules = format!(
        "{}\n[limits]\nmax_flows = 8\n",
        pinhole::policy::DEFAULT_RULES
    );
    let mut h = Harness::new(&rules);
    let mut s = established(&mut h);
    for port in 0..100u16 {
        let syn = TcpSession::new(
            sock(&format!("203.0.113.{}:{}", port % 200 + 1, 1024 + port)),
            sock(SERVER),
            u32::from(port),
            0,
        )
        .syn();
        h.accept(&syn);
    }
    assert_eq!(h.engine.flows().len(), 8);
    assert_eq!(h.engine.counters().flows_evicted, 93);
    h.accept(&s.client_data(b"RETR image.bin\r\n"));
}

// ---- UDP and ICMP ------------------------------------------------------------------------------

#[test]
fn udp_reply_from_the_exact_peer_only() {
    let mut h = Harness::new("[[rule]]\nproto = \"udp\"\nports = [53]\naction = \"allow\"\n");
    let client = sock("198.51.100.10:5000");
    let server = sock("192.0.2.10:53");
    h.accept(&testkit::udp(client, server, b"query"));
    h.accept(&testkit::udp(server, client, b"answer"));
    // Same server, other source port: not the flow, and no rule.
    h.drop(
        &testkit::udp(sock("192.0.2.10:54"), client, b"spoof"),
        Reason::DefaultDeny,
    );
    // The reply direction moved the flow out of the embryonic set: 120 s, not 30 s.
    assert!(h.advance(60).events.is_empty());
    assert_eq!(h.advance(61).events.len(), 1);
}

#[test]
fn icmp_echo_flows() {
    let mut h = Harness::new(
        "[[rule]]\nproto = \"icmp\"\naction = \"allow\"\n[[rule]]\nproto = \"tcp\"\naction = \"allow\"\n",
    );
    let (a, b) = (addr("198.51.100.10"), addr("192.0.2.10"));
    h.drop(
        &testkit::icmp_echo(b, a, 7, 1, false),
        Reason::IcmpNoRequest,
    );
    h.accept(&testkit::icmp_echo(a, b, 7, 1, true));
    h.accept(&testkit::icmp_echo(b, a, 7, 1, false));
    h.drop(
        &testkit::icmp_echo(b, a, 7, 2, true),
        Reason::IcmpEchoWrongDirection,
    );
    h.drop(
        &testkit::icmp_echo(a, b, 7, 1, false),
        Reason::IcmpNoRequest,
    );
    let (a6, b6) = (addr("2001:db8:100::10"), addr("2001:db8:2::10"));
    h.accept(&testkit::icmp_echo(a6, b6, 9, 1, true));
    h.accept(&testkit::icmp_echo(b6, a6, 9, 1, false));
}

#[test]
fn icmp_errors_need_a_tracked_flow_in_the_right_direction() {
    let mut h = Harness::new(
        "[[rule]]\nproto = \"udp\"\naction = \"allow\"\n[[rule]]\nproto = \"tcp\"\naction = \"allow\"\n",
    );
    let (client, server) = (sock("198.51.100.10:5000"), sock("192.0.2.10:5999"));
    let datagram = testkit::udp(client, server, b"hello");
    h.accept(&datagram);
    let (router, c, s) = (addr("192.0.2.1"), client.ip(), server.ip());
    // Port unreachable back to the client, quoting its datagram.
    h.accept(&testkit::icmp_error(s, c, 3, 3, &datagram));
    // The same error sent to the server (which did not send the quoted datagram).
    h.drop(
        &testkit::icmp_error(router, s, 3, 3, &datagram),
        Reason::IcmpErrorMismatch,
    );
    // Quoting a datagram nobody sent.
    let other = testkit::udp(client, sock("192.0.2.10:6000"), b"never");
    h.drop(
        &testkit::icmp_error(s, c, 3, 3, &other),
        Reason::IcmpErrorUntracked,
    );
    // A quote too short to carry ports.
    let mut short = testkit::icmp_error(s, c, 3, 3, &datagram);
    short.truncate(short.len() - 6);
    let len = short.len() - 14;
    short[16..18].copy_from_slice(&(len as u16).to_be_bytes());
    short[24..26].copy_from_slice(&[0, 0]);
    h.drop(&short, Reason::IcmpErrorMalformed);

    // TCP: the quoted sequence number must be plausible.
    let mut tcp = TcpSession::new(
        sock("198.51.100.10:40000"),
        sock("192.0.2.10:80"),
        1000,
        9000,
    );
    for f in tcp.handshake() {
        h.accept(&f);
    }
    let good = tcp.client_data(b"GET / HTTP/1.0\r\n\r\n");
    h.accept(&good);
    h.accept(&testkit::icmp_error(router, c, 11, 0, &good));
    let forged = tcp.client_raw(flags::ACK, 50_000_000, b"");
    h.drop(
        &testkit::icmp_error(router, c, 3, 1, &forged),
        Reason::IcmpErrorMismatch,
    );
}

#[test]
fn informational_icmp_is_judged_by_rules_alone() {
    let mut h = Harness::new("[[rule]]\nproto = \"icmp\"\naction = \"allow\"\n");
    let rs = testkit::icmp_error(
        addr("2001:db8:2::10"),
        addr("2001:db8:100::10"),
        133,
        0,
        &testkit::udp(
            sock("[2001:db8:100::10]:1"),
            sock("[2001:db8:2::10]:2"),
            b"",
        ),
    );
    h.accept(&rs);
    assert_eq!(h.engine.flows().len(), 0);
    let mut h = Harness::default_policy();
    h.drop(&rs, Reason::DefaultDeny);
}

// ---- decoding ----------------------------------------------------------------------------------

#[test]
fn malformed_packets_get_specific_reasons() {
    let mut h = Harness::default_policy();
    let good = testkit::udp(
        sock("198.51.100.10:5000"),
        sock("192.0.2.10:69"),
        b"\x00\x01f\x00octet\x00",
    );
    h.drop(&good[..10], Reason::TruncatedLink);
    h.drop(&good[..30], Reason::TruncatedIp);
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    h.drop(&arp, Reason::NotIp);
    let mut bad_udp = good.clone();
    bad_udp[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&4u16.to_be_bytes());
    h.drop(&bad_udp, Reason::BadUdpLength);
    let tcp = ftp_session().syn();
    let mut short_tcp = tcp[..14 + 20 + 12].to_vec();
    short_tcp[16..18].copy_from_slice(&32u16.to_be_bytes());
    h.drop(&short_tcp, Reason::TruncatedTcp);
    let mut martian = good.clone();
    martian[26..30].copy_from_slice(&[224, 0, 0, 5]);
    h.drop(&martian, Reason::MartianSource);
    assert_eq!(h.engine.counters().dropped, 6);
    assert_eq!(h.engine.counters().drops.get(Reason::NotIp), 1);
}

#[test]
fn every_truncated_prefix_is_a_drop_not_a_panic() {
    let mut frames = ftp_session().handshake();
    frames.push(testkit::udp(
        sock("[2001:db8:100::10]:5000"),
        sock("[2001:db8:2::10]:69"),
        b"\x00\x01f\x00octet\x00",
    ));
    frames.push(testkit::icmp_error(
        addr("192.0.2.1"),
        addr("198.51.100.10"),
        3,
        1,
        &ftp_session().syn(),
    ));
    for frame in frames {
        for len in 0..frame.len() {
            let mut h = Harness::default_policy();
            let d = h.send(&frame[..len]);
            assert_eq!(d.verdict, Verdict::Drop, "prefix {len} of {frame:02x?}");
        }
    }
}

// ---- fragments -----------------------------------------------------------------------------------

#[test]
fn fragmented_datagram_is_inspected_whole_and_every_fragment_gets_its_verdict() {
    let mut h = Harness::default_policy();
    for (client, server) in [
        ("198.51.100.10:5000", "192.0.2.10:69"),
        ("[2001:db8:100::10]:5000", "[2001:db8:2::10]:69"),
    ] {
        // A read request whose long filename spans three fragments: TFTP inspection sees
        // the whole datagram (a parse of any one fragment would fail).
        let mut rrq = b"\x00\x01".to_vec();
        rrq.extend_from_slice(&[b'f'; 290]);
        rrq.extend_from_slice(b"\x00octet\x00");
        let request = testkit::udp(sock(client), sock(server), &rrq);
        let pieces = testkit::fragment(&request, 128, 99);
        assert_eq!(pieces.len(), 3);
        assert_eq!(h.send(&pieces[2]).verdict, Verdict::Held);
        assert_eq!(h.send(&pieces[0]).verdict, Verdict::Held);
        let d = h.send(&pieces[1]);
        assert_eq!(d.verdict, Verdict::Accept);
        let mut released: Vec<(u64, Verdict)> =
            d.released.iter().map(|r| (r.handle, r.verdict)).collect();
        released.sort_unstable_by_key(|r| r.0);
        let n = h.next;
        assert_eq!(
            released,
            vec![(n - 3, Verdict::Accept), (n - 2, Verdict::Accept)]
        );
    }
    assert_eq!(h.engine.counters().datagrams_reassembled, 2);
    assert_eq!(h.engine.counters().accepted, 6);
}

#[test]
fn fragments_of_a_denied_datagram_are_all_dropped() {
    let mut h = Harness::default_policy();
    let request = testkit::udp(
        sock("198.51.100.10:5000"),
        sock("192.0.2.10:53"),
        &[b'x'; 300],
    );
    let pieces = testkit::fragment(&request, 128, 5);
    h.send(&pieces[0]);
    h.send(&pieces[1]);
    let d = h.send(&pieces[2]);
    assert_eq!(d.reason, Some(Reason::DefaultDeny));
    assert!(
        d.released
            .iter()
            .all(|r| r.reason == Some(Reason::DefaultDeny))
    );
    assert_eq!(d.released.len(), 2);
}

#[test]
fn overlapping_and_incomplete_fragments() {
    let mut h = Harness::default_policy();
    let request = testkit::udp(
        sock("198.51.100.10:5000"),
        sock("192.0.2.10:69"),
        &[b'x'; 300],
    );
    let pieces = testkit::fragment(&request, 128, 6);
    h.send(&pieces[0]);
    // The second fragment rewritten with other bytes at an overlapping offset.
    let mut rewrite = pieces[1].clone();
    let n = rewrite.len();
    rewrite[n - 1] ^= 0xff;
    h.send(&pieces[1]);
    let d = h.send(&rewrite);
    assert_eq!(d.reason, Some(Reason::FragmentOverlap));
    assert_eq!(d.released.len(), 2);
    h.drop(&pieces[2], Reason::FragmentOverlap);

    // An incomplete datagram times out; its held fragments are dropped then.
    let other = testkit::fragment(&request, 128, 7);
    assert_eq!(h.send(&other[0]).verdict, Verdict::Held);
    let expired = h.advance(31);
    assert_eq!(expired.released.len(), 1);
    assert_eq!(expired.released[0].reason, Some(Reason::FragmentTimeout));
}

// ---- pinholes ------------------------------------------------------------------------------

#[test]
fn pinhole_admits_one_exact_connection_and_closes_with_its_parent() {
    let mut h = Harness::default_policy();
    let mut control = established(&mut h);
    let parent_tuple = h.accept(&control.client_data(b"PASV\r\n")).flow.unwrap();
    let parent = h.engine.flows().lookup(&parent_tuple.key()).unwrap();
    let mut events = Vec::new();
    let spec = PinholeSpec {
        opening: Opening {
            alg: pinhole::alg::Alg::Ftp,
            proto: 6,
            src: addr("198.51.100.10"),
            sport: PortMatch::Any,
            dst: addr("192.0.2.10"),
            dport: 50_000,
        },
        parent: Some(ParentRef {
            handle: parent,
            flow: parent_tuple,
        }),
        expires: h.now + Duration::from_secs(60),
        child: None,
    };
    h.engine.open_pinhole(spec.clone(), 4, &mut events).unwrap();
    assert!(matches!(
        events.as_slice(),
        [Event::Pinhole {
            action: PinholeAction::Open,
            ..
        }]
    ));

    // A third host cannot use it, and the drop says why.
    h.drop(
        &TcpSession::new(sock("203.0.113.5:41000"), sock("192.0.2.10:50000"), 1, 2).syn(),
        Reason::PinholeWrongPeer,
    );
    // The client can, once.
    let mut data = TcpSession::new(sock("198.51.100.10:41000"), sock("192.0.2.10:50000"), 1, 2);
    let d = h.accept(&data.syn());
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::Pinhole {
            action: PinholeAction::Use,
            ..
        }
    )));
    h.accept(&data.syn_ack());
    h.drop(
        &TcpSession::new(sock("198.51.100.10:41001"), sock("192.0.2.10:50000"), 1, 2).syn(),
        Reason::DefaultDeny,
    );

    // A second pinhole closes when the control connection ends.
    let spec2 = PinholeSpec {
        opening: Opening {
            dport: 50_001,
            ..spec.opening
        },
        ..spec
    };
    h.engine.open_pinhole(spec2, 4, &mut events).unwrap();
    // The RST ends the control connection: its pending pinhole closes with that packet.
    let d = h.accept(&control.client_rst());
    assert!(
        d.events.iter().any(|e| matches!(
            e,
            Event::Pinhole {
                action: PinholeAction::Close,
                ..
            }
        )),
        "{d:?}"
    );
    assert!(h.engine.pinholes().is_empty());
}

#[test]
fn unused_pinhole_expires() {
    let mut h = Harness::default_policy();
    let mut events = Vec::new();
    let spec = PinholeSpec {
        opening: Opening {
            alg: pinhole::alg::Alg::Tftp,
            proto: 17,
            src: addr("192.0.2.10"),
            sport: PortMatch::Range(30_000, 30_009),
            dst: addr("198.51.100.10"),
            dport: 5000,
        },
        parent: None,
        expires: h.now + Duration::from_secs(10),
        child: None,
    };
    h.engine.open_pinhole(spec, 4, &mut events).unwrap();
    assert_eq!(
        h.engine.next_timeout(),
        Some(h.now + Duration::from_secs(10))
    );
    let expired = h.advance(10);
    assert!(matches!(
        expired.events.as_slice(),
        [Event::Pinhole {
            action: PinholeAction::Expire,
            ..
        }]
    ));
    h.drop(
        &testkit::udp(
            sock("192.0.2.10:30001"),
            sock("198.51.100.10:5000"),
            b"late",
        ),
        Reason::DefaultDeny,
    );
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut h = Harness::default_policy();
    let mut s = ftp_session();
    h.accept(&s.syn());
    h.now = Instant::from_secs(1);
    h.accept(&s.syn_ack());
    assert!(h.engine.expire(Instant::from_secs(2)).events.is_empty());
}
