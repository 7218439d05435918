//! The FTP inspector end to end on built conversations: what opens, what is refused, and the
//! tricks used to make a firewall and a server read a control connection differently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use common::{Harness, opened, violations};
use pinhole::conntrack::PortMatch;
use pinhole::event::{CloseCause, Event, PinholeAction};
use pinhole::testkit::{TcpBuilder, TcpSession, flags, sock};
use pinhole::{Decision, Reason, Verdict};

const CLIENT: &str = "198.51.100.10:40000";
const SERVER: &str = "192.0.2.10:21";
const CLIENT6: &str = "[2001:db8:100::10]:40000";
const SERVER6: &str = "[2001:db8:2::10]:21";

/// A control connection through the handshake and the banner.
struct Ftp {
    h: Harness,
    s: TcpSession,
}

impl Ftp {
    fn with(h: Harness, client: &str, server: &str) -> Self {
        let mut s = TcpSession::new(sock(client), sock(server), 1_000_000, 7_000_000);
        let mut ftp = Ftp { h, s: s.clone() };
        for frame in s.handshake() {
            ftp.h.accept(&frame);
        }
        ftp.s = s;
        ftp.server("220 (vsFTPd 3.0.3)");
        ftp
    }

    fn new() -> Self {
        Ftp::with(Harness::default_policy(), CLIENT, SERVER)
    }

    fn v6() -> Self {
        Ftp::with(Harness::default_policy(), CLIENT6, SERVER6)
    }

    /// With `[rule.ftp]` options.
    fn options(options: &str) -> Self {
        let policy =
            format!("[[rule]]\naction = \"allow\"\ninspect = \"ftp\"\n[rule.ftp]\n{options}\n");
        Ftp::with(Harness::new(&policy), CLIENT, SERVER)
    }

    fn client(&mut self, line: &str) -> Decision {
        let frame = self.s.client_data(format!("{line}\r\n").as_bytes());
        self.h.send(&frame)
    }

    fn server(&mut self, line: &str) -> Decision {
        let frame = self.s.server_data(format!("{line}\r\n").as_bytes());
        self.h.accept(&frame)
    }

    fn client_ok(&mut self, line: &str) -> Decision {
        let d = self.client(line);
        assert_eq!(d.verdict, Verdict::Accept, "{line}: {d:?}");
        d
    }

    /// Sends a client line that must be rejected for `reason` (with a violation event).
    fn client_rejected(&mut self, line: &str, reason: Reason) -> Decision {
        let d = self.client(line);
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Reject, Some(reason)),
            "{line}: {d:?}"
        );
        assert!(violations(&d).contains(&reason), "{d:?}");
        d
    }

    fn server_raw(&mut self, line: &str) -> Decision {
        let frame = self.s.server_data(format!("{line}\r\n").as_bytes());
        self.h.send(&frame)
    }

    /// A data connection's SYN from `from` to `to`.
    fn connect(&mut self, from: &str, to: &str) -> Decision {
        self.h
            .send(&TcpSession::new(sock(from), sock(to), 42, 0).syn())
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn hole(src: &str, sport: PortMatch, dst: &str, dport: u16) -> (IpAddr, PortMatch, IpAddr, u16) {
    (ip(src), sport, ip(dst), dport)
}

// ---- passive mode ------------------------------------------------------------------------------

#[test]
fn pasv_opens_on_the_227_reply_for_the_client_only_and_once() {
    let mut f = Ftp::new();
    assert!(
        opened(&f.client_ok("PASV")).is_empty(),
        "nothing opens on the command"
    );
    f.h.drop(
        &TcpSession::new(sock("198.51.100.10:41000"), sock("192.0.2.10:40001"), 1, 2).syn(),
        Reason::DefaultDeny,
    );
    let d = f.server("227 Entering Passive Mode (192,0,2,10,156,65).");
    assert_eq!(
        opened(&d),
        vec![hole("198.51.100.10", PortMatch::Any, "192.0.2.10", 40001)]
    );
    // Another host tries it.
    let d = f.connect("203.0.113.9:41000", "192.0.2.10:40001");
    assert_eq!(d.reason, Some(Reason::PinholeWrongPeer));
    // The client uses it, from any port.
    assert_eq!(
        f.connect("198.51.100.10:41001", "192.0.2.10:40001").verdict,
        Verdict::Accept
    );
    // Once.
    assert_eq!(
        f.connect("198.51.100.10:41002", "192.0.2.10:40001").reason,
        Some(Reason::DefaultDeny)
    );
}

#[test]
fn epsv_opens_the_server_address_with_the_announced_port() {
    let mut f = Ftp::new();
    f.client_ok("EPSV");
    let d = f.server("229 Entering Extended Passive Mode (|||40002|)");
    assert_eq!(
        opened(&d),
        vec![hole("198.51.100.10", PortMatch::Any, "192.0.2.10", 40002)]
    );
    let mut f = Ftp::v6();
    f.client_ok("EPSV");
    let d = f.server("229 Entering Extended Passive Mode (|||40003|)");
    assert_eq!(
        opened(&d),
        vec![hole(
            "2001:db8:100::10",
            PortMatch::Any,
            "2001:db8:2::10",
            40003
        )]
    );
    assert_eq!(
        f.connect("[2001:db8:100::10]:41000", "[2001:db8:2::10]:40003")
            .verdict,
        Verdict::Accept
    );
}

#[test]
fn lpsv_ipv4_and_ipv6() {
    let mut f = Ftp::new();
    f.client_ok("LPSV");
    let d = f.server("228 Entering Long Passive Mode (4,4,192,0,2,10,2,156,68)");
    assert_eq!(
        opened(&d),
        vec![hole("198.51.100.10", PortMatch::Any, "192.0.2.10", 40004)]
    );
    let mut f = Ftp::v6();
    f.client_ok("LPSV");
    let d = f.server(
        "228 Entering Long Passive Mode (6,16,32,1,13,184,0,2,0,0,0,0,0,0,0,0,0,16,2,156,69)",
    );
    assert_eq!(
        opened(&d),
        vec![hole(
            "2001:db8:100::10",
            PortMatch::Any,
            "2001:db8:2::10",
            40005
        )]
    );
}

#[test]
fn multi_line_227_is_read_as_one_reply() {
    let mut f = Ftp::new();
    f.client_ok("PASV");
    assert!(opened(&f.server("227-Entering Passive Mode")).is_empty());
    assert!(opened(&f.server(" there you go")).is_empty());
    let d = f.server("227 (192,0,2,10,156,70)");
    assert_eq!(
        opened(&d),
        vec![hole("198.51.100.10", PortMatch::Any, "192.0.2.10", 40006)]
    );
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut f = Ftp::new();
    f.client_ok("TYPE I");
    f.client_ok("PASV");
    f.client_ok("PASV");
    assert!(opened(&f.server("200 Switching to Binary mode.")).is_empty());
    assert_eq!(
        opened(&f.server("227 Entering Passive Mode (192,0,2,10,156,71).")).len(),
        1
    );
    assert_eq!(
        opened(&f.server("227 Entering Passive Mode (192,0,2,10,156,72).")).len(),
        1
    );
}

#[test]
fn a_refused_passive_command_opens_nothing() {
    let mut f = Ftp::new();
    f.client_ok("PASV");
    assert!(opened(&f.server("500 Illegal PASV command.")).is_empty());
}

// ---- active mode ---------------------------------------------------------------------------------

#[test]
fn port_opens_on_the_200_reply_for_the_server_from_any_port() {
    let mut f = Ftp::new();
    assert!(opened(&f.client_ok("PORT 198,51,100,10,195,80")).is_empty());
    let d = f.server("200 PORT command successful. Consider using PASV.");
    assert_eq!(
        opened(&d),
        vec![hole("192.0.2.10", PortMatch::Any, "198.51.100.10", 50000)]
    );
    assert_eq!(
        f.connect("192.0.2.10:20", "198.51.100.10:50000").verdict,
        Verdict::Accept
    );
}

#[test]
fn eprt_and_lprt_in_both_families() {
    let mut f = Ftp::new();
    f.client_ok("EPRT |1|198.51.100.10|50001|");
    assert_eq!(
        opened(&f.server("200 EPRT command successful.")),
        vec![hole("192.0.2.10", PortMatch::Any, "198.51.100.10", 50001)]
    );
    f.client_ok("LPRT 4,4,198,51,100,10,2,195,82");
    assert_eq!(
        opened(&f.server("200 LPRT ok.")),
        vec![hole("192.0.2.10", PortMatch::Any, "198.51.100.10", 50002)]
    );
    let mut f = Ftp::v6();
    f.client_ok("EPRT |2|2001:db8:100::10|50003|");
    assert_eq!(
        opened(&f.server("200 EPRT command successful.")),
        vec![hole(
            "2001:db8:2::10",
            PortMatch::Any,
            "2001:db8:100::10",
            50003
        )]
    );
    f.client_ok("LPRT 6,16,32,1,13,184,1,0,0,0,0,0,0,0,0,0,0,16,2,195,84");
    assert_eq!(
        opened(&f.server("200 LPRT ok.")),
        vec![hole(
            "2001:db8:2::10",
            PortMatch::Any,
            "2001:db8:100::10",
            50004
        )]
    );
}

#[test]
fn a_refused_port_opens_nothing() {
    let mut f = Ftp::new();
    f.client_ok("PORT 198,51,100,10,195,80");
    assert!(opened(&f.server("500 Illegal PORT command.")).is_empty());
    f.h.drop(
        &TcpSession::new(sock("192.0.2.10:20"), sock("198.51.100.10:50000"), 1, 2).syn(),
        Reason::DefaultDeny,
    );
}

#[test]
fn active_from_port_20_when_required() {
    let mut f = Ftp::options("active_from_port_20 = true");
    f.client_ok("PORT 198,51,100,10,195,80");
    assert_eq!(
        opened(&f.server("200 PORT ok.")),
        vec![hole(
            "192.0.2.10",
            PortMatch::Exact(20),
            "198.51.100.10",
            50000
        )]
    );
    assert_eq!(
        f.connect("192.0.2.10:3000", "198.51.100.10:50000").reason,
        Some(Reason::PinholeWrongPeer)
    );
    assert_eq!(
        f.connect("192.0.2.10:20", "198.51.100.10:50000").verdict,
        Verdict::Accept
    );
}

#[test]
fn open_active_on_command_for_servers_that_connect_before_replying() {
    let mut f = Ftp::options("open_active_on = \"command\"");
    let d = f.client_ok("PORT 198,51,100,10,195,80");
    assert_eq!(opened(&d).len(), 1);
    assert_eq!(
        f.connect("192.0.2.10:20", "198.51.100.10:50000").verdict,
        Verdict::Accept
    );
    f.server("200 Active data connection established.");
    // A refusal closes what the command opened.
    f.client_ok("PORT 198,51,100,10,195,81");
    let d = f.server("500 Illegal PORT command.");
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::Pinhole {
            action: PinholeAction::Close,
            ..
        }
    )));
    assert_eq!(
        f.connect("192.0.2.10:20", "198.51.100.10:50001").reason,
        Some(Reason::DefaultDeny)
    );
}

// ---- checks ----------------------------------------------------------------------------------------

#[test]
fn bounce_to_a_third_host_is_rejected_and_ends_the_session() {
    for line in [
        "PORT 10,0,0,5,0,80",
        "EPRT |1|10.0.0.5|8080|",
        "LPRT 4,4,10,0,0,5,2,31,144",
        "EPRT |2|2001:db8:100::10|50000|",
    ] {
        let mut f = Ftp::new();
        let d = f.client_rejected(line, Reason::FtpBounce);
        assert!(opened(&d).is_empty());
        // Nothing of the session passes after the reset.
        f.h.drop(
            &f.s.server_data(b"200 PORT command successful.\r\n"),
            Reason::TcpAfterReset,
        );
    }
}

#[test]
fn on_violation_drop_blocks_the_direction_instead() {
    let mut f = Ftp::options("on_violation = \"drop\"");
    let d = f.client("PORT 10,0,0,5,0,80");
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Drop, Some(Reason::FtpBounce))
    );
    let d = f.client("NOOP");
    assert_eq!(d.reason, Some(Reason::FtpBlocked));
    // The server side still flows (its replies to earlier commands, ACKs).
    f.server("200 NOOP ok.");
}

#[test]
fn privileged_data_ports_are_refused() {
    let mut f = Ftp::new();
    f.client_rejected("PORT 198,51,100,10,0,25", Reason::FtpPrivilegedPort);
    let mut f = Ftp::new();
    f.client_ok("PASV");
    let d = f.server_raw("227 Entering Passive Mode (192,0,2,10,0,22).");
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Reject, Some(Reason::FtpPrivilegedPort))
    );
    // The limit is configurable.
    let mut f = Ftp::options("min_data_port = 20");
    f.client_ok("PORT 198,51,100,10,0,25");
    assert_eq!(opened(&f.server("200 ok")).len(), 1);
}

#[test]
fn numbers_out_of_range_are_refused() {
    for line in [
        "PORT 198,51,100,256,195,80",
        "PORT 198,51,100,10,0,0",
        "PORT 198,51,100,10,195",
        "EPRT |1|198.51.100.10|70000|",
        "EPRT |1|198.51.100.10|0|",
        "EPRT |3|198.51.100.10|50000|",
        "LPRT 4,4,198,51,100,10,2,0,0",
        "LPRT 5,4,198,51,100,10,2,195,80",
    ] {
        Ftp::new().client_rejected(line, Reason::FtpBadAddress);
    }
    let mut f = Ftp::new();
    f.client_ok("PASV");
    let d = f.server_raw("227 Entering Passive Mode (192,0,2,300,156,64).");
    assert_eq!(d.reason, Some(Reason::FtpBadAddress));
    let mut f = Ftp::new();
    f.client_ok("EPSV");
    let d = f.server_raw("229 Entering Extended Passive Mode (|||0|)");
    assert_eq!(d.reason, Some(Reason::FtpBadAddress));
}

#[test]
fn passive_address_other_than_the_server() {
    // The default: the pinhole opens for the control connection's server, on the announced
    // port, and a notice says what was replaced. The session goes on.
    for mut f in [Ftp::new(), Ftp::options("passive_address = \"control\"")] {
        f.client_ok("PASV");
        let d = f.server("227 Entering Passive Mode (10,0,0,5,156,64).");
        assert_eq!(
            opened(&d),
            vec![hole("198.51.100.10", PortMatch::Any, "192.0.2.10", 40000)]
        );
        assert!(d.events.iter().any(|e| matches!(
            e,
            Event::Notice {
                kind: "passive_address_replaced",
                detail,
                ..
            } if detail == "227 reply names 10.0.0.5, not the server 192.0.2.10; pinhole opened for the server address"
        )));
        assert!(
            !d.events
                .iter()
                .any(|e| matches!(e, Event::Violation { .. })),
            "{d:?}"
        );
        // The next command and reply pass: nothing was reset.
        f.client_ok("RETR x");
        f.server("150 Opening BINARY mode data connection.");
    }

    // The strict setting refuses it, and opens nothing.
    let mut f = Ftp::options("passive_address = \"refuse\"");
    f.client_ok("PASV");
    let d = f.server_raw("227 Entering Passive Mode (10,0,0,5,156,64).");
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Reject, Some(Reason::FtpPassiveAddressMismatch))
    );
    assert!(opened(&d).is_empty());
}

#[test]
fn commands_and_replies_from_the_wrong_side_open_nothing() {
    // 227 text sent by the client.
    Ftp::new().client_rejected(
        "227 Entering Passive Mode (192,0,2,10,156,64).",
        Reason::FtpWrongDirection,
    );
    // PORT text sent by the server, outside any reply.
    let mut f = Ftp::new();
    let d = f.server_raw("PORT 192,0,2,10,156,64");
    assert_eq!(d.reason, Some(Reason::FtpWrongDirection));
    // PORT inside a USER argument is an argument.
    let mut f = Ftp::new();
    assert!(opened(&f.client_ok("USER PORT 198,51,100,10,195,80")).is_empty());
    assert!(opened(&f.server("331 Please specify the password.")).is_empty());
    // A passive reply to nothing.
    let mut f = Ftp::new();
    f.client_ok("NOOP");
    let d = f.server_raw("227 Entering Passive Mode (192,0,2,10,156,64).");
    assert_eq!(d.reason, Some(Reason::FtpUnexpectedReply));
}

#[test]
fn disabled_modes_are_violations() {
    Ftp::options("active = false")
        .client_rejected("PORT 198,51,100,10,195,80", Reason::FtpModeNotAllowed);
    Ftp::options("passive = false").client_rejected("EPSV", Reason::FtpModeNotAllowed);
}

// ---- pinhole limits and lifetime ----------------------------------------------------------------------

#[test]
fn a_connection_keeps_at_most_four_pending_pinholes() {
    let mut f = Ftp::new();
    for i in 0..5u16 {
        f.client_ok("PASV");
        let d = f.server(&format!(
            "227 Entering Passive Mode (192,0,2,10,156,{}).",
            100 + i
        ));
        if i == 4 {
            let closed: Vec<u16> = d
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Pinhole {
                        action: PinholeAction::Close,
                        pinhole,
                        ..
                    } => Some(pinhole.opening.dport),
                    _ => None,
                })
                .collect();
            assert_eq!(closed, vec![40036], "the oldest goes");
        }
    }
    assert_eq!(f.h.engine.pinholes().len(), 4);
}

#[test]
fn a_full_pinhole_table_refuses_and_says_so() {
    let policy = "[[rule]]\naction = \"allow\"\ninspect = \"ftp\"\n[limits]\nmax_pinholes = 1\n";
    let mut f = Ftp::with(Harness::new(policy), CLIENT, SERVER);
    f.client_ok("PASV");
    f.server("227 Entering Passive Mode (192,0,2,10,156,64).");
    let mut g = Ftp {
        h: f.h,
        s: TcpSession::new(sock("198.51.100.11:40000"), sock(SERVER), 5, 6),
    };
    for frame in g.s.handshake() {
        g.h.accept(&frame);
    }
    g.server("220 ready");
    g.client_ok("PASV");
    let d = g.server_raw("227 Entering Passive Mode (192,0,2,10,156,65).");
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Reject, Some(Reason::FtpPinholeLimit))
    );
    assert_eq!(g.h.engine.counters().pinholes_refused, 1);
}

#[test]
fn unused_pinholes_expire_after_the_data_timeout() {
    let mut f = Ftp::options("data_timeout = 5");
    f.client_ok("PASV");
    f.server("227 Entering Passive Mode (192,0,2,10,156,64).");
    let expired = f.h.advance(5);
    assert!(matches!(
        expired.events.as_slice(),
        [Event::Pinhole {
            action: PinholeAction::Expire,
            ..
        }]
    ));
    assert_eq!(
        f.connect("198.51.100.10:41000", "192.0.2.10:40000").reason,
        Some(Reason::DefaultDeny)
    );
}

#[test]
fn data_connections_die_with_the_control_connection_when_configured() {
    for outlive in [true, false] {
        let mut f = Ftp::options(&format!("data_outlives_control = {outlive}"));
        f.client_ok("PASV");
        f.server("227 Entering Passive Mode (192,0,2,10,156,64).");
        let mut data = TcpSession::new(sock("198.51.100.10:41000"), sock("192.0.2.10:40000"), 1, 2);
        for frame in data.handshake() {
            f.h.accept(&frame);
        }
        f.h.accept(&f.s.client_rst());
        let expired = f.h.advance(11);
        let parent_closed = expired.events.iter().any(|e| {
            matches!(
                e,
                Event::FlowClosed {
                    cause: CloseCause::ParentClosed,
                    ..
                }
            )
        });
        assert_eq!(parent_closed, !outlive);
        let d = f.h.send(&data.server_data(b"data"));
        assert_eq!(d.verdict == Verdict::Accept, outlive);
    }
}

// ---- abort and restart (the field note) ------------------------------------------------------------------

#[test]
fn abort_with_telnet_synch_then_a_new_passive_transfer() {
    let mut f = Ftp::new();
    f.client_ok("PASV");
    f.server("227 Entering Passive Mode (192,0,2,10,156,64).");
    f.client_ok("RETR c2600-image.bin");
    let mut data = TcpSession::new(sock("198.51.100.10:41000"), sock("192.0.2.10:40000"), 1, 2);
    for frame in data.handshake() {
        f.h.accept(&frame);
    }
    f.server("150 Opening BINARY mode data connection.");
    f.h.accept(&data.server_data(&[0u8; 1000]));
    // RFC 959 4.1.3: IAC IP, then IAC DM as urgent data, then ABOR.
    f.h.accept(&f.s.client_data(b"\xff\xf4"));
    let synch = TcpBuilder::new(
        f.s.client(),
        f.s.server(),
        flags::ACK | flags::PSH | flags::URG,
        f.s.client_next(),
        f.s.server_next(),
        501,
    )
    .urgent(2)
    .build(b"\xff\xf2");
    f.h.accept(&synch);
    let _ = f.s.client_data(b"\xff\xf2"); // advance our model of the client's sequence numbers
    f.client_ok("ABOR");
    f.server("426 Failure writing network stream.");
    f.server("226 ABOR successful.");
    // The restart.
    f.client_ok("PASV");
    let d = f.server("227 Entering Passive Mode (192,0,2,10,156,65).");
    assert_eq!(opened(&d).len(), 1);
    assert_eq!(
        f.connect("198.51.100.10:41001", "192.0.2.10:40001").verdict,
        Verdict::Accept
    );
    assert_eq!(f.h.engine.counters().violations, 0);
}

// ---- stream reassembly ------------------------------------------------------------------------------------------

#[test]
fn a_command_one_byte_per_segment_is_understood() {
    let mut f = Ftp::new();
    for b in b"PORT 198,51,100,10,195,80\r\n" {
        f.h.accept(&f.s.client_data(&[*b]));
    }
    assert_eq!(opened(&f.server("200 PORT ok.")).len(), 1);
}

#[test]
fn a_bounce_split_across_segments_is_still_a_bounce() {
    let mut f = Ftp::new();
    f.h.accept(&f.s.client_data(b"PO"));
    f.h.accept(&f.s.client_data(b"RT 10,0,0,"));
    let d = f.client("5,0,80");
    assert_eq!(d.reason, Some(Reason::FtpBounce));
}

#[test]
fn out_of_order_segments_are_reassembled() {
    let mut f = Ftp::new();
    let first = f.s.client_data(b"PORT 198,51,");
    let second = f.s.client_data(b"100,10,195,80\r\n");
    f.h.accept(&second);
    f.h.accept(&first);
    assert_eq!(opened(&f.server("200 PORT ok.")).len(), 1);
}

#[test]
fn a_retransmission_that_rewrites_the_command_is_a_conflict() {
    let mut f = Ftp::new();
    let seq = f.s.client_next();
    f.h.accept(&f.s.client_data(b"NOOP\r\n"));
    let rewrite = TcpBuilder::new(
        f.s.client(),
        f.s.server(),
        flags::ACK | flags::PSH,
        seq,
        f.s.server_next(),
        501,
    )
    .build(b"PORT 10,0,0,5,0,25\r\n");
    let d = f.h.send(&rewrite);
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Reject, Some(Reason::FtpStreamConflict))
    );
}

#[test]
fn a_reply_outside_the_window_is_never_parsed() {
    let mut f = Ftp::new();
    f.client_ok("PASV");
    let injected = f.s.server_raw(
        flags::ACK | flags::PSH,
        5_000_000,
        b"227 Entering Passive Mode (192,0,2,10,156,64).\r\n",
    );
    let d = f.h.send(&injected);
    assert_eq!(d.reason, Some(Reason::TcpOutOfWindow));
    assert!(opened(&d).is_empty());
    assert!(f.h.engine.pinholes().is_empty());
}

#[test]
fn line_violations() {
    let mut f = Ftp::new();
    let d = f.client(&format!("RETR {}", "A".repeat(1100)));
    assert_eq!(d.reason, Some(Reason::FtpLineTooLong));
    let mut f = Ftp::new();
    let d =
        f.h.send(&f.s.client_data(b"USER anonymous\0PORT 10,0,0,5,0,25\r\n"));
    assert_eq!(d.reason, Some(Reason::FtpNulInLine));
    let mut f = Ftp::new();
    let d =
        f.h.send(&f.s.client_data(b"USER anonymous\rPORT 10,0,0,5,0,25\r\n"));
    assert_eq!(d.reason, Some(Reason::FtpBareCr));
    let mut f = Ftp::options("max_line = 2048");
    f.client_ok(&format!("RETR {}", "A".repeat(1100)));
}

#[test]
fn too_many_pipelined_commands() {
    let mut f = Ftp::new();
    for _ in 0..64 {
        f.client_ok("NOOP");
    }
    f.client_rejected("NOOP", Reason::FtpPipelineLimit);
}

// ---- FTPS ------------------------------------------------------------------------------------------------------

#[test]
fn auth_tls_is_refused_by_default_with_a_reset() {
    let mut f = Ftp::new();
    f.client_rejected("AUTH TLS", Reason::FtpTlsDenied);
    let mut f = Ftp::new();
    f.client_rejected("AUTH SSL", Reason::FtpTlsDenied);
}

#[test]
fn auth_tls_allowed_uninspected_takes_no_cleartext_afterwards() {
    let mut f = Ftp::options("ftps = \"allow-uninspected\"");
    f.client_ok("AUTH TLS");
    let d = f.server("234 Proceed with negotiation.");
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::Notice {
            kind: "tls_uninspected",
            ..
        }
    )));
    // TLS records must follow: cleartext commands are refused (tests/ftps.rs has the rest).
    f.client_rejected("PASV", Reason::FtpTlsInvalid);
}

// ---- other ports, pickup ---------------------------------------------------------------------------------------

#[test]
fn ftp_on_port_2121() {
    let policy = "[[rule]]\naction = \"allow\"\ninspect = \"ftp\"\nports = [21, 2121]\n";
    let mut f = Ftp::with(Harness::new(policy), CLIENT, "192.0.2.10:2121");
    f.client_ok("EPSV");
    assert_eq!(
        opened(&f.server("229 Entering Extended Passive Mode (|||40000|)")).len(),
        1
    );
}

#[test]
fn a_picked_up_control_connection_is_inspected_from_its_next_line() {
    let policy =
        "[[rule]]\naction = \"allow\"\ninspect = \"ftp\"\n[tcp]\nmidstream_pickup = true\n";
    let mut s = TcpSession::new(sock(CLIENT), sock(SERVER), 1_000_000, 7_000_000);
    let _ = s.handshake();
    let _ = s.client_data(b"USER anonymous\r\nPA");
    let mut h = Harness::new(policy);
    // Joins mid-line: "SS x" is skipped, then commands are read.
    h.accept(&s.client_data(b"SS x\r\nPASV\r\n"));
    // The server's first segment starts with a reply line, so it is read from its start.
    let d = h.accept(&s.server_data(b"227 Entering Passive Mode (192,0,2,10,156,64).\r\n"));
    assert_eq!(opened(&d).len(), 1);
}

#[test]
fn epsv_all_forbids_the_other_data_commands() {
    let mut f = Ftp::new();
    f.client_ok("EPSV ALL");
    f.server("200 EPSV ALL ok.");
    f.client_ok("EPSV");
    assert_eq!(
        opened(&f.server("229 Entering Extended Passive Mode (|||40000|)")).len(),
        1
    );
    f.client_rejected("PASV", Reason::FtpModeNotAllowed);
    let mut f = Ftp::new();
    f.client_ok("EPSV ALL");
    f.server("200 EPSV ALL ok.");
    f.client_rejected("PORT 198,51,100,10,195,80", Reason::FtpModeNotAllowed);
}

#[test]
fn abort_quit_and_rein_close_what_was_negotiated() {
    for command in ["ABOR", "QUIT", "REIN"] {
        let mut f = Ftp::new();
        f.client_ok("PASV");
        f.server("227 Entering Passive Mode (192,0,2,10,156,64).");
        f.client_ok(command);
        let reply = match command {
            "ABOR" => "226 ABOR successful.",
            "QUIT" => "221 Goodbye.",
            _ => "220 Service ready for new user.",
        };
        let d = f.server(reply);
        assert!(
            d.events.iter().any(|e| matches!(
                e,
                Event::Pinhole {
                    action: PinholeAction::Close,
                    ..
                }
            )),
            "{command}"
        );
        assert_eq!(
            f.connect("198.51.100.10:41000", "192.0.2.10:40000").reason,
            Some(Reason::DefaultDeny),
            "{command}"
        );
    }
}

/// All control connections of an engine together hold at most `limits.max_stream_bytes`:
/// many connections each parking out-of-order bytes below their own cap cannot add up to
/// unbounded memory. Segments beyond it are dropped (the sender retransmits), and the room
/// comes back when a connection goes.
#[test]
fn buffered_control_stream_bytes_are_capped_per_engine() {
    let policy =
        "[[rule]]\naction = \"allow\"\ninspect = \"ftp\"\n[limits]\nmax_stream_bytes = 8000\n";
    let mut h = Harness::new(policy);
    let mut sessions = Vec::new();
    for i in 0..4u16 {
        let client = format!("198.51.100.{}:40000", 10 + i);
        let mut s = TcpSession::new(sock(&client), sock(SERVER), 1_000, 7_000);
        for frame in s.handshake() {
            h.accept(&frame);
        }
        sessions.push(s);
    }
    // Each connection parks 3000 bytes after a one-byte gap (below its own 16 KiB cap).
    let parked = vec![b'A'; 3000];
    let mut refused = 0;
    for s in &sessions {
        let d = h.send(&s.client_raw(flags::ACK, 1, &parked));
        if d.reason == Some(Reason::FtpReassemblyLimit) {
            refused += 1;
        }
        assert!(
            h.engine.stream_bytes() <= 8000,
            "{}",
            h.engine.stream_bytes()
        );
    }
    assert_eq!(
        refused, 2,
        "two connections fit under 8000 bytes, two do not"
    );
    assert_eq!(h.engine.stream_bytes(), 6000);
    assert_eq!(h.engine.counters().drops.get(Reason::FtpReassemblyLimit), 2);
    // The first connection resets and leaves: its bytes are released, a refused one fits now.
    h.accept(&sessions[0].client_rst());
    h.advance(60);
    assert_eq!(h.engine.stream_bytes(), 3000);
    let d = h.send(&sessions[3].client_raw(flags::ACK, 1, &parked));
    assert_eq!(d.reason, None, "{d:?}");
    assert_eq!(h.engine.stream_bytes(), 6000);
}

/// A command hidden in Telnet framing: the inspector skips `IAC SB ... IAC SE` and the option
/// byte after `IAC WILL/WONT/DO/DONT`, but a server that ignores Telnet reads a line break
/// there and a command after it. A line break in those places is refused.
#[test]
fn line_breaks_inside_telnet_commands_are_refused() {
    for hidden in [
        &b"\xff\xfa\r\nPORT 203,0,113,9,0,80\r\n\xff\xf0NOOP\r\n"[..],
        &b"\xff\xfb\nPORT 203,0,113,9,0,80\r\n"[..],
    ] {
        let mut f = Ftp::new();
        let frame = f.s.client_data(hidden);
        let d = f.h.send(&frame);
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Reject, Some(Reason::FtpTelnetLineBreak)),
            "{d:?}"
        );
        assert!(violations(&d).contains(&Reason::FtpTelnetLineBreak));
    }
    // Telnet commands without line breaks inside stay harmless and are skipped.
    let mut f = Ftp::new();
    f.client_ok("\u{ff}\u{fb}\u{1}NOOP");
}

/// Checksum insertion: a segment the receiver would discard (wrong checksum) must not be read
/// by the inspector either; the sender's real segment at the same sequence number then is.
#[test]
fn a_segment_with_a_wrong_checksum_is_not_inspected() {
    let mut f = Ftp::new();
    let mut bad =
        f.s.client_raw(flags::ACK | flags::PSH, 0, b"PORT 203,0,113,9,0,80\r\n");
    // Ethernet (14) + IPv4 (20) + TCP checksum at offset 16.
    bad[14 + 20 + 16] ^= 0xff;
    f.h.drop(&bad, Reason::BadChecksum);
    f.client_ok("PASV");
    let d = f.server("227 Entering Passive Mode (192,0,2,10,156,65).");
    assert_eq!(opened(&d).len(), 1, "the bogus PORT left no trace: {d:?}");
}

/// TCP Fast Open (RFC 7413): a PORT in the SYN would reach a Fast Open server before the
/// inspector reads the stream. The SYN is dropped and leaves no flow; the client's retry
/// without data opens the control connection as usual.
#[test]
fn a_syn_carrying_data_to_an_ftp_port_is_refused() {
    let mut h = Harness::default_policy();
    let mut s = TcpSession::new(sock(CLIENT), sock(SERVER), 1_000, 7_000);
    let tfo = TcpBuilder::new(sock(CLIENT), sock(SERVER), flags::SYN, 1_000, 0, 65535)
        .build(b"PORT 203,0,113,9,0,80\r\n");
    let d = h.send(&tfo);
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Drop, Some(Reason::FtpSynData)),
        "{d:?}"
    );
    assert!(violations(&d).contains(&Reason::FtpSynData));
    assert_eq!(h.engine.flows().len(), 0, "nothing kept");
    for frame in s.handshake() {
        h.accept(&frame);
    }
    h.accept(&s.server_data(b"220 ready\r\n"));
}
