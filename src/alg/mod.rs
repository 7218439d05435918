//! Application-layer gateways: the protocol inspectors that open pinholes.
//!
//! A rule with `inspect = "ftp"` or `inspect = "tftp"` attaches an inspector to the flows it
//! admits. The engine hands each accepted packet of such a flow to the inspector, which answers
//! with an [`AlgOutcome`]: a verdict (it may stop the packet), pinholes to open, events.

pub mod ftp;
pub mod stream;
pub mod tftp;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::conntrack::Opening;
use crate::conntrack::key::FlowTuple;
pub use crate::decision::PayloadRewrite;
use crate::decision::Reason;
use crate::event::Event;

pub use ftp::{FtpControl, FtpOptions};
pub use tftp::{TftpOptions, TftpRequests, TftpTransfer, TransferInit};

/// The protocols pinhole inspects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alg {
    /// FTP (RFC 959, 2428, 1639): control connections on TCP, data connections negotiated in them.
    Ftp,
    /// TFTP (RFC 1350, 2347-2349, 7440): requests on UDP, transfers from a fresh server port.
    Tftp,
}

impl Alg {
    /// Every inspector, in index order (`alg as usize`).
    pub const ALL: [Alg; 2] = [Alg::Ftp, Alg::Tftp];

    /// Lower-case name, as in rules files and JSON output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Alg::Ftp => "ftp",
            Alg::Tftp => "tftp",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's inspector with its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inspect {
    /// FTP, with `[rule.ftp]` options.
    Ftp(Arc<FtpOptions>),
    /// TFTP, with `[rule.tftp]` options.
    Tftp(Arc<TftpOptions>),
}

impl Inspect {
    /// Which inspector.
    pub fn alg(&self) -> Alg {
        match self {
            Inspect::Ftp(_) => Alg::Ftp,
            Inspect::Tftp(_) => Alg::Tftp,
        }
    }
}

/// What a pinhole's connection gets inspected with once it is admitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildInit {
    /// A TFTP transfer started by this request.
    Tftp(TransferInit),
}

impl ChildInit {
    /// True when the connection this pinhole expects may also come from `src`, another
    /// address of the pinhole's peer (a TFTP server's `reply_addresses`).
    pub fn answers_from(&self, src: std::net::IpAddr) -> bool {
        match self {
            ChildInit::Tftp(init) => init.options.reply_addresses.contains(&src),
        }
    }
}

/// An inspector's state for one flow.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AlgState {
    /// An FTP control connection.
    Ftp(Box<FtpControl>),
    /// A client port sending TFTP requests to the TFTP port.
    TftpRequests(Box<TftpRequests>),
    /// A TFTP transfer.
    TftpTransfer(Box<TftpTransfer>),
}

impl AlgState {
    /// The state for a new flow admitted by `rule` with this inspector.
    pub fn for_new_flow(inspect: &Inspect, rule: &Arc<str>, flow: FlowTuple) -> AlgState {
        match inspect {
            Inspect::Ftp(options) => AlgState::Ftp(Box::new(FtpControl::for_rule(
                Arc::clone(options),
                Arc::clone(rule),
                flow,
            ))),
            Inspect::Tftp(options) => AlgState::TftpRequests(Box::new(TftpRequests::new(
                Arc::clone(options),
                Arc::clone(rule),
                flow,
            ))),
        }
    }

    /// The state for a flow picked up mid-stream: the FTP inspector starts at the next line.
    pub fn for_pickup(inspect: &Inspect, rule: &Arc<str>, flow: FlowTuple) -> AlgState {
        match inspect {
            Inspect::Ftp(options) => AlgState::Ftp(Box::new(FtpControl::midstream(
                Arc::clone(options),
                Arc::clone(rule),
                flow,
            ))),
            Inspect::Tftp(_) => AlgState::for_new_flow(inspect, rule, flow),
        }
    }

    /// The state for a connection a pinhole admitted.
    pub fn for_child(child: &ChildInit, flow: FlowTuple) -> AlgState {
        match child {
            ChildInit::Tftp(init) => {
                AlgState::TftpTransfer(Box::new(TftpTransfer::new(init.clone(), flow)))
            }
        }
    }

    /// Which inspector.
    pub fn alg(&self) -> Alg {
        match self {
            AlgState::Ftp(_) => Alg::Ftp,
            AlgState::TftpRequests(_) | AlgState::TftpTransfer(_) => Alg::Tftp,
        }
    }

    /// Inspects a datagram (UDP inspectors), sent from `dir`.
    pub fn on_datagram(
        &mut self,
        dir: crate::conntrack::Direction,
        payload: &[u8],
    ) -> Option<AlgOutcome> {
        match self {
            AlgState::TftpRequests(requests) => Some(requests.on_datagram(dir, payload)),
            AlgState::TftpTransfer(transfer) => Some(transfer.on_datagram(dir, payload)),
            AlgState::Ftp(_) => None,
        }
    }

    /// Inspects the payload of the packet that opens the flow (`dir` original), before the
    /// flow is kept: a TFTP request, a TFTP transfer's first datagram, or data in the SYN of
    /// an FTP control connection (TCP Fast Open, RFC 7413), which a Fast Open server would
    /// act on before the inspector could read the stream in order: refused, and the client
    /// retries without data.
    pub fn on_opening_payload(
        &mut self,
        dir: crate::conntrack::Direction,
        payload: &[u8],
    ) -> Option<AlgOutcome> {
        match self {
            AlgState::Ftp(ftp) => Some(ftp.syn_data_refusal()),
            AlgState::TftpRequests(_) | AlgState::TftpTransfer(_) => self.on_datagram(dir, payload),
        }
    }

    /// How long the flow may be idle, given its protocol state's timeout `protocol`: a TFTP
    /// transfer decides for itself (its idle timeout, then its dally once done); a TFTP
    /// request flow lives at least as long as the pinholes its requests opened.
    pub fn idle_timeout(&self, protocol: Duration) -> Duration {
        match self {
            AlgState::TftpTransfer(t) => t.idle_timeout(),
            AlgState::TftpRequests(r) => protocol.max(r.options().request_timeout),
            AlgState::Ftp(_) => protocol,
        }
    }
}

/// What an inspector decides about a packet it saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AlgVerdict {
    /// Let it through.
    #[default]
    Pass,
    /// Drop it.
    Drop(Reason),
    /// Drop it and reset the connection.
    Reject(Reason),
}

/// A pinhole an inspector wants opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinholeRequest {
    /// Who may connect to what.
    pub opening: Opening,
    /// How long it stays open unused.
    pub timeout: Duration,
    /// Most pinholes pending per parent flow.
    pub per_parent: usize,
    /// Most pinholes of this inspector pending for the same destination address (the client).
    pub per_peer: Option<usize>,
    /// What the admitted connection is inspected with.
    pub child: Option<ChildInit>,
}

/// An inspector's answer for one packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlgOutcome {
    /// What to do with the packet.
    pub verdict: AlgVerdict,
    /// Pinholes to open (only when the packet passes).
    pub pinholes: Vec<PinholeRequest>,
    /// Pending pinholes of this flow to close.
    pub close: Vec<Opening>,
    /// Close every pending pinhole of this flow.
    pub close_all: bool,
    /// Violations and notices.
    pub events: Vec<Event>,
    /// Overwrites of the packet's payload (refused FTP commands, defanged).
    pub rewrites: Vec<PayloadRewrite>,
}
