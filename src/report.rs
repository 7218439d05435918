//! The readable replay report (`pinhole replay --format text`): one block per FTP or TFTP
//! session saying what was negotiated, which pinholes opened, which were used and by what,
//! what was refused and why, and the drops that fell on the session; then the drops that
//! belong to no session. Built from the engine's decisions and events, so it shows exactly
//! what the JSON records show, grouped for a person reading a regression.
//!
//! ```text
//! FTP tcp 198.51.100.10:33650 -> 192.0.2.10:21  rule ftp-control  #0-#31  closed (fin), 32 packets, 2.1 KiB
//!   passive data  198.51.100.10:* -> 192.0.2.10:40001  opened #9, used #11 by tcp 198.51.100.10:46411 -> 192.0.2.10:40001 (closed (fin), 12 packets, 5.6 KiB)
//!   refused #20  ftp_bounce: FTP PORT/EPRT/LPRT names an address other than the client's (PORT 10,0,0,9,4,1)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;

use crate::alg::Alg;
use crate::conntrack::FlowTuple;
use crate::conntrack::key::proto_name;
use crate::decision::{Decision, Expired, Reason, Released, Verdict};
use crate::event::{CloseCause, Event, PinholeAction, PinholeInfo};
use crate::output::{counted, endpoint};
use crate::wire::LinkType;
use crate::wire::tftp::RequestKind;

/// How a flow's tracking ended, as the report shows it: packets and bytes both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlowEnd {
    /// It left the table at `packet`, for `cause`.
    Closed {
        cause: CloseCause,
        packets: u64,
        bytes: u64,
        packet: u64,
    },
    /// Still tracked when the capture ended.
    OpenAtEnd { packets: u64, bytes: u64 },
}

impl FlowEnd {
    /// `closed (fin), 12 packets, 5.6 KiB` or `open at the end, 12 packets, 5.6 KiB`.
    fn describe(self) -> String {
        match self {
            FlowEnd::Closed {
                cause,
                packets,
                bytes: b,
                ..
            } => format!(
                "closed ({}), {}, {}",
                cause.as_str(),
                counted(packets, "packet", "packets"),
                bytes(b)
            ),
            FlowEnd::OpenAtEnd { packets, bytes: b } => {
                format!(
                    "open at the end, {}, {}",
                    counted(packets, "packet", "packets"),
                    bytes(b)
                )
            }
        }
    }
}

/// One pinhole a session negotiated.
#[derive(Clone, Debug)]
struct PinholeLine {
    what: &'static str,
    endpoints: String,
    opened: u64,
    outcome: Option<(PinholeAction, u64)>,
    child: Option<FlowTuple>,
    child_end: Option<FlowEnd>,
}

/// A line of a session: a pinhole, a refusal, a notice.
#[derive(Clone, Debug)]
enum Line {
    Pinhole(PinholeLine),
    Refused {
        packet: u64,
        reason: Reason,
        detail: String,
    },
    Notice {
        packet: u64,
        kind: &'static str,
        detail: String,
    },
    /// A transfer record, already put in words (`output::transfer_line`).
    Transfer {
        packet: u64,
        text: String,
    },
}

/// An FTP control connection or a TFTP request flow.
#[derive(Clone, Debug)]
struct Session {
    alg: Alg,
    flow: FlowTuple,
    rule: Option<String>,
    first: u64,
    end: Option<FlowEnd>,
    lines: Vec<Line>,
    drops: BTreeMap<Reason, u64>,
    /// The flow was never kept (its first packet was refused).
    refused_at_start: bool,
}

/// Drops outside any session, by reason, with the first packet that had it.
#[derive(Clone, Copy, Debug)]
struct OtherDrops {
    count: u64,
    first: u64,
    tuple: Option<FlowTuple>,
}

/// The report being built while a capture replays.
#[derive(Debug, Default)]
pub struct SessionReport {
    sessions: Vec<Session>,
    /// Control/request flow -> session.
    by_flow: HashMap<FlowTuple, usize>,
    /// Data/transfer flow -> (session, line).
    children: HashMap<FlowTuple, (usize, usize)>,
    /// Pinhole id -> (session, line).
    pinholes: HashMap<u64, (usize, usize)>,
    /// A pinhole's destination (address, port) -> the session that opened it, so that a
    /// refusal on a flow aimed there (a TFTP reply from the wrong port) lands in that session.
    destinations: HashMap<(IpAddr, u16), usize>,
    /// The session a violation of the current packet landed in (its drop belongs there too).
    violated: Option<usize>,
    other: BTreeMap<Reason, OtherDrops>,
}

impl SessionReport {
    /// Takes in what the engine decided about packet `packet` (framed as `link`).
    pub fn decision(&mut self, packet: u64, link: LinkType, frame: &[u8], decision: &Decision) {
        self.released(&decision.released);
        self.violated = None;
        for event in &decision.events {
            self.event(packet, event);
        }
        if matches!(decision.verdict, Verdict::Drop | Verdict::Reject)
            && let Some(reason) = decision.reason
        {
            match (decision.flow, self.violated) {
                (None, Some(s)) => *self.sessions[s].drops.entry(reason).or_default() += 1,
                (Some(flow), _) => self.drop(packet, reason, Some(flow)),
                (None, None) => {
                    // No flow: name the packet, and give it to the session whose pinhole it
                    // aimed at (a connection from the wrong peer), if any.
                    let tuple = FlowTuple::of_frame(link, frame);
                    match tuple.and_then(|t| self.destinations.get(&(t.dst, t.dport))) {
                        Some(&s) => *self.sessions[s].drops.entry(reason).or_default() += 1,
                        None => self.drop(packet, reason, tuple),
                    }
                }
            }
        }
    }

    /// Takes in the flows still tracked at the end (their packets and bytes so far).
    pub fn finish(&mut self, engine: &crate::Engine) {
        for (_, flow) in engine.flows().iter() {
            let so_far = FlowEnd::OpenAtEnd {
                packets: flow.total_packets(),
                bytes: flow.total_bytes(),
            };
            if let Some(end) = self.end_of(flow.tuple) {
                end.get_or_insert(so_far);
            }
        }
    }

    /// Takes in what the timers did at packet `packet`.
    pub fn expired(&mut self, packet: u64, expired: &Expired) {
        self.released(&expired.released);
        for event in &expired.events {
            self.event(packet, event);
        }
    }

    fn released(&mut self, released: &[Released]) {
        for r in released {
            if let Some(reason) = r.reason {
                self.drop(r.handle, reason, r.flow);
            }
        }
    }

    fn drop(&mut self, packet: u64, reason: Reason, flow: Option<FlowTuple>) {
        let session = flow.and_then(|f| {
            self.by_flow
                .get(&f)
                .copied()
                .or_else(|| self.children.get(&f).map(|(s, _)| *s))
        });
        if let Some(s) = session {
            *self.sessions[s].drops.entry(reason).or_default() += 1;
        } else {
            let other = self.other.entry(reason).or_insert(OtherDrops {
                count: 0,
                first: packet,
                tuple: flow,
            });
            other.count += 1;
        }
    }

    fn new_session(
        &mut self,
        alg: Alg,
        flow: FlowTuple,
        rule: Option<String>,
        packet: u64,
    ) -> usize {
        self.sessions.push(Session {
            alg,
            flow,
            rule,
            first: packet,
            end: None,
            lines: Vec::new(),
            drops: BTreeMap::new(),
            refused_at_start: false,
        });
        let index = self.sessions.len() - 1;
        self.by_flow.insert(flow, index);
        index
    }

    /// The session of `flow` (a control flow or one of its children); a violation on a flow
    /// that was never kept gets a session of its own.
    fn session_of(&mut self, alg: Alg, flow: Option<FlowTuple>, packet: u64) -> Option<usize> {
        let flow = flow?;
        if let Some(s) = self.by_flow.get(&flow) {
            return Some(*s);
        }
        if let Some((s, _)) = self.children.get(&flow) {
            return Some(*s);
        }
        if let Some(s) = self.destinations.get(&(flow.dst, flow.dport)) {
            return Some(*s);
        }
        let s = self.new_session(alg, flow, None, packet);
        self.sessions[s].refused_at_start = true;
        Some(s)
    }

    fn event(&mut self, packet: u64, event: &Event) {
        match event {
            Event::FlowOpened {
                flow,
                rule,
                alg: Some(alg),
                via_pinhole: false,
                ..
            } => {
                self.new_session(*alg, *flow, rule.as_deref().map(str::to_owned), packet);
            }
            // Only inline pinhole learns translations (from the kernel), and the report is
            // replay's.
            Event::FlowOpened { .. } | Event::Translated { .. } => {}
            Event::FlowClosed {
                flow,
                cause,
                packets,
                bytes,
            } => {
                if let Some(end) = self.end_of(*flow) {
                    *end = Some(FlowEnd::Closed {
                        cause: *cause,
                        packets: *packets,
                        bytes: *bytes,
                        packet,
                    });
                }
            }
            Event::Pinhole {
                action,
                pinhole,
                child,
            } => self.pinhole(packet, *action, pinhole, *child),
            Event::Violation {
                alg,
                reason,
                flow,
                detail,
            } => {
                if let Some(s) = self.session_of(*alg, *flow, packet) {
                    self.violated = Some(s);
                    self.sessions[s].lines.push(Line::Refused {
                        packet,
                        reason: *reason,
                        detail: detail.clone(),
                    });
                }
            }
            Event::Transfer(transfer) => {
                let record = crate::output::event_record("", packet, event);
                if let Some(s) = self.session_of(transfer.alg, Some(transfer.session), packet) {
                    self.sessions[s].lines.push(Line::Transfer {
                        packet,
                        text: crate::output::transfer_line(&record),
                    });
                }
            }
            Event::Notice {
                alg,
                flow,
                kind,
                detail,
            } => {
                if let Some(s) = self.session_of(*alg, *flow, packet) {
                    self.sessions[s].lines.push(Line::Notice {
                        packet,
                        kind,
                        detail: detail.clone(),
                    });
                }
            }
        }
    }

    /// Where the end of `flow` is kept: its session's, or the pinhole line of the data flow.
    fn end_of(&mut self, flow: FlowTuple) -> Option<&mut Option<FlowEnd>> {
        if let Some(&s) = self.by_flow.get(&flow) {
            return Some(&mut self.sessions[s].end);
        }
        let &(s, l) = self.children.get(&flow)?;
        match &mut self.sessions[s].lines[l] {
            Line::Pinhole(p) => Some(&mut p.child_end),
            _ => None,
        }
    }

    fn pinhole(
        &mut self,
        packet: u64,
        action: PinholeAction,
        pinhole: &PinholeInfo,
        child: Option<FlowTuple>,
    ) {
        if matches!(action, PinholeAction::Open | PinholeAction::Admit) {
            let Some(s) = self.session_of(pinhole.opening.alg, pinhole.parent, packet) else {
                return;
            };
            let session = &mut self.sessions[s];
            let admitted = action == PinholeAction::Admit;
            session.lines.push(Line::Pinhole(PinholeLine {
                what: if admitted {
                    "ftps range"
                } else {
                    negotiated(pinhole, session.flow)
                },
                endpoints: endpoints(pinhole),
                opened: packet,
                outcome: admitted.then_some((action, packet)),
                child,
                child_end: None,
            }));
            let line = (s, session.lines.len() - 1);
            if let Some(child) = child.filter(|_| admitted) {
                self.children.insert(child, line);
            }
            self.pinholes.insert(pinhole.id.0, line);
            self.destinations
                .insert((pinhole.opening.dst, pinhole.opening.dport), s);
            return;
        }
        let Some(&(s, l)) = self.pinholes.get(&pinhole.id.0) else {
            return;
        };
        if let Line::Pinhole(p) = &mut self.sessions[s].lines[l] {
            p.outcome = Some((action, packet));
            if let Some(child) = child {
                p.child = Some(child);
                self.children.insert(child, (s, l));
            }
        }
    }

    /// Writes the report. Sessions in which nothing happened but their own packets (no
    /// pinhole, refusal or notice), alike in all but the client (a SYN flood, a scan, a crowd of
    /// clients that only logged in), are shown once, followed by one line that counts the rest.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.sessions.is_empty() {
            writeln!(out, "no FTP or TFTP sessions")?;
        }
        for group in alike_groups(&self.sessions) {
            let first = &self.sessions[group[0]];
            out.write_all(render_session(first).as_bytes())?;
            if group.len() > 2 {
                writeln!(out, "{}", render_alike(&self.sessions, &group[1..]))?;
            } else {
                for &s in &group[1..] {
                    out.write_all(render_session(&self.sessions[s]).as_bytes())?;
                }
            }
        }
        if !self.other.is_empty() {
            writeln!(out, "drops outside FTP/TFTP sessions:")?;
            let width = Reason::NAME_WIDTH;
            for (reason, other) in &self.other {
                let example = other.tuple.map(|t| format!(" {t}")).unwrap_or_default();
                writeln!(
                    out,
                    "  {:>6} x {:<width$}  {} (first #{}{example})",
                    other.count,
                    reason.as_str(),
                    reason.help(),
                    other.first
                )?;
            }
        }
        Ok(())
    }
}

/// What makes two uneventful sessions alike: everything the report shows but the client's
/// address and port and the packet numbers. None for a session with something to show.
type AlikeKey = (
    Alg,
    u8,
    IpAddr,
    u16,
    Option<String>,
    bool,
    Option<(Option<CloseCause>, u64, u64)>,
    Vec<(Reason, u64)>,
);

fn alike_key(session: &Session) -> Option<AlikeKey> {
    if !session.lines.is_empty() {
        return None;
    }
    let end = session.end.map(|end| match end {
        FlowEnd::Closed {
            cause,
            packets,
            bytes,
            ..
        } => (Some(cause), packets, bytes),
        FlowEnd::OpenAtEnd { packets, bytes } => (None, packets, bytes),
    });
    Some((
        session.alg,
        session.flow.proto,
        session.flow.dst,
        session.flow.dport,
        session.rule.clone(),
        session.refused_at_start,
        end,
        session.drops.iter().map(|(r, n)| (*r, *n)).collect(),
    ))
}

/// The sessions in the order they started, alike ones gathered behind the first of them.
fn alike_groups(sessions: &[Session]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<AlikeKey, usize> = HashMap::new();
    for (i, session) in sessions.iter().enumerate() {
        let Some(key) = alike_key(session) else {
            groups.push(vec![i]);
            continue;
        };
        if let Some(&g) = by_key.get(&key) {
            groups[g].push(i);
        } else {
            by_key.insert(key, groups.len());
            groups.push(vec![i]);
        }
    }
    groups
}

/// `  + 62 more like it, #6-#67, from 203.0.113.2:1025 ... 203.0.113.63:1086`.
fn render_alike(sessions: &[Session], rest: &[usize]) -> String {
    let first = &sessions[rest[0]];
    let last = &sessions[rest[rest.len() - 1]];
    format!(
        "  + {} more like it, #{}-#{}, from {} ... {}",
        rest.len(),
        first.first,
        last.first,
        endpoint(first.flow.src, &first.flow.sport.to_string()),
        endpoint(last.flow.src, &last.flow.sport.to_string())
    )
}

fn render_session(session: &Session) -> String {
    let mut text = String::new();
    let alg = match session.alg {
        Alg::Ftp => "FTP ",
        Alg::Tftp => "TFTP",
    };
    let rule = session
        .rule
        .as_deref()
        .map(|r| format!("  rule {r}"))
        .unwrap_or_default();
    let state = match (session.refused_at_start, session.end) {
        (true, _) => "  refused, not tracked".to_owned(),
        (false, Some(end @ FlowEnd::Closed { packet, .. })) => {
            format!("  #{}-#{packet}  {}", session.first, end.describe())
        }
        (false, Some(end)) => format!("  #{}-  {}", session.first, end.describe()),
        (false, None) => format!("  #{}-  open at the end", session.first),
    };
    let _ = writeln!(text, "{alg} {}{rule}{state}", session.flow);
    for line in &session.lines {
        match line {
            Line::Pinhole(p) => {
                let outcome = match p.outcome {
                    None => "still open at the end".to_owned(),
                    Some((PinholeAction::Use, at)) => {
                        let child = p.child.map(|c| format!(" by {c}")).unwrap_or_default();
                        let ended = p
                            .child_end
                            .map(|end| format!(" ({})", end.describe()))
                            .unwrap_or_default();
                        format!("used #{at}{child}{ended}")
                    }
                    Some((PinholeAction::Admit, _)) => {
                        let child = p.child.map(|c| format!(" {c}")).unwrap_or_default();
                        let ended = p
                            .child_end
                            .map(|end| format!(" ({})", end.describe()))
                            .unwrap_or_default();
                        format!("admitted{child}{ended}")
                    }
                    Some((PinholeAction::Expire, at)) => format!("expired unused #{at}"),
                    Some((PinholeAction::Close | PinholeAction::Open, at)) => {
                        format!("closed unused #{at}")
                    }
                };
                let _ = writeln!(
                    text,
                    "  {:<14} {}  opened #{}, {outcome}",
                    p.what, p.endpoints, p.opened
                );
            }
            Line::Refused {
                packet,
                reason,
                detail,
            } => {
                let _ = writeln!(
                    text,
                    "  refused #{packet}  {}: {} ({detail})",
                    reason.as_str(),
                    reason.help()
                );
            }
            Line::Notice {
                packet,
                kind,
                detail,
            } => {
                let _ = writeln!(text, "  notice #{packet}  {kind}: {detail}");
            }
            Line::Transfer { packet, text: line } => {
                let _ = writeln!(text, "  transfer #{packet}  {line}");
            }
        }
    }
    if !session.drops.is_empty() {
        let drops: Vec<String> = session
            .drops
            .iter()
            .map(|(reason, n)| format!("{n} x {}", reason.as_str()))
            .collect();
        let _ = writeln!(text, "  drops: {}", drops.join(", "));
    }
    text
}

/// What a pinhole is for: FTP data connections are active (the server connects to the
/// client) or passive (the client connects to the server); TFTP transfers are reads or writes.
fn negotiated(pinhole: &PinholeInfo, control: FlowTuple) -> &'static str {
    match (pinhole.opening.alg, pinhole.tftp_request) {
        (Alg::Tftp, Some(RequestKind::Read)) => "read transfer",
        (Alg::Tftp, Some(RequestKind::Write)) => "write transfer",
        (Alg::Tftp, None) => "transfer",
        (Alg::Ftp, _) if pinhole.opening.dst == control.src => "active data",
        (Alg::Ftp, _) => "passive data",
    }
}

fn endpoints(pinhole: &PinholeInfo) -> String {
    let o = pinhole.opening;
    format!(
        "{} {} -> {}",
        proto_name(o.proto),
        endpoint(o.src, &o.sport.to_string()),
        endpoint(o.dst, &o.dport.to_string())
    )
}

/// Bytes for people: `512 B`, `2.1 KiB`, `8.0 MiB`.
fn bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // Shown with one decimal.
    let f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if n < 1 << 20 {
        format!("{:.1} KiB", f / 1024.0)
    } else {
        format!("{:.1} MiB", f / f64::from(1u32 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2150), "2.1 KiB");
        assert_eq!(bytes(8 << 20), "8.0 MiB");
    }
}
