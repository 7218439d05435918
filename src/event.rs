//! Events: what happened because of a packet or a timer, beyond its verdict.
//!
//! Events are plain data. Adapters add context (file, packet index, timestamp) and serialize
//! them; the JSON forms are the public contract described in the README.

use std::sync::Arc;

use crate::alg::{Alg, ChildInit};
use crate::conntrack::{FlowTuple, Opening, Pinhole, PinholeId, Translation};
use crate::decision::Reason;
use crate::time::Instant;
use crate::wire::tftp::RequestKind;

/// Something that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new flow is tracked.
    FlowOpened {
        /// The flow.
        flow: FlowTuple,
        /// The rule that allowed it (`None` when a pinhole admitted it).
        rule: Option<Arc<str>>,
        /// The inspector following it.
        alg: Option<Alg>,
        /// A pinhole of this inspector admitted it.
        via_pinhole: bool,
        /// Picked up mid-stream.
        pickup: bool,
        /// Taken over from the kernel's entry of a connection a pinhole admitted (a failover
        /// pair's standby; see [`crate::PacketInfo::synced`]).
        takeover: bool,
    },
    /// A flow is no longer tracked.
    FlowClosed {
        /// The flow.
        flow: FlowTuple,
        /// Why.
        cause: CloseCause,
        /// Packets seen, both directions.
        packets: u64,
        /// IP bytes seen, both directions.
        bytes: u64,
    },
    /// A pinhole opened, was used, expired or closed.
    Pinhole {
        /// Which of those.
        action: PinholeAction,
        /// The pinhole.
        pinhole: PinholeInfo,
        /// For [`PinholeAction::Use`], the flow it admitted.
        child: Option<FlowTuple>,
    },
    /// A protocol action an inspector refused (FTP bounce, a malformed TFTP request, ...).
    Violation {
        /// The inspector.
        alg: Alg,
        /// What was wrong.
        reason: Reason,
        /// The flow it happened on.
        flow: Option<FlowTuple>,
        /// Specifics for people (the offending command, address, ...).
        detail: String,
    },
    /// The kernel translates an inspected flow (an FTP control connection, a TFTP request):
    /// learned from the kernel's connection tracking, once per flow.
    Translated {
        /// The flow, in the hosts' own addresses (pinhole's view).
        flow: FlowTuple,
        /// The addresses the ends use for each other.
        nat: Translation,
    },
    /// Something an inspector did that is not a refusal but should be known (a session went
    /// encrypted and uninspected, an address was replaced).
    Notice {
        /// The inspector.
        alg: Alg,
        /// The flow.
        flow: Option<FlowTuple>,
        /// A stable lower-case name: `tls_uninspected`, `passive_address_replaced`.
        kind: &'static str,
        /// Specifics for people.
        detail: String,
    },
}

/// Why a flow stopped being tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCause {
    /// It was idle until its state's timeout.
    Timeout,
    /// It ended with FINs, and the time-wait period passed.
    Fin,
    /// It ended with a RST.
    Reset,
    /// The table was full and it was evicted for a new flow.
    Evicted,
    /// A new connection reused its tuple.
    Reused,
    /// Its control connection ended and children do not outlive their parent.
    ParentClosed,
    /// A program deleted the kernel's entry of the offloaded connection (`conntrack -D`, a
    /// flush), so its end was never seen.
    Deleted,
}

impl CloseCause {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseCause::Timeout => "timeout",
            CloseCause::Fin => "fin",
            CloseCause::Reset => "reset",
            CloseCause::Evicted => "evicted",
            CloseCause::Reused => "reused",
            CloseCause::ParentClosed => "parent_closed",
            CloseCause::Deleted => "deleted",
        }
    }
}

/// What happened to a pinhole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinholeAction {
    /// Opened after a positive reply.
    Open,
    /// Consumed by the connection it expected.
    Use,
    /// Timed out unused.
    Expire,
    /// Closed unused: its control connection ended, or newer pinholes displaced it.
    Close,
}

impl PinholeAction {
    /// Stable lower-case name (the JSON `event` field).
    pub const fn as_str(self) -> &'static str {
        match self {
            PinholeAction::Open => "open",
            PinholeAction::Use => "use",
            PinholeAction::Expire => "expire",
            PinholeAction::Close => "close",
        }
    }
}

/// A pinhole as events describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinholeInfo {
    /// Its id.
    pub id: PinholeId,
    /// Who may connect to what.
    pub opening: Opening,
    /// The control flow that negotiated it.
    pub parent: Option<FlowTuple>,
    /// When it expires.
    pub expires: Instant,
    /// For a TFTP transfer's pinhole: whether the request was a read or a write.
    pub tftp_request: Option<RequestKind>,
    /// How the kernel translates the control flow (or TFTP request) that negotiated it.
    pub parent_nat: Option<Translation>,
}

impl PinholeInfo {
    /// Describes `pinhole`, negotiated by a flow the kernel translates as `parent_nat`.
    pub fn new(pinhole: &Pinhole, parent_nat: Option<Translation>) -> Self {
        PinholeInfo {
            id: pinhole.id,
            opening: pinhole.spec.opening,
            parent: pinhole.spec.parent.map(|p| p.flow),
            expires: pinhole.spec.expires,
            tftp_request: pinhole
                .spec
                .child
                .as_ref()
                .map(|ChildInit::Tftp(init)| init.kind),
            parent_nat,
        }
    }
}
