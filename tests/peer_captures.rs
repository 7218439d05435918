//! Every capture of the peer suite in `../shared/pcaps/suricata-verify/` (someone else's FTP
//! and TFTP traffic, read in place, never copied here) replays without error or panic, and
//! every packet gets exactly one verdict.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pinhole::io::pcap::read_capture;
use pinhole::output::{Format, RecordWriter};
use pinhole::policy::Policy;
use pinhole::replay::{ReplayOptions, replay_file};

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps/suricata-verify")
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

#[test]
fn every_peer_capture_replays_with_one_verdict_per_packet() {
    let captures = peer_captures();
    assert!(
        captures.len() >= 27,
        "found only {} peer captures",
        captures.len()
    );
    for pickup in [false, true] {
        let policy = if pickup {
            Policy::from_file(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules/pickup.toml"),
            )
            .unwrap()
        } else {
            Policy::embedded_default()
        };
        let policy = Arc::new(policy);
        for capture in &captures {
            let mut packets = 0u64;
            read_capture(capture, |_| -> Result<(), ()> {
                packets += 1;
                Ok(())
            })
            .unwrap()
            .unwrap();

            let mut out = Vec::new();
            let mut writer = RecordWriter::new(&mut out, Format::Json);
            let name = capture.display().to_string();
            let options = ReplayOptions {
                verdicts: true,
                flows: true,
            };
            let report = replay_file(capture, &name, &policy, options, &mut writer).unwrap();
            assert_eq!(report.counters.packets, packets, "{name}");
            assert_eq!(
                report.counters.accepted + report.counters.dropped,
                packets,
                "{name}: a packet without a verdict"
            );

            let mut verdicts = BTreeSet::new();
            for line in String::from_utf8(out).unwrap().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                if record["type"] == "verdict" {
                    assert!(
                        verdicts.insert(record["packet"].as_u64().unwrap()),
                        "{name}: two verdicts for one packet"
                    );
                }
            }
            assert_eq!(verdicts.len() as u64, packets, "{name}");
        }
    }
}
