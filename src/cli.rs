//! Command-line interface definitions (clap). The names here are a public contract.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::daemon::control::DEFAULT_SOCKET;
use crate::daemon::state_file::DEFAULT_PATH as DEFAULT_STATE_FILE;
use crate::io::iptables::{Flavour, HaMarks, Mode, OffloadEnds, RulesConfig};
use crate::output::Format;

/// pinhole: a stateful FTP/TFTP inspection firewall for Linux edge routers.
#[derive(Debug, Parser)]
#[command(name = "pinhole", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay pcap/pcapng captures through the engine; each file on a fresh engine.
    Replay(ReplayArgs),
    /// Write a large synthetic capture of concurrent FTP, TFTP, web and DNS sessions with a few
    /// attacks, for `replay --bench` with rules/bench.toml.
    GenPcap(GenPcapArgs),
    /// Validate rules files; errors name file, line and the fix.
    CheckRules {
        /// Rules files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the embedded default policy: what `replay` and `monitor` use when no --rules file
    /// is given (`run` always needs one), and a starting point for your own.
    DefaultRules,
    /// Run inline on NFQUEUE: one worker per queue, enforcing the rules with the inspectors.
    #[command(after_long_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Watch a live interface passively (a span port, or a router before going inline): run
    /// the same engine and report what it would have dropped, without touching traffic.
    #[command(after_long_help = MONITOR_AFTER_HELP)]
    Monitor(MonitorArgs),
    /// Print the iptables-restore script that sends forwarded traffic to the queues.
    Rules(RulesArgs),
    /// Ask the running daemon: mode, policy, reloads, table sizes.
    Status(QueryArgs),
    /// Ask the running daemon: every tracked flow (like `show ip inspect sessions`).
    Sessions(QueryArgs),
    /// Ask the running daemon: every open pinhole.
    Pinholes(QueryArgs),
    /// Ask the running daemon: counters, drops by reason, queue health.
    Stats(StatsArgs),
    /// Ask the running daemon to write its flows and pinholes to its state file now (as it
    /// does at SIGTERM), for `pinhole run --restore`.
    Snapshot(QueryArgs),
    /// Ask the running daemon to re-read its rules file and reopen its event log (what SIGHUP
    /// does), and wait for the outcome: exit status 1 with the errors when the file is invalid
    /// (the old policy stays). pinhole.service's ExecReload.
    Reload(QueryArgs),
    /// Print the shell completion script for SHELL: `pinhole completions bash >
    /// /etc/bash_completion.d/pinhole` (the Debian package installs bash, zsh and fish ones).
    Completions {
        /// The shell.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages generated from these definitions (pinhole.1, pinhole-run.1, ...)
    /// into DIR; the Debian package is built with them.
    #[command(hide = true)]
    ManPages {
        /// The directory to write them to (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The long help's closing section of `pinhole run` (and the EXTRA section of its man page).
const RUN_AFTER_HELP: &str = "\
Signals: SIGHUP re-reads the rules file (an invalid file keeps the old policy) and reopens the \
event log; SIGTERM and SIGINT unbind the queues, save the flows and pinholes to the state file, \
remove the installed kernel rules and exit 0.

Files: /etc/pinhole/rules.toml (the Debian package's rules), /etc/default/pinhole (extra options \
for the systemd unit), /run/pinhole/pinhole.sock (the control socket), /run/pinhole/state.json \
(the state file), /var/log/pinhole/ (event logs and drop captures, when asked for).

Under systemd, pinhole.service runs `pinhole run --rules /etc/pinhole/rules.toml --install-rules \
--restore` (Type=notify: ready once the queues are bound and the kernel rules installed); \
`systemctl reload pinhole` runs `pinhole reload` (it fails on an invalid rules file), \
`systemctl restart pinhole` keeps the sessions.";

/// The long help's closing section of `pinhole monitor`.
const MONITOR_AFTER_HELP: &str = "\
Signals: SIGHUP re-reads the rules file and reopens the event log; SIGTERM and SIGINT stop, \
writing the run's summary to the event log and to standard error.

Under systemd, pinhole-monitor@IFACE.service watches IFACE with /etc/pinhole/rules.toml and \
writes /var/log/pinhole/monitor-IFACE.jsonl.";

/// What the kernel rules depend on (shared by `run` and `rules`).
#[derive(Debug, Clone, clap::Args)]
pub struct KernelRulesArgs {
    /// Queues, one worker each: "0" or a range "0-3". The kernel balances flows over them by
    /// address pair, so an FTP control connection and its data connections share a queue.
    #[arg(long, value_name = "RANGE", default_value = "0", value_parser = parse_queues)]
    pub queues: RangeInclusive<u16>,

    /// offload: flows that need no more inspection are carried by the kernel; inspect-all:
    /// every forwarded packet is judged by pinhole.
    #[arg(long, value_enum, default_value_t = Mode::Offload)]
    pub mode: Mode,

    /// When pinhole is not running or a queue is full, let packets through instead of
    /// dropping them (queue bypass and NFQA_CFG_F_FAIL_OPEN). Default: fail closed.
    #[arg(long)]
    pub fail_open: bool,

    /// The packet/connection mark bit for offloaded connections.
    #[arg(long, value_name = "BIT", default_value = "0x10000000", value_parser = parse_mark)]
    pub offload_mark: u32,

    /// The packet mark bit for packets the kernel must reject (TCP reset or ICMP).
    #[arg(long, value_name = "BIT", default_value = "0x20000000", value_parser = parse_mark)]
    pub reject_mark: u32,

    /// Do not attach the kernel's FTP/TFTP helpers (a raw-table `CT --helper` rule per
    /// inspected port) and do not read the kernel's connection tracking: on a router that
    /// translates addresses, FTP payloads and data connections are then not translated.
    #[arg(long)]
    pub no_kernel_helpers: bool,

    /// Offload mode: how pinhole learns that an offloaded connection ended. events: from the
    /// kernel's connection tracking destroy events, and the kernel forwards the connection to
    /// its last packet; segments: its FIN and RST segments are still queued (for kernels
    /// without CONFIG_NF_CONNTRACK_EVENTS; `pinhole run` falls back to it by itself when it
    /// cannot subscribe to the events).
    #[arg(long, value_enum, default_value_t = OffloadEnds::Events)]
    pub offload_ends: OffloadEnds,

    /// A router of a failover pair whose kernel connection tracking conntrackd replicates:
    /// every connection pinhole admits carries --admitted-mark, and a connection pinhole does
    /// not track is taken over when the kernel's entry carries it (see the README, "High
    /// availability").
    #[arg(long)]
    pub ha: bool,

    /// With --ha: the connection mark bit of connections a pinhole admitted (conntrackd
    /// carries it to the peer).
    #[arg(long, value_name = "BIT", default_value = "0x40000000", value_parser = parse_mark)]
    pub admitted_mark: u32,

    /// With --ha: the packet mark bit the rules set on a queued packet whose kernel entry
    /// carries --admitted-mark.
    #[arg(long, value_name = "BIT", default_value = "0x08000000", value_parser = parse_mark)]
    pub synced_mark: u32,
}

/// Arguments of `pinhole rules`.
#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    /// What the kernel rules depend on.
    #[command(flatten)]
    pub kernel: KernelRulesArgs,

    /// The rules file whose inspected ports get the kernel's helpers (default: the embedded
    /// default rules: FTP on 21, TFTP on 69).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

/// Arguments of `pinhole run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Rules file (required: inline, pinhole enforces only a policy you chose; `pinhole
    /// default-rules` prints a starting point). SIGHUP re-reads it (an invalid file keeps the old
    /// policy).
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,

    /// Kernel rule settings.
    #[command(flatten)]
    pub kernel: KernelRulesArgs,

    /// Install the kernel rules (for IPv4 and IPv6) at start and remove them at exit.
    #[arg(long)]
    pub install_rules: bool,

    /// Which iptables installs them.
    #[arg(long, value_enum, default_value_t = Flavour::Auto)]
    pub iptables: Flavour,

    /// Enforce the rules without inspectors (compare: what the policy does without an ALG).
    #[arg(long)]
    pub no_inspect: bool,

    /// Control socket for status, sessions, pinholes and stats.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub control: PathBuf,

    /// Packets a queue holds waiting for verdicts before it counts as full.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub queue_maxlen: u32,

    /// Receive buffer of each queue's netlink socket, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub rcvbuf: usize,

    /// Take GSO/GRO super-packets segmented by the kernel instead of whole.
    #[arg(long)]
    pub no_gso: bool,

    /// Where flows and pinholes are saved on SIGTERM/SIGINT and by `pinhole snapshot`
    /// (written atomically; versioned JSON).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_FILE)]
    pub state_file: PathBuf,

    /// Load the state file at start, so sessions admitted before a restart continue. A
    /// corrupt or incompatible file is refused with an error in the log, and the daemon
    /// starts empty; a loaded file is removed.
    #[arg(long)]
    pub restore: bool,

    /// Event log, metrics and drop capture.
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// What the live modes report, besides their logs (shared by `run` and `monitor`).
#[derive(Debug, Clone, clap::Args)]
pub struct ObserveArgs {
    /// Write the event log to PATH (`-`: standard output): the replay records (pinholes,
    /// violations, notices, drops) with a `ts` field, JSON Lines, appended to; SIGHUP reopens
    /// the file, so logrotate can move it.
    #[arg(long, value_name = "PATH")]
    pub events: Option<String>,

    /// Add `flow` open/close records to the event log.
    #[arg(long)]
    pub events_flows: bool,

    /// Most event-log records per second, for each of the two classes (drop verdicts; other
    /// events); what is over is counted, and reported in one `suppressed` record.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub events_rate: u32,

    /// Write every dropped packet to this pcap file (Wireshark opens it); it rotates at
    /// --dump-drops-size to FILE.1, FILE.2, ...
    #[arg(long, value_name = "FILE")]
    pub dump_drops: Option<PathBuf>,

    /// Size of one drop capture file, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub dump_drops_size: u64,

    /// Drop capture files kept, the current one included.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub dump_drops_files: u32,

    /// Serve Prometheus metrics over HTTP (`GET /metrics`) at ADDR: a port (on 127.0.0.1, e.g.
    /// 9464), IP:PORT or [IPv6]:PORT.
    #[arg(long, value_name = "ADDR", value_parser = crate::observe::http::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Arguments of `pinhole monitor`.
#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    /// The interface to watch (a span port, or one side of the router).
    #[arg(long, value_name = "IF")]
    pub iface: String,

    /// Rules file (default: the embedded default policy); SIGHUP re-reads it. Zones match by
    /// their networks, as in a replay: a capture does not tell which router interface a packet
    /// came in by.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// Format of the event log: json (JSON Lines) or text (readable lines). Default: text when
    /// the event log is standard output and that is a terminal, json otherwise.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Check TCP/UDP checksums as the inline firewall does. Off by default: frames captured on
    /// the host that sends them carry unfinished checksums (offload).
    #[arg(long)]
    pub verify_checksums: bool,

    /// Do not put the interface in promiscuous mode.
    #[arg(long)]
    pub no_promisc: bool,

    /// Receive buffer of each capture socket, in bytes (used when frames are read with
    /// recvmsg: --no-ring, or a kernel that refused the ring).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub rcvbuf: usize,

    /// Worker threads, each with its own capture socket, ring and engine. The sockets share
    /// the interface's frames in a fanout group that keeps both directions of an address pair
    /// on one worker (an FTP session's control and data connections, a TFTP request and its
    /// transfer).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,

    /// Size of each worker's memory-mapped receive ring (TPACKET_V3), in MiB, in blocks of
    /// 1 MiB that the kernel hands over when full or after 20 ms. What the kernel can hold
    /// while a worker is busy: raise it when pinhole_capture_kernel_drops_total grows.
    #[arg(long, value_name = "MIB", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(2..=4096))]
    pub ring_mib: u32,

    /// Read frames with recvmsg, one per call, instead of the memory-mapped ring (what the
    /// monitor falls back to when the kernel refuses the ring).
    #[arg(long)]
    pub no_ring: bool,

    /// Event log, metrics and drop capture (the event log defaults to standard output).
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// Arguments of `pinhole stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The daemon and the output format.
    #[command(flatten)]
    pub query: QueryArgs,

    /// Print the counters in the Prometheus text format (as `--metrics` serves them), for
    /// node_exporter's textfile collector or a look by eye.
    #[arg(long, conflicts_with = "json")]
    pub prometheus: bool,
}

/// Arguments of the commands that ask the running daemon.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Print the answer as JSON (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub control: PathBuf,
}

impl KernelRulesArgs {
    /// The kernel rules these arguments describe, with the helpers `policy` needs (unless
    /// `--no-kernel-helpers`).
    pub fn config_for(&self, policy: &crate::policy::Policy) -> Result<RulesConfig, String> {
        let mut config = self.config()?;
        if !self.no_kernel_helpers {
            config.helpers = crate::policy::KernelHelpers::for_router(policy, self.ha);
        }
        Ok(config)
    }

    /// The kernel rules these arguments describe, without helpers.
    pub fn config(&self) -> Result<RulesConfig, String> {
        if self.offload_mark == self.reject_mark {
            return Err("--offload-mark and --reject-mark must be different bits".to_owned());
        }
        let ha = self.ha.then_some(HaMarks {
            admitted: self.admitted_mark,
            synced: self.synced_mark,
        });
        if ha.is_some() {
            let bits = [
                self.offload_mark,
                self.reject_mark,
                self.admitted_mark,
                self.synced_mark,
            ];
            if bits.iter().fold(0, |all, bit| all | bit).count_ones() != 4 {
                return Err(
                    "--offload-mark, --reject-mark, --admitted-mark and --synced-mark must be four different bits"
                        .to_owned(),
                );
            }
        }
        Ok(RulesConfig {
            queues: self.queues.clone(),
            mode: self.mode,
            fail_open: self.fail_open,
            offload_mark: self.offload_mark,
            reject_mark: self.reject_mark,
            helpers: crate::policy::KernelHelpers::default(),
            offload_ends: self.offload_ends,
            ha,
        })
    }
}

/// Parses "3" or "0-3".
fn parse_queues(text: &str) -> Result<RangeInclusive<u16>, String> {
    let number = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| format!("{s:?} is not a queue number (0-65535)"))
    };
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let (lo, hi) = (number(lo)?, number(hi)?);
    if lo > hi {
        return Err(format!(
            "queue range {text:?} runs backwards; write it low-high"
        ));
    }
    if hi - lo >= 64 {
        return Err("at most 64 queues (one worker thread each)".to_owned());
    }
    Ok(lo..=hi)
}

/// Parses a single mark bit, in hex (0x...) or decimal.
fn parse_mark(text: &str) -> Result<u32, String> {
    let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|_| format!("{text:?} is not a number"))?;
    if value.count_ones() != 1 {
        return Err(format!("{text:?} must be a single bit, such as 0x10000000"));
    }
    Ok(value)
}

/// Arguments of `pinhole replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Rules file (default: the embedded default policy).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// Report a verdict for every packet.
    #[arg(long)]
    pub verdicts: bool,

    /// Report flows opening and closing.
    #[arg(long)]
    pub flows: bool,

    /// Drop packets with wrong TCP/UDP checksums, as the inline firewall does. Off by default:
    /// captures taken on an end host carry the unfinished checksums of offloading NICs.
    #[arg(long)]
    pub verify_checksums: bool,

    /// Output format (default: json when stdout is not a terminal, text when it is).
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Benchmark instead of reporting: load each capture into memory, replay it `--reps` times
    /// through fresh engines and, beside it, through a bare etherparse-and-hash-lookup loop;
    /// print packets per second per core, ns per packet and the ratio (see BENCHMARKS.md).
    #[arg(long, conflicts_with_all = ["verdicts", "flows"])]
    pub bench: bool,

    /// Repetitions of each loop with --bench (median, min and max are reported).
    #[arg(long, value_name = "N", default_value_t = 5, requires = "bench",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub reps: u32,

    /// Worker threads with --bench, each with its own engine; packets are split by address
    /// pair as NFQUEUE's --queue-balance splits them.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "bench",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,

    /// Captures to replay.
    #[arg(required = true, value_name = "PCAP")]
    pub pcaps: Vec<PathBuf>,
}

/// Arguments of `pinhole gen-pcap`.
#[derive(Debug, clap::Args)]
pub struct GenPcapArgs {
    /// Sessions open at once (web, DNS, TFTP, FTP with its data connections, a few attacks).
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=16_000_000))]
    pub flows: u32,

    /// Packets to write (default: 10 per open session).
    #[arg(long, value_name = "N")]
    pub packets: Option<u64>,

    /// Simulated packet rate: timestamps advance by 1 s / RATE per packet.
    #[arg(long, value_name = "PPS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub rate: u64,

    /// Seed; the same seed and sizes give the same capture.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// The pcap file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ranges() {
        assert_eq!(parse_queues("2"), Ok(2..=2));
        assert_eq!(parse_queues("0-3"), Ok(0..=3));
        assert!(parse_queues("3-0").is_err());
        assert!(parse_queues("0-64").is_err());
        assert!(parse_queues("x").is_err());
    }

    #[test]
    fn marks_are_single_bits() {
        assert_eq!(parse_mark("0x10000000"), Ok(0x1000_0000));
        assert_eq!(parse_mark("256"), Ok(256));
        assert!(parse_mark("0x3").is_err());
        assert!(parse_mark("0").is_err());
    }
}
