//! # pinhole
//!
//! A stateful firewall inspection engine (ALG) for FTP and TFTP. See `ARCHITECTURE.md` for how a
//! packet flows through the modules, and the README for the rules format and the CLI.

pub mod alg;
pub mod cli;
pub mod conntrack;
pub mod counters;
pub mod daemon;
pub mod decision;
pub mod defrag;
pub mod docs;
pub mod engine;
pub mod event;
pub mod io;
pub mod observe;
pub mod output;
pub mod policy;
pub mod replay;
pub mod report;
pub mod testkit;
pub mod time;
pub mod wire;
pub mod workload;

pub use decision::{Decision, Expired, Reason, Released, Verdict};
pub use engine::{Engine, PacketInfo};
pub use event::Event;
pub use policy::Policy;
pub use time::Instant;
