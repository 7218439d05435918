//! The classic BPF program that splits a monitor's frames over its workers
//! (`PACKET_FANOUT_CBPF`): both directions of an address pair go to the same worker.
//!
//! The kernel's own fanout hash (`PACKET_FANOUT_HASH`, `skb_get_hash`) includes the ports, so an
//! FTP control connection and the data connections it negotiates, or a TFTP request and its
//! transfer from a fresh server port, could be judged by different engines, none of which would
//! know the pinhole. This program hashes the **addresses only**, symmetrically (source XOR
//! destination), as `pinhole run`'s NFQUEUE `--queue-balance` does:
//!
//! - IPv4 and IPv6 are read at the network header (`SKF_NET_OFF`), whatever the link layer:
//!   Ethernet, 802.1Q tags the kernel took off into the skb's metadata (it does, before the
//!   taps see the frame on the way in), raw IP devices, and frames on the way out, where the
//!   skb's data starts at the link header rather than the network header (see
//!   `bpf_internal_load_pointer_neg_helper` in the kernel's `net/core/filter.c`). The protocol
//!   comes from the skb (`SKF_AD_PROTOCOL`), not from the frame.
//! - An ICMP or ICMPv6 error is hashed by the packet it quotes, so that it reaches the worker
//!   that tracks the flow it is about (a router's "fragmentation needed" comes from a third
//!   address). An IPv6 error behind extension headers is hashed by its outer addresses; a
//!   quotation cut short goes to worker 0 (a load past the packet ends a classic BPF program
//!   with 0): the engine refuses it as malformed whichever worker reads it.
//! - IP fragments carry their datagram's addresses, so every fragment of a datagram reaches
//!   the same worker, which reassembles it as inline pinhole would. That is why the monitor
//!   does not ask for `PACKET_FANOUT_FLAG_DEFRAG`: the kernel would reassemble IPv4 datagrams
//!   before the engine sees them, hiding overlapping or malformed fragments from it (and
//!   leaving IPv6 fragments alone anyway).
//! - Anything else (ARP, LLDP, a tag the kernel left in place) goes to worker 0.
//!
//! The XOR is folded, multiplied by a 32-bit odd constant and its high half taken, so that
//! neighbouring addresses spread, and the program returns `hash % workers` (`BPF_MOD`; the
//! kernel's `fanout_demux_bpf` takes the result modulo the group's size again). See packet(7)
//! and `fanout_set_data_cbpf` in `net/packet/af_packet.c`.

use nix::libc::sock_filter;

/// Classic BPF opcodes used here (`linux/filter.h`, `linux/bpf_common.h`).
mod op {
    pub(super) const LD: u16 = 0x00;
    pub(super) const LDX: u16 = 0x01;
    pub(super) const ST: u16 = 0x02;
    pub(super) const ALU: u16 = 0x04;
    pub(super) const JMP: u16 = 0x05;
    pub(super) const RET: u16 = 0x06;
    pub(super) const MISC: u16 = 0x07;

    pub(super) const W: u16 = 0x00;
    pub(super) const H: u16 = 0x08;
    pub(super) const B: u16 = 0x10;

    pub(super) const ABS: u16 = 0x20;
    pub(super) const IND: u16 = 0x40;
    pub(super) const MEM: u16 = 0x60;

    pub(super) const MUL: u16 = 0x20;
    pub(super) const AND: u16 = 0x50;
    pub(super) const LSH: u16 = 0x60;
    pub(super) const RSH: u16 = 0x70;
    pub(super) const MOD: u16 = 0x90;
    pub(super) const XOR: u16 = 0xa0;

    pub(super) const JA: u16 = 0x00;
    pub(super) const JEQ: u16 = 0x10;
    pub(super) const JGE: u16 = 0x30;
    pub(super) const JSET: u16 = 0x40;

    pub(super) const K: u16 = 0x00;
    pub(super) const X: u16 = 0x08;
    pub(super) const A: u16 = 0x10;

    pub(super) const TAX: u16 = 0x00;
}

/// Loads at `SKF_NET_OFF + n` read the network header's byte `n` (`linux/filter.h`).
const NET: u32 = (-0x0010_0000_i32).cast_unsigned();
/// `SKF_AD_OFF + SKF_AD_PROTOCOL`: the skb's protocol, in host order.
const ANC_PROTOCOL: u32 = (-0x1000_i32).cast_unsigned();
/// The multiplier that spreads the folded XOR (the 32-bit golden ratio, odd).
const SPREAD: u32 = 0x9e37_79b1;
/// Most workers a fanout group may have (the kernel's `PACKET_FANOUT_MAX` is 65536; pinhole
/// caps its own threads far lower).
pub const MAX_WORKERS: u32 = 64;

/// One step of the program, before jump labels are resolved.
enum Step {
    Stmt(u16, u32),
    Jump(u16, u32, &'static str, &'static str),
    Label(&'static str),
}

/// The fanout program for `workers` sockets (1 to [`MAX_WORKERS`]; one worker returns 0 for
/// every frame).
#[allow(clippy::wildcard_imports)] // the opcodes read as the assembly they are
pub fn symmetric_program(workers: u32) -> Vec<sock_filter> {
    use Step::{Jump, Label, Stmt};
    use op::*;
    let workers = workers.clamp(1, MAX_WORKERS);
    let mut s = vec![
        Stmt(LD | W | ABS, ANC_PROTOCOL),
        Jump(JMP | JEQ | K, 0x0800, "v4", "not_v4"),
        Label("not_v4"),
        Jump(JMP | JEQ | K, 0x86dd, "v6", "other"),
        // IPv4: X = header length; ICMP errors (first fragment only) by their quotation.
        Label("v4"),
        Stmt(LD | B | ABS, NET),
        Stmt(ALU | AND | K, 0x0f),
        Stmt(ALU | LSH | K, 2),
        Stmt(MISC | TAX, 0),
        Stmt(LD | B | ABS, NET + 9),
        Jump(JMP | JEQ | K, 1, "v4_icmp", "v4_outer"),
        Label("v4_icmp"),
        Stmt(LD | H | ABS, NET + 6),
        Jump(JMP | JSET | K, 0x1fff, "v4_outer", "v4_icmp_type"),
        Label("v4_icmp_type"),
        Stmt(LD | B | IND, NET),
    ];
    // Destination unreachable, source quench, redirect, time exceeded, parameter problem.
    let errors = [3u32, 4, 5, 11, 12];
    let labels = ["v4_t4", "v4_t5", "v4_t11", "v4_t12", "v4_outer"];
    for (i, (&kind, &next)) in errors.iter().zip(&labels).enumerate() {
        if i > 0 {
            s.push(Label(labels[i - 1]));
        }
        s.push(Jump(JMP | JEQ | K, kind, "v4_inner", next));
    }
    s.extend([
        // The quoted header's addresses: ICMP header (8) + source at 12, destination at 16.
        Label("v4_inner"),
        Stmt(LD | W | IND, NET + 8 + 12),
        Stmt(ST, 0),
        Stmt(LD | W | IND, NET + 8 + 16),
        Stmt(LDX | W | MEM, 0),
        Stmt(ALU | XOR | X, 0),
        Jump(JMP | JA, 0, "mix", "mix"),
        Label("v4_outer"),
        Stmt(LD | W | ABS, NET + 12),
        Stmt(MISC | TAX, 0),
        Stmt(LD | W | ABS, NET + 16),
        Stmt(ALU | XOR | X, 0),
        Jump(JMP | JA, 0, "mix", "mix"),
        // IPv6: an ICMPv6 error (type below 128) right after the fixed header, by its
        // quotation.
        Label("v6"),
        Stmt(LD | B | ABS, NET + 6),
        Jump(JMP | JEQ | K, 58, "v6_icmp", "v6_outer"),
        Label("v6_icmp"),
        Stmt(LD | B | ABS, NET + 40),
        Jump(JMP | JGE | K, 128, "v6_outer", "v6_inner"),
        Label("v6_inner"),
    ]);
    // Fixed header (40) + ICMPv6 header (8) + the quoted header's addresses at 8..40.
    xor_words(&mut s, NET + 40 + 8 + 8);
    s.push(Jump(JMP | JA, 0, "mix", "mix"));
    s.push(Label("v6_outer"));
    xor_words(&mut s, NET + 8);
    s.extend([
        Label("mix"),
        Stmt(MISC | TAX, 0),
        Stmt(ALU | RSH | K, 16),
        Stmt(ALU | XOR | X, 0),
        Stmt(ALU | MUL | K, SPREAD),
        Stmt(ALU | RSH | K, 16),
        Stmt(ALU | MOD | K, workers),
        Stmt(RET | A, 0),
        Label("other"),
        Stmt(RET | K, 0),
    ]);
    assemble(&s)
}

/// A = the XOR of the 8 words at `from` (source and destination IPv6 addresses).
#[allow(clippy::wildcard_imports)] // the opcodes read as the assembly they are
fn xor_words(s: &mut Vec<Step>, from: u32) {
    use op::*;
    s.push(Step::Stmt(LD | W | ABS, from));
    for i in 1..8 {
        s.push(Step::Stmt(MISC | TAX, 0));
        s.push(Step::Stmt(LD | W | ABS, from + 4 * i));
        s.push(Step::Stmt(ALU | XOR | X, 0));
    }
}

/// Resolves the labels (classic BPF jumps only forward, by at most 255 instructions; both
/// hold for this program, and the tests check the result).
fn assemble(steps: &[Step]) -> Vec<sock_filter> {
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for step in steps {
        match step {
            Step::Label(name) => {
                at.insert(*name, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for step in steps {
        match *step {
            Step::Label(_) => {}
            Step::Stmt(code, k) => out.push(insn(code, 0, 0, k)),
            Step::Jump(code, k, jt, jf) => {
                let here = out.len() + 1;
                let off = |label: &str| {
                    let target = at.get(label).copied().unwrap_or(here);
                    u8::try_from(target.saturating_sub(here)).unwrap_or(0)
                };
                if code == op::JMP | op::JA {
                    let target = at.get(jt).copied().unwrap_or(here);
                    out.push(insn(code, 0, 0, target.saturating_sub(here) as u32));
                } else {
                    out.push(insn(code, off(jt), off(jf), k));
                }
            }
        }
    }
    out
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A classic BPF interpreter for the opcodes the program uses, with the kernel's
    /// semantics for them: 32-bit arithmetic, big-endian loads, a load outside the packet
    /// ends the program with 0, `SKF_NET_OFF` loads read the network header, the
    /// `SKF_AD_PROTOCOL` load gives the skb's protocol.
    fn run(program: &[sock_filter], protocol: u16, net: &[u8]) -> u32 {
        let load = |offset: u32, size: usize| -> Option<u32> {
            if offset == ANC_PROTOCOL {
                return Some(u32::from(protocol));
            }
            let rel = offset.wrapping_sub(NET) as usize;
            assert!(
                rel < 0x1000,
                "a load not relative to the network header: {offset:#x}"
            );
            let bytes = net.get(rel..rel + size)?;
            Some(bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
        };
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = program[pc];
            pc += 1;
            let size = match i.code & 0x18 {
                op::W => 4,
                op::H => 2,
                _ => 1,
            };
            match i.code & 0x07 {
                op::LD => match i.code & 0xe0 {
                    op::ABS => match load(i.k, size) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    op::IND => match load(x.wrapping_add(i.k), size) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    op::MEM => a = mem[i.k as usize],
                    other => panic!("ld mode {other:#x}"),
                },
                op::LDX => {
                    assert_eq!(i.code & 0xe0, op::MEM, "ldx mode");
                    x = mem[i.k as usize];
                }
                op::ST => mem[i.k as usize] = a,
                op::ALU => {
                    let v = if i.code & op::X != 0 { x } else { i.k };
                    a = match i.code & 0xf0 {
                        op::MUL => a.wrapping_mul(v),
                        op::AND => a & v,
                        op::LSH => a << v,
                        op::RSH => a >> v,
                        op::XOR => a ^ v,
                        op::MOD => {
                            if v == 0 {
                                return 0;
                            }
                            a % v
                        }
                        other => panic!("alu op {other:#x}"),
                    }
                }
                op::JMP => {
                    let taken = match i.code & 0xf0 {
                        op::JA => {
                            pc += i.k as usize;
                            continue;
                        }
                        op::JEQ => a == i.k,
                        op::JGE => a >= i.k,
                        op::JSET => a & i.k != 0,
                        other => panic!("jmp op {other:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                op::RET => return if i.code & 0x18 == op::A { a } else { i.k },
                op::MISC => {
                    assert_eq!(i.code, op::MISC | op::TAX);
                    x = a;
                }
                other => panic!("class {other}"),
            }
        }
        panic!("the program did not end");
    }

    fn v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
        p.extend(src.octets());
        p.extend(dst.octets());
        p.extend(payload);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    fn v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend((payload.len() as u16).to_be_bytes());
        p.extend([next, 64]);
        p.extend(src.octets());
        p.extend(dst.octets());
        p.extend(payload);
        p
    }

    const TCP: [u8; 20] = [
        0x9c, 0x40, 0, 21, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ];

    fn a4(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(0xc612_0000 + i) // 198.18.0.0/15
    }

    fn a6(i: u32) -> Ipv6Addr {
        Ipv6Addr::from((0x2001_0002_u128 << 96) + u128::from(i))
    }

    #[test]
    fn the_program_is_valid_classic_bpf() {
        for workers in [1, 2, 3, 4, MAX_WORKERS] {
            let p = symmetric_program(workers);
            assert!(p.len() <= 4096, "BPF_MAXINSNS");
            assert!(p.len() < 256, "every jump target in reach: {}", p.len());
            for (i, insn) in p.iter().enumerate() {
                if insn.code & 0x07 == op::JMP {
                    let reach = if insn.code == op::JMP | op::JA {
                        insn.k as usize
                    } else {
                        usize::from(insn.jt.max(insn.jf))
                    };
                    assert!(i + 1 + reach < p.len(), "jump {i} out of the program");
                }
                if insn.code & 0x07 == op::ALU && insn.code & 0xf0 == op::MOD {
                    assert_eq!(insn.k, workers, "mod by the worker count");
                }
            }
            assert_eq!(p.last().map(|i| i.code & 0x07), Some(op::RET));
        }
        // An unknown label would have jumped to the next instruction; none is left unknown.
        let p = symmetric_program(2);
        let mut labels = 0;
        for insn in &p {
            if insn.code & 0x07 == op::JMP && insn.code != op::JMP | op::JA {
                labels += 1;
                assert!(
                    insn.jt != insn.jf,
                    "a conditional jump that decides nothing"
                );
            }
        }
        assert!(labels >= 10);
    }

    #[test]
    fn both_directions_of_an_ipv4_pair_reach_the_same_worker() {
        let p = symmetric_program(2);
        for i in 0..200 {
            let (c, s) = (a4(i * 7 + 1), Ipv4Addr::new(192, 0, 2, (i % 250) as u8 + 1));
            let out = run(&p, 0x0800, &v4(c, s, 6, &TCP));
            let back = run(&p, 0x0800, &v4(s, c, 6, &TCP));
            assert_eq!(out, back, "{c} <-> {s}");
            // Another protocol of the same pair (the TFTP request and its transfer, the FTP
            // control connection and a data connection on other ports) too.
            assert_eq!(run(&p, 0x0800, &v4(s, c, 17, &[0; 8])), out);
            assert!(out < 2);
        }
    }

    #[test]
    fn both_directions_of_an_ipv6_pair_reach_the_same_worker() {
        let p = symmetric_program(3);
        for i in 0..200 {
            let (c, s) = (a6(i * 13 + 5), a6(0x10_0000 + i));
            let out = run(&p, 0x86dd, &v6(c, s, 6, &TCP));
            assert_eq!(out, run(&p, 0x86dd, &v6(s, c, 6, &TCP)), "{c} <-> {s}");
            assert_eq!(out, run(&p, 0x86dd, &v6(s, c, 17, &[0; 8])));
            assert!(out < 3);
        }
    }

    #[test]
    fn address_pairs_spread_over_the_workers() {
        for workers in [2u32, 3, 4] {
            let p = symmetric_program(workers);
            let mut v4_hits = vec![0u32; workers as usize];
            let mut v6_hits = vec![0u32; workers as usize];
            let n = 4000u32;
            for i in 0..n {
                // Clients in one /16, a handful of servers: the edge's shape.
                let server = Ipv4Addr::new(192, 0, 2, (i % 5) as u8 + 10);
                v4_hits[run(&p, 0x0800, &v4(a4(i), server, 6, &TCP)) as usize] += 1;
                let server6 = a6(0x20_0000 + i % 5);
                v6_hits[run(&p, 0x86dd, &v6(a6(i), server6, 17, &[0; 8])) as usize] += 1;
            }
            let fair = n / workers;
            for hits in [&v4_hits, &v6_hits] {
                for &h in hits {
                    assert!(
                        h > fair * 3 / 4 && h < fair * 5 / 4,
                        "{workers} workers: {hits:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn icmp_errors_reach_the_worker_of_the_flow_they_quote() {
        let p = symmetric_program(4);
        let mut moved = 0;
        for i in 0..100 {
            let (c, s, router) = (
                a4(i),
                Ipv4Addr::new(192, 0, 2, 10),
                Ipv4Addr::new(203, 0, 113, (i % 200) as u8 + 1),
            );
            let flow = run(&p, 0x0800, &v4(c, s, 6, &TCP));
            let quoted = v4(c, s, 6, &TCP[..8]);
            for kind in [3u8, 4, 5, 11, 12] {
                let mut icmp = vec![kind, 0, 0, 0, 0, 0, 0, 0];
                icmp.extend(&quoted);
                // From a router on the path, back to the client.
                assert_eq!(
                    run(&p, 0x0800, &v4(router, c, 1, &icmp)),
                    flow,
                    "type {kind}"
                );
            }
            // An echo request is hashed by its own addresses.
            let echo = [8u8, 0, 0, 0, 0, 1, 0, 1];
            let own = run(&p, 0x0800, &v4(router, c, 1, &echo));
            assert_eq!(
                own,
                run(&p, 0x0800, &v4(c, router, 1, &[0, 0, 0, 0, 0, 1, 0, 1]))
            );
            moved += usize::from(own != flow);
            // A quotation cut short: worker 0.
            let cut = v4(router, c, 1, &[3, 0, 0, 0, 0, 0, 0, 0, 0x45, 0]);
            assert_eq!(run(&p, 0x0800, &cut), 0);
            // ICMPv6: packet too big from a router, for an IPv6 flow.
            let (c6, s6, r6) = (a6(i), a6(0x30_0000), a6(0x40_0000 + i));
            let flow6 = run(&p, 0x86dd, &v6(c6, s6, 6, &TCP));
            let mut icmp6 = vec![2u8, 0, 0, 0, 0, 0, 5, 0];
            icmp6.extend(v6(c6, s6, 6, &TCP[..8]));
            assert_eq!(run(&p, 0x86dd, &v6(r6, c6, 58, &icmp6)), flow6);
            // An echo request (128) is hashed by its own addresses.
            let echo6 = v6(r6, c6, 58, &[128, 0, 0, 0, 0, 1, 0, 1]);
            assert_eq!(
                run(&p, 0x86dd, &echo6),
                run(&p, 0x86dd, &v6(c6, r6, 58, &[129, 0, 0, 0, 0, 1, 0, 1]))
            );
        }
        assert!(
            moved > 20,
            "the router's own pair is not the flow's: {moved}"
        );
    }

    #[test]
    fn a_later_fragment_of_an_icmp_datagram_is_hashed_like_its_first() {
        let p = symmetric_program(4);
        for i in 0..50 {
            let (a, b) = (a4(i), Ipv4Addr::new(192, 0, 2, 77));
            let first = run(&p, 0x0800, &v4(a, b, 1, &[8, 0, 0, 0, 0, 1, 0, 1]));
            let mut later = v4(a, b, 1, &[3, 0, 0, 0, 0, 0, 0, 0]);
            later[6] = 0x00;
            later[7] = 0x10; // offset 128 bytes: data, not an ICMP header
            assert_eq!(run(&p, 0x0800, &later), first);
        }
    }

    #[test]
    fn other_frames_go_to_worker_zero() {
        let p = symmetric_program(4);
        assert_eq!(run(&p, 0x0806, &[0; 28]), 0, "ARP");
        assert_eq!(run(&p, 0x88cc, &[0; 60]), 0, "LLDP");
        assert_eq!(run(&p, 0x0800, &[0x45, 0, 0]), 0, "a cut IPv4 header");
        assert_eq!(run(&p, 0x86dd, &[0x60; 30]), 0, "a cut IPv6 header");
        assert_eq!(run(&p, 0x0800, &[]), 0);
    }

    #[test]
    fn one_worker_takes_everything() {
        let p = symmetric_program(1);
        for i in 0..100 {
            assert_eq!(run(&p, 0x0800, &v4(a4(i), a4(i + 9), 6, &TCP)), 0);
        }
    }
}
