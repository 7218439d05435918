//! Command-line interface definitions (clap). The names here are a public contract.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Validate rules files; errors name file, line and the fix.
    CheckRules {
        /// Rules files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the embedded default policy (used when --rules is not given).
    DefaultRules,
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

    /// Captures to replay.
    #[arg(required = true, value_name = "PCAP")]
    pub pcaps: Vec<PathBuf>,
}
