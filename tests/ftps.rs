//! FTPS through the engine: the TLS framing that must follow a 234 (or start an implicit-TLS
//! connection), the cleartext after a CCC inspected again, and the session-bound passive
//! range of `ftps = "allow-passive-range"`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, opened, pinhole_events, violations};
use pinhole::conntrack::PortMatch;
use pinhole::event::{Event, PinholeAction, TransferDirection, TransferResult};
use pinhole::testkit::{TcpSession, addr, sock, tls};
use pinhole::{Decision, Reason, Verdict};

const CLIENT: &str = "198.51.100.10:40000";
const SERVER: &str = "192.0.2.10:21";
const RANGE: &str = "ftps = \"allow-passive-range\"\nftps_passive_ports = \"40000-40100\"";

/// A control connection through the handshake and the banner, under `[rule.ftp]` options.
struct Ftps {
    h: Harness,
    s: TcpSession,
}

impl Ftps {
    fn with(options: &str, server: &str) -> Self {
        let policy = format!(
            "[[rule]]\naction = \"allow\"\ninspect = \"ftp\"\nports = [21, 990]\n[rule.ftp]\n{options}\n"
        );
        let mut h = Harness::new(&policy);
        let mut s = TcpSession::new(sock(CLIENT), sock(server), 1_000_000, 7_000_000);
        for frame in s.handshake() {
            h.accept(&frame);
        }
        Ftps { h, s }
    }

    /// An explicit-FTPS session up to the 234.
    fn explicit(options: &str) -> Self {
        let mut f = Ftps::with(options, SERVER);
        f.server(b"220 ready\r\n");
        f.client(b"AUTH TLS\r\n");
        f.server(b"234 Proceed with negotiation.\r\n");
        f
    }

    /// The TLS handshake of both sides, each ending with an application-data record.
    fn handshake(&mut self) {
        self.client(&tls::flight(1, 60));
        self.server(&tls::flight(2, 80));
    }

    fn client(&mut self, bytes: &[u8]) -> Decision {
        let frame = self.s.client_data(bytes);
        self.h.accept(&frame)
    }

    fn server(&mut self, bytes: &[u8]) -> Decision {
        let frame = self.s.server_data(bytes);
        self.h.accept(&frame)
    }

    fn client_rejected(&mut self, bytes: &[u8], reason: Reason) -> Decision {
        let frame = self.s.client_data(bytes);
        let d = self.h.reject(&frame, reason);
        assert!(violations(&d).contains(&reason), "{d:?}");
        d
    }

    /// The clear after a CCC: both sides close their TLS stream.
    fn clear(&mut self) -> Decision {
        self.client(&tls::close_notify());
        self.server(&tls::close_notify());
        self.client(b"PASV\r\n")
    }

    /// A SYN from `from` to `to`.
    fn connect(&mut self, from: &str, to: &str) -> Decision {
        self.h
            .send(&TcpSession::new(sock(from), sock(to), 42, 0).syn())
    }
}

fn notices(d: &Decision) -> Vec<&'static str> {
    d.events
        .iter()
        .filter_map(|e| match e {
            Event::Notice { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

fn admitted(d: &Decision) -> Vec<(std::net::IpAddr, u16)> {
    pinhole_events(&d.events, PinholeAction::Admit)
        .into_iter()
        .map(|(src, _, _, dport)| (src, dport))
        .collect()
}

// ---- the framing after 234 -------------------------------------------------------------------

#[test]
fn records_split_anywhere_are_followed_and_a_ccc_brings_inspection_back() {
    let mut f = Ftps::explicit("ftps = \"allow-uninspected\"");
    // A ClientHello whose header is split in two, then its body in pieces.
    let hello = tls::hello(1, 300);
    for piece in [&hello[..2], &hello[2..7], &hello[7..150], &hello[150..]] {
        f.client(piece);
    }
    // A maximal record from the server, over several segments.
    let mut server = tls::hello(2, 90);
    server.extend(tls::record(20, &[1]));
    server.extend(tls::record(23, &vec![0; 18432]));
    for piece in server.chunks(1448) {
        f.server(piece);
    }
    let mut rest = tls::record(20, &[1]);
    rest.extend(tls::record(23, &[1; 33]));
    f.client(&rest);
    // While encrypted, nothing the bytes might say opens anything.
    f.client(&tls::record(23, b"PASV\r\n"));
    assert!(opened(&f.server(&tls::record(23, b"227 (192,0,2,10,156,64)\r\n"))).is_empty());
    // CCC: the TLS streams end, the next command is cleartext.
    let d = f.clear();
    assert_eq!(notices(&d), ["tls_cleared"]);
    let d = f.server(b"227 Entering Passive Mode (192,0,2,10,156,65).\r\n");
    assert_eq!(notices(&d), ["tls_cleared"]);
    assert_eq!(
        opened(&d),
        vec![(
            addr("198.51.100.10"),
            PortMatch::Any,
            addr("192.0.2.10"),
            40001
        )]
    );
    assert_eq!(
        f.connect("198.51.100.10:41000", "192.0.2.10:40001").verdict,
        Verdict::Accept
    );
    // EPSV and every check, as on any control connection.
    f.client(b"EPSV\r\n");
    assert_eq!(
        opened(&f.server(b"229 Entering Extended Passive Mode (|||40002|)\r\n")).len(),
        1
    );
}

#[test]
fn a_bounce_after_the_ccc_is_refused() {
    let mut f = Ftps::explicit("ftps = \"allow-uninspected\"");
    f.handshake();
    f.clear();
    f.server(b"227 Entering Passive Mode (192,0,2,10,156,65).\r\n");
    f.client_rejected(b"PORT 203,0,113,9,0,25\r\n", Reason::FtpBounce);
}

#[test]
fn cleartext_commands_behind_a_fake_234_are_refused() {
    let mut f = Ftps::explicit("ftps = \"allow-uninspected\"");
    let d = f.client_rejected(b"PORT 203,0,113,9,0,25\r\n", Reason::FtpTlsInvalid);
    let detail = d
        .events
        .iter()
        .find_map(|e| match e {
            Event::Violation { detail, .. } => Some(detail.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        detail.starts_with("from the client: \"PORT \" where the TLS handshake should start"),
        "{detail}"
    );
    // A server that answers in cleartext after its 234 is refused too.
    let mut f = Ftps::explicit("ftps = \"allow-uninspected\"");
    f.client(&tls::hello(1, 100));
    let frame =
        f.s.server_data(b"227 Entering Passive Mode (192,0,2,10,156,65).\r\n");
    f.h.reject(&frame, Reason::FtpTlsInvalid);
}

#[test]
fn what_follows_the_tls_stream_must_be_ftp() {
    // Garbage where a record header belongs.
    let mut f = Ftps::explicit("ftps = \"allow-uninspected\"");
    f.handshake();
    f.client_rejected(&[0x16, 0x03, 0x03, 0xff, 0xff], Reason::FtpTlsInvalid);
    // Bytes after the TLS stream that are no command.
    let mut f = Ftps::explicit("ftps = \"allow-uninspected\"");
    f.handshake();
    f.client_rejected(b"\x01\x02\x03junk\r\n", Reason::FtpTlsInvalid);
    // Cleartext before the handshake ended.
    let mut f = Ftps::explicit("ftps = \"allow-uninspected\"");
    f.client(&tls::hello(1, 100));
    f.client_rejected(b"USER root\r\n", Reason::FtpTlsInvalid);
}

#[test]
fn ftps_deny_still_refuses_auth() {
    let mut f = Ftps::with("ftps = \"deny\"", SERVER);
    f.server(b"220 ready\r\n");
    f.client_rejected(b"AUTH TLS\r\n", Reason::FtpTlsDenied);
}

// ---- the session-bound passive range ---------------------------------------------------------------

#[test]
fn the_range_admits_the_sessions_client_to_its_server_only() {
    let mut f = Ftps::with(RANGE, SERVER);
    f.server(b"220 ready\r\n");
    // Before TLS, the range is closed.
    assert_eq!(
        f.connect("198.51.100.10:41000", "192.0.2.10:40000").reason,
        Some(Reason::DefaultDeny)
    );
    f.client(b"AUTH TLS\r\n");
    let d = f.server(b"234 Proceed with negotiation.\r\n");
    assert_eq!(notices(&d), ["tls_started"]);
    f.handshake();
    let d = f.connect("198.51.100.10:41001", "192.0.2.10:40050");
    assert_eq!(d.verdict, Verdict::Accept, "{d:?}");
    assert_eq!(admitted(&d), vec![(addr("198.51.100.10"), 40050)]);
    let Some(Event::Pinhole { pinhole, child, .. }) = d.events.iter().find(|e| {
        matches!(
            e,
            Event::Pinhole {
                action: PinholeAction::Admit,
                ..
            }
        )
    }) else {
        panic!("no admit event: {d:?}")
    };
    assert_eq!(pinhole.range, Some((40000, 40100)));
    assert_eq!(pinhole.parent.unwrap().dport, 21);
    assert_eq!(child.unwrap().sport, 41001);
    // Another client, another server address, a port outside the range.
    for (from, to) in [
        ("198.51.100.11:41002", "192.0.2.10:40051"),
        ("198.51.100.10:41003", "192.0.2.11:40051"),
        ("198.51.100.10:41004", "192.0.2.10:39999"),
        ("198.51.100.10:41005", "192.0.2.10:40101"),
    ] {
        let d = f.connect(from, to);
        assert_eq!(d.reason, Some(Reason::DefaultDeny), "{from} -> {to}: {d:?}");
    }
    // Two at a time by default: the third is refused with its own reason.
    assert_eq!(
        f.connect("198.51.100.10:41006", "192.0.2.10:40052").verdict,
        Verdict::Accept
    );
    let d = f.connect("198.51.100.10:41007", "192.0.2.10:40053");
    assert_eq!(d.reason, Some(Reason::FtpsRangeLimit), "{d:?}");
    assert_eq!(violations(&d), [Reason::FtpsRangeLimit]);
}

#[test]
fn a_data_connection_that_ends_frees_its_place_and_is_logged() {
    let mut f = Ftps::explicit(&format!("{RANGE}\nftps_max_connections = 1"));
    f.handshake();
    let mut data = TcpSession::new(sock("198.51.100.10:41001"), sock("192.0.2.10:40010"), 5, 9);
    for frame in data.handshake() {
        assert_eq!(f.h.send(&frame).verdict, Verdict::Accept);
    }
    assert_eq!(
        f.connect("198.51.100.10:41002", "192.0.2.10:40011").reason,
        Some(Reason::FtpsRangeLimit)
    );
    f.h.accept(&data.server_data(&[7; 1000]));
    f.h.accept(&data.server_data(&[7; 500]));
    f.h.accept(&data.client_ack());
    f.h.accept(&data.server_fin());
    f.h.accept(&data.client_fin());
    let closed = f.h.accept(&data.server_ack());
    // Closed (in TIME_WAIT), it no longer counts: the next one is admitted at once.
    assert_eq!(
        f.connect("198.51.100.10:41003", "192.0.2.10:40012").verdict,
        Verdict::Accept
    );
    // Logged when it closed, once.
    let expired = f.h.advance(300);
    assert!(
        !expired
            .events
            .iter()
            .any(|e| matches!(e, Event::Transfer(_))),
        "{expired:?}"
    );
    let transfer = closed
        .events
        .iter()
        .find_map(|e| match e {
            Event::Transfer(t) => Some(t.clone()),
            _ => None,
        })
        .expect("a transfer record");
    assert_eq!(transfer.command, "FTPS");
    assert_eq!(transfer.path, None);
    assert_eq!(transfer.direction, TransferDirection::Download);
    assert_eq!(transfer.result, TransferResult::Complete);
    assert_eq!(
        (transfer.bytes_up, transfer.bytes_down),
        (Some(0), Some(1500))
    );
    assert_eq!(transfer.session.dport, 21);
}

#[test]
fn the_range_closes_when_the_control_connection_ends_or_clears() {
    let mut f = Ftps::explicit(RANGE);
    f.handshake();
    f.client(&tls::close_notify());
    f.h.accept(&f.s.client_fin());
    assert_eq!(
        f.connect("198.51.100.10:41001", "192.0.2.10:40010").reason,
        Some(Reason::DefaultDeny)
    );
    // After a CCC the negotiation is readable: exact pinholes, no range.
    let mut f = Ftps::explicit(RANGE);
    f.handshake();
    f.clear();
    assert_eq!(
        f.connect("198.51.100.10:41001", "192.0.2.10:40010").reason,
        Some(Reason::DefaultDeny)
    );
    assert_eq!(
        opened(&f.server(b"227 Entering Passive Mode (192,0,2,10,156,65).\r\n")).len(),
        1
    );
}

#[test]
fn implicit_tls_follows_the_framing_from_the_first_byte() {
    let options = format!("{RANGE}\nimplicit_tls = true");
    let mut f = Ftps::with(&options, "192.0.2.10:990");
    f.client_rejected(b"USER anonymous\r\n", Reason::FtpTlsInvalid);
    let mut f = Ftps::with(&options, "192.0.2.10:990");
    f.handshake();
    let d = f.connect("198.51.100.10:41001", "192.0.2.10:40010");
    assert_eq!(admitted(&d), vec![(addr("198.51.100.10"), 40010)]);
}

#[test]
fn the_passive_range_needs_its_ports() {
    let policy = "[[rule]]\naction = \"allow\"\ninspect = \"ftp\"\n[rule.ftp]\nftps = \"allow-passive-range\"\n";
    let err = pinhole::policy::Policy::parse(policy, "r.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs the server's passive ports"), "{err}");
    assert!(
        err.contains("ftps_passive_ports = \"40000-40100\""),
        "{err}"
    );
}

#[test]
fn in_offload_mode_range_connections_stay_with_pinhole_while_their_session_lives() {
    let mut f = Ftps::explicit(&format!("{RANGE}\nftps_max_connections = 1"));
    f.h.engine.set_offload(true);
    f.handshake();
    let mut data = TcpSession::new(sock("198.51.100.10:41001"), sock("192.0.2.10:40010"), 5, 9);
    let d = f.h.send(&data.syn());
    assert_eq!(admitted(&d).len(), 1);
    assert!(
        !d.offload,
        "a negotiated data connection would go to the kernel: {d:?}"
    );
    f.h.accept(&data.syn_ack());
    let d = f.h.accept(&data.client_ack());
    assert!(!d.offload, "{d:?}");
    f.h.accept(&data.server_data(&[7; 700]));
    f.h.accept(&data.server_fin());
    f.h.accept(&data.client_fin());
    let closed = f.h.accept(&data.server_ack());
    // Its FINs were seen: its place is free at once, and its bytes are pinhole's own.
    assert_eq!(
        f.connect("198.51.100.10:41002", "192.0.2.10:40011").verdict,
        Verdict::Accept
    );
    let transfer = closed
        .events
        .iter()
        .find_map(|e| match e {
            Event::Transfer(t) => Some(t.clone()),
            _ => None,
        })
        .expect("a transfer record");
    assert!(!transfer.data_offloaded);
    assert_eq!(transfer.bytes_down, Some(700));
    assert_eq!(transfer.bytes_source, pinhole::event::BytesSource::Pinhole);
}

// ---- review findings: the edges of the range and the framing ---------------------------------

fn transfers(d: &Decision) -> Vec<pinhole::event::Transfer> {
    d.events
        .iter()
        .filter_map(|e| match e {
            Event::Transfer(t) => Some((**t).clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_half_closed_connection_still_counts() {
    let mut f = Ftps::explicit(&format!("{RANGE}\nftps_max_connections = 1"));
    f.handshake();
    let mut data = TcpSession::new(sock("198.51.100.10:41001"), sock("192.0.2.10:40010"), 5, 9);
    for frame in data.handshake() {
        f.h.accept(&frame);
    }
    // The client closes its side; the server can still send.
    f.h.accept(&data.client_fin());
    f.h.accept(&data.server_data(&[1; 100]));
    assert_eq!(
        f.connect("198.51.100.10:41002", "192.0.2.10:40011").reason,
        Some(Reason::FtpsRangeLimit)
    );
}

#[test]
fn a_blocked_session_admits_nothing() {
    let mut f = Ftps::explicit(&format!("{RANGE}\non_violation = \"drop\""));
    f.handshake();
    let frame = f.s.client_data(&[0x16, 0x03, 0x03, 0xff, 0xff]);
    f.h.drop(&frame, Reason::FtpTlsInvalid);
    assert_eq!(
        f.connect("198.51.100.10:41001", "192.0.2.10:40010").reason,
        Some(Reason::DefaultDeny)
    );
}

#[test]
fn the_range_opens_with_the_handshake_not_before() {
    let options = format!("{RANGE}\nimplicit_tls = true");
    let mut f = Ftps::with(&options, "192.0.2.10:990");
    assert_eq!(
        f.connect("198.51.100.10:41001", "192.0.2.10:40010").reason,
        Some(Reason::DefaultDeny),
        "an implicit-TLS connection that sent nothing yet"
    );
    f.client(&tls::hello(1, 100));
    assert_eq!(
        f.connect("198.51.100.10:41002", "192.0.2.10:40010").reason,
        Some(Reason::DefaultDeny),
        "the server has not answered"
    );
    f.server(&tls::hello(2, 100));
    assert_eq!(
        f.connect("198.51.100.10:41003", "192.0.2.10:40010").verdict,
        Verdict::Accept
    );
}

#[test]
fn a_refused_data_connection_has_no_record_and_frees_its_place() {
    let mut f = Ftps::explicit(&format!("{RANGE}\nftps_max_connections = 1"));
    f.handshake();
    let mut data = TcpSession::new(sock("198.51.100.10:41001"), sock("192.0.2.10:40010"), 5, 9);
    f.h.accept(&data.syn());
    let rst = pinhole::testkit::TcpBuilder::new(
        sock("192.0.2.10:40010"),
        sock("198.51.100.10:41001"),
        pinhole::testkit::flags::RST | pinhole::testkit::flags::ACK,
        0,
        data.client_next(),
        0,
    )
    .build(b"");
    let d = f.h.send(&rst);
    assert!(transfers(&d).is_empty(), "{d:?}");
    assert_eq!(
        f.connect("198.51.100.10:41002", "192.0.2.10:40011").verdict,
        Verdict::Accept
    );
    assert!(
        transfers(&Decision {
            events: f.h.advance(600).events,
            ..Decision::accept(None)
        })
        .iter()
        .all(|t| t.data.unwrap().sport != 41001)
    );
}

#[test]
fn open_range_connections_are_logged_when_their_session_ends_first() {
    let mut f = Ftps::explicit(RANGE);
    f.handshake();
    let mut data = TcpSession::new(sock("198.51.100.10:41001"), sock("192.0.2.10:40010"), 5, 9);
    for frame in data.handshake() {
        f.h.accept(&frame);
    }
    f.h.accept(&data.server_data(&[3; 300]));
    f.h.send(&f.s.client_rst());
    // The reset control connection leaves the table at its closed timeout.
    let d = Decision {
        events: f.h.advance(60).events,
        ..Decision::accept(None)
    };
    let records = transfers(&d);
    assert_eq!(records.len(), 1, "{d:?}");
    assert_eq!(records[0].result, TransferResult::Unfinished);
    assert_eq!(records[0].bytes_down, Some(300));
    // Logged once: not again when the orphan ends.
    f.h.accept(&data.server_fin());
    f.h.accept(&data.client_fin());
    let d = f.h.accept(&data.server_ack());
    assert!(transfers(&d).is_empty(), "{d:?}");
    assert!(
        f.h.advance(600)
            .events
            .iter()
            .all(|e| !matches!(e, Event::Transfer(_)))
    );
}

#[test]
fn commands_pipelined_behind_auth_are_not_answered_in_the_clear() {
    let mut f = Ftps::with("ftps = \"allow-uninspected\"", SERVER);
    f.server(b"220 ready\r\n");
    f.client(b"AUTH TLS\r\nPASV\r\n");
    f.server(b"234 Proceed.\r\n");
    // A 227 in the clear now answers nothing: the server must speak TLS.
    let frame =
        f.s.server_data(b"227 Entering Passive Mode (192,0,2,10,156,65).\r\n");
    let d = f.h.reject(&frame, Reason::FtpTlsInvalid);
    assert!(opened(&d).is_empty());
}

#[test]
fn after_the_server_cleared_the_client_may_send_no_more_records() {
    let mut f = Ftps::explicit("ftps = \"allow-uninspected\"");
    f.handshake();
    f.server(&tls::close_notify());
    // The server goes cleartext first (a spontaneous reply)...
    f.server(b"421 Timeout.\r\n");
    // ...so a "record" from the client is cleartext to it, which pinhole would skip.
    let mut smuggled = vec![0x17, 0x03, 0x03, 0x00, 0x0c];
    smuggled.extend_from_slice(b"\r\nDELE /x\r\n\r\n");
    f.client_rejected(&smuggled[..17], Reason::FtpTlsInvalid);
}
