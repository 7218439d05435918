//! The engine on a NAT router: what the kernel's connection tracking says about a packet
//! (`PacketInfo::kernel`) completes pinhole's view between DNAT and SNAT. Acknowledgements
//! the kernel shifted after rewriting a payload are taken back to the other side's own
//! sequence space; a 227 naming the server's public address opens the pinhole for the server
//! itself; nothing that was refused becomes allowed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::{Harness, opened, violations};
use pinhole::conntrack::{FlowTuple, KernelConn, PortMatch, SeqAdjust};
use pinhole::event::{Event, PinholeAction};
use pinhole::testkit::{TcpBuilder, addr, flags, sock};
use pinhole::wire::transport::proto;
use pinhole::{Decision, Reason, Verdict};

/// Outside client, the router's public address, the private server behind DNAT.
const CLIENT: &str = "198.51.100.10:40000";
const PUBLIC: &str = "203.0.113.1:21";
const SERVER: &str = "10.0.1.10:21";

fn tuple(src: SocketAddr, dst: SocketAddr) -> FlowTuple {
    FlowTuple {
        proto: proto::TCP,
        src: src.ip(),
        sport: src.port(),
        dst: dst.ip(),
        dport: dst.port(),
    }
}

/// A control connection as pinhole sees it in the FORWARD chain: each side's sequence numbers
/// as it sent them, the client's acknowledgements in the server's stream as the kernel
/// shifted it (by `shift`, after the rewritten segment at `correction`).
struct Router {
    h: Harness,
    client: SocketAddr,
    server: SocketAddr,
    /// The conntrack entry's tuples.
    original: FlowTuple,
    reply: FlowTuple,
    cseq: u32,
    sseq: u32,
    /// The kernel's adjustment of the server-to-client direction.
    adjust: SeqAdjust,
}

impl Router {
    fn new(policy: Harness, client: &str, server: &str, original: FlowTuple) -> Self {
        let (client, server) = (sock(client), sock(server));
        let mut r = Router {
            h: policy,
            client,
            server,
            original,
            reply: FlowTuple {
                proto: proto::TCP,
                src: server.ip(),
                sport: server.port(),
                dst: original.src,
                dport: original.sport,
            },
            cseq: 1_000,
            sseq: 9_000,
            adjust: SeqAdjust::default(),
        };
        // The first SYN: the kernel's entry is not confirmed yet, a query finds nothing.
        let syn = TcpBuilder::new(client, server, flags::SYN, r.cseq, 0, 64240).build(b"");
        assert_eq!(r.h.send(&syn).verdict, Verdict::Accept);
        r.cseq += 1;
        let synack = TcpBuilder::new(
            server,
            client,
            flags::SYN | flags::ACK,
            r.sseq,
            r.cseq,
            64240,
        )
        .build(b"");
        let d = r.h.send_with_kernel(&synack, Some(r.kernel(true)));
        assert_eq!(d.verdict, Verdict::Accept, "{d:?}");
        r.sseq += 1;
        r.ack();
        r.server_line("220 ready", 0);
        r
    }

    fn dnat() -> Self {
        Router::new(
            Harness::default_policy(),
            CLIENT,
            SERVER,
            tuple(sock(CLIENT), sock(PUBLIC)),
        )
    }

    fn kernel(&self, packet_is_reply: bool) -> KernelConn {
        KernelConn {
            original: self.original,
            reply: self.reply,
            packet_is_reply,
            seq_adjust: [SeqAdjust::default(), self.adjust],
        }
    }

    /// The client's acknowledgement as it sends it: the server's stream shifted.
    fn shifted_ack(&self) -> u32 {
        self.sseq
            .wrapping_add(self.adjust.offset_after.cast_unsigned())
    }

    fn ack(&mut self) -> Decision {
        let frame = TcpBuilder::new(
            self.client,
            self.server,
            flags::ACK,
            self.cseq,
            self.shifted_ack(),
            64240,
        )
        .build(b"");
        self.h.send_with_kernel(&frame, Some(self.kernel(false)))
    }

    /// A client line, sent with the kernel's entry (or without, to see what pinhole would do
    /// alone); advances the client only when accepted.
    fn client_line(&mut self, line: &str, with_kernel: bool) -> Decision {
        self.client_bytes(format!("{line}\r\n").as_bytes(), with_kernel)
    }

    /// Client data, perhaps part of a line; advances the client only when accepted.
    fn client_bytes(&mut self, payload: &[u8], with_kernel: bool) -> Decision {
        let frame = TcpBuilder::new(
            self.client,
            self.server,
            flags::PSH | flags::ACK,
            self.cseq,
            self.shifted_ack(),
            64240,
        )
        .build(payload);
        let kernel = with_kernel.then(|| self.kernel(false));
        let d = self.h.send_with_kernel(&frame, kernel);
        if d.verdict == Verdict::Accept {
            self.cseq += payload.len() as u32;
        }
        d
    }

    /// A segment from the server at `seq` with the kernel's entry, without moving the
    /// conversation on (for what pinhole refuses, or a retransmission).
    fn server_segment(&mut self, seq: u32, payload: &[u8]) -> Decision {
        let frame = TcpBuilder::new(
            self.server,
            self.client,
            flags::PSH | flags::ACK,
            seq,
            self.cseq,
            64240,
        )
        .build(payload);
        let kernel = self.kernel(true);
        self.h.send_with_kernel(&frame, Some(kernel))
    }

    /// A server line; the kernel's helper then rewrites it, growing it by `growth` bytes
    /// (what `nf_nat_ftp` does to a 227 naming a shorter or longer address).
    fn server_line(&mut self, line: &str, growth: i32) -> Decision {
        let frame = TcpBuilder::new(
            self.server,
            self.client,
            flags::PSH | flags::ACK,
            self.sseq,
            self.cseq,
            64240,
        )
        .build(format!("{line}\r\n").as_bytes());
        let d = self.h.send_with_kernel(&frame, Some(self.kernel(true)));
        assert_eq!(d.verdict, Verdict::Accept, "{line}: {d:?}");
        if growth != 0 {
            // nf_ct_seqadj_set: the correction point moves to this segment.
            self.adjust = SeqAdjust {
                correction_pos: self.sseq,
                offset_before: self.adjust.offset_after,
                offset_after: self.adjust.offset_after + growth,
            };
        }
        self.sseq += line.len() as u32 + 2;
        d
    }
}

#[test]
fn the_first_translated_packet_reports_both_addresses() {
    let mut h = Harness::default_policy();
    let (client, server) = (sock(CLIENT), sock(SERVER));
    let syn = TcpBuilder::new(client, server, flags::SYN, 1, 0, 64240).build(b"");
    h.send(&syn);
    let synack = TcpBuilder::new(server, client, flags::SYN | flags::ACK, 50, 2, 64240).build(b"");
    let kernel = KernelConn {
        original: tuple(client, sock(PUBLIC)),
        reply: tuple(server, client),
        packet_is_reply: true,
        seq_adjust: [SeqAdjust::default(); 2],
    };
    let d = h.send_with_kernel(&synack, Some(kernel));
    let translated: Vec<_> = d
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Translated { flow, nat } => Some((flow.to_string(), nat.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        translated,
        vec![(
            "tcp 198.51.100.10:40000 -> 10.0.1.10:21".to_owned(),
            "client 198.51.100.10:40000, server 203.0.113.1:21".to_owned()
        )]
    );
    // Once per flow.
    let ack = TcpBuilder::new(client, server, flags::ACK, 2, 51, 64240).build(b"");
    let d = h.send_with_kernel(
        &ack,
        Some(KernelConn {
            packet_is_reply: false,
            ..kernel
        }),
    );
    assert!(
        !d.events
            .iter()
            .any(|e| matches!(e, Event::Translated { .. }))
    );
    assert_eq!(h.engine.counters().flows_translated, 1);
}

#[test]
fn acknowledgements_of_rewritten_replies_stay_in_window_over_many_rewrites() {
    let mut r = Router::dnat();
    for i in 0..25u32 {
        assert_eq!(
            r.client_line("PASV", true).verdict,
            Verdict::Accept,
            "PASV {i}"
        );
        let port = 40_000 + i;
        let reply = format!(
            "227 Entering Passive Mode (10,0,1,10,{},{}).",
            port / 256,
            port % 256
        );
        // 10,0,1,10 becomes 203,0,113,1 on the way out: 3 bytes longer.
        let d = r.server_line(&reply, 3);
        assert_eq!(
            opened(&d),
            vec![(
                addr("198.51.100.10"),
                PortMatch::Any,
                addr("10.0.1.10"),
                port as u16
            )]
        );
        // The pinhole event names the session's translation.
        let nat = d.events.iter().find_map(|e| match e {
            Event::Pinhole {
                action: PinholeAction::Open,
                pinhole,
                ..
            } => pinhole.parent_nat,
            _ => None,
        });
        assert_eq!(nat.unwrap().server, (addr("203.0.113.1"), 21));
        assert_eq!(r.ack().verdict, Verdict::Accept, "ack after rewrite {i}");
    }
    assert_eq!(r.adjust.offset_after, 75);
    // Without the kernel's adjustments the client acknowledges 75 bytes the server never
    // sent: pinhole alone would drop it.
    let d = r.client_line("NOOP", false);
    assert_eq!(d.verdict, Verdict::Drop, "{d:?}");
    // With them, the session carries on.
    assert_eq!(r.client_line("NOOP", true).verdict, Verdict::Accept);
    r.server_line("200 NOOP ok.", 0);
    assert_eq!(r.client_line("QUIT", true).verdict, Verdict::Accept);
    assert_eq!(r.h.engine.counters().dropped, 1);
}

#[test]
fn a_reply_naming_the_public_address_opens_the_server_itself_even_when_strict() {
    let policy = Harness::new(
        "[[rule]]\naction = \"allow\"\nproto = \"tcp\"\ninspect = \"ftp\"\n[rule.ftp]\npassive_address = \"refuse\"\n",
    );
    let mut r = Router::new(policy, CLIENT, SERVER, tuple(sock(CLIENT), sock(PUBLIC)));
    r.client_line("PASV", true);
    let d = r.server_line("227 Entering Passive Mode (203,0,113,1,156,66).", 0);
    assert_eq!(
        opened(&d),
        vec![(
            addr("198.51.100.10"),
            PortMatch::Any,
            addr("10.0.1.10"),
            40002
        )]
    );
    let notice = d.events.iter().find_map(|e| match e {
        Event::Notice { kind, detail, .. } => Some((*kind, detail.clone())),
        _ => None,
    });
    assert_eq!(
        notice,
        Some((
            "passive_address_translated",
            "227 reply names 203.0.113.1, the server's public address (translated to 10.0.1.10); pinhole opened for 10.0.1.10:40002".to_owned()
        ))
    );
    // Any other address is still a mismatch under the strict setting.
    r.client_line("PASV", true);
    let d = r.server_segment(
        r.sseq,
        b"227 Entering Passive Mode (203,0,113,7,156,67).\r\n",
    );
    assert_eq!(violations(&d), vec![Reason::FtpPassiveAddressMismatch]);
    assert!(opened(&d).is_empty());
    // A privileged port at the public address is still refused.
    let mut r = Router::dnat();
    r.client_line("PASV", true);
    let d = r.server_segment(r.sseq, b"227 Entering Passive Mode (203,0,113,1,0,22).\r\n");
    assert_eq!(violations(&d), vec![Reason::FtpPrivilegedPort]);
    assert!(opened(&d).is_empty());
}

#[test]
fn a_masqueraded_client_is_held_to_its_own_address() {
    // Inside device 10.0.2.10 to an outside server; the kernel masquerades it as 203.0.113.1.
    let client = "10.0.2.10:5000";
    let server = "203.0.113.20:21";
    let mut r = Router::new(
        Harness::default_policy(),
        client,
        server,
        tuple(sock(client), sock(server)),
    );
    r.reply.dst = addr("203.0.113.1");
    // Its own (private) address: the pinhole is for the private address, which the kernel's
    // expectation translates the server's connection to.
    assert_eq!(
        r.client_line("PORT 10,0,2,10,156,64", true).verdict,
        Verdict::Accept
    );
    // nf_nat_ftp writes 203,0,113,1 instead: 1 byte longer.
    let d = r.server_line("200 PORT command successful.", 0);
    assert_eq!(
        opened(&d),
        vec![(
            addr("203.0.113.20"),
            PortMatch::Any,
            addr("10.0.2.10"),
            40000
        )]
    );
    let nat = d.events.iter().find_map(|e| match e {
        Event::Pinhole { pinhole, .. } => pinhole.parent_nat,
        _ => None,
    });
    assert_eq!(nat.unwrap().client, (addr("203.0.113.1"), 5000));
    // Another inside host: a bounce, refused before the kernel's helper could see it.
    let d = r.client_line("PORT 10,0,2,99,156,65", true);
    assert_eq!(violations(&d), vec![Reason::FtpBounce]);
    assert_ne!(d.verdict, Verdict::Accept);
}

#[test]
fn a_retransmitted_rewritten_reply_and_split_commands_keep_the_session() {
    let mut r = Router::dnat();
    // PASV split over two segments, acknowledging the server's stream as shifted so far.
    assert_eq!(r.client_line("PASV", true).verdict, Verdict::Accept);
    let before = r.sseq;
    let d = r.server_line("227 Entering Passive Mode (10,0,1,10,156,64).", 3);
    assert_eq!(opened(&d).len(), 1);
    // The 227 again (its acknowledgement was lost): the kernel rewrites it identically and
    // does not move its correction point (nf_ct_seqadj_set: the same sequence number);
    // pinhole checks it against the bytes it saw and opens nothing new.
    let d = r.server_segment(before, b"227 Entering Passive Mode (10,0,1,10,156,64).\r\n");
    assert_eq!(d.verdict, Verdict::Accept, "{d:?}");
    assert!(opened(&d).is_empty());
    assert_eq!(r.adjust.correction_pos, before);
    // A command split over two segments, each acknowledging the shifted stream.
    assert_eq!(r.client_bytes(b"PA", true).verdict, Verdict::Accept);
    assert_eq!(r.client_bytes(b"SV\r\n", true).verdict, Verdict::Accept);
    let d = r.server_line("227 Entering Passive Mode (10,0,1,10,156,65).", 3);
    assert_eq!(
        opened(&d),
        vec![(
            addr("198.51.100.10"),
            PortMatch::Any,
            addr("10.0.1.10"),
            40001
        )]
    );
    assert_eq!(r.ack().verdict, Verdict::Accept);
    assert_eq!(r.h.engine.counters().dropped, 0);
}
