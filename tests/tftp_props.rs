//! Property tests for the TFTP parser and inspector: no input panics them, what a client
//! builds parses back to the same fields, a strict prefix of a packet never reads as more than
//! the packet, and random datagrams at a transfer never admit anything the transfer did not
//! open.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Harness;
use pinhole::testkit::{self, sock, tftp};
use pinhole::wire::tftp::{Mode, Options, RequestKind, TftpPacket, parse};
use pinhole::{Reason, Verdict};
use proptest::prelude::*;

/// Filenames as clients send them: no NUL, not empty.
fn filename() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._/-]{1,40}"
}

/// Options as sent: the known ones with values in range (in any case), and unknown ones.
fn options() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::option::of(8u16..=65464),
        prop::option::of(1u8..=255),
        prop::option::of(1u16..=65535),
        proptest::collection::vec(("x-[a-z]{1,8}", "[a-z0-9]{0,8}"), 0..3),
        any::<bool>(),
    )
        .prop_map(|(blksize, timeout, windowsize, unknown, upper)| {
            let mut out = Vec::new();
            let name = |n: &str| {
                if upper {
                    n.to_ascii_uppercase()
                } else {
                    n.to_owned()
                }
            };
            if let Some(v) = blksize {
                out.push((name("blksize"), v.to_string()));
            }
            if let Some(v) = timeout {
                out.push((name("timeout"), v.to_string()));
            }
            if let Some(v) = windowsize {
                out.push((name("windowsize"), v.to_string()));
            }
            let mut seen = std::collections::HashSet::new();
            for (n, v) in unknown {
                if seen.insert(n.clone()) {
                    out.push((n, v));
                }
            }
            out
        })
}

/// `part` has no option `whole` lacks, and fewer of them.
fn fewer_options(part: &Options<'_>, whole: &Options<'_>) -> bool {
    let (p, w) = (part.known, whole.known);
    p.blksize.is_none_or(|v| w.blksize == Some(v))
        && p.timeout.is_none_or(|v| w.timeout == Some(v))
        && p.tsize.is_none_or(|v| w.tsize == Some(v))
        && p.windowsize.is_none_or(|v| w.windowsize == Some(v))
        && whole.unknown.starts_with(&part.unknown)
        && part.count() < whole.count()
}

proptest! {
    /// Every strict prefix of a valid RRQ, WRQ, DATA, ACK, ERROR or OACK is refused or parses as
    /// the same kind of packet saying less: the same request with fewer options, the same block
    /// with fewer bytes, an OACK with fewer options. ACK and ERROR have no valid strict prefix.
    #[test]
    fn strict_prefixes_never_read_as_more(
        file in filename(),
        mode in prop::sample::select(vec!["octet", "netascii", "MAIL"]),
        options in options(),
        block in any::<u16>(),
        data_len in 0usize..600,
        code in 0u16..=8,
        message in "[ -~]{0,40}",
    ) {
        let refs: Vec<(&str, &str)> = options.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut packets = vec![
            tftp::rrq(&file, mode, &refs),
            tftp::wrq(&file, mode, &refs),
            tftp::data(block, data_len),
            tftp::ack(block),
            tftp::error(code, &message),
        ];
        if !refs.is_empty() {
            packets.push(tftp::oack(&refs));
        }
        for bytes in &packets {
            let whole = parse(bytes);
            prop_assert!(whole.is_ok(), "{:02x?} does not parse: {:?}", bytes, whole);
            let whole = whole.unwrap();
            for len in 0..bytes.len() {
                let Ok(prefix) = parse(&bytes[..len]) else {
                    continue;
                };
                let fewer = match (&prefix, &whole) {
                    (
                        TftpPacket::Request { kind: k1, filename: f1, mode: m1, options: o1 },
                        TftpPacket::Request { kind: k2, filename: f2, mode: m2, options: o2 },
                    ) => k1 == k2 && f1 == f2 && m1 == m2 && fewer_options(o1, o2),
                    (
                        TftpPacket::Data { block: b1, data: d1 },
                        TftpPacket::Data { block: b2, data: d2 },
                    ) => b1 == b2 && d1.len() < d2.len() && d2.starts_with(d1),
                    (TftpPacket::Oack { options: o1 }, TftpPacket::Oack { options: o2 }) => {
                        fewer_options(o1, o2)
                    }
                    _ => false,
                };
                prop_assert!(fewer, "prefix {} of {:02x?} reads as {:?}, the whole as {:?}", len, bytes, prefix, whole);
            }
        }
    }

    #[test]
    fn the_parser_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn the_parser_takes_any_bytes_after_a_valid_opcode(
        opcode in 1u16..=6,
        rest in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..80),
    ) {
        let mut bytes = opcode.to_be_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        let _ = parse(&bytes);
    }

    #[test]
    fn requests_parse_back_to_what_was_built(
        file in filename(),
        write in any::<bool>(),
        mode in prop::sample::select(vec!["octet", "OCTET", "netascii", "NetASCII", "mail"]),
        blksize in prop::option::of(8u16..=65464),
        windowsize in prop::option::of(1u16..=65535),
        tsize in prop::option::of(0u64..=u64::from(u32::MAX)),
    ) {
        // RFC 2349 section 3: a read request asks with tsize 0; a write states the size.
        let tsize = if write { tsize } else { tsize.map(|_| 0) };
        let (b, w, t) = (
            blksize.map(|v| v.to_string()),
            windowsize.map(|v| v.to_string()),
            tsize.map(|v| v.to_string()),
        );
        let mut options = Vec::new();
        if let Some(v) = &b { options.push(("blksize", v.as_str())); }
        if let Some(v) = &w { options.push(("windowsize", v.as_str())); }
        if let Some(v) = &t { options.push(("tsize", v.as_str())); }
        let bytes = if write {
            tftp::wrq(&file, mode, &options)
        } else {
            tftp::rrq(&file, mode, &options)
        };
        let Ok(TftpPacket::Request { kind, filename, mode: parsed_mode, options: parsed }) = parse(&bytes) else {
            panic!("{bytes:02x?} did not parse as a request");
        };
        prop_assert_eq!(kind, if write { RequestKind::Write } else { RequestKind::Read });
        prop_assert_eq!(filename, file.as_bytes());
        let want_mode = match mode.to_ascii_lowercase().as_str() {
            "octet" => Mode::Octet,
            "netascii" => Mode::Netascii,
            _ => Mode::Mail,
        };
        prop_assert_eq!(parsed_mode, want_mode);
        prop_assert_eq!(parsed.known.blksize, blksize);
        prop_assert_eq!(parsed.known.windowsize, windowsize);
        prop_assert_eq!(parsed.known.tsize, tsize);
        prop_assert!(parsed.unknown.is_empty());
        // Every strict prefix of a request either fails or ends on a complete field.
        for len in 0..bytes.len() {
            if let Ok(packet) = parse(&bytes[..len]) {
                let ends_on_field = bytes[len - 1] == 0;
                prop_assert!(
                    matches!(packet, TftpPacket::Request { .. }) && ends_on_field,
                    "prefix {} parsed as {:?}", len, packet
                );
            }
        }
    }

    /// Whatever a host other than the transfer's server, or the server from another port,
    /// sends at the client's transfer port is dropped; the transfer goes on.
    #[test]
    fn random_datagrams_at_a_transfer_admit_nothing(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..12),
        from_port in 1u16..=65535,
        third_host in any::<bool>(),
    ) {
        let (client, tid) = (sock("198.51.100.10:50000"), sock("192.0.2.10:41000"));
        let mut h = Harness::default_policy();
        h.accept(&testkit::udp(client, sock("192.0.2.10:69"), &tftp::rrq("image.bin", "octet", &[])));
        h.accept(&testkit::udp(tid, client, &tftp::data(1, 512)));
        let intruder = if third_host {
            sock(&format!("203.0.113.9:{from_port}"))
        } else {
            // The server's other ports; its port 69 is the request flow (tested elsewhere).
            let port = if from_port == 41000 || from_port == 69 { 41001 } else { from_port };
            sock(&format!("192.0.2.10:{port}"))
        };
        for payload in &payloads {
            let d = h.send(&testkit::udp(intruder, client, payload));
            prop_assert_eq!(d.verdict, Verdict::Drop, "{:?}", d);
            prop_assert_eq!(d.reason, Some(Reason::TftpUnknownTid));
        }
        h.accept(&testkit::udp(client, tid, &tftp::ack(1)));
        h.accept(&testkit::udp(tid, client, &tftp::data(2, 10)));
        h.accept(&testkit::udp(client, tid, &tftp::ack(2)));
    }

    /// Malformed payloads (bytes the parser rejects) inside a running transfer, from either
    /// side, are dropped and change nothing: the real next blocks still pass.
    #[test]
    fn malformed_payloads_inside_a_transfer_do_not_derail_it(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..12),
        from_server in proptest::collection::vec(any::<bool>(), 12),
    ) {
        let (client, tid) = (sock("198.51.100.10:50000"), sock("192.0.2.10:41000"));
        let mut h = Harness::default_policy();
        h.accept(&testkit::udp(client, sock("192.0.2.10:69"), &tftp::rrq("image.bin", "octet", &[])));
        h.accept(&testkit::udp(tid, client, &tftp::data(1, 512)));
        for (payload, server) in payloads.iter().zip(&from_server) {
            if parse(payload).is_ok() {
                continue;
            }
            let frame = if *server {
                testkit::udp(tid, client, payload)
            } else {
                testkit::udp(client, tid, payload)
            };
            prop_assert_eq!(h.send(&frame).verdict, Verdict::Drop);
        }
        h.accept(&testkit::udp(client, tid, &tftp::ack(1)));
        h.accept(&testkit::udp(tid, client, &tftp::data(2, 10)));
        h.accept(&testkit::udp(client, tid, &tftp::ack(2)));
    }

    /// A real transfer (any length, window and block size, read or write) with duplicates of
    /// recent packets delivered again at random points, as a lossy or duplicating network
    /// does: every packet passes.
    #[test]
    fn duplicated_packets_of_a_real_transfer_all_pass(
        blocks in 1u16..60,
        window in 1u16..5,
        blksize in prop::sample::select(vec![8u16, 512, 1428]),
        last_len_seed in any::<u16>(),
        write in any::<bool>(),
        duplicates in proptest::collection::vec((any::<bool>(), 1usize..8), 0..200),
    ) {
        let (client, tid) = (sock("198.51.100.10:50000"), sock("192.0.2.10:41000"));
        let (data_from, data_to) = if write { (client, tid) } else { (tid, client) };
        let mut h = Harness::default_policy();
        let (b, w) = (blksize.to_string(), window.to_string());
        let options = [("blksize", b.as_str()), ("windowsize", w.as_str())];
        let request = if write {
            tftp::wrq("router1-confg", "octet", &options)
        } else {
            tftp::rrq("image.bin", "octet", &options)
        };
        h.accept(&testkit::udp(client, sock("192.0.2.10:69"), &request));
        h.accept(&testkit::udp(tid, client, &tftp::oack(&options)));
        if !write {
            h.accept(&testkit::udp(client, tid, &tftp::ack(0)));
        }
        // The packets of the transfer, in order; the last block is short.
        let last_len = usize::from(last_len_seed % blksize);
        let mut packets: Vec<Vec<u8>> = Vec::new();
        let mut block = 0u16;
        while block < blocks {
            let end = (block + window).min(blocks);
            while block < end {
                block += 1;
                let len = if block == blocks { last_len } else { usize::from(blksize) };
                packets.push(testkit::udp(data_from, data_to, &tftp::data(block, len)));
            }
            packets.push(testkit::udp(data_to, data_from, &tftp::ack(block)));
        }
        let mut duplicates = duplicates.into_iter();
        let mut sent: Vec<&Vec<u8>> = Vec::new();
        for packet in &packets {
            h.accept(packet);
            sent.push(packet);
            if let Some((true, back)) = duplicates.next() {
                let again = sent[sent.len().saturating_sub(back)];
                h.accept(again);
            }
        }
        prop_assert_eq!(h.engine.counters().violations, 0);
    }
}
