//! One worker: one queue, one socket, one engine, one thread.
//!
//! The loop waits on the socket (and in offload mode on the kernel's conntrack destroy events,
//! which end offloaded flows) with the engine's next timer as the timeout (at most [`TICK`],
//! so queries, reloads and the stop flag are seen promptly), then drains up to [`BATCH`]
//! datagrams, judges each packet and sends all their verdicts in one `send`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use super::kernel_ct::KernelConntrack;
use crate::decision::{Decision, Verdict};
use crate::engine::{Engine, EngineState, PacketInfo, RestoreSummary};
use crate::event::{BytesSource, Event};
use crate::io::ct_events::{DestroyEvents, DestroyedConn};
use crate::io::iptables::{HaMarks, Mode, OffloadEnds, RulesConfig};
use crate::io::nfqueue::{KernelVerdict, Message, QueueSocket, QueuedPacket, VerdictBatch};
use crate::observe::Tap;
use crate::time::Instant;
use crate::wire::LinkType;

use super::Shared;
use super::ifnames::IfNames;
use super::overflow_log::OverflowLog;
use super::snapshot::{self, PinholeRow, QueueCounters, SessionRow, WorkerStats};
use super::transfer_bytes::KernelTransferBytes;

/// Longest wait between two looks at queries, reloads and the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Most datagrams read before the verdicts go out.
const BATCH: usize = 64;
/// Most destroy-event datagrams read between two looks at the queue.
const EVENT_BATCH: usize = 64;
/// Receive buffer of the destroy-event socket: room for a burst of about 16k events.
const EVENT_RCVBUF: usize = 4 << 20;

/// A question from the control socket to a worker.
pub enum Query {
    /// Counters and table sizes.
    Stats(Sender<WorkerStats>),
    /// Every tracked flow.
    Sessions(Sender<Vec<SessionRow>>),
    /// Every open pinhole.
    Pinholes(Sender<Vec<PinholeRow>>),
    /// A copy of the engine's flows and pinholes, for the state file.
    SaveState(Sender<(u16, EngineState)>),
}

/// Marks and mode the verdicts depend on (from the kernel rules' settings).
#[derive(Clone, Copy, Debug)]
pub struct VerdictMarks {
    /// Offload or inspect-all.
    pub mode: Mode,
    /// The offload mark bit.
    pub offload: u32,
    /// The reject mark bit.
    pub reject: u32,
    /// How offloaded connections' ends arrive.
    pub offload_ends: OffloadEnds,
    /// A router of a failover pair: the admitted and synced mark bits.
    pub ha: Option<HaMarks>,
}

impl From<&RulesConfig> for VerdictMarks {
    fn from(config: &RulesConfig) -> Self {
        VerdictMarks {
            mode: config.mode,
            offload: config.offload_mark,
            reject: config.reject_mark,
            offload_ends: config.offload_ends,
            ha: config.ha,
        }
    }
}

/// A worker's state.
pub struct Worker {
    engine: Engine,
    socket: QueueSocket,
    marks: VerdictMarks,
    counters: QueueCounters,
    ifnames: IfNames,
    batch: VerdictBatch,
    buf: Vec<u8>,
    policy_generation: u64,
    overflow_log: OverflowLog,
    tap: Tap,
    /// The id of the last packet judged (events of timers are reported with it).
    last_packet: u64,
    /// The kernel's connection tracking entries of packets on the inspected ports.
    conntrack: KernelConntrack,
    /// The kernel's destroy events, telling when offloaded connections end (offload mode
    /// with `--offload-ends events`).
    ends: Option<DestroyEvents>,
    /// Destroyed connections read and not yet handed to the engine.
    destroyed: Vec<DestroyedConn>,
    /// The kernel's entries of transfers' data connections: translations, and the byte counts
    /// of offloaded ones.
    transfer_bytes: Option<KernelTransferBytes>,
}

/// Counts one more overrun; true when it should be logged: at the 1st, 2nd, 4th, 8th...,
/// so that a storm of them is one counter, not a storm of log lines.
fn count_and_say(overruns: &mut u64) -> bool {
    *overruns += 1;
    overruns.is_power_of_two()
}

/// The destroy-event socket a worker in `marks`' mode reads, if any. (`daemon::run` probed
/// the kernel first and fell back to `segments` when it could not subscribe.)
pub fn open_destroy_events(marks: VerdictMarks) -> Option<DestroyEvents> {
    if marks.mode != Mode::Offload || marks.offload_ends != OffloadEnds::Events {
        return None;
    }
    DestroyEvents::open(EVENT_RCVBUF)
        .inspect_err(|err| {
            tracing::warn!(
                %err,
                "cannot subscribe to conntrack destroy events: this worker's offloaded connections leave its table at their idle timeout"
            );
        })
        .ok()
}

impl Worker {
    /// A worker for `socket`, with a fresh engine on the shared policy.
    pub fn new(mut socket: QueueSocket, shared: &Shared, marks: VerdictMarks, tap: Tap) -> Worker {
        let (policy, generation) = shared.policy();
        let conntrack = KernelConntrack::new(&mut socket, &shared.attached_helpers());
        let mut engine = Engine::new(policy);
        engine.set_offload(marks.mode == Mode::Offload);
        Worker {
            engine,
            socket,
            marks,
            counters: QueueCounters::default(),
            ifnames: IfNames::default(),
            batch: VerdictBatch::default(),
            buf: Vec::new(),
            policy_generation: generation,
            overflow_log: OverflowLog::default(),
            tap,
            last_packet: 0,
            conntrack,
            ends: open_destroy_events(marks),
            destroyed: Vec::new(),
            transfer_bytes: Some(KernelTransferBytes::default()),
        }
    }

    /// The queue it serves.
    pub fn queue(&self) -> u16 {
        self.socket.queue()
    }

    /// Adds saved flows and pinholes (from the state file) to the engine.
    pub fn restore(&mut self, state: EngineState, now: Instant) -> RestoreSummary {
        // The engine's clock first, so that pinholes that expired while no daemon ran are
        // left out, and flows past their deadline go at the first timer run.
        let _ = self.engine.expire(now);
        self.engine.restore_state(state)
    }

    /// Runs until the stop flag is set; unbinds the queue on the way out and returns the
    /// engine's flows and pinholes (for the state file) with the outcome.
    pub fn run(
        mut self,
        shared: &Arc<Shared>,
        queries: &Receiver<Query>,
    ) -> (io::Result<()>, EngineState) {
        let result = self.serve(shared, queries);
        if let Err(err) = self.socket.unbind() {
            tracing::warn!(queue = self.socket.queue(), %err, "could not unbind the queue");
        }
        (result, self.engine.save_state())
    }

    fn serve(&mut self, shared: &Arc<Shared>, queries: &Receiver<Query>) -> io::Result<()> {
        while !shared.stop.load(Ordering::Relaxed) {
            self.follow_policy(shared);
            while let Ok(query) = queries.try_recv() {
                self.answer(query, shared.now());
            }
            let now = shared.now();
            let wait = self
                .engine
                .next_timeout()
                .map_or(TICK, |deadline| deadline.saturating_since(now).min(TICK));
            let ends = self.ends.as_ref().map(std::os::fd::AsFd::as_fd);
            let (queue, ends) = self.socket.wait_readable_with(ends, wait)?;
            if ends {
                self.drain_ends(shared);
            }
            if queue {
                self.drain(shared)?;
            }
            self.run_timers(shared.now());
        }
        Ok(())
    }

    fn follow_policy(&mut self, shared: &Shared) {
        if shared.policy_generation() == self.policy_generation {
            return;
        }
        let (policy, generation) = shared.policy();
        self.policy_generation = generation;
        self.ifnames.clear();
        let events = self.engine.set_policy(policy);
        self.conntrack.set_helpers(shared.attached_helpers());
        log_events(&events);
        self.tap
            .events(self.last_packet, &events, std::time::SystemTime::now());
    }

    fn answer(&self, query: Query, now: Instant) {
        let queue = self.socket.queue();
        // A client that gave up has dropped its receiver; nothing to do then.
        let _ = match query {
            Query::Stats(reply) => reply
                .send(WorkerStats::of(queue, &self.engine, self.queue_counters()))
                .map_err(drop),
            Query::Sessions(reply) => reply
                .send(snapshot::sessions(&self.engine, queue, now))
                .map_err(drop),
            Query::Pinholes(reply) => reply
                .send(snapshot::pinholes(&self.engine, queue, now))
                .map_err(drop),
            Query::SaveState(reply) => reply.send((queue, self.engine.save_state())).map_err(drop),
        };
    }

    fn drain(&mut self, shared: &Shared) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..BATCH {
            match self.socket.recv(&mut buf) {
                Ok(Some(data)) => {
                    let now = shared.now();
                    for message in crate::io::nfqueue::messages(data) {
                        match message {
                            Message::Packet(packet) => self.judge(now, &packet),
                            Message::Ack { errno, .. } if errno != 0 => {
                                // The kernel refused a verdict (an id it no longer knows).
                                self.counters.verdict_errors += 1;
                            }
                            Message::Ack { .. } | Message::Other => {}
                        }
                    }
                }
                Ok(None) => break,
                Err(err) if err.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    if count_and_say(&mut self.counters.enobufs) {
                        tracing::warn!(
                            queue = self.socket.queue(),
                            overruns = self.counters.enobufs,
                            "netlink socket overrun (ENOBUFS): the kernel dropped queued packets; raise --rcvbuf or add queues"
                        );
                    }
                }
                Err(err) => {
                    self.counters.recv_errors += 1;
                    self.buf = buf;
                    return Err(err);
                }
            }
        }
        self.buf = buf;
        self.flush_verdicts();
        Ok(())
    }

    /// Hands the kernel's destroy events of offloaded connections to the engine.
    fn drain_ends(&mut self, shared: &Shared) {
        let Some(ends) = self.ends.as_mut() else {
            return;
        };
        let mut destroyed = std::mem::take(&mut self.destroyed);
        destroyed.clear();
        match ends.read(EVENT_BATCH, &mut destroyed) {
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                if count_and_say(&mut self.counters.conntrack_event_overruns) {
                    tracing::warn!(
                        queue = self.socket.queue(),
                        overruns = self.counters.conntrack_event_overruns,
                        "conntrack event socket overrun (ENOBUFS): the ends of some offloaded connections were lost; they leave at their idle timeout"
                    );
                }
            }
            Err(err) => {
                // Not a passing condition: a socket that keeps failing would keep the loop
                // busy. Offloaded flows end at their idle timeouts from here on.
                self.counters.recv_errors += 1;
                self.ends = None;
                tracing::warn!(
                    queue = self.socket.queue(),
                    %err,
                    "reading conntrack destroy events failed; offloaded connections now leave pinhole's table at their idle timeout"
                );
            }
        }
        let now = shared.now();
        let at = std::time::SystemTime::now();
        for conn in &destroyed {
            if conn.mark & self.marks.offload == 0 {
                continue;
            }
            self.counters.conntrack_destroy_events += 1;
            let events = self.engine.kernel_ended(now, &conn.tuple(), conn.cause());
            if events.is_empty() {
                continue;
            }
            self.conntrack.forget(&events);
            log_events(&events);
            self.tap.events(self.last_packet, &events, at);
        }
        self.destroyed = destroyed;
    }

    fn judge(&mut self, now: Instant, packet: &QueuedPacket<'_>) {
        self.counters.received += 1;
        self.counters.gso += u64::from(packet.gso);
        self.counters.truncated += u64::from(packet.is_truncated());
        if packet.mark & self.marks.reject != 0 {
            // Our own rejected packet came back: the REJECT rule before the queue is missing.
            self.counters.mark_loops += 1;
            self.batch
                .push(packet.queue, packet.id, KernelVerdict::Drop, None);
            return;
        }
        let info = PacketInfo {
            handle: u64::from(packet.id),
            link: LinkType::RawIp,
            ingress: self.ifnames.get(packet.indev),
            egress: self.ifnames.get(packet.outdev),
            // The kernel has not computed the checksum yet (the packet left a local socket
            // with checksum offload, as GSO super-packets usually do): nothing to verify.
            verify_checksums: !packet.checksum_not_ready,
            offloaded: self.marks.mode == Mode::Offload && packet.mark & self.marks.offload != 0,
            kernel: {
                let flows = self.engine.flows();
                self.conntrack
                    .entry(packet, |t| flows.lookup(&t.key()).is_some())
            },
            synced: self.marks.ha.is_some_and(|ha| packet.mark & ha.synced != 0),
        };
        let mut decision = self.engine.process(now, &info, packet.payload);
        if let Some(reader) = self.transfer_bytes.as_mut() {
            reader.fill(&mut decision.events);
            for event in &decision.events {
                if let Event::Transfer(t) = event
                    && t.bytes_source == BytesSource::Kernel
                {
                    self.engine.count_kernel_transfer_bytes(t);
                }
            }
        }
        self.last_packet = u64::from(packet.id);
        self.tap
            .decision(self.last_packet, packet.payload, &decision);
        self.overflow_log
            .note_decision(&decision, now, self.socket.queue());
        self.verdict(packet, &decision);
        for released in &decision.released {
            let verdict = match released.verdict {
                Verdict::Accept => KernelVerdict::Accept,
                Verdict::Drop | Verdict::Reject | Verdict::Held => KernelVerdict::Drop,
            };
            self.counters.held = self.counters.held.saturating_sub(1);
            self.batch
                .push(packet.queue, released.handle as u32, verdict, None);
        }
        self.conntrack.forget(&decision.events);
        log_events(&decision.events);
    }

    fn verdict(&mut self, packet: &QueuedPacket<'_>, decision: &Decision) {
        let Some((verdict, mark)) = kernel_verdict(decision, packet.mark, self.marks) else {
            self.counters.held += 1;
            return;
        };
        match (decision.verdict, mark) {
            (Verdict::Reject, _) => self.counters.reject_verdicts += 1,
            (Verdict::Accept, Some(repeat)) if repeat & !packet.mark & self.marks.offload != 0 => {
                self.counters.offload_verdicts += 1;
            }
            _ => {}
        }
        if decision.verdict == Verdict::Accept && !decision.rewrites.is_empty() {
            let rewrites = decision
                .rewrites
                .iter()
                .map(|r| (r.offset, r.bytes.as_slice()));
            let rewritten = if packet.is_truncated() {
                Err("only part of the packet was queued")
            } else {
                crate::wire::transport::rewrite_tcp_payload(packet.payload, rewrites)
            };
            match rewritten {
                Ok(rewritten) => {
                    self.counters.rewrite_verdicts += 1;
                    self.batch.push_with_payload(
                        packet.queue,
                        packet.id,
                        verdict,
                        mark,
                        Some(&rewritten),
                    );
                }
                Err(why) => {
                    // Fail closed: the refused command must not reach the server as it is.
                    self.counters.rewrite_errors += 1;
                    tracing::warn!(
                        queue = packet.queue,
                        why,
                        "a packet to rewrite could not be; dropped"
                    );
                    self.batch
                        .push(packet.queue, packet.id, KernelVerdict::Drop, None);
                }
            }
            return;
        }
        self.batch.push(packet.queue, packet.id, verdict, mark);
    }

    /// The socket's counters with the connection tracking reader's.
    fn queue_counters(&self) -> QueueCounters {
        QueueCounters {
            conntrack_queries: self.conntrack.queries,
            conntrack_query_errors: self.conntrack.errors,
            ..self.counters.clone()
        }
    }

    fn flush_verdicts(&mut self) {
        let n = self.batch.len() as u64;
        if n == 0 {
            return;
        }
        let sent = self.socket.send_verdicts(&mut self.batch);
        self.conntrack.verdicts_sent();
        match sent {
            Ok(()) => self.counters.verdicts += n,
            Err(err) => {
                self.counters.verdict_errors += 1;
                tracing::warn!(queue = self.socket.queue(), %err, "sending verdicts failed");
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        if self.engine.next_timeout().is_none_or(|t| t > now) {
            return;
        }
        let expired = self.engine.expire(now);
        let queue = self.socket.queue();
        for released in &expired.released {
            self.counters.held = self.counters.held.saturating_sub(1);
            self.batch
                .push(queue, released.handle as u32, KernelVerdict::Drop, None);
        }
        self.conntrack.forget(&expired.events);
        log_events(&expired.events);
        self.tap.expired(self.last_packet, &expired);
        self.flush_verdicts();
    }
}

/// What the kernel is told for a packet carrying `mark`: `None` while it is held.
///
/// Accept and drop are final. A reject, in offload mode an accept that offloads the flow, and
/// with `--ha` an accept of a packet whose kernel entry is not marked admitted yet, are
/// `NF_REPEAT` with mark bits added (the packet's other mark bits kept), for the rules at the
/// top of the chain to carry out. A packet already marked offloaded is simply accepted.
pub fn kernel_verdict(
    decision: &Decision,
    mark: u32,
    marks: VerdictMarks,
) -> Option<(KernelVerdict, Option<u32>)> {
    Some(match decision.verdict {
        Verdict::Accept => {
            let mut add = 0;
            if decision.offload && marks.mode == Mode::Offload && mark & marks.offload == 0 {
                add |= marks.offload;
            }
            // A connection whose kernel entry does not say "admitted" yet (its first packet,
            // or one admitted before --ha) gets the admitted connection mark.
            if let Some(ha) = marks.ha
                && mark & ha.synced == 0
            {
                add |= ha.admitted;
            }
            if add == 0 {
                (KernelVerdict::Accept, None)
            } else {
                (KernelVerdict::Repeat, Some(mark | add))
            }
        }
        Verdict::Drop => (KernelVerdict::Drop, None),
        Verdict::Reject => (KernelVerdict::Repeat, Some(mark | marks.reject)),
        Verdict::Held => return None,
    })
}

fn log_events(events: &[Event]) {
    for event in events {
        tracing::debug!(?event, "event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;

    const MARKS: VerdictMarks = VerdictMarks {
        mode: Mode::Offload,
        offload: 0x10,
        reject: 0x20,
        offload_ends: OffloadEnds::Events,
        ha: None,
    };

    fn offloading() -> Decision {
        let mut d = Decision::accept(None);
        d.offload = true;
        d
    }

    #[test]
    fn accept_drop_and_held_are_final_or_deferred() {
        assert_eq!(
            kernel_verdict(&Decision::accept(None), 0x1, MARKS),
            Some((KernelVerdict::Accept, None))
        );
        assert_eq!(
            kernel_verdict(&Decision::drop(Reason::DefaultDeny, None), 0, MARKS),
            Some((KernelVerdict::Drop, None))
        );
        assert_eq!(kernel_verdict(&Decision::held(), 0, MARKS), None);
    }

    #[test]
    fn reject_and_offload_repeat_with_their_bit_added() {
        assert_eq!(
            kernel_verdict(&Decision::reject(Reason::FtpBounce, None), 0x1, MARKS),
            Some((KernelVerdict::Repeat, Some(0x21)))
        );
        assert_eq!(
            kernel_verdict(&offloading(), 0x1, MARKS),
            Some((KernelVerdict::Repeat, Some(0x11)))
        );
    }

    #[test]
    fn offload_is_plain_accept_when_already_offloaded_or_in_inspect_all() {
        assert_eq!(
            kernel_verdict(&offloading(), 0x10, MARKS),
            Some((KernelVerdict::Accept, None))
        );
        let inspect_all = VerdictMarks {
            mode: Mode::InspectAll,
            ..MARKS
        };
        assert_eq!(
            kernel_verdict(&offloading(), 0, inspect_all),
            Some((KernelVerdict::Accept, None))
        );
    }

    #[test]
    fn with_ha_an_accept_marks_the_connection_admitted_until_the_kernel_says_it_is() {
        let ha = VerdictMarks {
            ha: Some(HaMarks {
                admitted: 0x40,
                synced: 0x80,
            }),
            ..MARKS
        };
        assert_eq!(
            kernel_verdict(&Decision::accept(None), 0x1, ha),
            Some((KernelVerdict::Repeat, Some(0x41)))
        );
        assert_eq!(
            kernel_verdict(&offloading(), 0, ha),
            Some((KernelVerdict::Repeat, Some(0x50)))
        );
        // The kernel's entry already carries the admitted mark.
        assert_eq!(
            kernel_verdict(&Decision::accept(None), 0x80, ha),
            Some((KernelVerdict::Accept, None))
        );
        // A drop marks nothing; a reject repeats with the reject bit only (its rule clears
        // the admitted mark).
        assert_eq!(
            kernel_verdict(&Decision::drop(Reason::DefaultDeny, None), 0, ha),
            Some((KernelVerdict::Drop, None))
        );
        assert_eq!(
            kernel_verdict(&Decision::reject(Reason::FtpBounce, None), 0, ha),
            Some((KernelVerdict::Repeat, Some(0x20)))
        );
    }
}
