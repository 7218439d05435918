//! Writes the starting corpus of every fuzz target from the project's own captures:
//!
//! - `decode`: each frame of every capture under `pcaps/` (and `pcaps/crafted/`), behind the
//!   byte that selects its link type (at most 200 frames per capture);
//! - `ftp_command`, `ftp_reply`: the payloads of TCP segments to and from port 21, whole and
//!   line by line;
//! - `tls_framing`: the payloads of TCP segments to and from port 21 that start with a TLS
//!   record header's content type (20-23);
//! - `tftp`: UDP payloads that parse as TFTP or involve port 69 (at most 32 DATA and ACK per
//!   capture);
//! - every target: the files under `fuzz/regressions/<target>/` (for `engine_sequence`, JSON
//!   sequences, its only seeds).
//!
//! Files are named by a hash of their content, so running it again adds nothing twice.
//!
//! Usage: `seed_corpus PCAPS_DIR REGRESSIONS_DIR CORPUS_DIR` (`scripts/fuzz-smoke.sh` runs it).

// The crate is built with coverage instrumentation, which calls into libFuzzer: link it even
// though this program is not a fuzz target.
use libfuzzer_sys as _;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pinhole::io::pcap::read_capture;
use pinhole::wire::{Transport, ip, link, tftp, transport};
use pinhole_fuzz::checks::{fnv, link_selector};

const TARGETS: [&str; 6] = [
    "decode",
    "ftp_command",
    "ftp_reply",
    "tftp",
    "tls_framing",
    "engine_sequence",
];
const MAX_FRAMES: usize = 200;
const MAX_TFTP_DATA: usize = 32;

struct Corpus {
    root: PathBuf,
    written: BTreeMap<&'static str, usize>,
}

impl Corpus {
    fn put(&mut self, target: &'static str, bytes: &[u8]) -> io::Result<()> {
        let path = self.root.join(target).join(format!("{:016x}", fnv(bytes)));
        if !path.exists() {
            fs::write(&path, bytes)?;
            *self.written.entry(target).or_insert(0) += 1;
        }
        Ok(())
    }
}

fn captures(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            captures(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "pcap" || e == "pcapng")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// What one frame contributes: FTP control payloads and TFTP payloads.
fn payloads(
    corpus: &mut Corpus,
    link_type: link::LinkType,
    frame: &[u8],
    tftp_data: &mut usize,
) -> io::Result<()> {
    let Ok(packet) = link::ip_bytes(link_type, frame).and_then(ip::decode) else {
        return Ok(());
    };
    if packet.fragment.is_some() {
        return Ok(());
    }
    match transport::decode(packet.proto, packet.is_ipv6(), packet.payload) {
        Ok(Transport::Tcp(seg)) if !seg.payload.is_empty() => {
            let target = match (seg.sport, seg.dport) {
                (_, 21) => "ftp_command",
                (21, _) => "ftp_reply",
                _ => return Ok(()),
            };
            corpus.put(target, seg.payload)?;
            if (20..=23).contains(&seg.payload[0]) {
                corpus.put("tls_framing", seg.payload)?;
            }
            for line in seg.payload.split_inclusive(|b| *b == b'\n') {
                corpus.put(target, line)?;
            }
        }
        Ok(Transport::Udp(udp)) => {
            let parsed = tftp::parse(udp.payload);
            if parsed.is_err() && udp.sport != 69 && udp.dport != 69 {
                return Ok(());
            }
            if matches!(
                parsed,
                Ok(tftp::TftpPacket::Data { .. } | tftp::TftpPacket::Ack { .. })
            ) {
                if *tftp_data >= MAX_TFTP_DATA {
                    return Ok(());
                }
                *tftp_data += 1;
            }
            corpus.put("tftp", udp.payload)?;
        }
        _ => {}
    }
    Ok(())
}

fn run(pcaps: &Path, regressions: &Path, root: &Path) -> Result<Corpus, String> {
    let mut corpus = Corpus {
        root: root.to_owned(),
        written: BTreeMap::new(),
    };
    for target in TARGETS {
        fs::create_dir_all(root.join(target)).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    let mut files = Vec::new();
    captures(pcaps, &mut files).map_err(|e| format!("{}: {e}", pcaps.display()))?;
    files.sort();
    if files.is_empty() {
        return Err(format!("no captures under {}", pcaps.display()));
    }
    for path in &files {
        let mut frames = 0;
        let mut tftp_data = 0;
        let read = read_capture(path, |packet| -> io::Result<()> {
            if frames < MAX_FRAMES {
                frames += 1;
                let mut seed = vec![link_selector(packet.link)];
                seed.extend_from_slice(packet.data);
                corpus.put("decode", &seed)?;
            }
            payloads(&mut corpus, packet.link, packet.data, &mut tftp_data)
        });
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(format!("writing seeds: {err}")),
            Err(err) => return Err(format!("{}: {err}", path.display())),
        }
    }
    for target in TARGETS {
        let dir = regressions.join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_file() {
                let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                corpus
                    .put(target, &bytes)
                    .map_err(|e| format!("{}: {e}", root.display()))?;
            }
        }
    }
    Ok(corpus)
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [pcaps, regressions, root] = args.as_slice() else {
        eprintln!("usage: seed_corpus PCAPS_DIR REGRESSIONS_DIR CORPUS_DIR");
        return ExitCode::from(2);
    };
    match run(pcaps, regressions, root) {
        Ok(corpus) => {
            for target in TARGETS {
                let total = fs::read_dir(root.join(target)).map_or(0, Iterator::count);
                let new = corpus.written.get(target).copied().unwrap_or(0);
                println!("{target}: {total} seeds ({new} new)");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("seed_corpus: {err}");
            ExitCode::FAILURE
        }
    }
}
