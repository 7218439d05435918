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
    /// A file transfer finished, failed or was given up (the transfer log): an FTP
    /// RETR/STOR/APPE/STOU/LIST/NLST/MLSD answered by its final reply, or a TFTP transfer that
    /// completed, ended in an ERROR or timed out.
    Transfer(Box<Transfer>),
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
    /// Not a negotiated pinhole: an FTPS session's passive range admitted a connection
    /// (`ftps = "allow-passive-range"`; [`PinholeInfo::range`] gives the range).
    Admit,
}

impl PinholeAction {
    /// Stable lower-case name (the JSON `event` field).
    pub const fn as_str(self) -> &'static str {
        match self {
            PinholeAction::Open => "open",
            PinholeAction::Use => "use",
            PinholeAction::Expire => "expire",
            PinholeAction::Close => "close",
            PinholeAction::Admit => "admit",
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
    /// For [`PinholeAction::Admit`]: the FTPS session's passive range (low, high) that
    /// admitted the connection.
    pub range: Option<(u16, u16)>,
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
            range: None,
        }
    }
}

/// One transfer, as the transfer log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The inspector.
    pub alg: Alg,
    /// The session: the FTP control connection, or the TFTP request's flow (client first).
    pub session: FlowTuple,
    /// FTP: the user name the client gave (USER), never the password.
    pub user: Option<String>,
    /// FTP: the command (`RETR`, `STOR`, `APPE`, `STOU`, `LIST`, `NLST`, `MLSD`); TFTP:
    /// `RRQ` or `WRQ`.
    pub command: &'static str,
    /// FTP: the path as the server sees it, followed through CWD/CDUP (see
    /// [`Transfer::path_guessed`]); none for a listing of the working directory. TFTP: the
    /// file name of the request.
    pub path: Option<String>,
    /// FTP: the working directory was never confirmed (by a 257 reply to PWD or an absolute
    /// CWD), so `path` takes the login directory as `/`.
    pub path_guessed: bool,
    /// Which way the file went.
    pub direction: TransferDirection,
    /// FTP: the preliminary reply that opened the data transfer (150 or 125).
    pub opened: Option<u16>,
    /// FTP: the final reply (226/250 when it worked, else the error).
    pub closed: Option<u16>,
    /// TFTP: the transfer mode (`octet`, `netascii`, `mail`).
    pub mode: Option<&'static str>,
    /// TFTP: the options the server acknowledged (OACK), `name=value`.
    pub options: Vec<String>,
    /// TFTP: blocks acknowledged.
    pub blocks: Option<u64>,
    /// The data connection (FTP) or the transfer flow (TFTP), as pinhole saw it.
    pub data: Option<FlowTuple>,
    /// The data flow in the engine's table, for the engine to count its bytes.
    pub data_handle: Option<crate::conntrack::FlowHandle>,
    /// The shape of the FTP data connection's SYN headers, to turn the kernel's IP byte
    /// counts into file bytes.
    pub data_headers: Option<crate::wire::transport::SynHeaders>,
    /// The kernel carries the data connection (offload mode): pinhole did not count its
    /// bytes, an inline adapter reads them from the kernel's conntrack accounting.
    pub data_offloaded: bool,
    /// How the kernel translates the data connection (inline on a NAT router): the addresses
    /// its ends use for each other, from its conntrack entry, which the adapter reads.
    pub data_nat: Option<Translation>,
    /// File bytes the client sent (upload direction), if known.
    pub bytes_up: Option<u64>,
    /// File bytes the client received (download direction), if known.
    pub bytes_down: Option<u64>,
    /// Where the byte counts come from.
    pub bytes_source: BytesSource,
    /// When the transfer started (the command, the request).
    pub started: Instant,
    /// When it ended.
    pub ended: Instant,
    /// How it ended.
    pub result: TransferResult,
    /// Specifics: the final reply's text, the TFTP ERROR's code name and message.
    pub detail: String,
}

/// Which way a transfer moved data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferDirection {
    /// From the server to the client (RETR, RRQ).
    Download,
    /// From the client to the server (STOR, APPE, STOU, WRQ).
    Upload,
    /// A directory listing (LIST, NLST, MLSD).
    Listing,
    /// Not known: an FTPS data connection (its command was encrypted) whose bytes were not
    /// counted.
    Unknown,
}

impl TransferDirection {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransferDirection::Download => "download",
            TransferDirection::Upload => "upload",
            TransferDirection::Listing => "listing",
            TransferDirection::Unknown => "unknown",
        }
    }
}

/// How a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferResult {
    /// It completed: a 2xx final reply, or the last TFTP block acknowledged.
    Complete,
    /// The server refused or failed it (an FTP 4xx/5xx other than 426, a TFTP ERROR).
    Failed,
    /// It was aborted while moving data (FTP 426, after ABOR or a broken data connection).
    Aborted,
    /// It never finished: the session or transfer flow ended or timed out first.
    Unfinished,
}

impl TransferResult {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransferResult::Complete => "complete",
            TransferResult::Failed => "failed",
            TransferResult::Aborted => "aborted",
            TransferResult::Unfinished => "unfinished",
        }
    }
}

/// Where a transfer's byte counts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BytesSource {
    /// pinhole followed the data itself: TCP sequence numbers of the data connection (file
    /// bytes, retransmissions counted once), TFTP block numbers and sizes.
    Pinhole,
    /// The kernel carried the data connection (offload mode): the conntrack accounting of
    /// its entry, read by the adapter.
    Kernel,
    /// Unknown: no data connection was seen, or the kernel had no accounting for it.
    None,
}

impl BytesSource {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BytesSource::Pinhole => "pinhole",
            BytesSource::Kernel => "kernel",
            BytesSource::None => "none",
        }
    }
}
