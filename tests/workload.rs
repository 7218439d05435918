//! The benchmark workload (`pinhole gen-pcap`) and `replay --bench`: the generated traffic is
//! valid under rules/bench.toml (only the attacks are dropped, each for its reason), and the
//! benchmark replays all of it, on one worker or several.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use pinhole::Policy;
use pinhole::replay::bench::{BenchOptions, Capture, bench};
use pinhole::workload::{self, BENCH_RULES, Kind, Params, Summary};

fn generated(name: &str, params: Params) -> (PathBuf, Summary) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("workload");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let summary = workload::write_pcap(params, file).unwrap();
    (path, summary)
}

fn bench_policy() -> Arc<Policy> {
    Arc::new(Policy::parse(BENCH_RULES, "rules/bench.toml").unwrap())
}

fn small() -> Params {
    Params {
        flows: 400,
        packets: 30_000,
        ..Params::default()
    }
}

#[test]
fn only_the_attacks_are_dropped_each_for_its_reason() {
    let (path, summary) = generated("valid.pcap", small());
    let capture = Capture::load(&path).unwrap();
    assert_eq!(capture.len() as u64, summary.packets);
    let report = bench(
        &capture,
        &bench_policy(),
        BenchOptions {
            reps: 1,
            workers: 1,
            verify_checksums: true,
        },
    );
    let mut expected = std::collections::BTreeMap::new();
    for (kind, n) in Kind::ALL.iter().zip(summary.attacks) {
        if let Some(reason) = kind.expected_drop() {
            assert!(n > 0, "no {} in the workload", kind.name());
            *expected.entry(reason).or_insert(0) += n;
        }
    }
    assert_eq!(report.drops, expected);
    let dropped: u64 = expected.values().sum();
    assert_eq!(report.accepted + dropped, summary.packets);
    // Every kind of session is there, FTP with its data connections and TFTP with its
    // transfers (their flows are only admitted through pinholes).
    for kind in Kind::ALL {
        assert!(summary.sessions_of(kind) > 0, "no {} session", kind.name());
    }
    assert!(report.flows > 400, "{} flows", report.flows);
    assert!(report.bare.mpps.median > 0.0 && report.pinhole.mpps.median > 0.0);
}

#[test]
fn two_workers_judge_every_packet_as_one_does() {
    let (path, _) = generated("workers.pcap", small());
    let capture = Capture::load(&path).unwrap();
    let run = |workers| {
        bench(
            &capture,
            &bench_policy(),
            BenchOptions {
                reps: 1,
                workers,
                verify_checksums: false,
            },
        )
    };
    let one = run(1);
    let two = run(2);
    assert_eq!(two.workers, 2);
    // Split by address pair, an FTP session's data connections and a TFTP transfer stay with
    // the worker that saw the request, so the verdicts are the same.
    assert_eq!(one.accepted, two.accepted);
    assert_eq!(one.drops, two.drops);
    assert_eq!(one.flows, two.flows);
    assert_eq!(one.pinholes, two.pinholes);
}

#[test]
fn cli_generates_and_benchmarks_with_a_json_report() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("workload-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("cli.pcap");
    let pcap = pcap.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "gen-pcap",
            "--flows",
            "100",
            "--packets",
            "3000",
            "-o",
            pcap,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("3000 packets"), "{text}");
    assert!(
        text.contains("pinhole replay --bench --rules rules/bench.toml"),
        "{text}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "replay",
            "--bench",
            "--reps",
            "2",
            "--rules",
            "rules/bench.toml",
        ])
        .args(["--format", "json", pcap])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["type"], "bench");
    assert_eq!(report["packets"], 3000);
    assert_eq!(report["reps"], 2);
    for figure in ["pinhole", "bare"] {
        for field in ["mpps", "mpps_per_core", "ns_per_packet"] {
            let spread = &report[figure][field];
            let (min, median, max) = (
                spread["min"].as_f64().unwrap(),
                spread["median"].as_f64().unwrap(),
                spread["max"].as_f64().unwrap(),
            );
            assert!(
                0.0 < min && min <= median && median <= max,
                "{figure}.{field}: {spread}"
            );
        }
    }
    assert!(report["ratio"].as_f64().unwrap() > 0.0);
    assert!(report["flows"].as_u64().unwrap() > 0);

    // Per-packet records make no sense in a benchmark.
    let out = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args(["replay", "--bench", "--verdicts", pcap])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
