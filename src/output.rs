//! The replay output contract: JSON Lines records and the readable text form.
//!
//! The JSON records are public (users and tests script against them); the README documents
//! them. Fields are only ever added, never renamed or removed.

use std::io::{self, Write};
use std::net::IpAddr;

use serde::Serialize;

use crate::alg::Alg;
use crate::conntrack::key::{ProtoName, proto_name};
use crate::conntrack::{FlowTuple, Translation};
use crate::counters::{Counters, DropCounts};
use crate::decision::{Reason, Verdict};
use crate::event::Event;

/// Output format of `pinhole replay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON Lines: one object per line (the default when stdout is not a terminal).
    Json,
    /// A readable table (the default on a terminal).
    Text,
}

/// One output record.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record<'a> {
    /// `{"type":"verdict","file":F,"packet":N,"verdict":"accept"|"drop","reason":R|null,"flow":S|null}`
    Verdict {
        /// Capture file.
        file: &'a str,
        /// 0-based packet index in the file.
        packet: u64,
        /// `accept` or `drop`.
        verdict: &'static str,
        /// Drop reason, or null.
        reason: Option<Reason>,
        /// The flow, or null.
        flow: Option<FlowTuple>,
        /// Present (true) when the drop also reset the sender's connection.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
        /// Present (true) when the packet was accepted with part of its payload overwritten
        /// (an FTP command the rules refused, defanged); inline only, replay just reports it.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        rewritten: bool,
        /// The packet went from the flow's responder to its initiator (text output only: it
        /// draws the flow with `<-`); false when unknown.
        #[serde(skip)]
        reply: bool,
    },
    /// A pinhole opened, was used, expired or closed.
    Pinhole {
        /// Capture file.
        file: &'a str,
        /// `open`, `use`, `expire` or `close`.
        event: &'static str,
        /// `ftp` or `tftp`.
        alg: Alg,
        /// `tcp` or `udp`.
        proto: ProtoName,
        /// The peer allowed to connect.
        src: IpAddr,
        /// Its port, or null for any port (or a range, given in `sport_range`).
        sport: Option<u16>,
        /// Destination address.
        dst: IpAddr,
        /// Destination port.
        dport: u16,
        /// The packet that caused it.
        packet: u64,
        /// Pinhole id, unique within the file.
        id: u64,
        /// The control flow that negotiated it.
        parent: Option<FlowTuple>,
        /// For `use`: the flow it admitted.
        #[serde(skip_serializing_if = "Option::is_none")]
        child: Option<FlowTuple>,
        /// Allowed source port range, when the pinhole has one (TFTP `--port-range`).
        #[serde(skip_serializing_if = "Option::is_none")]
        sport_range: Option<[u16; 2]>,
        /// How the kernel translates the control flow (or TFTP request) that negotiated it:
        /// the addresses its ends use for each other (inline on a NAT router only).
        #[serde(skip_serializing_if = "Option::is_none")]
        parent_nat: Option<Translation>,
        /// For `admit`: the FTPS session's passive range (low, high) that admitted the
        /// connection; no pinhole was negotiated for it.
        #[serde(skip_serializing_if = "Option::is_none")]
        ftps_range: Option<[u16; 2]>,
    },
    /// The kernel translates an inspected flow (inline on a NAT router only; once per flow).
    Nat {
        /// Capture file (live: the queue, `nfqueue:N`).
        file: &'a str,
        /// The packet that brought it.
        packet: u64,
        /// The flow in the hosts' own addresses, as pinhole sees and shows every flow.
        flow: FlowTuple,
        /// `client` as the server sees it, `server` as the client sees it.
        #[serde(flatten)]
        nat: Translation,
    },
    /// A refused protocol action.
    Violation {
        /// Capture file.
        file: &'a str,
        /// The inspector.
        alg: Alg,
        /// What was wrong.
        reason: Reason,
        /// The packet.
        packet: u64,
        /// The flow.
        flow: Option<FlowTuple>,
        /// Specifics.
        detail: &'a str,
    },
    /// Something an inspector did that is not a refusal (TLS left uninspected, an address
    /// replaced).
    Notice {
        /// Capture file.
        file: &'a str,
        /// The inspector.
        alg: Alg,
        /// What happened: `tls_uninspected`, `passive_address_replaced`.
        event: &'static str,
        /// The packet.
        packet: u64,
        /// The flow.
        flow: Option<FlowTuple>,
        /// Specifics.
        detail: &'a str,
    },
    /// One per finished, failed or unfinished transfer (the transfer log).
    Transfer {
        /// Capture file (live: the queue, `nfqueue:N`).
        file: &'a str,
        /// The packet that ended it (the final reply, the last ACK), or whose time did.
        packet: u64,
        /// `ftp` or `tftp`.
        alg: Alg,
        /// The FTP control connection, or the TFTP request's flow.
        session: FlowTuple,
        /// FTP: the user name given with USER (never the password).
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        /// `RETR`, `STOR`, `APPE`, `STOU`, `LIST`, `NLST`, `MLSD`, `RRQ` or `WRQ`.
        command: &'static str,
        /// The file (FTP: resolved through CWD/CDUP; a listing: the directory), if named.
        path: Option<&'a str>,
        /// FTP: true when the working directory was never confirmed, so `path` assumes the
        /// login directory is `/`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        path_guessed: bool,
        /// `download`, `upload` or `listing`.
        direction: &'static str,
        /// FTP: the reply that opened the data transfer (150, 125).
        #[serde(skip_serializing_if = "Option::is_none")]
        opened: Option<u16>,
        /// FTP: the final reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        closed: Option<u16>,
        /// TFTP: the mode.
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<&'static str>,
        /// TFTP: the options the server acknowledged, `name=value`.
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        options: &'a [String],
        /// TFTP: blocks acknowledged.
        #[serde(skip_serializing_if = "Option::is_none")]
        blocks: Option<u64>,
        /// The data connection (FTP) or transfer flow (TFTP), or null if none was seen.
        data: Option<FlowTuple>,
        /// How the kernel translates the data connection (inline on a NAT router): `client`
        /// (its initiator as the other end sees it) and `server`.
        #[serde(skip_serializing_if = "Option::is_none")]
        data_nat: Option<Translation>,
        /// File bytes from the client (null when unknown).
        bytes_up: Option<u64>,
        /// File bytes to the client (null when unknown).
        bytes_down: Option<u64>,
        /// `pinhole` (counted from sequence or block numbers), `kernel` (the kernel's
        /// accounting of an offloaded data connection) or `none`.
        bytes_source: &'static str,
        /// Seconds from the command (or request) to the end.
        duration: f64,
        /// `complete`, `failed`, `aborted` or `unfinished`.
        result: &'static str,
        /// The final reply's text, the TFTP ERROR, or why it is unfinished.
        detail: &'a str,
    },
    /// A flow opened or closed (only with `--flows`).
    Flow {
        /// Capture file.
        file: &'a str,
        /// `open` or `close`.
        event: &'static str,
        /// The flow.
        flow: FlowTuple,
        /// The packet that opened it, or whose time closed it.
        packet: u64,
        /// For `open`: the rule that allowed it (null when a pinhole did).
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<&'a str>,
        /// For `open`: the inspector attached, `pinhole` when a pinhole admitted it, `pickup`
        /// when picked up mid-stream, `takeover` when taken over from the kernel's entry (HA).
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<&'static str>,
        /// For `close`: why.
        #[serde(skip_serializing_if = "Option::is_none")]
        cause: Option<&'static str>,
        /// For `close`: packets seen.
        #[serde(skip_serializing_if = "Option::is_none")]
        packets: Option<u64>,
        /// For `close`: bytes seen.
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes: Option<u64>,
    },
    /// One per file, last.
    Summary {
        /// Capture file.
        file: &'a str,
        /// Packets in the file.
        packets: u64,
        /// Packets accepted.
        accepted: u64,
        /// Packets dropped.
        dropped: u64,
        /// Flows created.
        flows: u64,
        /// Pinholes opened.
        pinholes_opened: u64,
        /// Pinholes used.
        pinholes_used: u64,
        /// Violations.
        violations: u64,
        /// Drops by reason (nonzero only).
        drops: &'a DropCounts,
        /// The file ended inside a record.
        truncated: bool,
    },
}

impl<'a> Record<'a> {
    /// The `summary` record of `file` from an engine's final counters.
    pub fn summary(file: &'a str, counters: &'a Counters, truncated: bool) -> Self {
        Record::Summary {
            file,
            packets: counters.packets,
            accepted: counters.accepted,
            dropped: counters.dropped,
            flows: counters.flows_opened,
            pinholes_opened: counters.pinholes_opened,
            pinholes_used: counters.pinholes_used,
            violations: counters.violations,
            drops: &counters.drops,
            truncated,
        }
    }
}

/// The contract's name for a verdict: `accept` or `drop` (a reject is a drop with `reset`).
pub fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Accept => "accept",
        Verdict::Drop | Verdict::Reject => "drop",
        Verdict::Held => "held",
    }
}

/// Converts an engine event into its record, for packet `packet` of `file`.
pub fn event_record<'a>(file: &'a str, packet: u64, event: &'a Event) -> Record<'a> {
    match event {
        Event::Pinhole {
            action,
            pinhole,
            child,
        } => Record::Pinhole {
            file,
            event: action.as_str(),
            alg: pinhole.opening.alg,
            proto: proto_name(pinhole.opening.proto),
            src: pinhole.opening.src,
            sport: pinhole.opening.sport.exact(),
            dst: pinhole.opening.dst,
            dport: pinhole.opening.dport,
            packet,
            id: pinhole.id.0,
            parent: pinhole.parent,
            child: *child,
            sport_range: pinhole.opening.sport.range(),
            parent_nat: pinhole.parent_nat,
            ftps_range: pinhole.range.map(|(lo, hi)| [lo, hi]),
        },
        Event::Translated { flow, nat } => Record::Nat {
            file,
            packet,
            flow: *flow,
            nat: *nat,
        },
        Event::Violation {
            alg,
            reason,
            flow,
            detail,
        } => Record::Violation {
            file,
            alg: *alg,
            reason: *reason,
            packet,
            flow: *flow,
            detail,
        },
        Event::Notice {
            alg,
            flow,
            kind,
            detail,
        } => Record::Notice {
            file,
            alg: *alg,
            event: kind,
            packet,
            flow: *flow,
            detail,
        },
        Event::FlowOpened {
            flow,
            rule,
            alg,
            via_pinhole,
            pickup,
            takeover,
        } => Record::Flow {
            file,
            event: "open",
            flow: *flow,
            packet,
            rule: rule.as_deref(),
            via: Some(match (via_pinhole, pickup, alg) {
                _ if *takeover => "takeover",
                (true, _, _) => "pinhole",
                (false, true, _) => "pickup",
                (false, false, Some(alg)) => alg.as_str(),
                (false, false, None) => "rule",
            }),
            cause: None,
            packets: None,
            bytes: None,
        },
        Event::Transfer(t) => transfer_record(file, packet, t),
        Event::FlowClosed {
            flow,
            cause,
            packets,
            bytes,
        } => Record::Flow {
            file,
            event: "close",
            flow: *flow,
            packet,
            rule: None,
            via: None,
            cause: Some(cause.as_str()),
            packets: Some(*packets),
            bytes: Some(*bytes),
        },
    }
}

/// The record of a transfer.
fn transfer_record<'a>(file: &'a str, packet: u64, t: &'a crate::event::Transfer) -> Record<'a> {
    Record::Transfer {
        file,
        packet,
        alg: t.alg,
        session: t.session,
        user: t.user.as_deref(),
        command: t.command,
        path: t.path.as_deref(),
        path_guessed: t.path_guessed,
        direction: t.direction.as_str(),
        opened: t.opened,
        closed: t.closed,
        mode: t.mode,
        options: &t.options,
        blocks: t.blocks,
        data: t.data,
        data_nat: t.data_nat,
        bytes_up: t.bytes_up,
        bytes_down: t.bytes_down,
        bytes_source: t.bytes_source.as_str(),
        duration: (t.ended.saturating_since(t.started).as_secs_f64() * 1000.0).round() / 1000.0,
        result: t.result.as_str(),
        detail: &t.detail,
    }
}

/// True for events shown without `--flows`.
pub fn is_contract_event(event: &Event) -> bool {
    matches!(
        event,
        Event::Pinhole { .. }
            | Event::Violation { .. }
            | Event::Notice { .. }
            | Event::Translated { .. }
            | Event::Transfer(_)
    )
}

/// Writes `record` as one JSON line.
pub fn write_json(out: &mut dyn Write, record: &Record<'_>) -> io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

/// Writes `record` as one readable line.
pub fn write_text(out: &mut dyn Write, record: &Record<'_>) -> io::Result<()> {
    match record {
        Record::Verdict {
            packet,
            verdict,
            reason,
            flow,
            reset,
            reply,
            rewritten,
            ..
        } => {
            let verdict = match (*verdict, *reset) {
                ("accept", _) if *rewritten => "DEFANG",
                ("accept", _) => "accept",
                (_, true) => "RESET",
                _ => "DROP",
            };
            let reason = reason.map_or("", Reason::as_str);
            let flow = flow.map(|f| directed(f, *reply)).unwrap_or_default();
            let width = Reason::NAME_WIDTH;
            writeln!(out, "#{packet:<6} {verdict:<6} {reason:<width$} {flow}")
        }
        Record::Pinhole {
            event,
            alg,
            proto,
            src,
            sport,
            dst,
            dport,
            packet,
            sport_range,
            parent_nat,
            ftps_range,
            ..
        } => {
            let sport = match (sport, sport_range) {
                (Some(p), _) => p.to_string(),
                (None, Some([lo, hi])) => format!("{lo}-{hi}"),
                (None, None) => "*".to_owned(),
            };
            let mut nat = parent_nat
                .map(|nat| format!(" (session translated: {nat})"))
                .unwrap_or_default();
            if let Some([lo, hi]) = ftps_range {
                nat = format!("{nat} (FTPS session's passive range {lo}-{hi})");
            }
            writeln!(
                out,
                "#{packet:<6} pinhole {event:<6} {alg} {proto} {} -> {}{nat}",
                endpoint(*src, &sport),
                endpoint(*dst, &dport.to_string())
            )
        }
        Record::Nat {
            packet, flow, nat, ..
        } => writeln!(out, "#{packet:<6} nat    {flow}: {nat}"),
        Record::Violation {
            alg,
            reason,
            packet,
            detail,
            ..
        } => writeln!(
            out,
            "#{packet:<6} VIOLATION {alg} {}: {detail}",
            reason.as_str()
        ),
        Record::Notice {
            alg,
            event,
            packet,
            detail,
            ..
        } => writeln!(out, "#{packet:<6} notice {alg} {event}: {detail}"),
        Record::Transfer { packet, .. } => {
            writeln!(out, "#{packet:<6} transfer {}", transfer_line(record))
        }
        Record::Flow {
            event,
            flow,
            packet,
            rule,
            via,
            cause,
            ..
        } => {
            let what = match (event, rule, via, cause) {
                (&"open", rule, via, _) => format!(
                    "opened ({}{})",
                    via.unwrap_or("rule"),
                    rule.map(|r| format!(" {r}")).unwrap_or_default()
                ),
                (_, _, _, cause) => format!("closed ({})", cause.unwrap_or("?")),
            };
            writeln!(out, "#{packet:<6} flow   {flow} {what}")
        }
        Record::Summary { .. } => write_summary_text(out, record),
    }
}

fn write_summary_text(out: &mut dyn Write, record: &Record<'_>) -> io::Result<()> {
    let Record::Summary {
        file,
        packets,
        accepted,
        dropped,
        flows,
        pinholes_opened,
        pinholes_used,
        violations,
        drops,
        truncated,
    } = record
    else {
        return Ok(());
    };
    let truncated = if *truncated {
        " (capture truncated)"
    } else {
        ""
    };
    writeln!(
        out,
        "{file}: {}, {accepted} accepted, {dropped} dropped, {}, {}, {pinholes_used} used, {}{truncated}",
        counted(*packets, "packet", "packets"),
        counted(*flows, "flow", "flows"),
        counted(*pinholes_opened, "pinhole opened", "pinholes opened"),
        counted(*violations, "violation", "violations"),
    )?;
    let width = Reason::NAME_WIDTH;
    for (reason, count) in drops.nonzero() {
        writeln!(
            out,
            "    {count:>8}  {:<width$}  {}",
            reason.as_str(),
            reason.help()
        )?;
    }
    Ok(())
}

/// A transfer record for people: `ftp alice RETR /pub/ios.bin download 1048576 B complete
/// (150, 226) 0.42 s`.
pub fn transfer_line(record: &Record<'_>) -> String {
    let Record::Transfer {
        alg,
        user,
        command,
        path,
        path_guessed,
        direction,
        opened,
        closed,
        bytes_up,
        bytes_down,
        duration,
        result,
        detail,
        session,
        ..
    } = record
    else {
        return String::new();
    };
    let bytes = match (*direction, bytes_up, bytes_down) {
        ("upload", Some(b), _) | ("download" | "listing", _, Some(b)) => format!("{b} B"),
        _ => "? B".to_owned(),
    };
    let codes = match (opened, closed) {
        (Some(o), Some(c)) => format!(" ({o}, {c})"),
        (None, Some(c)) => format!(" ({c})"),
        _ => String::new(),
    };
    let guess = if *path_guessed { " (path guessed)" } else { "" };
    let why = if *result == "complete" || detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    format!(
        "{alg} {} {} {command} {}{guess} {direction} {bytes} {result}{codes} {duration:.2} s{why}",
        session.src,
        user.unwrap_or("-"),
        path.unwrap_or("-"),
    )
}

/// `1 packet`, `2 packets`.
pub(crate) fn counted(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The flow as its packet travelled: `tcp A:1 -> B:2` from the initiator, `tcp A:1 <- B:2` from
/// the responder (the flow keeps its initiator-first name, so lines of one flow still match).
pub(crate) fn directed(flow: FlowTuple, reply: bool) -> String {
    let text = flow.to_string();
    if reply {
        text.replacen(" -> ", " <- ", 1)
    } else {
        text
    }
}

/// `addr:port`, IPv6 in brackets; `port` may be `*` or a range.
pub(crate) fn endpoint(addr: IpAddr, port: &str) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Writes records in one format.
pub struct RecordWriter<'w> {
    out: &'w mut dyn Write,
    format: Format,
}

impl<'w> RecordWriter<'w> {
    /// Writes to `out` in `format`.
    pub fn new(out: &'w mut dyn Write, format: Format) -> Self {
        RecordWriter { out, format }
    }

    /// Writes one record.
    pub fn write(&mut self, record: &Record<'_>) -> io::Result<()> {
        match self.format {
            Format::Json => write_json(self.out, record),
            Format::Text => write_text(self.out, record),
        }
    }

    /// The format written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes a session report (text format only).
    pub fn report(&mut self, report: &crate::report::SessionReport) -> io::Result<()> {
        match self.format {
            Format::Json => Ok(()),
            Format::Text => report.write(self.out),
        }
    }

    /// Writes a heading line (text format only).
    pub fn heading(&mut self, file: &str) -> io::Result<()> {
        match self.format {
            Format::Json => Ok(()),
            Format::Text => writeln!(self.out, "== {file}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Translation;
    use crate::wire::transport::proto;

    #[test]
    fn nat_records_carry_both_views_as_documented() {
        let event = Event::Translated {
            flow: FlowTuple {
                proto: proto::TCP,
                src: "198.51.100.10".parse().unwrap(),
                sport: 40000,
                dst: "10.0.1.10".parse().unwrap(),
                dport: 21,
            },
            nat: Translation {
                client: ("198.51.100.10".parse().unwrap(), 40000),
                server: ("203.0.113.1".parse().unwrap(), 21),
            },
        };
        let record = event_record("nfqueue:0", 7, &event);
        let mut json = Vec::new();
        write_json(&mut json, &record).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            "{\"type\":\"nat\",\"file\":\"nfqueue:0\",\"packet\":7,\"flow\":\"tcp 198.51.100.10:40000 -> 10.0.1.10:21\",\"client\":\"198.51.100.10:40000\",\"server\":\"203.0.113.1:21\"}\n"
        );
        let mut text = Vec::new();
        write_text(&mut text, &record).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "#7      nat    tcp 198.51.100.10:40000 -> 10.0.1.10:21: client 198.51.100.10:40000, server 203.0.113.1:21\n"
        );
    }
}
