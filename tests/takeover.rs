//! Takeover on a failover pair's standby (`run --ha`): connections the engine never saw open,
//! whose kernel entries say a pinhole admitted them (`PacketInfo::synced`, the synced packet
//! mark of the rules), are joined mid-stream; everything else is judged as on any router.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, opened};
use pinhole::conntrack::{FlowOrigin, FlowTuple};
use pinhole::event::Event;
use pinhole::testkit::{TcpSession, sock, udp};
use pinhole::{Reason, Verdict};

const RULES: &str = r#"
[[rule]]
name = "ftp"
action = "allow"
proto = "tcp"
ports = [21]
inspect = "ftp"

[[rule]]
name = "tftp"
action = "allow"
proto = "udp"
ports = [69]
inspect = "tftp"
"#;

/// An FTP control connection already under way when this router first sees it.
fn control() -> TcpSession {
    let mut s = TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:21"), 100, 900);
    // The engine never sees these: the handshake and the login went through the other router.
    let _ = s.handshake();
    let _ = s.server_data(b"220 ready\r\n");
    let _ = s.client_data(b"USER anonymous\r\n");
    let _ = s.server_data(b"230 Login successful.\r\n");
    s
}

fn opened_flows(events: &[Event]) -> Vec<(FlowTuple, Option<String>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::FlowOpened {
                flow,
                rule,
                takeover,
                ..
            } => Some((*flow, rule.as_deref().map(str::to_owned), *takeover)),
            _ => None,
        })
        .collect()
}

#[test]
fn without_the_synced_mark_a_mid_stream_segment_is_refused() {
    let mut h = Harness::new(RULES);
    let mut s = control();
    h.drop(&s.client_data(b"PASV\r\n"), Reason::TcpNoHandshake);
    assert_eq!(h.engine.flows().len(), 0);
    assert_eq!(h.engine.counters().flows_taken_over, 0);
}

#[test]
fn a_synced_control_connection_is_taken_over_and_its_next_pasv_opens_a_pinhole() {
    let mut h = Harness::new(RULES);
    let mut s = control();
    let d = h.send_synced(&s.client_data(b"PASV\r\n"));
    assert_eq!((d.verdict, d.reason), (Verdict::Accept, None));
    let tuple = FlowTuple {
        proto: 6,
        src: s.client().ip(),
        sport: 40000,
        dst: s.server().ip(),
        dport: 21,
    };
    assert_eq!(
        opened_flows(&d.events),
        vec![(tuple, Some("ftp".to_owned()), true)]
    );
    assert_eq!(h.engine.counters().flows_taken_over, 1);
    let (_, flow) = h.engine.flows().iter().next().unwrap();
    assert_eq!(flow.origin, FlowOrigin::TakenOver(Some("ftp".into())));
    // The inspector joined at a line boundary: the 227 opens the data connection's pinhole,
    // for the client only.
    let d = h.accept(&s.server_data(b"227 Entering Passive Mode (192,0,2,10,195,80).\r\n"));
    assert_eq!(
        opened(&d),
        vec![(
            s.client().ip(),
            pinhole::conntrack::PortMatch::Any,
            s.server().ip(),
            50000
        )]
    );
    let mut data = TcpSession::new(sock("198.51.100.10:40001"), sock("192.0.2.10:50000"), 5, 7);
    let mut third = TcpSession::new(sock("203.0.113.66:40001"), sock("192.0.2.10:50000"), 5, 7);
    h.drop(&third.syn(), Reason::PinholeWrongPeer);
    for frame in data.handshake() {
        h.accept(&frame);
    }
    // Once: a second connection to the same port finds no pinhole.
    let mut again = TcpSession::new(sock("198.51.100.10:40002"), sock("192.0.2.10:50000"), 5, 7);
    h.drop(&again.syn(), Reason::DefaultDeny);
}

#[test]
fn a_synced_reply_first_is_taken_over_with_the_client_as_initiator() {
    let mut h = Harness::new(RULES);
    let mut s = control();
    let _ = s.client_data(b"PASV\r\n");
    // The server's 227 is the first segment this router sees: the rules allow the client to
    // open a connection to port 21, so the client is the initiator.
    let d = h.send_synced(&s.server_data(b"227 Entering Passive Mode (192,0,2,10,195,80).\r\n"));
    assert_eq!((d.verdict, d.reason), (Verdict::Accept, None));
    let (_, flow) = h.engine.flows().iter().next().unwrap();
    assert_eq!(
        (flow.tuple.src, flow.tuple.dport),
        (s.client().ip(), 21),
        "{flow:?}"
    );
    // Joined in the middle of a reply: nothing is read from it, the next dialogue works.
    h.accept(&s.client_data(b"PASV\r\n"));
    let d = h.accept(&s.server_data(b"227 Entering Passive Mode (192,0,2,10,195,81).\r\n"));
    assert_eq!(opened(&d).len(), 1);
}

#[test]
fn a_taken_over_control_connection_is_checked_like_any_other() {
    let mut h = Harness::new(RULES);
    let mut s = control();
    h.send_synced(&s.client_data(b"NOOP\r\n"));
    h.accept(&s.server_data(b"200 NOOP ok.\r\n"));
    let d = h.send(&s.client_data(b"PORT 10,0,0,5,0,80\r\n"));
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Reject, Some(Reason::FtpBounce))
    );
    assert!(opened(&d).is_empty());
}

#[test]
fn a_data_connection_the_kernel_expected_is_admitted_and_an_unsolicited_one_is_not() {
    let mut h = Harness::new(RULES);
    // A data SYN whose kernel entry came from the FTP helper's expectation (carried over by
    // conntrackd, the master's admitted mark inherited): the other router saw the 227.
    let mut data = TcpSession::new(sock("198.51.100.10:40001"), sock("192.0.2.10:50000"), 5, 7);
    let d = h.send_synced(&data.syn());
    assert_eq!((d.verdict, d.reason), (Verdict::Accept, None));
    let tuple = FlowTuple {
        proto: 6,
        src: data.client().ip(),
        sport: 40001,
        dst: data.server().ip(),
        dport: 50000,
    };
    assert_eq!(opened_flows(&d.events), vec![(tuple, None, true)]);
    h.accept(&data.syn_ack());
    // The same kind of SYN without the mark: nothing expected it.
    let mut other = TcpSession::new(sock("198.51.100.10:40002"), sock("192.0.2.10:50001"), 5, 7);
    h.drop(&other.syn(), Reason::DefaultDeny);
}

#[test]
fn a_synced_tftp_transfer_is_taken_over_and_a_third_host_is_refused() {
    let mut h = Harness::new(RULES);
    let server = sock("192.0.2.10:41000");
    let client = sock("198.51.100.10:50500");
    let block = pinhole::testkit::tftp::data(7, 512);
    let d = h.send_synced(&udp(server, client, &block));
    assert_eq!((d.verdict, d.reason), (Verdict::Accept, None));
    assert_eq!(h.engine.counters().flows_taken_over, 1);
    h.accept(&udp(client, server, &pinhole::testkit::tftp::ack(7)));
    let d = h.send(&udp(
        sock("203.0.113.66:41000"),
        client,
        &pinhole::testkit::tftp::data(8, 512),
    ));
    assert_eq!(d.verdict, Verdict::Drop);
}

#[test]
fn a_synced_reset_passes_without_creating_a_flow() {
    let mut h = Harness::new(RULES);
    let mut s = control();
    let d = h.send_synced(&s.client_rst());
    assert_eq!((d.verdict, d.reason), (Verdict::Accept, None));
    assert_eq!(h.engine.flows().len(), 0);
}

#[test]
fn a_broad_rule_for_the_server_side_does_not_turn_a_control_connection_around() {
    // The shipped edge-router policy also lets the inside (the server) open connections to
    // anywhere: the server's reply coming first must still make the client the initiator, with
    // the FTP inspector on the connection.
    let rules = format!(
        "{RULES}\n[[rule]]\nname = \"inside-out\"\naction = \"allow\"\nproto = \"any\"\nfrom = \"inside\"\n\
         [zones.inside]\nnetworks = [\"192.0.2.0/24\"]\n"
    );
    let mut h = Harness::new(&rules);
    let mut s = control();
    let _ = s.client_data(b"PASV\r\n");
    h.send_synced(&s.server_data(b"227 Entering Passive Mode (192,0,2,10,195,80).\r\n"));
    let (_, flow) = h.engine.flows().iter().next().unwrap();
    assert_eq!((flow.tuple.src, flow.tuple.dport), (s.client().ip(), 21));
    assert_eq!(flow.origin, FlowOrigin::TakenOver(Some("ftp".into())));
    h.accept(&s.client_data(b"PASV\r\n"));
    let d = h.accept(&s.server_data(b"227 Entering Passive Mode (192,0,2,10,195,81).\r\n"));
    assert_eq!(
        opened(&d).len(),
        1,
        "the inspector follows the session: {d:?}"
    );
}
