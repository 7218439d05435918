//! The FTP inspector: follows a control connection and opens exactly the data connections it
//! negotiates.
//!
//! Per direction the bytes are reassembled in sequence order ([`HalfStream`]), Telnet is
//! removed and lines are cut ([`LineAssembler`]). Client lines are commands, server lines are
//! replies; a queue of pending commands pairs each final reply with the command it answers
//! (RFC 959 section 4.2: 1yz replies are preliminary, the rest complete a command). Data
//! addresses are checked when the command or reply is seen, and the pinhole opens only on the
//! positive reply: 200 to PORT/EPRT/LPRT (active: the server may connect to the client),
//! 227/228/229 to PASV/LPSV/EPSV (passive: the client may connect to the server).
//!
//! A violation stops the segment that carries it: `on_violation = "reject"` drops it and resets
//! the connection, `"drop"` drops it and every later data segment in that direction.

mod lines;
pub mod policy;
mod session;
pub mod tls;

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use lines::{LineAssembler, LineStart};
pub use policy::Verb;
use session::{Session, TransferStart};
pub use tls::TlsFollower;
use tls::{Framing, Sender};

use crate::alg::stream::{HalfStream, StreamError, StreamLimits};
use crate::alg::{Alg, AlgOutcome, AlgVerdict, PinholeRequest};
use crate::conntrack::key::{Direction, FlowTuple};
use crate::conntrack::{Opening, PortMatch};
use crate::decision::Reason;
use crate::event::Event;
use crate::wire::TcpSegment;
use crate::wire::ftp::{self, Command};
use crate::wire::transport::proto;

/// What to do with a passive reply (227/228) naming an address other than the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassiveAddress {
    /// A violation (`ftp_passive_address_mismatch`): the strict setting.
    Refuse,
    /// Open the pinhole for the control connection's server address instead, and say so in a
    /// `passive_address_replaced` notice: the default. Servers announce an address other than
    /// the one the firewall sees whenever a translation sits between them (a cloud 1:1 NAT, a
    /// `pasv_address` behind another router's DNAT); the pinhole admits only the client to the
    /// server it already talks to, on the announced port, so it admits nothing more than a
    /// matching reply would. Clients such as curl connect to the control address anyway.
    Control,
}

/// What to do when a client starts TLS on the control connection (RFC 2228 AUTH).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ftps {
    /// Refuse AUTH: a violation (with `reject`, the client sees its connection reset).
    Deny,
    /// Let the session go on encrypted: its TLS framing is followed ([`tls`]), and if the
    /// client clears the control channel (CCC, RFC 4217 section 12.3) inspection resumes.
    /// No data connection opens while the negotiation is encrypted.
    AllowUninspected,
    /// As `AllowUninspected`, and while the session is encrypted it admits TCP connections
    /// from its client to its server's ports in [`FtpOptions::ftps_passive_ports`], at most
    /// [`FtpOptions::ftps_max_connections`] at a time: the server's passive range, bound to
    /// one session.
    AllowPassiveRange,
}

/// When the pinhole for an active-mode data connection opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpenActiveOn {
    /// On the server's positive reply to PORT/EPRT/LPRT (the server agreed).
    Reply,
    /// On the command itself, closed again if the server refuses. Needed for servers that
    /// connect before they reply (pyftpdlib: "200 Active data connection established").
    Command,
}

/// What happens to the segment carrying a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViolationAction {
    /// Drop it and reset the connection (the sender gets a TCP RST; nothing more passes).
    Reject,
    /// Drop it, and every later data segment in that direction.
    Drop,
}

/// FTP inspection options (`[rule.ftp]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FtpOptions {
    /// How long a pinhole waits for its data connection.
    pub data_timeout: Duration,
    /// Pending pinholes per control connection; opening one more closes the oldest.
    pub max_pending: usize,
    /// Longest control line, CRLF excluded.
    pub max_line: usize,
    /// Lowest data port allowed in PORT/EPRT/LPRT and passive replies.
    pub min_data_port: u16,
    /// Allow active mode (PORT/EPRT/LPRT).
    pub active: bool,
    /// Allow passive mode (PASV/EPSV/LPSV).
    pub passive: bool,
    /// Active data connections must come from the server's port 20 (RFC 959's L-1).
    pub active_from_port_20: bool,
    /// When active-mode pinholes open.
    pub open_active_on: OpenActiveOn,
    /// Passive replies naming another address.
    pub passive_address: PassiveAddress,
    /// AUTH TLS/SSL.
    pub ftps: Ftps,
    /// What a violation does to its segment.
    pub on_violation: ViolationAction,
    /// Data connections stay when their control connection ends.
    pub data_outlives_control: bool,
    /// The server's passive ports an encrypted session may connect to
    /// (`ftps = "allow-passive-range"`), low and high.
    #[serde(default)]
    pub ftps_passive_ports: Option<(u16, u16)>,
    /// Connections one encrypted session may hold open through its range at a time.
    #[serde(default = "default_ftps_max_connections")]
    pub ftps_max_connections: usize,
    /// TLS from the first byte (implicit FTPS, port 990): no AUTH, no cleartext before.
    #[serde(default)]
    pub implicit_tls: bool,
    /// Verbs allowed (upper case); empty allows every verb not denied.
    #[serde(default)]
    pub allow_commands: Vec<String>,
    /// Verbs refused (upper case).
    #[serde(default)]
    pub deny_commands: Vec<String>,
    /// User-name patterns allowed (USER); empty allows every name not denied.
    #[serde(default)]
    pub allow_users: Vec<String>,
    /// User-name patterns refused.
    #[serde(default)]
    pub deny_users: Vec<String>,
    /// Path patterns allowed for RETR, STOR, STOU, APPE, DELE, RNFR and RNTO; empty allows
    /// every path not denied.
    #[serde(default)]
    pub allow_paths: Vec<String>,
    /// Path patterns refused for those commands.
    #[serde(default)]
    pub deny_paths: Vec<String>,
}

impl Default for FtpOptions {
    fn default() -> Self {
        FtpOptions {
            data_timeout: Duration::from_secs(60),
            max_pending: 4,
            max_line: 1024,
            min_data_port: 1024,
            active: true,
            passive: true,
            active_from_port_20: false,
            open_active_on: OpenActiveOn::Reply,
            passive_address: PassiveAddress::Control,
            ftps: Ftps::Deny,
            on_violation: ViolationAction::Reject,
            data_outlives_control: true,
            ftps_passive_ports: None,
            ftps_max_connections: default_ftps_max_connections(),
            implicit_tls: false,
            allow_commands: Vec::new(),
            deny_commands: Vec::new(),
            allow_users: Vec::new(),
            deny_users: Vec::new(),
            allow_paths: Vec::new(),
            deny_paths: Vec::new(),
        }
    }
}

/// Connections an encrypted session may hold through its passive range by default: a client
/// lists and transfers one at a time, so two leave room for a listing beside a transfer.
const fn default_ftps_max_connections() -> usize {
    2
}

/// Commands pipelined without replies that are tracked; more is a violation.
const MAX_PENDING_COMMANDS: usize = 64;
/// Reply text kept for scanning a (multi-line) passive reply.
const MAX_REPLY_TEXT: usize = 4096;

/// A command waiting for its final reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Pending {
    /// PORT/EPRT/LPRT with its checked address, and whether its pinhole is already open.
    Active(SocketAddr, bool),
    Pasv,
    Epsv,
    Lpsv,
    Auth,
    /// `EPSV ALL`: from its positive reply on, only EPSV may set up data connections.
    EpsvAll,
    /// ABOR, QUIT, REIN: their positive reply ends the data connections being negotiated.
    Reset,
    /// A command the rule refused: it reached the server defanged, and its (error) reply
    /// changes nothing.
    Refused,
    /// CWD to this (absolute, resolved) directory, and whether the client named it absolutely.
    Cwd(String, bool),
    /// CDUP.
    Cdup,
    /// PWD: its 257 reply names the working directory.
    Pwd,
    /// A transfer command (RETR, STOR, LIST, ...): its final reply ends a transfer record.
    Transfer(Box<TransferStart>),
    Other,
}

/// A reply being assembled.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Reply {
    /// The code of a multi-line reply in progress.
    multiline: Option<u16>,
    text: Vec<u8>,
}

impl Reply {
    fn append(&mut self, text: &[u8]) {
        if !self.text.is_empty() && self.text.len() < MAX_REPLY_TEXT {
            self.text.push(b'\n');
        }
        let room = MAX_REPLY_TEXT.saturating_sub(self.text.len());
        self.text.extend_from_slice(&text[..text.len().min(room)]);
    }
}

/// State of one FTP control connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FtpControl {
    options: std::sync::Arc<FtpOptions>,
    #[serde(with = "crate::conntrack::key::tuple_fields")]
    flow: FlowTuple,
    /// Client-to-server and server-to-client streams.
    streams: [HalfStream; 2],
    lines: [LineAssembler; 2],
    pending: VecDeque<Pending>,
    reply: Reply,
    /// TLS started (a 234 reply, or `implicit_tls`) and was not cleared by a CCC.
    tls: bool,
    /// While `tls`: the record framing followed per direction (client, server); a direction
    /// is `None` once a CCC cleared it. `None` as a whole with `tls`: the framing cannot be
    /// followed (a state file from before it was, an implicit-TLS connection joined
    /// mid-stream), and the bytes pass unread as they did.
    #[serde(default)]
    framing: Option<Box<[Option<TlsFollower>; 2]>>,
    /// Connections admitted through the session's passive range (`ftps =
    /// "allow-passive-range"`) that are still open.
    #[serde(default)]
    range_children: Vec<crate::conntrack::FlowHandle>,
    /// A direction blocked after a violation with `on_violation = "drop"`.
    blocked: [bool; 2],
    /// Delivered bytes waiting to be cut into lines (reused across segments).
    scratch: Vec<u8>,
    /// Data connections admitted through this connection's pinholes.
    children: Vec<crate::conntrack::FlowHandle>,
    /// Joined mid-stream and no command seen yet: replies may answer commands never seen.
    midstream: bool,
    /// The server accepted `EPSV ALL` (RFC 2428 section 4).
    epsv_all: bool,
    /// The server's address as the client sees it, when the kernel translates the connection
    /// (DNAT): a passive reply naming it names the server itself. Learned again from the next
    /// packet after a restart, so not saved.
    #[serde(skip)]
    server_seen_by_client: Option<IpAddr>,
    /// The rule that admitted the connection, for violation details.
    #[serde(default)]
    rule: std::sync::Arc<str>,
    /// User, working directory, last data connection, refused verbs in flight.
    #[serde(default)]
    session: Session,
}

/// Capacity of the delivered-bytes scratch buffer kept between segments.
const SCRATCH_KEEP: usize = 4 * 1024;

impl FtpControl {
    /// Starts inspecting the control connection `flow` (client first), admitted by `rule`.
    pub fn for_rule(
        options: std::sync::Arc<FtpOptions>,
        rule: std::sync::Arc<str>,
        flow: FlowTuple,
    ) -> Self {
        FtpControl {
            rule,
            ..FtpControl::new(options, flow)
        }
    }

    /// Starts inspecting the control connection `flow` (client first).
    pub fn new(options: std::sync::Arc<FtpOptions>, flow: FlowTuple) -> Self {
        let max_line = options.max_line;
        let implicit = options.implicit_tls;
        FtpControl {
            options,
            flow,
            streams: [HalfStream::default(), HalfStream::default()],
            lines: [LineAssembler::new(max_line), LineAssembler::new(max_line)],
            pending: VecDeque::new(),
            reply: Reply::default(),
            tls: implicit,
            framing: implicit.then(|| Box::new(following())),
            range_children: Vec::new(),
            blocked: [false; 2],
            scratch: Vec::new(),
            children: Vec::new(),
            midstream: false,
            epsv_all: false,
            server_seen_by_client: None,
            rule: std::sync::Arc::from(""),
            session: Session::default(),
        }
    }

    /// Starts inspecting a control connection picked up mid-stream: each direction starts at
    /// its next line, and replies to commands sent before are ignored.
    pub fn midstream(
        options: std::sync::Arc<FtpOptions>,
        rule: std::sync::Arc<str>,
        flow: FlowTuple,
    ) -> Self {
        let max_line = options.max_line;
        FtpControl {
            lines: [
                LineAssembler::resynchronizing(max_line, LineStart::Command),
                LineAssembler::resynchronizing(max_line, LineStart::Reply),
            ],
            midstream: true,
            // Record boundaries cannot be found mid-stream: an implicit-TLS connection joined
            // so passes unread (and keeps its passive range).
            framing: None,
            ..FtpControl::for_rule(options, rule, flow)
        }
    }

    /// Learns the server's address as the client sees it (the router's public address in
    /// front of a DNAT'd server), from the kernel's connection tracking.
    pub fn set_server_seen_by_client(&mut self, addr: IpAddr) {
        self.server_seen_by_client = (addr != self.flow.dst).then_some(addr);
    }

    /// The client's address.
    pub fn client(&self) -> IpAddr {
        self.flow.src
    }

    /// The options in force for this connection.
    pub fn options(&self) -> &FtpOptions {
        &self.options
    }

    /// True while TLS hides the client's commands (from the 234 or the first byte of an
    /// implicit-TLS connection until a CCC).
    pub fn is_encrypted(&self) -> bool {
        self.tls
            && self
                .framing
                .as_ref()
                .is_none_or(|f| f[Direction::Original.index()].is_some())
    }

    /// The server ports this session admits connections to (`ftps = "allow-passive-range"`),
    /// or `None`: from the start of the TLS handshake (both sides sent a record: the hellos)
    /// until the client's side is cleared (a CCC). Never after a violation blocked a direction
    /// (`on_violation = "drop"`).
    pub fn passive_range(&self) -> Option<(u16, u16)> {
        if self.options.ftps != Ftps::AllowPassiveRange
            || !self.is_encrypted()
            || self.blocked.iter().any(|&b| b)
        {
            return None;
        }
        // A connection joined mid-stream after its TLS started has no followers: its
        // handshake is taken as done.
        let handshake_started = self.framing.as_ref().is_none_or(|f| {
            f.iter()
                .all(|side| side.as_ref().is_some_and(|t| t.records() > 0))
        });
        handshake_started.then_some(self.options.ftps_passive_ports)?
    }

    /// Whether the session's passive range admits a connection from its client to its server's
    /// `port` now, while `open` of the connections it admitted are still open (not closing:
    /// the engine knows their TCP state): `Ok`, `Err(None)` when the port is not the range's
    /// (or the range is closed), `Err(Some(reason))` when the session holds its maximum.
    pub fn range_admits(&self, port: u16, open: usize) -> Result<(u16, u16), Option<Reason>> {
        let (lo, hi) = self.passive_range().ok_or(None)?;
        if !(lo..=hi).contains(&port) {
            return Err(None);
        }
        if open >= self.options.ftps_max_connections {
            return Err(Some(Reason::FtpsRangeLimit));
        }
        Ok((lo, hi))
    }

    /// The connections the passive range admitted that are still in the flow table.
    pub fn range_children(&self) -> &[crate::conntrack::FlowHandle] {
        &self.range_children
    }

    /// Remembers a connection the passive range admitted (until it ends).
    pub fn add_range_child(&mut self, child: crate::conntrack::FlowHandle) {
        self.range_children.push(child);
        self.children.push(child);
    }

    /// Remembers a data connection admitted through one of this connection's pinholes (until
    /// it ends: [`FtpControl::forget_child`]). The list holds live flows only, so the flow
    /// table's cap bounds it.
    pub fn add_child(&mut self, child: crate::conntrack::FlowHandle) {
        self.children.push(child);
        self.session.data_admitted(child);
    }

    /// The data connection admitted last opened with a SYN of this shape.
    pub fn data_syn(&mut self, headers: crate::wire::transport::SynHeaders) {
        self.session.data_syn(headers);
    }

    /// Forgets a data connection that ended, keeping what the transfer log needs of it: its
    /// tuple and the file bytes it carried up (client to server) and down.
    pub fn forget_child(
        &mut self,
        child: crate::conntrack::FlowHandle,
        tuple: FlowTuple,
        bytes: Option<(u64, u64)>,
    ) {
        let known = self.children.contains(&child);
        self.children.retain(|&c| c != child);
        if !known {
            // Forgotten already (a range connection logged when it closed).
            return;
        }
        let before = self.range_children.len();
        self.range_children.retain(|&c| c != child);
        if self.range_children.len() < before {
            return;
        }
        self.session.data_ended(child, tuple, bytes);
    }

    /// The transfer record of the data connection `data` the passive range admitted, which
    /// ended (see `Session::range_transfer`): `closed_by_fin` tells a clean end from a reset
    /// or a time-out.
    pub fn range_transfer(
        &self,
        data: FlowTuple,
        bytes: Option<(u64, u64)>,
        span: (crate::time::Instant, crate::time::Instant),
        result: crate::event::TransferResult,
    ) -> Event {
        self.session
            .range_transfer(&self.flow, data, bytes, span, result)
    }

    /// Whether `child` was admitted by the session's passive range.
    pub fn is_range_child(&self, child: crate::conntrack::FlowHandle) -> bool {
        self.range_children.contains(&child)
    }

    /// The transfer in progress when the connection ends (timed out, reset, closed), as an
    /// unfinished transfer record.
    pub fn unfinished_transfer(&self, now: crate::time::Instant) -> Option<Event> {
        let start = self.pending.iter().find_map(|p| match p {
            Pending::Transfer(start) => Some(start.as_ref().clone()),
            _ => None,
        })?;
        let mut session = self.session.clone();
        Some(session.finish(&self.flow, start, None, now, b"the session ended first"))
    }

    /// Data connections admitted through this connection's pinholes.
    pub fn children(&self) -> &[crate::conntrack::FlowHandle] {
        &self.children
    }

    /// The refusal of data carried by the SYN that opens the connection (see
    /// `AlgState::on_opening_payload`).
    pub fn syn_data_refusal(&self) -> AlgOutcome {
        let mut out = AlgOutcome::default();
        out.events.push(Event::Violation {
            alg: Alg::Ftp,
            reason: Reason::FtpSynData,
            flow: Some(self.flow),
            detail: "data in the SYN (TCP Fast Open): the inspector reads the control stream from the handshake on".to_owned(),
        });
        out.verdict = AlgVerdict::Drop(Reason::FtpSynData);
        out
    }

    /// Bytes this inspector holds: unacknowledged and out-of-order stream bytes, partial
    /// lines, reply text. The engine sums them under `limits.max_stream_bytes`.
    pub fn buffered(&self) -> usize {
        self.streams.iter().map(HalfStream::buffered).sum::<usize>()
            + self.lines.iter().map(|l| l.partial().len()).sum::<usize>()
            + self.reply.text.len()
    }

    /// Rewrites the children's handles after a restore put them at new places in the flow
    /// table; children `map` does not know (not restored) are forgotten.
    pub fn remap_children(
        &mut self,
        map: impl Fn(crate::conntrack::FlowHandle) -> Option<crate::conntrack::FlowHandle>,
    ) {
        self.children = self.children.iter().filter_map(|&h| map(h)).collect();
        self.range_children = self.range_children.iter().filter_map(|&h| map(h)).collect();
    }

    /// Inspects a segment the TCP tracker accepted, sent from `dir` (original = client).
    /// `stream_start` is the sequence number of the first data byte in that direction.
    pub fn on_segment(
        &mut self,
        now: crate::time::Instant,
        dir: Direction,
        seg: &TcpSegment<'_>,
        stream_start: u32,
    ) -> AlgOutcome {
        let mut out = AlgOutcome::default();
        self.session.now = now;
        if seg.flags.ack() {
            let other = &mut self.streams[dir.opposite().index()];
            other.acknowledge(seg.ack);
            if dir == Direction::Reply {
                self.session
                    .defanged_acknowledged(other.acknowledged_offset());
            }
        }
        if seg.payload.is_empty() || (self.tls && self.framing.is_none()) {
            return out;
        }
        let d = dir.index();
        if self.blocked[d] {
            out.verdict = AlgVerdict::Drop(Reason::FtpBlocked);
            return out;
        }
        if !self.streams[d].is_started() {
            self.streams[d] = HalfStream::new(stream_start);
        }
        let mut delivered = std::mem::take(&mut self.scratch);
        delivered.clear();
        let pushed = self.streams[d].push(seg.seq, seg.payload, StreamLimits::default(), |bytes| {
            delivered.extend_from_slice(bytes);
        });
        match pushed {
            Ok(()) => {
                let offset = self.streams[d].delivered() - delivered.len() as u64;
                self.read(dir, &delivered, offset, &mut out);
                if dir == Direction::Original {
                    let start = self.streams[d].offset_of(seg.seq);
                    self.defang(start, seg.payload, &mut out);
                }
            }
            Err(StreamError::Full) => out.verdict = AlgVerdict::Drop(Reason::FtpReassemblyLimit),
            Err(StreamError::Conflict) => {
                let detail = format!(
                    "segment at seq {} rewrites {} bytes already seen",
                    seg.seq,
                    seg.payload.len()
                );
                self.violate(dir, Reason::FtpStreamConflict, detail, &mut out);
            }
        }
        // Reused across segments, but a large one does not pin its size for the connection.
        if delivered.capacity() > SCRATCH_KEEP {
            delivered = Vec::new();
        }
        self.scratch = delivered;
        out
    }

    /// Reads bytes delivered in order from `dir`, which start at stream offset `offset`: TLS
    /// records while the direction is encrypted, lines otherwise.
    fn read(&mut self, dir: Direction, bytes: &[u8], offset: u64, out: &mut AlgOutcome) {
        let d = dir.index();
        let Some(follower) = self.framing.as_mut().and_then(|f| f[d].as_mut()) else {
            let used = self.read_lines(dir, bytes, out);
            // TLS started after a line of these bytes (the 234): the rest are records.
            if self.framed(dir) && used < bytes.len() && out.verdict == AlgVerdict::Pass {
                self.read(dir, &bytes[used..], offset + used as u64, out);
            }
            return;
        };
        match follower.push(bytes) {
            Framing::Records => {}
            Framing::Invalid(detail) => {
                let detail = format!("from the {}: {detail}", sender_name(dir));
                self.violate(dir, Reason::FtpTlsInvalid, detail, out);
            }
            Framing::Cleartext { carried, from } => {
                let start = offset + from as u64 - carried.len() as u64;
                self.cleared(dir, start, out);
                let mut clear = carried;
                clear.extend_from_slice(&bytes[from..]);
                self.read(dir, &clear, start, out);
            }
        }
    }

    /// True when `dir` carries TLS records whose framing is followed.
    fn framed(&self, dir: Direction) -> bool {
        self.framing
            .as_ref()
            .is_some_and(|f| f[dir.index()].is_some())
    }

    /// A direction's TLS stream ended and cleartext FTP follows at stream offset `start`: the
    /// control channel was cleared (CCC, RFC 4217 section 12.3). Whatever was negotiated under
    /// TLS is unknown, so the command queue starts empty; lines are read again from `start`.
    fn cleared(&mut self, dir: Direction, start: u64, out: &mut AlgOutcome) {
        let d = dir.index();
        let Some(framing) = self.framing.as_mut() else {
            return;
        };
        let records = framing[d].as_ref().map_or(0, TlsFollower::records);
        framing[d] = None;
        if dir == Direction::Reply
            && let Some(client) = framing[Direction::Original.index()].as_mut()
        {
            // The server reads the clear now: a "record" from the client would reach it as
            // cleartext that pinhole skipped.
            client.expect_cleartext();
        }
        let both = framing.iter().all(Option::is_none);
        self.lines[d] = LineAssembler::at_offset(self.options.max_line, start);
        if dir == Direction::Original {
            self.pending.clear();
            self.reply = Reply::default();
            self.epsv_all = false;
        }
        if both {
            self.tls = false;
            self.framing = None;
        }
        out.events.push(Event::Notice {
            alg: Alg::Ftp,
            flow: Some(self.flow),
            kind: "tls_cleared",
            detail: format!(
                "the {} ended its TLS stream after {records} record(s) and continues in cleartext (CCC): {}",
                sender_name(dir),
                if dir == Direction::Original {
                    "its commands are inspected again"
                } else {
                    "its replies are inspected again"
                }
            ),
        });
    }

    /// Cuts delivered bytes from `dir` into lines and handles them; returns how many bytes
    /// it took (all of them, unless TLS started after one of the lines).
    fn read_lines(&mut self, dir: Direction, bytes: &[u8], out: &mut AlgOutcome) -> usize {
        let d = dir.index();
        let mut assembler = std::mem::replace(&mut self.lines[d], LineAssembler::new(0));
        let before = assembler.consumed();
        let result = assembler.push_lines(bytes, |line, offset| {
            match dir {
                Direction::Original => self.client_line(line, offset, out),
                Direction::Reply => self.server_line(line, out),
            }
            // Stop at a violation, or when TLS starts (the rest is records).
            out.verdict == AlgVerdict::Pass && !self.framed(dir)
        });
        if let Err(reason) = result {
            let detail = match reason {
                Reason::FtpLineTooLong => {
                    format!("line longer than {} bytes", self.options.max_line)
                }
                Reason::FtpNulInLine => "NUL byte in a line".to_owned(),
                Reason::FtpTelnetLineBreak => {
                    "CR or LF inside a Telnet command (IAC option or subnegotiation)".to_owned()
                }
                _ => "CR not followed by LF".to_owned(),
            };
            self.violate(dir, reason, detail, out);
        }
        let used = usize::try_from(assembler.consumed() - before).unwrap_or(bytes.len());
        self.lines[d] = assembler;
        used
    }

    /// Records a violation found in a segment from `dir` and sets the verdict.
    pub fn violate(
        &mut self,
        dir: Direction,
        reason: Reason,
        detail: String,
        out: &mut AlgOutcome,
    ) {
        out.events.push(Event::Violation {
            alg: Alg::Ftp,
            reason,
            flow: Some(self.flow),
            detail,
        });
        out.verdict = match self.options.on_violation {
            ViolationAction::Reject => AlgVerdict::Reject(reason),
            ViolationAction::Drop => {
                self.blocked[dir.index()] = true;
                AlgVerdict::Drop(reason)
            }
        };
    }

    /// Overwrites, in the client's segment at stream offset `start`, the verbs of refused
    /// commands it carries (the first time, or again in a retransmission). A verb wholly in
    /// segments already forwarded cannot be defanged any more: the connection is refused
    /// instead.
    fn defang(&mut self, start: i128, payload: &[u8], out: &mut AlgOutcome) {
        match self.session.rewrites_for(start, payload) {
            Ok(rewrites) => out.rewrites.extend(rewrites),
            Err(detail) => {
                out.rewrites.clear();
                self.violate(Direction::Original, Reason::FtpCommandDenied, detail, out);
            }
        }
    }

    /// The rule's answer to a command: `true` when it may go on as it is. A refused one is
    /// defanged (see [`policy`]) and its reply expected.
    fn allowed_by_policy(&mut self, line: &[u8], offset: u64, out: &mut AlgOutcome) -> bool {
        // Servers read the verb up to the first space; some skip spaces before it, so the
        // verb after them is the one checked (and the spaces are overwritten with it).
        let command = line.trim_ascii_start();
        if command.is_empty() {
            return true;
        }
        let (raw_verb, arg) = ftp::split_command(command);
        let refusal = match Verb::parse(raw_verb) {
            Some(verb) => {
                let path = verb.takes_file_path().then(|| {
                    self.session
                        .resolve(&String::from_utf8_lossy(arg.trim_ascii()))
                });
                match policy::check(&self.options, &verb, arg, path.as_deref()) {
                    Some(refusal) => refusal,
                    None => return true,
                }
            }
            // Not a verb at all: a server answers it "unknown" anyway, but an allow list
            // admits only what it names.
            None if !self.options.allow_commands.is_empty() => policy::Refusal {
                reason: Reason::FtpCommandDenied,
                setting: "not in allow_commands".to_owned(),
            },
            None => return true,
        };
        let verb = Verb::parse(raw_verb);
        let what = if verb.is_some_and(|v| v.as_str() == "PASS") {
            "PASS".to_owned() // never the password
        } else {
            shown(line)
        };
        let detail = format!(
            "{what:?} refused by rule \"{}\" ({})",
            self.rule, refusal.setting
        );
        // The verb as sent (`XMKD` is 4 bytes, though it counts as `MKD`), with any spaces
        // before it.
        let sent = line.len() - command.len() + raw_verb.len();
        if let Err(detail) = self.session.refuse(offset, sent, &detail) {
            self.violate(Direction::Original, refusal.reason, detail, out);
            return false;
        }
        out.events.push(Event::Violation {
            alg: Alg::Ftp,
            reason: refusal.reason,
            flow: Some(self.flow),
            detail: format!(
                "{what:?} refused by rule \"{}\" ({}): sent to the server as an unknown command",
                self.rule, refusal.setting
            ),
        });
        self.midstream = false;
        self.pending.push_back(Pending::Refused);
        false
    }

    fn client_line(&mut self, line: &[u8], offset: u64, out: &mut AlgOutcome) {
        let client = Direction::Original;
        if ftp::parse_reply_line(line).is_some() {
            return self.violate(
                client,
                Reason::FtpWrongDirection,
                format!("client sent reply text {:?}", shown(line)),
                out,
            );
        }
        if self.pending.len() >= MAX_PENDING_COMMANDS {
            return self.violate(
                client,
                Reason::FtpPipelineLimit,
                format!("{MAX_PENDING_COMMANDS} commands without a reply"),
                out,
            );
        }
        if !self.allowed_by_policy(line, offset, out) {
            return;
        }
        let command = ftp::parse_command(line);
        if self.epsv_all
            && (command.is_active() || matches!(command, Command::Pasv | Command::Lpsv))
        {
            // RFC 2428 section 4: after EPSV ALL only EPSV may set up a data connection.
            return self.violate(
                client,
                Reason::FtpModeNotAllowed,
                format!("{:?} after EPSV ALL", shown(line)),
                out,
            );
        }
        let pending = match command {
            Command::Port(addr) | Command::Eprt(addr) | Command::Lprt(addr) => {
                match self.check_active(line, addr) {
                    Ok(addr) if self.options.open_active_on == OpenActiveOn::Command => {
                        self.open_active(addr, out);
                        Pending::Active(addr, true)
                    }
                    Ok(addr) => Pending::Active(addr, false),
                    Err((reason, detail)) => return self.violate(client, reason, detail, out),
                }
            }
            Command::Pasv | Command::Epsv | Command::Lpsv if !self.options.passive => {
                return self.violate(
                    client,
                    Reason::FtpModeNotAllowed,
                    format!("{:?}: passive mode is not allowed", shown(line)),
                    out,
                );
            }
            Command::Pasv => Pending::Pasv,
            Command::Epsv => Pending::Epsv,
            Command::Lpsv => Pending::Lpsv,
            Command::Auth if self.options.ftps == Ftps::Deny => {
                return self.violate(
                    client,
                    Reason::FtpTlsDenied,
                    format!("{:?}: FTPS is denied by policy", shown(line)),
                    out,
                );
            }
            Command::Auth => Pending::Auth,
            Command::EpsvAll => Pending::EpsvAll,
            Command::Abor | Command::Quit | Command::Rein => Pending::Reset,
            Command::Other => self.session.pending_for(line),
        };
        self.midstream = false;
        self.pending.push_back(pending);
    }

    /// Checks the address of PORT/EPRT/LPRT: readable, the client's own, not a low port.
    fn check_active(
        &self,
        line: &[u8],
        addr: Result<SocketAddr, ftp::AddrError>,
    ) -> Result<SocketAddr, (Reason, String)> {
        if !self.options.active {
            return Err((
                Reason::FtpModeNotAllowed,
                format!("{:?}: active mode is not allowed", shown(line)),
            ));
        }
        let addr =
            addr.map_err(|err| (Reason::FtpBadAddress, format!("{:?}: {err}", shown(line))))?;
        if addr.ip() != self.flow.src {
            return Err((
                Reason::FtpBounce,
                format!(
                    "{:?} names {}, not the client {}",
                    shown(line),
                    addr.ip(),
                    self.flow.src
                ),
            ));
        }
        if addr.port() < self.options.min_data_port {
            return Err((
                Reason::FtpPrivilegedPort,
                format!(
                    "{:?} names port {} (below {})",
                    shown(line),
                    addr.port(),
                    self.options.min_data_port
                ),
            ));
        }
        Ok(addr)
    }

    fn server_line(&mut self, line: &[u8], out: &mut AlgOutcome) {
        let reply = ftp::parse_reply_line(line);
        if let Some(code) = self.reply.multiline {
            match reply {
                Some(r) if r.code == code && !r.continues => {
                    self.reply.append(r.text);
                    self.reply.multiline = None;
                    let text = std::mem::take(&mut self.reply.text);
                    self.final_reply(code, &text, out);
                }
                _ => self.reply.append(line),
            }
            return;
        }
        match reply {
            Some(r) if r.continues => {
                self.reply.multiline = Some(r.code);
                self.reply.text.clear();
                self.reply.append(r.text);
            }
            Some(r) => self.final_reply(r.code, r.text, out),
            None => {
                let command = ftp::parse_command(line);
                if command.is_active() || command.is_passive() {
                    self.violate(
                        Direction::Reply,
                        Reason::FtpWrongDirection,
                        format!("server sent command text {:?}", shown(line)),
                        out,
                    );
                }
            }
        }
    }

    /// A complete reply with its (joined) text.
    fn final_reply(&mut self, code: u16, text: &[u8], out: &mut AlgOutcome) {
        if code < 200 {
            // 1yz: preliminary, the command is still pending (RFC 959 section 4.2); for a
            // transfer, the data connection opens (150) or was open (125).
            if let Some(Pending::Transfer(start)) = self.pending.front_mut() {
                start.opened.get_or_insert(code);
            }
            return;
        }
        let passive_code = matches!(code, 227..=229);
        match self.pending.pop_front() {
            Some(Pending::Active(addr, false)) if (200..300).contains(&code) => {
                self.open_active(addr, out);
            }
            Some(Pending::Active(addr, true)) if !(200..300).contains(&code) => {
                // The server refused the address: close the pinhole the command opened.
                out.close.push(self.active_request(addr).opening);
            }
            Some(Pending::Pasv) if code == 227 => {
                let addr = ftp::parse_227(text);
                self.open_passive(code, text, addr, out);
            }
            Some(Pending::Lpsv) if code == 228 => {
                let addr = ftp::parse_228(text);
                self.open_passive(code, text, addr, out);
            }
            Some(Pending::Epsv) if code == 229 => {
                // RFC 2428 section 3: the data connection goes to the control connection's
                // server address; the reply carries only the port.
                let addr = ftp::parse_229(text).map(|port| SocketAddr::new(self.flow.dst, port));
                self.open_passive(code, text, addr, out);
            }
            Some(Pending::Auth) if code == 234 => {
                // RFC 4217 section 4: TLS negotiation starts right after the 234. Commands
                // pipelined behind the AUTH are the TLS stream's now: none is answered in the
                // clear.
                self.tls = true;
                self.framing = Some(Box::new(following()));
                self.pending.clear();
                let range = match self.options.ftps {
                    Ftps::AllowPassiveRange => self.options.ftps_passive_ports,
                    _ => None,
                };
                let detail = match range {
                    Some((lo, hi)) => format!(
                        "AUTH accepted (234): the control connection is encrypted from here; its TLS framing is followed, commands and user policy cannot apply, and until a CCC or its end the session admits up to {} connection(s) from {} to {} ports {lo}-{hi} (ftps = \"allow-passive-range\")",
                        self.options.ftps_max_connections, self.flow.src, self.flow.dst
                    ),
                    None => "AUTH accepted (234): the control connection is encrypted from here; its TLS framing is followed, commands and user policy cannot apply, and no data connection can be opened until a CCC clears it".to_owned(),
                };
                let kind = if range.is_some() {
                    "tls_started"
                } else {
                    "tls_uninspected"
                };
                out.events.push(Event::Notice {
                    alg: Alg::Ftp,
                    flow: Some(self.flow),
                    kind,
                    detail,
                });
            }
            Some(Pending::EpsvAll) if (200..300).contains(&code) => self.epsv_all = true,
            Some(Pending::Transfer(start)) if !passive_code => {
                let record =
                    self.session
                        .finish(&self.flow, *start, Some(code), self.session.now, text);
                out.events.push(record);
            }
            Some(Pending::Cwd(dir, absolute)) if (200..300).contains(&code) => {
                self.session.changed_directory(dir, absolute);
            }
            Some(Pending::Cdup) if (200..300).contains(&code) => {
                let parent = self.session.resolve("..");
                self.session.changed_directory(parent, false);
            }
            Some(Pending::Pwd) if code == 257 => {
                if let Some(dir) = policy::quoted_directory(text) {
                    self.session.changed_directory(dir, true);
                }
            }
            // After ABOR (RFC 959 4.1.3), QUIT or REIN (4.1.1: "flushing all I/O") no data
            // connection negotiated before may still be made.
            Some(Pending::Reset) if (200..300).contains(&code) => out.close_all = true,
            None if self.midstream => {}
            _ if passive_code => {
                self.violate(
                    Direction::Reply,
                    Reason::FtpUnexpectedReply,
                    format!("{code} reply {:?} answers no passive command", shown(text)),
                    out,
                );
            }
            _ => {}
        }
    }

    fn active_request(&self, addr: SocketAddr) -> PinholeRequest {
        let sport = if self.options.active_from_port_20 {
            PortMatch::Exact(20)
        } else {
            PortMatch::Any
        };
        self.request(self.flow.dst, sport, addr.ip(), addr.port())
    }

    fn open_active(&mut self, addr: SocketAddr, out: &mut AlgOutcome) {
        out.pinholes.push(self.active_request(addr));
    }

    fn open_passive(
        &mut self,
        code: u16,
        text: &[u8],
        addr: Result<SocketAddr, ftp::AddrError>,
        out: &mut AlgOutcome,
    ) {
        let server = Direction::Reply;
        let addr = match addr {
            Ok(addr) => addr,
            Err(err) => {
                return self.violate(
                    server,
                    Reason::FtpBadAddress,
                    format!("{code} reply {:?}: {err}", shown(text)),
                    out,
                );
            }
        };
        let mut ip = addr.ip();
        if Some(ip) == self.server_seen_by_client {
            // A server behind DNAT announcing the router's public address (vsftpd's
            // `pasv_address`): the client connects there and the kernel translates it to the
            // server, so the pinhole is the server's own. The kernel's nf_conntrack_ftp
            // ignores such a reply (it expects the address the reply came from).
            out.events.push(Event::Notice {
                alg: Alg::Ftp,
                flow: Some(self.flow),
                kind: "passive_address_translated",
                detail: format!(
                    "{code} reply names {ip}, the server's public address (translated to {}); pinhole opened for {}",
                    self.flow.dst,
                    crate::conntrack::key::SocketDisplay(self.flow.dst, addr.port())
                ),
            });
            ip = self.flow.dst;
        } else if ip != self.flow.dst {
            let detail = format!("{code} reply names {ip}, not the server {}", self.flow.dst);
            match self.options.passive_address {
                PassiveAddress::Refuse => {
                    return self.violate(server, Reason::FtpPassiveAddressMismatch, detail, out);
                }
                PassiveAddress::Control => {
                    out.events.push(Event::Notice {
                        alg: Alg::Ftp,
                        flow: Some(self.flow),
                        kind: "passive_address_replaced",
                        detail: format!("{detail}; pinhole opened for the server address"),
                    });
                    ip = self.flow.dst;
                }
            }
        }
        if addr.port() < self.options.min_data_port {
            let detail = format!(
                "{code} reply names port {} (below {})",
                addr.port(),
                self.options.min_data_port
            );
            return self.violate(server, Reason::FtpPrivilegedPort, detail, out);
        }
        out.pinholes
            .push(self.request(self.flow.src, PortMatch::Any, ip, addr.port()));
    }

    fn request(&self, src: IpAddr, sport: PortMatch, dst: IpAddr, dport: u16) -> PinholeRequest {
        PinholeRequest {
            opening: Opening {
                alg: Alg::Ftp,
                proto: proto::TCP,
                src,
                sport,
                dst,
                dport,
            },
            timeout: self.options.data_timeout,
            per_parent: self.options.max_pending,
            per_peer: None,
            child: None,
        }
    }
}

/// Followers of both directions from the start of their TLS streams.
fn following() -> [Option<TlsFollower>; 2] {
    [
        Some(TlsFollower::new(Sender::Client)),
        Some(TlsFollower::new(Sender::Server)),
    ]
}

/// Who sends in `dir`, for details.
fn sender_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Original => "client",
        Direction::Reply => "server",
    }
}

/// True when `bytes` starts like a command line: a verb of 3 or 4 letters, then a space or
/// the end of the line.
fn starts_command(bytes: &[u8]) -> bool {
    let verb = bytes.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    (3..=4).contains(&verb) && matches!(bytes.get(verb), Some(b' ' | b'\r' | b'\n'))
}

/// True when `bytes` starts like a reply line: three digits, then a space or a hyphen.
fn starts_reply(bytes: &[u8]) -> bool {
    ftp::parse_reply_line(
        bytes
            .split(|b| *b == b'\r' || *b == b'\n')
            .next()
            .unwrap_or(&[]),
    )
    .is_some()
}

/// A line as text for event details (lossy, at most 80 characters).
fn shown(line: &[u8]) -> String {
    let mut text = String::new();
    for ch in String::from_utf8_lossy(line).chars().take(80) {
        if ch.is_control() {
            let _ = write!(text, "\\x{:02x}", u32::from(ch));
        } else {
            text.push(ch);
        }
    }
    text
}
