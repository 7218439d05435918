//! The established-flow path allocates nothing: an instrumented global allocator watches the engine
//! judge the packets of flows it already tracks (plain TCP both ways, an FTP data connection,
//! the acknowledgements on an FTP control connection during a transfer,
//! answered UDP, ICMP echo, with and without offload mode) and expects zero allocations.
//! Setting the flows up (new flows, pinholes, events) may allocate; only the judging of the
//! established packets is counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::System;

use common::Harness;
use pinhole::testkit::{self, TcpSession, addr, sock};
use pinhole::{Decision, Verdict};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

// The instrumented allocator counts every thread's allocations, so this file holds a single
// test: nothing else runs while it counts.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Judges every frame, counting the allocations made while judging; every frame must pass.
fn judge_counting(h: &mut Harness, frames: &[Vec<u8>]) -> usize {
    let mut decisions: Vec<Decision> = Vec::with_capacity(frames.len());
    let region = Region::new(GLOBAL);
    for frame in frames {
        decisions.push(h.send(frame));
    }
    let stats = region.change();
    for (i, d) in decisions.iter().enumerate() {
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Accept, None),
            "frame {i} of the established traffic"
        );
    }
    stats.allocations + stats.reallocations
}

const POLICY: &str = r#"
[[rule]]
name = "ftp"
action = "allow"
inspect = "ftp"

[[rule]]
name = "web"
action = "allow"
proto = "tcp"
ports = [443]

[[rule]]
name = "dns"
action = "allow"
proto = "udp"
ports = [53]

[[rule]]
name = "ping"
action = "allow"
proto = "icmp"
"#;

/// Sets up the flows, then builds their established traffic (built before counting: building
/// frames allocates).
fn established_traffic(h: &mut Harness, offload: bool) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();

    // Plain TCP (web), both ways, full segments and pure acknowledgements.
    let mut web = TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:443"), 1, 9);
    for f in web.handshake() {
        h.accept(&f);
    }
    for _ in 0..50 {
        frames.push(web.client_data(&[0x17; 200]));
        frames.push(web.server_data(&[0x17; 1400]));
        frames.push(web.server_data(&[0x17; 1400]));
        frames.push(web.client_ack());
    }

    // An FTP control connection, its PASV data connection, and the control connection's
    // established traffic during the transfer (acknowledgements, no commands).
    let mut control = TcpSession::new(sock("198.51.100.11:40001"), sock("192.0.2.10:21"), 1, 9);
    for f in control.handshake() {
        h.accept(&f);
    }
    h.accept(&control.server_data(b"220 ready\r\n"));
    h.accept(&control.client_data(b"PASV\r\n"));
    h.accept(&control.server_data(b"227 Entering Passive Mode (192,0,2,10,156,64).\r\n"));
    h.accept(&control.client_ack());
    let mut data = TcpSession::new(sock("198.51.100.11:41000"), sock("192.0.2.10:40000"), 5, 6);
    if offload {
        // Handed to the kernel at its SYN: none of its other segments comes back but the FINs.
        assert!(h.accept(&data.syn()).offload);
    } else {
        for f in data.handshake() {
            h.accept(&f);
        }
        for _ in 0..50 {
            frames.push(data.server_data(&[0xaa; 1400]));
            frames.push(data.server_data(&[0xaa; 1400]));
            frames.push(data.client_ack());
        }
    }
    frames.push(control.client_ack());
    frames.push(control.server_ack());

    // Answered UDP and ICMP echo.
    let query = testkit::udp(sock("198.51.100.12:5353"), sock("192.0.2.53:53"), b"query");
    let answer = testkit::udp(sock("192.0.2.53:53"), sock("198.51.100.12:5353"), b"answer");
    h.accept(&query);
    h.accept(&answer);
    let (a, b) = (addr("198.51.100.13"), addr("192.0.2.10"));
    h.accept(&testkit::icmp_echo(a, b, 7, 1, true));
    h.accept(&testkit::icmp_echo(b, a, 7, 1, false));
    for seq in 2..30 {
        frames.push(query.clone());
        frames.push(answer.clone());
        frames.push(testkit::icmp_echo(a, b, 7, seq, true));
        frames.push(testkit::icmp_echo(b, a, 7, seq, false));
    }
    frames
}

#[test]
fn judging_established_flows_allocates_nothing() {
    // The counter sees allocations: a new flow's event list allocates.
    let mut h = Harness::new(POLICY);
    let mut s = TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:443"), 1, 9);
    let syn = s.syn();
    assert!(
        judge_counting(&mut h, &[syn]) > 0,
        "the counting allocator is in place"
    );

    for offload in [false, true] {
        // Offload mode: the first packets after the handshake carry the offload decision; the
        // rest are what the kernel would still queue (it would not, for most of them: the
        // engine's side of the work is what is measured).
        let mut h = Harness::new(POLICY);
        h.engine.set_offload(offload);
        let frames = established_traffic(&mut h, offload);
        assert!(frames.len() > 300);
        let flows = h.engine.flows().len();
        let allocations = judge_counting(&mut h, &frames);
        assert_eq!(
            allocations,
            0,
            "{allocations} allocations while judging {} established packets (offload {offload})",
            frames.len()
        );
        assert_eq!(h.engine.flows().len(), flows, "no flow opened or closed");
    }
}
