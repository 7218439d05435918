//! The TFTP inspector: reads each request to the TFTP port, opens one pinhole for the server's
//! reply from its transfer ID (RFC 1350 section 4), then follows the transfer block by block.
//!
//! - On the request flow (client port to port 69): every request is parsed in full and checked
//!   against the rule's options (read/write allowed, filename patterns); a valid one opens a
//!   pinhole from the server's address (any port, or the TID range) to the client's exact address
//!   and port, carrying what the transfer needs to be followed.
//! - On the transfer flow (the server's TID and the client port, an exact 5-tuple): DATA and ACK
//!   block numbers are followed across rollover and windows (RFC 7440), retransmissions pass, a
//!   block far out of sequence is a violation; the last (short) block and its ACK, or an ERROR,
//!   end the transfer, and the flow is kept only for a short dally.
//!
//! Violations drop the packet (UDP has no reset to send).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

use crate::alg::{Alg, AlgOutcome, AlgVerdict, ChildInit, PinholeRequest};
use crate::conntrack::key::{Direction, FlowTuple};
use crate::conntrack::{Opening, PortMatch};
use crate::decision::Reason;
use crate::event::{BytesSource, Event, Transfer, TransferDirection, TransferResult};
use crate::time::Instant;
use crate::wire::tftp::{self, KnownOptions, Options, RequestKind, TftpError, TftpPacket};
use crate::wire::transport::proto;

/// TFTP inspection options (`[rule.tftp]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TftpOptions {
    /// Allow read requests.
    pub read: bool,
    /// Allow write requests.
    pub write: bool,
    /// Filename patterns allowed (`*` any run of characters, `?` one); empty allows every name.
    pub allow_files: Vec<String>,
    /// Filename patterns refused; checked first.
    pub deny_files: Vec<String>,
    /// The server's transfer-ID ports (tftpd-hpa `--port-range`); `None` for any port.
    pub server_ports: Option<(u16, u16)>,
    /// How long a request's pinhole waits for the server's first reply.
    pub request_timeout: Duration,
    /// How long a transfer may be idle.
    pub transfer_timeout: Duration,
    /// How long a finished transfer's flow stays for retransmissions of its last packets.
    pub dally: Duration,
    /// Requests awaiting a reply per client address.
    pub max_pending_per_client: usize,
    /// Other addresses of the server that may answer a request (its own addresses behind a
    /// virtual address that keepalived moves, or a multi-homed host that answers from its
    /// primary address): the transfer may start from any of them. Empty: only the address the
    /// request went to (RFC 1350 section 4).
    #[serde(default)]
    pub reply_addresses: Vec<std::net::IpAddr>,
}

impl Default for TftpOptions {
    fn default() -> Self {
        TftpOptions {
            read: true,
            write: true,
            allow_files: Vec::new(),
            deny_files: Vec::new(),
            server_ports: None,
            request_timeout: Duration::from_secs(10),
            transfer_timeout: Duration::from_secs(30),
            dally: Duration::from_secs(10),
            max_pending_per_client: 8,
            reply_addresses: Vec::new(),
        }
    }
}

/// `*` matches any run of characters (including none, including `/`), `?` any one character;
/// everything else matches itself.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|c| *c == b'*')
}

/// The violation reason for a malformed packet.
fn reason_for(err: TftpError) -> Reason {
    match err {
        TftpError::Truncated => Reason::TftpTruncated,
        TftpError::BadOpcode(_) => Reason::TftpBadOpcode,
        TftpError::MissingNul => Reason::TftpMissingNul,
        TftpError::EmptyFilename => Reason::TftpEmptyFilename,
        TftpError::BadMode => Reason::TftpBadMode,
        TftpError::BadOption | TftpError::TooManyOptions => Reason::TftpBadOption,
        TftpError::TrailingBytes => Reason::TftpTrailingBytes,
    }
}

fn violation(flow: FlowTuple, reason: Reason, detail: String) -> AlgOutcome {
    AlgOutcome {
        verdict: AlgVerdict::Drop(reason),
        events: vec![Event::Violation {
            alg: Alg::Tftp,
            reason,
            flow: Some(flow),
            detail,
        }],
        ..AlgOutcome::default()
    }
}

fn notice(out: &mut AlgOutcome, flow: FlowTuple, kind: &'static str, detail: String) {
    out.events.push(Event::Notice {
        alg: Alg::Tftp,
        flow: Some(flow),
        kind,
        detail,
    });
}

/// Printable form of a filename or message for event details.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
        .escape_debug()
        .to_string()
}

/// What a transfer needs to know about the request that started it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInit {
    /// Read or write.
    pub kind: RequestKind,
    /// The options the client asked for.
    pub requested: KnownOptions,
    /// Names of the other options it asked for, which the server may acknowledge.
    pub requested_unknown: Vec<Box<[u8]>>,
    /// The rule's options.
    pub options: Arc<TftpOptions>,
    /// What the transfer log says of the request (boxed: every pinhole carries this type).
    #[serde(default)]
    pub request: Box<RequestLog>,
}

/// The request as the transfer log names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// The file name, as sent (lossy UTF-8, at most 255 characters).
    pub filename: String,
    /// The transfer mode.
    pub mode: Option<tftp::Mode>,
    /// The server port the request went to (the session's; 0 when unknown, read as 69).
    pub port: u16,
    /// The server address the request went to (the transfer may come from another of the
    /// server's addresses; `None` when unknown: the transfer's).
    #[serde(default)]
    pub server: Option<std::net::IpAddr>,
}

/// State of a request flow: a client port talking to the TFTP port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TftpRequests {
    options: Arc<TftpOptions>,
    rule: Arc<str>,
    #[serde(with = "crate::conntrack::key::tuple_fields")]
    flow: FlowTuple,
    /// Requests passed to the server and not yet answered from port 69: each may draw one
    /// ERROR from there, and nothing else comes from that port.
    unanswered: u16,
}

impl TftpRequests {
    /// Starts inspecting requests on `flow` (client first), admitted by `rule`.
    pub fn new(options: Arc<TftpOptions>, rule: Arc<str>, flow: FlowTuple) -> Self {
        TftpRequests {
            options,
            rule,
            flow,
            unanswered: 0,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &TftpOptions {
        &self.options
    }

    /// Inspects a datagram on the request flow.
    pub fn on_datagram(&mut self, dir: Direction, payload: &[u8]) -> AlgOutcome {
        let flow = self.flow;
        let packet = match tftp::parse(payload) {
            Ok(packet) => packet,
            Err(err) => {
                let what = match dir {
                    Direction::Original => "request to",
                    Direction::Reply => "reply from",
                };
                return violation(
                    flow,
                    reason_for(err),
                    format!("{what} the TFTP port: {err}"),
                );
            }
        };
        if dir == Direction::Reply {
            // RFC 1350 section 4: the server answers from a new port. Only an ERROR (to a
            // request it could not even start) comes from the TFTP port.
            return match packet {
                TftpPacket::Error { code, message } if self.unanswered > 0 => {
                    self.unanswered -= 1;
                    let mut out = AlgOutcome::default();
                    notice(&mut out, flow, "transfer_error", format!("error {code} ({}): {}", tftp::error_name(code), shown(message)));
                    out
                }
                _ => violation(flow, Reason::TftpUnexpectedOpcode, "a reply from the TFTP port itself: RFC 1350 servers answer from a new transfer ID".to_owned()),
            };
        }
        let TftpPacket::Request {
            kind,
            filename,
            options,
            mode,
        } = packet
        else {
            return violation(
                flow,
                Reason::TftpUnexpectedOpcode,
                "only RRQ and WRQ go to the TFTP port".to_owned(),
            );
        };
        if let Some(outcome) = self.refuse(kind, filename) {
            return outcome;
        }
        let mut out = AlgOutcome::default();
        for (name, value) in &options.unknown {
            notice(
                &mut out,
                flow,
                "unknown_option",
                format!(
                    "{} option {}={} passed to the server",
                    kind.name(),
                    shown(name),
                    shown(value)
                ),
            );
        }
        self.unanswered = self.unanswered.saturating_add(1).min(MAX_UNANSWERED);
        let sport = match self.options.server_ports {
            Some((lo, hi)) => PortMatch::Range(lo, hi),
            None => PortMatch::Any,
        };
        out.pinholes.push(PinholeRequest {
            opening: Opening {
                alg: Alg::Tftp,
                proto: proto::UDP,
                src: flow.dst,
                sport,
                dst: flow.src,
                dport: flow.sport,
            },
            timeout: self.options.request_timeout,
            per_parent: 2,
            per_peer: Some(self.options.max_pending_per_client),
            child: Some(ChildInit::Tftp(TransferInit {
                kind,
                requested: options.known,
                requested_unknown: options
                    .unknown
                    .iter()
                    .map(|(name, _)| Box::from(*name))
                    .collect(),
                options: Arc::clone(&self.options),
                request: Box::new(RequestLog {
                    filename: String::from_utf8_lossy(filename)
                        .chars()
                        .take(255)
                        .collect(),
                    mode: Some(mode),
                    port: flow.dport,
                    server: Some(flow.dst),
                }),
            })),
        });
        out
    }

    /// The policy's answer to a request: `None` to allow it.
    fn refuse(&self, kind: RequestKind, filename: &[u8]) -> Option<AlgOutcome> {
        let (rule, flow, name) = (&self.rule, self.flow, shown(filename));
        match kind {
            RequestKind::Read if !self.options.read => {
                return Some(violation(
                    flow,
                    Reason::TftpReadDenied,
                    format!("RRQ for \"{name}\" refused by rule \"{rule}\" (read = false)"),
                ));
            }
            RequestKind::Write if !self.options.write => {
                return Some(violation(
                    flow,
                    Reason::TftpWriteDenied,
                    format!("WRQ for \"{name}\" refused by rule \"{rule}\" (write = false)"),
                ));
            }
            _ => {}
        }
        if let Some(pattern) = self
            .options
            .deny_files
            .iter()
            .find(|p| glob_match(p.as_bytes(), filename))
        {
            let detail = format!(
                "{} for \"{name}\" refused by rule \"{rule}\" (deny_files \"{pattern}\")",
                kind.name()
            );
            return Some(violation(flow, Reason::TftpFileDenied, detail));
        }
        if !self.options.allow_files.is_empty()
            && !self
                .options
                .allow_files
                .iter()
                .any(|p| glob_match(p.as_bytes(), filename))
        {
            let detail = format!(
                "{} for \"{name}\" refused by rule \"{rule}\" (not in allow_files)",
                kind.name()
            );
            return Some(violation(flow, Reason::TftpFileDenied, detail));
        }
        None
    }
}

/// Where a transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    /// Waiting for the server's first packet.
    Start,
    /// The server acknowledged options (OACK); the client's ACK 0 (read) or DATA 1 (write)
    /// is next.
    Negotiated,
    /// Blocks are moving.
    Running,
    /// The last block was acknowledged: only retransmissions now.
    Done,
    /// An ERROR ended it: nothing more passes (RFC 1350 section 7).
    Failed,
}

/// Blocks a retransmission may lag behind, beyond the window.
const RETRANSMIT_SLACK: u64 = 16;

/// Most requests on one request flow that may each still draw an ERROR from port 69.
const MAX_UNANSWERED: u16 = 16;

/// State of a transfer flow: the server's transfer ID and the client's port. The server sent
/// its first packet, so the flow's original direction is from the server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TftpTransfer {
    init: TransferInit,
    #[serde(with = "crate::conntrack::key::tuple_fields")]
    flow: FlowTuple,
    phase: Phase,
    blksize: u64,
    windowsize: u64,
    /// Highest DATA block seen, counted past rollover.
    highest_data: u64,
    /// Highest block acknowledged, counted past rollover.
    highest_ack: u64,
    /// The short block that ends the transfer.
    final_block: Option<u64>,
    /// The options the server's OACK acknowledged.
    acknowledged: Option<KnownOptions>,
    /// Bytes in the final (short) block.
    #[serde(default)]
    final_len: u64,
    /// The transfer record was emitted.
    #[serde(default)]
    logged: bool,
}

/// tftpd-hpa's `blksize2` option: a power of two from 8 to 32768, the block size.
fn blksize2(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let n: u64 = text.parse().ok()?;
    (n.is_power_of_two() && (8..=32_768).contains(&n)).then_some(n)
}

/// The 64-bit block count nearest `reference` whose low 16 bits are `block`.
fn expand(block: u16, reference: u64) -> u64 {
    let candidate = (reference & !0xffff) | u64::from(block);
    [
        candidate.wrapping_sub(0x1_0000),
        candidate,
        candidate + 0x1_0000,
    ]
    .into_iter()
    .filter(|c| *c <= u64::MAX / 2)
    .min_by_key(|c| c.abs_diff(reference))
    .unwrap_or(candidate)
}

impl TftpTransfer {
    /// A transfer starting; `flow` goes from the server's TID to the client's port.
    pub fn new(init: TransferInit, flow: FlowTuple) -> Self {
        TftpTransfer {
            init,
            flow,
            phase: Phase::Start,
            blksize: 512,
            windowsize: 1,
            highest_data: 0,
            highest_ack: 0,
            final_block: None,
            acknowledged: None,
            final_len: 0,
            logged: false,
        }
    }

    /// The transfer record, once: `result` with `detail`. Its times are the engine's to fill
    /// in (the transfer flow's start, the packet's time).
    fn record(&mut self, result: TransferResult, detail: String) -> Option<Event> {
        if self.logged {
            return None;
        }
        self.logged = true;
        let bytes = if result == TransferResult::Complete {
            self.final_block
                .map_or(0, |f| (f.saturating_sub(1)) * self.blksize + self.final_len)
        } else {
            self.highest_ack * self.blksize
        };
        let (up, down, direction) = match self.init.kind {
            RequestKind::Read => (0, bytes, TransferDirection::Download),
            RequestKind::Write => (bytes, 0, TransferDirection::Upload),
        };
        let mut options = Vec::new();
        if let Some(a) = self.acknowledged {
            let known = [
                ("blksize", a.blksize.map(u64::from)),
                ("timeout", a.timeout.map(u64::from)),
                ("tsize", a.tsize),
                ("windowsize", a.windowsize.map(u64::from)),
            ];
            for (name, value) in known {
                if let Some(value) = value {
                    options.push(format!("{name}={value}"));
                }
            }
            if a.blksize.is_none() && self.blksize != 512 {
                options.push(format!("blksize2={}", self.blksize));
            }
        }
        let session = FlowTuple {
            proto: proto::UDP,
            src: self.flow.dst,
            sport: self.flow.dport,
            dst: self.init.request.server.unwrap_or(self.flow.src),
            dport: if self.init.request.port == 0 {
                69
            } else {
                self.init.request.port
            },
        };
        Some(Event::Transfer(Box::new(Transfer {
            alg: Alg::Tftp,
            session,
            user: None,
            command: self.init.kind.name(),
            path: Some(self.init.request.filename.clone()),
            path_guessed: false,
            direction,
            opened: None,
            closed: None,
            mode: self.init.request.mode.map(tftp::Mode::name),
            options,
            blocks: Some(self.highest_ack),
            data: Some(self.flow),
            data_handle: None,
            data_headers: None,
            data_offloaded: false,
            data_nat: None,
            bytes_up: Some(up),
            bytes_down: Some(down),
            bytes_source: BytesSource::Pinhole,
            started: Instant::default(),
            ended: Instant::default(),
            result,
            detail,
        })))
    }

    /// The record of a transfer that neither completed nor failed before its flow ended (it
    /// timed out), with `created` and `last_seen` as its times.
    pub fn unfinished(&self, created: Instant, last_seen: Instant) -> Option<Event> {
        if self.is_finished() {
            return None;
        }
        let mut copy = self.clone();
        let mut event = copy.record(
            TransferResult::Unfinished,
            "the transfer stopped before its last block was acknowledged".to_owned(),
        )?;
        if let Event::Transfer(t) = &mut event {
            t.started = created;
            t.ended = last_seen;
        }
        Some(event)
    }

    /// How long the flow may be idle: the rule's transfer timeout, then its dally once the
    /// transfer is done; never less than twice the retransmission timeout the OACK agreed
    /// (RFC 2349), so one lost packet and its retransmission still find the flow.
    pub fn idle_timeout(&self) -> Duration {
        let options = &self.init.options;
        let base = if matches!(self.phase, Phase::Done | Phase::Failed) {
            options.dally
        } else {
            options.transfer_timeout
        };
        let retransmit = self
            .acknowledged
            .and_then(|a| a.timeout)
            .map_or(Duration::ZERO, |t| Duration::from_secs(2 * u64::from(t)));
        base.max(retransmit)
    }

    /// True once the last block was acknowledged or an ERROR ended the transfer: the flow
    /// only dallies for retransmissions.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// The side that sends DATA.
    fn data_side(&self) -> Direction {
        match self.init.kind {
            RequestKind::Read => Direction::Original,
            RequestKind::Write => Direction::Reply,
        }
    }

    /// Inspects a datagram of the transfer, sent from `dir` (original = the server).
    pub fn on_datagram(&mut self, dir: Direction, payload: &[u8]) -> AlgOutcome {
        let flow = self.flow;
        let packet = match tftp::parse(payload) {
            Ok(packet) => packet,
            Err(err) => {
                return violation(
                    flow,
                    reason_for(err),
                    format!("malformed packet in the transfer: {err}"),
                );
            }
        };
        let from = if dir == Direction::Original {
            "server"
        } else {
            "client"
        };
        let mut out = AlgOutcome::default();
        // An ERROR ends the transfer; it is neither acknowledged nor retransmitted (RFC 1350
        // section 7), so nothing after it has a purpose.
        if self.phase == Phase::Failed {
            out.verdict = AlgVerdict::Drop(Reason::TftpTransferEnded);
            return out;
        }
        match packet {
            TftpPacket::Error { code, message } => {
                self.phase = Phase::Failed;
                let detail = format!(
                    "{from} sent error {code} ({}): {}",
                    tftp::error_name(code),
                    shown(message)
                );
                notice(&mut out, flow, "transfer_error", detail.clone());
                out.events
                    .extend(self.record(TransferResult::Failed, detail));
            }
            TftpPacket::Request { kind, .. } => {
                return violation(
                    flow,
                    Reason::TftpUnexpectedOpcode,
                    format!("{} from the {from} inside a transfer", kind.name()),
                );
            }
            TftpPacket::Oack { options } => return self.oack(dir, &options),
            TftpPacket::Data { block, data } => return self.data(dir, block, data.len()),
            TftpPacket::Ack { block } => return self.ack(dir, block),
        }
        out
    }

    fn oack(&mut self, dir: Direction, oack: &Options<'_>) -> AlgOutcome {
        let flow = self.flow;
        let accepted = &oack.known;
        // The server resends its OACK when the answer to it (ACK 0 or DATA 1) is lost.
        if dir == Direction::Original
            && self.acknowledged.as_ref() == Some(accepted)
            && self.highest_ack == 0
        {
            return AlgOutcome::default();
        }
        if dir != Direction::Original
            || self.phase != Phase::Start
            || (self.init.requested.is_empty() && self.init.requested_unknown.is_empty())
        {
            return violation(
                flow,
                Reason::TftpUnexpectedOpcode,
                "OACK that answers no request with options".to_owned(),
            );
        }
        let requested = self.init.requested;
        // RFC 2347 section 3: only options the client asked for, and (RFC 2348, 7440) no larger
        // block or window than it asked for.
        let known_ok = (accepted.blksize.is_none()
            || requested
                .blksize
                .is_some_and(|r| accepted.blksize <= Some(r)))
            && (accepted.windowsize.is_none()
                || requested
                    .windowsize
                    .is_some_and(|r| accepted.windowsize <= Some(r)))
            && (accepted.timeout.is_none() || requested.timeout.is_some())
            && (accepted.tsize.is_none() || requested.tsize.is_some());
        let unasked = oack.unknown.iter().find(|(name, _)| {
            !self
                .init
                .requested_unknown
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
        });
        let mut blksize = u64::from(accepted.blksize.unwrap_or(512));
        let mut bad_value = None;
        for (name, value) in &oack.unknown {
            if name.eq_ignore_ascii_case(b"blksize2") {
                match blksize2(value) {
                    Some(size) => blksize = size,
                    None => bad_value = Some(("blksize2", *value)),
                }
            }
        }
        if !known_ok || unasked.is_some() || bad_value.is_some() {
            let detail = match (unasked, bad_value) {
                (Some((name, _)), _) => format!(
                    "OACK acknowledges {} the request did not ask for",
                    shown(name)
                ),
                (None, Some((name, value))) => format!(
                    "OACK {name}={} is not a power of two from 8 to 32768",
                    shown(value)
                ),
                (None, None) => {
                    format!("OACK {accepted:?} does not answer the request's {requested:?}")
                }
            };
            return violation(flow, Reason::TftpBadOption, detail);
        }
        self.acknowledged = Some(*accepted);
        self.blksize = blksize;
        self.windowsize = u64::from(accepted.windowsize.unwrap_or(1));
        self.phase = Phase::Negotiated;
        AlgOutcome::default()
    }

    fn data(&mut self, dir: Direction, block: u16, len: usize) -> AlgOutcome {
        let flow = self.flow;
        if dir != self.data_side() {
            return violation(
                flow,
                Reason::TftpUnexpectedOpcode,
                format!("DATA {block} from the side that receives the file"),
            );
        }
        // A write starts with the server's ACK 0 (or OACK); DATA before it has no place. A
        // read whose options the server acknowledged starts with the client's ACK 0
        // (RFC 2347 section 3).
        match (self.init.kind, self.phase) {
            (RequestKind::Write, Phase::Start) => {
                return violation(
                    flow,
                    Reason::TftpUnexpectedOpcode,
                    format!("DATA {block} before the server accepted the write"),
                );
            }
            (RequestKind::Read, Phase::Negotiated) => {
                return violation(
                    flow,
                    Reason::TftpUnexpectedOpcode,
                    format!("DATA {block} before the client acknowledged the OACK"),
                );
            }
            _ => {}
        }
        if len as u64 > self.blksize {
            return violation(
                flow,
                Reason::TftpOversizedBlock,
                format!(
                    "DATA {block} carries {len} bytes, the block size is {}",
                    self.blksize
                ),
            );
        }
        let x = expand(block, self.highest_ack + 1);
        // Some servers (tftpd-hpa with its rollover=1 option, older ones by habit) roll over to
        // 1 instead of 0: one more block of slack when the window crosses the wrap.
        let wrap = u64::from((self.highest_ack + self.windowsize) >> 16 != self.highest_ack >> 16);
        let ahead_limit = self.highest_ack + self.windowsize + wrap;
        let behind_limit = self
            .highest_ack
            .saturating_sub(self.windowsize + RETRANSMIT_SLACK);
        if x == 0 || x > ahead_limit || x < behind_limit || self.final_block.is_some_and(|f| x > f)
        {
            return violation(
                flow,
                Reason::TftpBlockOutOfSequence,
                format!(
                    "DATA {block} (block {x}) when {} blocks are acknowledged and the window is {}",
                    self.highest_ack, self.windowsize
                ),
            );
        }
        if (len as u64) < self.blksize {
            if self.final_block.is_some_and(|f| f != x) {
                return violation(
                    flow,
                    Reason::TftpBlockOutOfSequence,
                    format!("a second short block {x}"),
                );
            }
            self.final_block = Some(x);
            self.final_len = len as u64;
        }
        self.highest_data = self.highest_data.max(x);
        if self.phase != Phase::Done {
            self.phase = Phase::Running;
        }
        AlgOutcome::default()
    }

    fn ack(&mut self, dir: Direction, block: u16) -> AlgOutcome {
        let flow = self.flow;
        if dir == self.data_side() {
            return violation(
                flow,
                Reason::TftpUnexpectedOpcode,
                format!("ACK {block} from the side that sends the file"),
            );
        }
        let first = self.phase == Phase::Start || self.phase == Phase::Negotiated;
        let y = expand(block, self.highest_data.max(self.highest_ack));
        // ACK 0 opens a write (from the server) or a negotiated read (from the client).
        let opening = first
            && y == 0
            && (self.init.kind == RequestKind::Write || self.phase == Phase::Negotiated);
        if first && !opening {
            return violation(
                flow,
                Reason::TftpUnexpectedOpcode,
                format!("ACK {block} before any DATA"),
            );
        }
        if y > self.highest_data || y + self.windowsize + RETRANSMIT_SLACK < self.highest_ack {
            return violation(
                flow,
                Reason::TftpBlockOutOfSequence,
                format!(
                    "ACK {block} (block {y}) when {} blocks were sent",
                    self.highest_data
                ),
            );
        }
        self.highest_ack = self.highest_ack.max(y);
        let mut out = AlgOutcome::default();
        if self.final_block.is_some_and(|f| self.highest_ack >= f) {
            self.phase = Phase::Done;
            out.events
                .extend(self.record(TransferResult::Complete, String::new()));
        } else if self.phase != Phase::Done {
            self.phase = Phase::Running;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"anything/at/all"));
        assert!(glob_match(b"configs/*.cfg", b"configs/router1.cfg"));
        assert!(!glob_match(b"configs/*.cfg", b"configs/router1.bin"));
        assert!(glob_match(b"c2600-?k9*.bin", b"c2600-ik9o3s3-mz.bin"));
        assert!(glob_match(b"*..*", b"../etc/passwd"));
        assert!(!glob_match(b"*..*", b"image.bin"));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"x"));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
    }

    #[test]
    fn block_numbers_expand_across_rollover() {
        assert_eq!(expand(1, 1), 1);
        assert_eq!(expand(0, 65_536), 65_536);
        assert_eq!(expand(65_535, 65_536), 65_535);
        assert_eq!(expand(3, 65_537), 65_539);
        assert_eq!(expand(65_535, 0), 65_535, "no negative counts");
    }
}
