//! Offload mode: which flows the engine hands to the kernel, and how it follows their end:
//! from the kernel's destroy events (`Engine::kernel_ended`), or from the FIN and RST segments
//! the kernel still queues (`--offload-ends segments`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, opened};
use pinhole::conntrack::{FlowHandle, FlowTuple, TcpState};
use pinhole::event::{CloseCause, Event};
use pinhole::testkit::{self, TcpSession, sock};
use pinhole::{Decision, Verdict};

const LAB: &str = r#"
[[rule]]
name = "ftp"
action = "allow"
inspect = "ftp"

[[rule]]
name = "tftp"
action = "allow"
inspect = "tftp"

[[rule]]
name = "web"
action = "allow"
proto = "tcp"
ports = [80]

[[rule]]
name = "dns"
action = "allow"
proto = "udp"
ports = [53]
"#;

fn offloading(policy: &str) -> Harness {
    let mut h = Harness::new(policy);
    h.engine.set_offload(true);
    h
}

fn closed_causes(events: &[Event]) -> Vec<CloseCause> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::FlowClosed { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect()
}

/// The tracked flow to port `dport`, with its handle.
fn flow_to(h: &Harness, dport: u16) -> (FlowHandle, FlowTuple) {
    h.engine
        .flows()
        .iter()
        .find(|(_, f)| f.tuple.dport == dport)
        .map(|(handle, f)| (handle, f.tuple))
        .unwrap()
}

fn web() -> TcpSession {
    TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:80"), 1, 9)
}

/// The handshake, returning the decision for each of its three segments.
fn handshake(h: &mut Harness, s: &mut TcpSession) -> Vec<Decision> {
    s.handshake().iter().map(|f| h.accept(f)).collect()
}

#[test]
fn a_plain_connection_is_offloaded_once_its_handshake_completes() {
    let mut h = offloading(LAB);
    let mut s = web();
    let offload: Vec<bool> = handshake(&mut h, &mut s)
        .iter()
        .map(|d| d.offload)
        .collect();
    assert_eq!(
        offload,
        vec![false, false, true],
        "offloaded on the third segment"
    );
    // Packets already queued behind it are still judged normally, and offered only once.
    let d = h.accept(&s.client_data(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(!d.offload);
    assert_eq!(h.engine.counters().flows_offloaded, 1);
    assert!(h.engine.flows().iter().all(|(_, f)| f.offloaded));
}

#[test]
fn without_offload_mode_nothing_is_offloaded() {
    let mut h = Harness::new(LAB);
    let mut s = web();
    assert!(handshake(&mut h, &mut s).iter().all(|d| !d.offload));
    assert!(!h.accept(&s.client_data(b"x")).offload);
    assert_eq!(h.engine.counters().flows_offloaded, 0);
}

#[test]
fn fins_of_an_offloaded_connection_end_it_without_sequence_checks() {
    let mut h = offloading(LAB);
    let mut s = web();
    handshake(&mut h, &mut s);
    // The kernel carried a megabyte each way; the engine saw none of it.
    let client_fin = s.client_raw(testkit::flags::FIN | testkit::flags::ACK, 1_000_000, b"");
    let server_fin = s.server_raw(testkit::flags::FIN | testkit::flags::ACK, 1_000_000, b"");
    // Without the kernel's mark, such a FIN is far outside the window the engine knows.
    assert_eq!(h.send(&client_fin).verdict, Verdict::Drop);
    assert_eq!(h.send_offloaded(&client_fin).verdict, Verdict::Accept);
    let state = |h: &Harness| match &h.engine.flows().iter().next().unwrap().1.state {
        pinhole::conntrack::FlowState::Tcp(t) => t.state(),
        other @ pinhole::conntrack::FlowState::Datagram { .. } => panic!("{other:?}"),
    };
    assert_eq!(state(&h), TcpState::FinWait);
    assert_eq!(h.send_offloaded(&server_fin).verdict, Verdict::Accept);
    assert_eq!(state(&h), TcpState::TimeWait);
    let expired = h.advance(300);
    assert_eq!(closed_causes(&expired.events), vec![CloseCause::Fin]);
    assert_eq!(h.engine.flows().len(), 0);
}

#[test]
fn a_reset_of_an_offloaded_connection_ends_it() {
    let mut h = offloading(LAB);
    let mut s = web();
    handshake(&mut h, &mut s);
    let rst = s.server_raw(testkit::flags::RST, 5_000_000, b"");
    assert_eq!(h.send_offloaded(&rst).verdict, Verdict::Accept);
    let expired = h.advance(300);
    assert_eq!(closed_causes(&expired.events), vec![CloseCause::Reset]);
}

#[test]
fn an_offloaded_flow_the_engine_forgot_is_taken_on_the_kernels_word() {
    let mut h = offloading(LAB);
    let mut s = web();
    handshake(&mut h, &mut s);
    // Idle (for the engine) past the established timeout: the flow leaves the table.
    let expired = h.advance(100_000);
    assert_eq!(closed_causes(&expired.events), vec![CloseCause::Timeout]);
    let fin = s.client_raw(testkit::flags::FIN | testkit::flags::ACK, 1_000_000, b"");
    assert_eq!(h.send_offloaded(&fin).verdict, Verdict::Accept);
    assert_eq!(h.engine.counters().offloaded_untracked, 1);
    assert_eq!(h.engine.flows().len(), 0, "no state is created for it");
    // The same segment without the mark is a segment of no connection.
    assert_eq!(h.send(&fin).verdict, Verdict::Drop);
}

#[test]
fn control_connections_stay_in_userspace_and_data_connections_are_offloaded() {
    let mut h = offloading(LAB);
    let mut control = TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:21"), 1, 9);
    assert!(handshake(&mut h, &mut control).iter().all(|d| !d.offload));
    h.accept(&control.server_data(b"220 ready\r\n"));
    h.accept(&control.client_data(b"PASV\r\n"));
    let d = h.accept(&control.server_data(b"227 Entering Passive Mode (192,0,2,10,156,64).\r\n"));
    assert_eq!(opened(&d).len(), 1);
    let mut data = TcpSession::new(sock("198.51.100.10:41000"), sock("192.0.2.10:40000"), 5, 6);
    // The data connection goes to the kernel at its SYN: the pinhole named exactly its tuple.
    let syn = h.accept(&data.syn());
    assert!(
        syn.offload,
        "a pinhole's data connection is offloaded at its SYN"
    );
    // The control connection is still inspected: its next command is parsed, never offloaded.
    assert!(!h.accept(&control.client_data(b"NOOP\r\n")).offload);
    assert_eq!(h.engine.counters().flows_offloaded, 1);
}

/// A PASV session's data connection, offloaded at its SYN (which `h` accepted).
fn passive_data_connection(h: &mut Harness) -> (TcpSession, TcpSession) {
    let mut control = TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:21"), 1, 9);
    handshake(h, &mut control);
    h.accept(&control.server_data(b"220 ready\r\n"));
    h.accept(&control.client_data(b"PASV\r\n"));
    h.accept(&control.server_data(b"227 Entering Passive Mode (192,0,2,10,156,64).\r\n"));
    let mut data = TcpSession::new(sock("198.51.100.10:41000"), sock("192.0.2.10:40000"), 5, 6);
    assert!(h.accept(&data.syn()).offload);
    (control, data)
}

#[test]
fn a_data_connection_handed_over_at_its_syn_is_established_and_ends_with_its_fins() {
    let mut h = offloading(LAB);
    let (_control, data) = passive_data_connection(&mut h);
    let (handle, _) = flow_to(&h, 40000);
    let flow = h.engine.flows().get(handle).unwrap();
    assert!(flow.offloaded);
    assert!(
        !flow.state.is_embryonic(),
        "the kernel checks the handshake: no longer embryonic (not evicted first, no handshake timeout)"
    );
    // The kernel carried the handshake and the data: the handshake timeout passes and the flow
    // is still there.
    let expired = h.advance(120);
    assert!(
        closed_causes(&expired.events).is_empty(),
        "{:?}",
        expired.events
    );
    assert!(h.engine.flows().get(handle).is_some());
    // Its FINs, which the kernel still queues, end it with no sequence check.
    h.send_offloaded(&data.server_raw(testkit::flags::FIN | testkit::flags::ACK, 1_000_000, b""));
    h.send_offloaded(&data.client_raw(testkit::flags::FIN | testkit::flags::ACK, 6, b""));
    let expired = h.advance(300);
    assert_eq!(closed_causes(&expired.events), vec![CloseCause::Fin]);
}

#[test]
fn a_refused_data_connection_handed_over_at_its_syn_ends_with_the_servers_reset() {
    let mut h = offloading(LAB);
    let (_control, data) = passive_data_connection(&mut h);
    // The server's port was closed: its RST (queued, the connection carries the mark) ends it.
    let d = h.send_offloaded(&data.server_raw(testkit::flags::RST | testkit::flags::ACK, 0, b""));
    assert_eq!(d.verdict, Verdict::Accept);
    let expired = h.advance(30);
    assert_eq!(closed_causes(&expired.events), vec![CloseCause::Reset]);
}

#[test]
fn a_connection_the_rules_admitted_is_not_offloaded_at_its_syn() {
    // A SYN flood must not reach the kernel's table as offloaded connections: only a pinhole's
    // negotiated data connection goes at its SYN.
    let mut h = offloading(LAB);
    let mut s = web();
    assert!(!h.accept(&s.syn()).offload);
}

#[test]
fn data_that_must_die_with_its_control_connection_is_not_offloaded() {
    let policy = "[[rule]]\naction = \"allow\"\ninspect = \"ftp\"\n[rule.ftp]\ndata_outlives_control = false\n";
    let mut h = offloading(policy);
    let mut control = TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:21"), 1, 9);
    handshake(&mut h, &mut control);
    h.accept(&control.server_data(b"220 ready\r\n"));
    h.accept(&control.client_data(b"PASV\r\n"));
    h.accept(&control.server_data(b"227 Entering Passive Mode (192,0,2,10,156,64).\r\n"));
    let mut data = TcpSession::new(sock("198.51.100.10:41000"), sock("192.0.2.10:40000"), 5, 6);
    assert!(handshake(&mut h, &mut data).iter().all(|d| !d.offload));
    assert!(!h.accept(&data.server_data(b"bytes")).offload);
}

#[test]
fn answered_udp_is_offloaded_but_tftp_transfers_are_not() {
    let mut h = offloading(LAB);
    let query = testkit::udp(sock("198.51.100.10:5000"), sock("192.0.2.53:53"), b"q");
    let answer = testkit::udp(sock("192.0.2.53:53"), sock("198.51.100.10:5000"), b"a");
    assert!(!h.accept(&query).offload, "not confirmed before the answer");
    assert!(h.accept(&answer).offload);

    let rrq = testkit::udp(
        sock("198.51.100.10:6000"),
        sock("192.0.2.10:69"),
        &testkit::tftp::rrq("f", "octet", &[]),
    );
    assert!(!h.accept(&rrq).offload);
    let data = testkit::udp(
        sock("192.0.2.10:30000"),
        sock("198.51.100.10:6000"),
        &testkit::tftp::data(1, 100),
    );
    assert!(
        !h.accept(&data).offload,
        "a transfer is inspected block by block"
    );
    let ack = testkit::udp(
        sock("198.51.100.10:6000"),
        sock("192.0.2.10:30000"),
        &testkit::tftp::ack(1),
    );
    assert!(!h.accept(&ack).offload);
    assert_eq!(h.engine.counters().flows_offloaded, 1);
}

#[test]
fn a_syn_on_an_offloaded_tuple_is_judged_like_any_other() {
    let mut h = offloading(LAB);
    let mut s = web();
    handshake(&mut h, &mut s);
    // A SYN with another ISN on the established tuple: dropped, as without offload.
    let syn = s.client_raw(testkit::flags::SYN, 77_777, b"");
    let d = h.send_offloaded(&syn);
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Drop, Some(pinhole::Reason::TcpSynInEstablished))
    );
    // A late FIN after a RST does not revive the flow.
    h.send_offloaded(&s.server_raw(testkit::flags::RST, 5_000_000, b""));
    h.send_offloaded(&s.client_raw(testkit::flags::FIN | testkit::flags::ACK, 9, b""));
    let expired = h.advance(300);
    assert_eq!(closed_causes(&expired.events), vec![CloseCause::Reset]);
}

#[test]
fn the_kernels_destroy_event_ends_an_offloaded_data_connection_and_the_session_goes_on() {
    let mut h = offloading(LAB);
    let (mut control, _data) = passive_data_connection(&mut h);
    let (_, tuple) = flow_to(&h, 40000);
    let now = h.now;
    // The event's tuple in either order names the flow; the cause is the kernel's.
    let events = h
        .engine
        .kernel_ended(now, &tuple.reversed(), CloseCause::Fin);
    assert_eq!(closed_causes(&events), vec![CloseCause::Fin]);
    assert_eq!(h.engine.counters().flows_ended_in_kernel, 1);
    assert_eq!(
        h.engine.flows().len(),
        1,
        "only the control connection is left"
    );
    // A second event for it (another worker's copy, a late duplicate) changes nothing.
    assert!(
        h.engine
            .kernel_ended(now, &tuple, CloseCause::Fin)
            .is_empty()
    );
    // The control connection goes on: another PASV, another data connection.
    h.accept(&control.client_data(b"PASV\r\n"));
    h.accept(&control.server_data(b"227 Entering Passive Mode (192,0,2,10,156,65).\r\n"));
    let mut data = TcpSession::new(sock("198.51.100.10:41001"), sock("192.0.2.10:40001"), 5, 6);
    assert!(h.accept(&data.syn()).offload);
}

#[test]
fn destroy_events_say_how_the_connection_ended() {
    for cause in [
        CloseCause::Fin,
        CloseCause::Reset,
        CloseCause::Timeout,
        CloseCause::Deleted,
    ] {
        let mut h = offloading(LAB);
        let mut s = web();
        handshake(&mut h, &mut s);
        let tuple = h.engine.flows().iter().next().unwrap().1.tuple;
        let now = h.now;
        let events = h.engine.kernel_ended(now, &tuple, cause);
        assert_eq!(closed_causes(&events), vec![cause]);
        assert!(h.engine.flows().is_empty());
    }
}

#[test]
fn destroy_events_leave_flows_the_engine_follows_itself() {
    let mut h = offloading(LAB);
    // The control connection is inspected, never offloaded: the kernel losing its entry
    // (a flush) does not end it here; its own packets will.
    let (_control, _data) = passive_data_connection(&mut h);
    let (_, control_tuple) = flow_to(&h, 21);
    let now = h.now;
    assert!(
        h.engine
            .kernel_ended(now, &control_tuple, CloseCause::Deleted)
            .is_empty()
    );
    // A web connection still in its handshake is not offloaded yet.
    let mut s = web();
    let syn = s.syn();
    h.accept(&syn);
    let (_, web_tuple) = flow_to(&h, 80);
    assert!(
        h.engine
            .kernel_ended(now, &web_tuple, CloseCause::Timeout)
            .is_empty()
    );
    // Nor does a connection nobody tracks create anything.
    let stranger = FlowTuple {
        sport: 1,
        ..web_tuple
    };
    assert!(
        h.engine
            .kernel_ended(now, &stranger, CloseCause::Fin)
            .is_empty()
    );
    assert_eq!(h.engine.flows().len(), 3);
    assert_eq!(h.engine.counters().flows_ended_in_kernel, 0);
}

#[test]
fn a_new_connection_on_an_offloaded_tuple_replaces_the_old_flow() {
    let mut h = offloading(LAB);
    let (mut control, _data) = passive_data_connection(&mut h);
    // The kernel carried the data connection to its end (FINs included) and its TIME_WAIT is
    // not over for pinhole yet (no destroy event read). The client reuses its port for the
    // next data connection to the same server port; the kernel reopens the tuple with a new
    // entry, without the offload mark, so the SYN comes unmarked.
    h.accept(&control.client_data(b"PASV\r\n"));
    h.accept(&control.server_data(b"227 Entering Passive Mode (192,0,2,10,156,64).\r\n"));
    let mut again = TcpSession::new(sock("198.51.100.10:41000"), sock("192.0.2.10:40000"), 7, 8);
    let d = h.accept(&again.syn());
    assert!(
        d.offload,
        "admitted by the new pinhole and offloaded at its SYN"
    );
    assert_eq!(closed_causes(&d.events), vec![CloseCause::Reused]);
    // With the mark, the kernel still holds the old connection: a SYN on it is dropped.
    let syn = again.client_raw(testkit::flags::SYN, 77_777, b"");
    assert_eq!(
        h.send_offloaded(&syn).reason,
        Some(pinhole::Reason::TcpSynInEstablished)
    );
}
