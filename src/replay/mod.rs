//! Offline replay: feed a capture through a fresh engine, packet by packet, with the capture's
//! own timestamps as the clock, and report verdicts, events and a summary.

pub mod bench;

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::conntrack::FlowTuple;
use crate::counters::Counters;
use crate::decision::{Decision, Expired, Released, Verdict};
use crate::engine::{Engine, PacketInfo};
use crate::io::pcap::{CaptureError, read_capture};
use crate::output::{Format, Record, RecordWriter, event_record, is_contract_event, verdict_name};
use crate::policy::Policy;
use crate::report::SessionReport;

/// What to report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// One `verdict` record per packet.
    pub verdicts: bool,
    /// `flow` records for flows opening and closing.
    pub flows: bool,
    /// Verify TCP/UDP checksums (off by default: captures taken on an end host carry the
    /// unfinished checksums of offloading NICs).
    pub verify_checksums: bool,
}

/// A replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture could not be read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Writing the output failed (a closed pipe, a full disk).
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

/// The outcome of replaying one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    /// The engine's counters at the end.
    pub counters: Counters,
    /// The file ended inside a record.
    pub truncated: bool,
}

/// Replays the capture at `path` through a fresh engine enforcing `policy`, writing records.
/// `name` is how the file is named in the output.
pub fn replay_file(
    path: &Path,
    name: &str,
    policy: &Arc<Policy>,
    options: ReplayOptions,
    out: &mut RecordWriter<'_>,
) -> Result<ReplayReport, ReplayError> {
    let mut engine = Engine::new(Arc::clone(policy));
    out.heading(name)?;
    // In text, the session report takes the place of the records; --verdicts and --flows
    // add the record lines (a timeline) in front of it.
    let mut report = (out.format() == Format::Text).then(SessionReport::default);
    let timeline = report.is_none() || options.verdicts || options.flows;
    let mut last = None;
    let summary = read_capture(path, |packet| -> io::Result<()> {
        let now = packet.timestamp;
        last = Some(packet.index);
        if engine.next_timeout().is_some_and(|at| at <= now) {
            let expired = engine.expire(now);
            if let Some(report) = report.as_mut() {
                report.expired(packet.index, &expired);
            }
            if timeline {
                emit_expired(out, name, packet.index, &expired, options)?;
            }
        }
        let mut info = PacketInfo::new(packet.index, packet.link);
        info.ingress = packet.interface;
        info.verify_checksums = options.verify_checksums;
        let decision = engine.process(now, &info, packet.data);
        if let Some(report) = report.as_mut() {
            report.decision(packet.index, packet.link, packet.data, &decision);
        }
        if timeline {
            // Only the text form draws the direction: decode the packet's tuple only for it.
            let shown = options.verdicts && out.format() == Format::Text;
            let reply = shown
                && decision.flow.is_some_and(|flow| {
                    FlowTuple::of_frame(packet.link, packet.data).is_some_and(|p| flow.is_reply(&p))
                });
            emit_decision(out, name, packet.index, &decision, reply, options)?;
        }
        Ok(())
    })??;
    if summary.truncated {
        tracing::warn!(
            file = name,
            packets = summary.packets,
            "capture ends inside a record; replayed the complete packets"
        );
    }
    let flushed = engine.flush();
    if let Some(report) = report.as_mut() {
        report.expired(last.unwrap_or(0), &flushed);
    }
    if timeline {
        emit_expired(out, name, last.unwrap_or(0), &flushed, options)?;
    }
    if let Some(report) = report.as_mut() {
        report.finish(&engine);
        out.report(report)?;
    }

    let counters = engine.counters().clone();
    out.write(&Record::summary(name, &counters, summary.truncated))?;
    Ok(ReplayReport {
        counters,
        truncated: summary.truncated,
    })
}

fn emit_released(
    out: &mut RecordWriter<'_>,
    file: &str,
    released: &[Released],
    options: ReplayOptions,
) -> io::Result<()> {
    if !options.verdicts {
        return Ok(());
    }
    let mut sorted: Vec<&Released> = released.iter().collect();
    sorted.sort_by_key(|r| r.handle);
    for r in sorted {
        out.write(&Record::Verdict {
            file,
            packet: r.handle,
            verdict: verdict_name(r.verdict),
            reason: r.reason,
            flow: r.flow,
            reset: r.verdict == Verdict::Reject,
            rewritten: false,
            // A held fragment's own headers are gone; its direction is not shown.
            reply: false,
        })?;
    }
    Ok(())
}

fn emit_expired(
    out: &mut RecordWriter<'_>,
    file: &str,
    packet: u64,
    expired: &Expired,
    options: ReplayOptions,
) -> io::Result<()> {
    emit_released(out, file, &expired.released, options)?;
    for event in &expired.events {
        if options.flows || is_contract_event(event) {
            out.write(&event_record(file, packet, event))?;
        }
    }
    Ok(())
}

/// Writes the records of one packet's decision; `reply` says the packet came from the flow's
/// responder (text output draws the flow with `<-`).
fn emit_decision(
    out: &mut RecordWriter<'_>,
    file: &str,
    packet: u64,
    decision: &Decision,
    reply: bool,
    options: ReplayOptions,
) -> io::Result<()> {
    emit_released(out, file, &decision.released, options)?;
    if options.verdicts && decision.verdict != Verdict::Held {
        out.write(&Record::Verdict {
            file,
            packet,
            verdict: verdict_name(decision.verdict),
            reason: decision.reason,
            flow: decision.flow,
            reset: decision.verdict == Verdict::Reject,
            rewritten: !decision.rewrites.is_empty(),
            reply,
        })?;
    }
    for event in &decision.events {
        if options.flows || is_contract_event(event) {
            out.write(&event_record(file, packet, event))?;
        }
    }
    Ok(())
}
