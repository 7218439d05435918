//! The peer suite's captures in `../shared/pcaps/suricata-verify/` (someone else's FTP and
//! TFTP traffic, read in place, never copied here).
//!
//! - Every capture replays without error and every packet gets exactly one verdict.
//! - Every FTP and TFTP capture has its outcome asserted below, counts included, with the
//!   reason for every packet that is dropped. Across all of them: no packet of a data connection
//!   or transfer admitted through a pinhole is ever dropped, and a control connection or TFTP
//!   request flow without a violation loses no packet.
//!
//! Replays do not verify checksums: several of these captures were taken on loopback or on a
//! host with checksum offload, so their checksums were never filled in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pinhole::io::pcap::read_capture;
use pinhole::output::{Format, RecordWriter};
use pinhole::policy::Policy;
use pinhole::replay::{ReplayOptions, replay_file};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn peer_dir() -> PathBuf {
    root().join("../shared/pcaps/suricata-verify")
}

fn peer_captures() -> Vec<PathBuf> {
    let dir = peer_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; the peer captures are expected beside the checkout (../shared)",
            dir.display()
        )
    });
    let mut captures = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                if file
                    .extension()
                    .is_some_and(|e| e == "pcap" || e == "pcapng")
                {
                    captures.push(file);
                }
            }
        }
    }
    captures.sort();
    captures
}

/// Replays `capture` with `rules` (or the embedded default) and returns the JSON records.
fn replay(capture: &Path, rules: Option<&str>) -> Vec<serde_json::Value> {
    let policy = match rules {
        Some(rules) => Policy::from_file(&root().join(rules)).unwrap(),
        None => Policy::embedded_default(),
    };
    let mut out = Vec::new();
    let mut writer = RecordWriter::new(&mut out, Format::Json);
    let name = capture.display().to_string();
    let options = ReplayOptions {
        verdicts: true,
        flows: true,
        verify_checksums: false,
    };
    replay_file(capture, &name, &Arc::new(policy), options, &mut writer).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_peer_capture_replays_with_one_verdict_per_packet() {
    let captures = peer_captures();
    assert!(
        captures.len() >= 27,
        "found only {} peer captures",
        captures.len()
    );
    for rules in [None, Some("tests/rules/pickup.toml")] {
        for capture in &captures {
            let mut packets = 0u64;
            read_capture(capture, |_| -> Result<(), ()> {
                packets += 1;
                Ok(())
            })
            .unwrap()
            .unwrap();
            let records = replay(capture, rules);
            let name = capture.display();
            let summary = records.last().unwrap();
            assert_eq!(summary["type"], "summary");
            assert_eq!(summary["packets"], packets, "{name}");
            assert_eq!(
                summary["accepted"].as_u64().unwrap() + summary["dropped"].as_u64().unwrap(),
                packets,
                "{name}"
            );
            let mut verdicts = BTreeSet::new();
            for record in records.iter().filter(|r| r["type"] == "verdict") {
                assert!(
                    verdicts.insert(record["packet"].as_u64().unwrap()),
                    "{name}: two verdicts for one packet"
                );
            }
            assert_eq!(verdicts.len() as u64, packets, "{name}");
        }
    }
}

/// What one FTP capture must give.
struct Expect {
    capture: &'static str,
    rules: Option<&'static str>,
    /// packets, accepted, dropped, pinholes opened, pinholes used, violations
    counts: [u64; 6],
    drops: &'static [(&'static str, u64)],
    /// Why each drop and refusal is right (for the reviewer; checked only for being there).
    why: &'static str,
}

const DEFAULT: Option<&str> = None;
const ON_COMMAND: Option<&str> = Some("tests/rules/ftp-open-active-on-command.toml");
const LONG_LINES: Option<&str> = Some("tests/rules/ftp-long-lines.toml");

#[rustfmt::skip]
const FTP_EXPECTATIONS: &[Expect] = &[
    Expect { capture: "detect-ftp__ftp-active-dynamic_port-02/ftp-active-dynamic_port.pcap", rules: DEFAULT,
        counts: [21, 13, 8, 0, 0, 1], drops: &[("ftp_bounce", 1), ("tcp_after_reset", 7)],
        why: "synthetic: an IPv4 control connection from 1.1.1.1 sends EPRT |2| with an IPv6 address, which is not the client's own: ftp_bounce, the connection is reset and its 7 remaining segments are dropped" },
    Expect { capture: "detect-ftp__ftp-mode-02/input.pcap", rules: DEFAULT,
        counts: [18, 10, 8, 0, 0, 1], drops: &[("ftp_bad_address", 1), ("tcp_after_reset", 7)],
        why: "`PORT 1234` is not a host-port pair: ftp_bad_address, reset, the rest of the session (including a 70-byte PORT of digits) dropped" },
    Expect { capture: "detect-ftp__ftp-passive-dynamic_port-02/ftp-passive-dynamic_port.pcap", rules: DEFAULT,
        counts: [29, 29, 0, 1, 0, 0], drops: &[],
        why: "a PASV whose pinhole is opened; the capture has no data connection" },
    Expect { capture: "filestore-ftp-active-mode/ftp-active-mode.pcap", rules: DEFAULT,
        counts: [47, 43, 4, 1, 1, 0], drops: &[("default_deny", 4)],
        why: "active RETR over loopback admitted; the 4 drops are DNS queries and answers to 127.0.0.53 that no rule allows" },
    Expect { capture: "filestore-ftp-passive-mode/ftp-passive-mode.pcap", rules: DEFAULT,
        counts: [43, 43, 0, 1, 1, 0], drops: &[],
        why: "passive RETR, all admitted" },
    Expect { capture: "firewall__ruletype-firewall-116-ftp-all-data-ipv4/input.pcap", rules: DEFAULT,
        counts: [254, 198, 56, 14, 7, 0], drops: &[("default_deny", 7), ("tcp_no_handshake", 49)],
        why: "7 passive transfers (STOR, APPE, STOU, LIST, NLST, MLSD, RETR) admitted. The server (pyftpdlib) opens each of the 7 active data connections before it sends `200 Active data connection established`; pinholes open on the positive reply, so each data SYN is dropped (default_deny) with the rest of its connection (tcp_no_handshake), and the 7 pinholes opened afterwards close unused. open_active_on = \"command\" admits them (next entry)" },
    Expect { capture: "firewall__ruletype-firewall-116-ftp-all-data-ipv4/input.pcap", rules: ON_COMMAND,
        counts: [254, 254, 0, 14, 14, 0], drops: &[],
        why: "with active pinholes opened on the command, all 14 data connections are admitted" },
    Expect { capture: "firewall__ruletype-firewall-117-ftp-all-data-ipv6/input.pcap", rules: DEFAULT,
        counts: [262, 202, 60, 14, 7, 0], drops: &[("default_deny", 7), ("tcp_no_handshake", 53)],
        why: "the IPv6 twin of 116 (EPSV/EPRT): the same 7 active connections opened before the 200 reply" },
    Expect { capture: "firewall__ruletype-firewall-117-ftp-all-data-ipv6/input.pcap", rules: ON_COMMAND,
        counts: [262, 262, 0, 14, 14, 0], drops: &[],
        why: "IPv6, opened on the command: all admitted" },
    Expect { capture: "firewall__ruletype-firewall-118-ftp-stou-no-filename-active/input.pcap", rules: DEFAULT,
        counts: [31, 23, 8, 1, 0, 0], drops: &[("default_deny", 1), ("tcp_no_handshake", 7)],
        why: "pyftpdlib again: the active STOU data connection comes before the 200 reply" },
    Expect { capture: "firewall__ruletype-firewall-118-ftp-stou-no-filename-active/input.pcap", rules: ON_COMMAND,
        counts: [31, 31, 0, 1, 1, 0], drops: &[],
        why: "opened on the command: admitted" },
    Expect { capture: "ftp-epsv/input.pcap", rules: DEFAULT,
        counts: [112, 112, 0, 4, 0, 0], drops: &[],
        why: "4 EPSV negotiations, all opened; the capture holds no data connection, so 2 expire after 60 s and 2 close with the session" },
    Expect { capture: "ftp-port-memcap/input.pcap", rules: DEFAULT,
        counts: [18, 10, 8, 0, 0, 1], drops: &[("ftp_bad_address", 1), ("tcp_after_reset", 7)],
        why: "the same ProFTPD session as detect-ftp-mode-02: `PORT 1234` is malformed" },
    Expect { capture: "ftp-quit/input.pcap", rules: DEFAULT,
        counts: [7, 7, 0, 0, 0, 0], drops: &[],
        why: "a session that only quits" },
    Expect { capture: "ftp-retr-bypass-baseline/input.pcap", rules: DEFAULT,
        counts: [32, 32, 0, 1, 0, 0], drops: &[],
        why: "PASV opened; no data connection in the capture" },
    Expect { capture: "ftp-retr-bypass-realserver/input.pcap", rules: DEFAULT,
        counts: [26, 26, 0, 0, 0, 0], drops: &[],
        why: "RETR without PORT/PASV: the server answers 425, nothing to open" },
    Expect { capture: "ftp__ftp-bounce/test.pcap", rules: DEFAULT,
        counts: [34, 26, 8, 1, 0, 1], drops: &[("ftp_bounce", 1), ("tcp_after_reset", 7)],
        why: "the first session's PORT names the client itself: opened. The second's `PORT 2,2,2,3,0,80` names a third host: ftp_bounce, nothing opened, the session reset" },
    Expect { capture: "ftp__ftp-download-active/input.pcap", rules: DEFAULT,
        counts: [63, 63, 0, 3, 3, 0], drops: &[],
        why: "3 active downloads, all admitted" },
    Expect { capture: "ftp__ftp-download-passive/input.pcap", rules: DEFAULT,
        counts: [63, 63, 0, 3, 3, 0], drops: &[],
        why: "3 passive downloads, all admitted" },
    Expect { capture: "ftp__ftp-ippair-leak-5204/input.pcap", rules: DEFAULT,
        counts: [560, 209, 351, 2, 2, 9], drops: &[("ftp_bounce", 9), ("tcp_after_reset", 198), ("default_deny", 18), ("tcp_no_handshake", 126)],
        why: "10 sessions replayed with rewritten addresses: the first (client 192.168.0.13) sends PORT 192,168,0,13 and both its data connections are admitted; the 9 others (clients .14 to .22) send the same PORT naming .13, a third host: ftp_bounce and reset each; their data connections to .13 are dropped (SYN default_deny, the rest tcp_no_handshake)" },
    Expect { capture: "ftp__ftp-too-long-command-buffered/ftp-too-long-command.pcap", rules: DEFAULT,
        counts: [117, 27, 90, 1, 0, 1], drops: &[("ftp_line_too_long", 1), ("tcp_after_reset", 89)],
        why: "a RETR line of about 40 KB, sent in 1 KB segments, crosses the 1024-byte line limit: ftp_line_too_long, reset" },
    Expect { capture: "ftp__ftp-too-long-command-buffered/ftp-too-long-command.pcap", rules: LONG_LINES,
        counts: [117, 41, 76, 1, 0, 1], drops: &[("ftp_line_too_long", 1), ("tcp_after_reset", 75)],
        why: "with an 8 KiB limit the 40 KB RETR line is still too long, only later: ftp_line_too_long" },
    Expect { capture: "ftp__ftp-too-long-command-first/ftp-too-long-command.pcap", rules: DEFAULT,
        counts: [35, 25, 10, 1, 0, 1], drops: &[("ftp_line_too_long", 1), ("tcp_after_reset", 9)],
        why: "a RETR line longer than the 1024-byte default, as the first command" },
    Expect { capture: "ftp__ftp-too-long-command-higher-limit/ftp-too-long-command.pcap", rules: DEFAULT,
        counts: [33, 25, 8, 1, 0, 1], drops: &[("ftp_line_too_long", 1), ("tcp_after_reset", 7)],
        why: "the peer raises its limit for this capture; at the 1024-byte default it is too long" },
    Expect { capture: "ftp__ftp-too-long-command-higher-limit/ftp-too-long-command.pcap", rules: LONG_LINES,
        counts: [33, 33, 0, 1, 0, 0], drops: &[],
        why: "with max_line = 8192, as the peer does, the session passes" },
    Expect { capture: "ftp__ftp-too-long-command/ftp-too-long-command.pcap", rules: DEFAULT,
        counts: [33, 25, 8, 1, 0, 1], drops: &[("ftp_line_too_long", 1), ("tcp_after_reset", 7)],
        why: "a RETR line longer than the 1024-byte default" },
    Expect { capture: "ftp__ftp-too-long-response/ftp-too-long-response.pcap", rules: DEFAULT,
        counts: [255, 25, 230, 0, 0, 1], drops: &[("ftp_line_too_long", 1), ("tcp_after_reset", 229)],
        why: "a server reply line far beyond the limit: ftp_line_too_long, reset" },
    Expect { capture: "ftp__ftp-upload-active/input.pcap", rules: DEFAULT,
        counts: [63, 63, 0, 3, 3, 0], drops: &[],
        why: "3 active uploads, all admitted" },
    Expect { capture: "ftp__ftp-upload-passive/input.pcap", rules: DEFAULT,
        counts: [63, 63, 0, 3, 3, 0], drops: &[],
        why: "3 passive uploads, all admitted" },
    Expect { capture: "output-eve-ftp-data/input.pcap", rules: DEFAULT,
        counts: [1350, 56, 1294, 2, 2, 0], drops: &[("not_ip", 126), ("martian_source", 30), ("tcp_no_handshake", 622), ("default_deny", 516)],
        why: "a home LAN capture: the FTP session and its 2 passive data connections are admitted (56 packets); everything else is traffic no rule allows (HTTP, SSDP, DNS, DHCP from 0.0.0.0, NetBIOS, IGMP; ARP is not IP)" },
];

#[rustfmt::skip]
const TFTP_EXPECTATIONS: &[Expect] = &[
    Expect { capture: "output-eve-tftp-01/input.pcap", rules: DEFAULT,
        counts: [99, 99, 0, 1, 1, 0], drops: &[],
        why: "an RRQ to 192.168.0.10:69 answered from the server's port 3445: the pinhole admits the transfer, every DATA and ACK passes" },
    Expect { capture: "tftp-tx-handling-wrq/input.pcap", rules: DEFAULT,
        counts: [100, 100, 0, 1, 1, 0], drops: &[],
        why: "a WRQ for rfc1350.txt (octet) answered with ACK 0 from the server's port 2087: the whole upload passes" },
];

/// Replays one expectation, checks its counts and drops and the invariants (no packet of a
/// flow admitted through a pinhole is dropped; an inspected flow without a violation loses no
/// packet), and returns the records.
fn check(expect: &Expect, inspected_via: &str) -> Vec<serde_json::Value> {
    assert!(!expect.why.is_empty());
    let records = replay(&peer_dir().join(expect.capture), expect.rules);
    let summary = records.last().unwrap();
    let name = format!(
        "{} ({})",
        expect.capture,
        expect.rules.unwrap_or("default policy")
    );
    let counts: Vec<u64> = [
        "packets",
        "accepted",
        "dropped",
        "pinholes_opened",
        "pinholes_used",
        "violations",
    ]
    .iter()
    .map(|k| summary[*k].as_u64().unwrap())
    .collect();
    assert_eq!(
        counts, expect.counts,
        "{name}: [packets, accepted, dropped, opened, used, violations]"
    );
    let drops: BTreeMap<String, u64> = summary["drops"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    let want: BTreeMap<String, u64> = expect
        .drops
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    assert_eq!(drops, want, "{name}: drops by reason");

    // No packet of a data connection or transfer admitted through a pinhole is dropped.
    let children: BTreeSet<&str> = records
        .iter()
        .filter(|r| r["type"] == "pinhole" && r["event"] == "use")
        .map(|r| r["child"].as_str().unwrap())
        .collect();
    // A control connection (request flow) with no violation loses no packet.
    let violated: BTreeSet<&str> = records
        .iter()
        .filter(|r| r["type"] == "violation")
        .map(|r| r["flow"].as_str().unwrap())
        .collect();
    let controls: BTreeSet<&str> = records
        .iter()
        .filter(|r| r["type"] == "flow" && r["event"] == "open" && r["via"] == inspected_via)
        .map(|r| r["flow"].as_str().unwrap())
        .filter(|f| !violated.contains(f))
        .collect();
    for record in records
        .iter()
        .filter(|r| r["type"] == "verdict" && r["verdict"] == "drop")
    {
        if let Some(flow) = record["flow"].as_str() {
            assert!(
                !children.contains(flow),
                "{name}: packet {} of admitted flow {flow} dropped",
                record["packet"]
            );
            assert!(
                !controls.contains(flow),
                "{name}: packet {} of clean inspected flow {flow} dropped",
                record["packet"]
            );
        }
    }
    records
}

/// Asserts every peer capture whose path `selects` has an expectation.
fn all_covered(expectations: &[Expect], selects: impl Fn(&str) -> bool) {
    let dir = peer_dir();
    let covered: BTreeSet<&str> = expectations.iter().map(|e| e.capture).collect();
    for capture in peer_captures() {
        let relative = capture.strip_prefix(&dir).unwrap().to_str().unwrap();
        if selects(relative) {
            assert!(covered.contains(relative), "{relative} has no expectation");
        }
    }
}

#[test]
fn ftp_peer_captures_have_the_expected_outcome() {
    for expect in FTP_EXPECTATIONS {
        check(expect, "ftp");
    }
    all_covered(FTP_EXPECTATIONS, |path| {
        path.contains("ftp") && !path.contains("tftp")
    });
}

#[test]
fn tftp_peer_captures_pass_whole() {
    for expect in TFTP_EXPECTATIONS {
        let records = check(expect, "tftp");
        // Every packet belongs to the request flow or to the one transfer it opened.
        let request = records
            .iter()
            .find(|r| r["type"] == "flow" && r["via"] == "tftp")
            .unwrap()["flow"]
            .as_str()
            .unwrap();
        let transfer = records
            .iter()
            .find(|r| r["type"] == "pinhole" && r["event"] == "use")
            .unwrap()["child"]
            .as_str()
            .unwrap();
        for verdict in records.iter().filter(|r| r["type"] == "verdict") {
            assert_eq!(
                verdict["verdict"], "accept",
                "{}: {verdict}",
                expect.capture
            );
            let flow = verdict["flow"].as_str().unwrap();
            assert!(
                flow == request || flow == transfer,
                "{}: {verdict}",
                expect.capture
            );
        }
        assert!(
            records.iter().all(|r| r["type"] != "notice"),
            "{}: no unknown option, no error",
            expect.capture
        );
    }
    all_covered(TFTP_EXPECTATIONS, |path| path.contains("tftp"));
}

/// The requests are what the peer's own expectations say they are (`test.yaml`: a read in
/// output-eve-tftp-01; a write of rfc1350.txt in octet mode from 192.168.0.1:57509 to
/// 192.168.0.13:69 in tftp-tx-handling-wrq).
#[test]
fn tftp_peer_requests_parse_as_the_peer_reports_them() {
    use pinhole::wire::tftp::{Mode, RequestKind, TftpPacket, parse};
    use pinhole::wire::{LinkType, Transport, ip, link, transport};

    for (capture, want_kind, want_file, client) in [
        (
            "output-eve-tftp-01/input.pcap",
            RequestKind::Read,
            None,
            None,
        ),
        (
            "tftp-tx-handling-wrq/input.pcap",
            RequestKind::Write,
            Some(&b"rfc1350.txt"[..]),
            Some(("192.168.0.1", 57509)),
        ),
    ] {
        let mut first: Option<(LinkType, Vec<u8>)> = None;
        read_capture(&peer_dir().join(capture), |packet| -> Result<(), ()> {
            if first.is_none() {
                first = Some((packet.link, packet.data.to_vec()));
            }
            Ok(())
        })
        .unwrap()
        .unwrap();
        let (linktype, frame) = first.unwrap();
        let ip = ip::decode(link::ip_bytes(linktype, &frame).unwrap()).unwrap();
        let Ok(Transport::Udp(udp)) = transport::decode(ip.proto, ip.is_ipv6(), ip.payload) else {
            panic!("{capture}: the first packet is not UDP");
        };
        assert_eq!(udp.dport, 69, "{capture}");
        if let Some((addr, port)) = client {
            assert_eq!((ip.src.to_string().as_str(), udp.sport), (addr, port));
        }
        let Ok(TftpPacket::Request {
            kind,
            filename,
            mode,
            ..
        }) = parse(udp.payload)
        else {
            panic!("{capture}: the first packet is not a TFTP request");
        };
        assert_eq!(kind, want_kind, "{capture}");
        assert_eq!(mode, Mode::Octet, "{capture}");
        if let Some(file) = want_file {
            assert_eq!(filename, file, "{capture}");
        }
    }
}

#[test]
fn the_bounce_port_opens_nothing_for_the_third_host() {
    let records = replay(&peer_dir().join("ftp__ftp-bounce/test.pcap"), None);
    let violation = records.iter().find(|r| r["type"] == "violation").unwrap();
    assert_eq!(violation["reason"], "ftp_bounce");
    assert!(
        violation["detail"]
            .as_str()
            .unwrap()
            .contains("PORT 2,2,2,3,0,80")
    );
    assert!(
        !records
            .iter()
            .any(|r| r["type"] == "pinhole" && r["dst"] == "2.2.2.3")
    );
    // The legitimate session's PORT (its own address, port 59549) is opened.
    assert!(records.iter().any(|r| r["type"] == "pinhole"
        && r["event"] == "open"
        && r["dst"] == "1.1.1.2"
        && r["dport"] == 59549));
}
