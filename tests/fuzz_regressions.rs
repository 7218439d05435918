//! Replays every input under `fuzz/regressions/<target>/` through exactly the checks of that
//! fuzz target (the fuzz crate's `checks.rs` and `sequence.rs`, included here by path), in the
//! normal test run. A crash the fuzzer finds is fixed and its input dropped into the target's
//! directory (for `engine_sequence`, the JSON the target writes with `PINHOLE_FUZZ_JSON`; see
//! the README's "Fuzzing"); this test then keeps it fixed. The files already there are tricky
//! inputs picked by hand, and they seed the fuzzer too.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::missing_panics_doc,
    clippy::cast_possible_wrap,
    clippy::too_many_lines
)]

#[path = "../fuzz/src/checks.rs"]
mod checks;
#[path = "../fuzz/src/sequence.rs"]
mod sequence;

use std::fs;
use std::path::{Path, PathBuf};

/// The files of `fuzz/regressions/<target>/`, sorted; fails when there are none, so a moved or
/// emptied directory cannot make the test pass without checking anything.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err} (the regression inputs)", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    paths
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

fn replay(target: &str, check: fn(&[u8])) {
    for (path, bytes) in inputs(target) {
        eprintln!("replaying {}", path.display());
        check(&bytes);
    }
}

#[test]
fn decode() {
    replay("decode", checks::decode);
}

#[test]
fn ftp_command() {
    replay("ftp_command", checks::ftp_command);
}

#[test]
fn ftp_reply() {
    replay("ftp_reply", checks::ftp_reply);
}

#[test]
fn tls_framing() {
    replay("tls_framing", checks::tls_framing);
}

#[test]
fn tftp() {
    replay("tftp", checks::tftp);
}

#[test]
fn engine_sequence() {
    for (path, bytes) in inputs("engine_sequence") {
        eprintln!("replaying {}", path.display());
        let sequence: sequence::Sequence = serde_json::from_slice(&bytes)
            .unwrap_or_else(|err| panic!("{}: not a sequence: {err}", path.display()));
        sequence::run(&sequence);
    }
}

/// The checks themselves catch what they are meant to: a sequence that leaves a pinhole open
/// is replayed, and the counters and tables it leaves are the expected ones.
#[test]
fn the_sequence_harness_opens_and_uses_pinholes() {
    let (_, bytes) = inputs("engine_sequence")
        .into_iter()
        .find(|(path, _)| path.ends_with("ftp-passive-session.json"))
        .expect("the passive session seed");
    let sequence: sequence::Sequence = serde_json::from_slice(&bytes).unwrap();
    let mut harness = sequence::Harness::new(&sequence);
    for op in &sequence.ops {
        harness.op(op);
        harness.check();
    }
    let counters = harness.counters();
    assert_eq!(counters.pinholes_opened, 2, "{counters:?}");
    assert_eq!(counters.pinholes_used, 1, "{counters:?}");
    assert_eq!(counters.dropped, 0, "{counters:?}");
}
