//! Golden replays: every capture in `pcaps/` replayed by the real binary, compared byte for
//! byte with its checked-in expected output (see `tests/golden.toml`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoldenFile {
    replay: Vec<Replay>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    capture: String,
    rules: Option<String>,
    name: Option<String>,
    #[serde(default = "yes")]
    verdicts: bool,
    #[serde(default = "yes")]
    flows: bool,
    #[serde(default = "yes")]
    checksums: bool,
}

fn yes() -> bool {
    true
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl Replay {
    fn expected_path(&self) -> PathBuf {
        let capture = Path::new(&self.capture);
        let stem = capture.file_stem().unwrap().to_str().unwrap();
        let file = match &self.name {
            Some(name) => format!("{stem}.{name}.expected.jsonl"),
            None => format!("{stem}.expected.jsonl"),
        };
        root().join(capture.parent().unwrap()).join(file)
    }

    fn run(&self) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pinhole"));
        cmd.current_dir(root()).args(["replay", "--format", "json"]);
        if self.verdicts {
            cmd.arg("--verdicts");
        }
        if self.flows {
            cmd.arg("--flows");
        }
        if self.checksums {
            cmd.arg("--verify-checksums");
        }
        if let Some(rules) = &self.rules {
            cmd.args(["--rules", rules]);
        }
        cmd.arg(&self.capture);
        let output = cmd.output().unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            self.capture,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (
            e.get(i).copied().unwrap_or("<end>"),
            a.get(i).copied().unwrap_or("<end>"),
        );
        if x != y {
            return format!("line {}:\n  expected: {x}\n  actual:   {y}", i + 1);
        }
    }
    String::new()
}

fn captures_under(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            captures_under(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("pcap" | "pcapng")
        ) {
            out.push(
                path.strip_prefix(root())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
}

#[test]
fn golden_replays() {
    let text = std::fs::read_to_string(root().join("tests/golden.toml")).unwrap();
    let golden: GoldenFile = toml::from_str(&text).unwrap();
    let bless = std::env::var_os("PINHOLE_BLESS").is_some();
    let mut failures = Vec::new();
    for replay in &golden.replay {
        let actual = replay.run();
        let path = replay.expected_path();
        if bless {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}: {}",
                path.display(),
                first_difference(&expected, &actual)
            )),
            Err(_) => failures.push(format!("{}: missing", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden replays differ (PINHOLE_BLESS=1 regenerates after an intended change):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_capture_has_a_golden_replay() {
    let text = std::fs::read_to_string(root().join("tests/golden.toml")).unwrap();
    let golden: GoldenFile = toml::from_str(&text).unwrap();
    let mut captures = Vec::new();
    captures_under(&root().join("pcaps"), &mut captures);
    for capture in captures {
        assert!(
            golden.replay.iter().any(|r| r.capture == capture),
            "{capture} is not in tests/golden.toml"
        );
    }
}
