//! `pcap_blast`: sends a capture's frames out of an interface as fast as the kernel takes them
//! (an `AF_PACKET` socket, `sendmmsg` in batches, the qdisc bypassed), looping over the
//! capture; the load generator of `benches/monitor.sh`. Not part of pinhole's command line.
//!
//! ```text
//! cargo build --release --example pcap_blast
//! target/release/examples/pcap_blast --iface veth0 [--loops K] [--count N] [--batch B] FILE.pcap
//! ```
//!
//! Prints one JSON object: frames sent, seconds, frames per second, bytes, and when the first
//! frame went (`started_unix`, seconds since the epoch: the capture is read before). Needs
//! `CAP_NET_RAW`; sends only on the interface named (use it inside a network namespace).

use std::process::ExitCode;
use std::time::Instant;

use pinhole::io::packet::PacketSender;
use pinhole::io::pcap::read_capture;

struct Args {
    iface: String,
    loops: u64,
    count: Option<u64>,
    batch: usize,
    file: String,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        iface: String::new(),
        loops: 1,
        count: None,
        batch: 256,
        file: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--iface" => args.iface = value("--iface")?,
            "--loops" => {
                args.loops = value("--loops")?
                    .parse()
                    .map_err(|e| format!("--loops: {e}"))?;
            }
            "--count" => {
                args.count = Some(
                    value("--count")?
                        .parse()
                        .map_err(|e| format!("--count: {e}"))?,
                );
            }
            "--batch" => {
                args.batch = value("--batch")?
                    .parse()
                    .map_err(|e| format!("--batch: {e}"))?;
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => other.clone_into(&mut args.file),
        }
    }
    if args.iface.is_empty() || args.file.is_empty() {
        return Err(
            "usage: pcap_blast --iface IF [--loops K] [--count N] [--batch B] FILE.pcap".to_owned(),
        );
    }
    args.batch = args.batch.clamp(1, 1024);
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pcap_blast: {err}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::cast_precision_loss)] // a rate for people
fn run() -> Result<(), String> {
    let args = parse()?;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    read_capture::<()>(std::path::Path::new(&args.file), |packet| {
        frames.push(packet.data.to_vec());
        Ok(())
    })
    .map_err(|e| e.to_string())?
    .map_err(|()| "reading the capture".to_owned())?;
    if frames.is_empty() {
        return Err(format!("{}: no frames", args.file));
    }
    let sender = PacketSender::open(&args.iface).map_err(|e| format!("{}: {e}", args.iface))?;
    let total = args
        .count
        .unwrap_or_else(|| args.loops.saturating_mul(frames.len() as u64));
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut next = 0usize;
    let mut batch: Vec<&[u8]> = Vec::with_capacity(args.batch);
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    while sent < total {
        batch.clear();
        let want = (total - sent).min(args.batch as u64) as usize;
        for _ in 0..want {
            batch.push(&frames[next]);
            next = (next + 1) % frames.len();
        }
        let n = sender
            .send_batch(&batch)
            .map_err(|e| format!("sendmmsg: {e}"))?;
        bytes += batch[..n].iter().map(|f| f.len() as u64).sum::<u64>();
        sent += n as u64;
        if n < batch.len() {
            // Resend the rest from where the kernel stopped.
            next = (next + frames.len() - (batch.len() - n) % frames.len()) % frames.len();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"seconds\":{secs:.4},\"pps\":{:.0},\"bytes\":{bytes},\"capture_frames\":{},\"started_unix\":{started_unix:.6}}}",
        sent as f64 / secs.max(1e-9),
        frames.len()
    );
    Ok(())
}
