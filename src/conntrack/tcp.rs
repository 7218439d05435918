//! TCP connection tracking with sequence-window validation.
//!
//! The model is the one pf and netfilter use, after G. van Rooij, "Real Stateful TCP Packet
//! Filtering in IP Filter" (2001): for each side remember the highest sequence number it sent
//! (`seqlo`), the highest it may send given what the other side acknowledged and advertised
//! (`seqhi`), and the largest window it advertised. A segment passes only when
//!
//! 1. its last octet fits the receiver's window: `end <= src.seqhi`;
//! 2. it starts no more than one window before what was already sent:
//!    `seq >= src.seqlo - dst.max_win`;
//! 3. it acknowledges nothing the other side has not sent (RFC 9293 section 3.10.7.4):
//!    `ack <= dst.seqlo`, and not more than a window backwards.
//!
//! The handshake is checked exactly (the SYN-ACK must acknowledge the SYN, the third segment
//! must acknowledge the SYN-ACK), a RST must fall in the receiver's window (RFC 9293 section
//! 3.10.7.3 / RFC 5961 section 3), and a SYN on an established connection is refused
//! (RFC 5961 section 4). Flows picked up mid-stream (an option for captures) cannot know the
//! window scale, so their windows are not checked.

use crate::conntrack::key::Direction;
use crate::decision::Reason;
use crate::wire::{TcpFlags, TcpSegment};
use serde::{Deserialize, Serialize};

/// Where a TCP connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TcpState {
    /// The initiator sent a SYN; no answer yet.
    SynSent,
    /// The responder answered with a SYN-ACK.
    SynReceived,
    /// The initiator acknowledged the SYN-ACK.
    Established,
    /// One side sent a FIN.
    FinWait,
    /// Both sides sent a FIN; at least one is not acknowledged yet.
    Closing,
    /// Both FINs were acknowledged; late retransmissions are still let through.
    TimeWait,
    /// A RST ended the connection.
    Closed,
}

impl TcpState {
    /// Stable lower-case name (for `pinhole sessions` and logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            TcpState::SynSent => "syn_sent",
            TcpState::SynReceived => "syn_received",
            TcpState::Established => "established",
            TcpState::FinWait => "fin_wait",
            TcpState::Closing => "closing",
            TcpState::TimeWait => "time_wait",
            TcpState::Closed => "closed",
        }
    }

    /// True before the handshake completes (these flows are evicted first under pressure).
    pub const fn is_embryonic(self) -> bool {
        matches!(self, TcpState::SynSent | TcpState::SynReceived)
    }
}

/// What the tracker says about one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpVerdict {
    /// The segment fits the connection.
    Accept,
    /// A SYN reusing the tuple of a finished connection: drop this flow and treat the segment
    /// as the first of a new one.
    Reopen,
    /// The segment does not fit.
    Drop(Reason),
}

/// Largest acknowledgement lag accepted beyond the window (pf's `MAXACKWINDOW` fudge).
const ACK_SLACK: u32 = 0xffff + 1500;
/// Largest window scale shift (RFC 7323 section 2.3).
const MAX_WSCALE: u8 = 14;

/// One side of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Peer {
    /// Initial sequence number.
    isn: u32,
    /// One past the highest sequence number this side sent.
    seqlo: u32,
    /// One past the highest sequence number this side may send (other side's ack + window).
    seqhi: u32,
    /// Highest acknowledgement the other side sent for this side's data.
    acked: u32,
    /// Largest window this side advertised, in bytes (scaled).
    max_win: u32,
    /// Window scale this side announced in its SYN.
    wscale: Option<u8>,
    /// Sequence number of this side's FIN.
    fin_seq: Option<u32>,
    /// The other side acknowledged this side's FIN.
    fin_acked: bool,
    /// A segment from this side was seen (only false for the responder before its SYN-ACK,
    /// or either side of a picked-up flow).
    seen: bool,
}

/// State of one tracked TCP connection. 60 bytes; see the flow-size benchmark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpTracker {
    state: TcpState,
    /// Original (initiator) and reply (responder) sides.
    peers: [Peer; 2],
    /// Both SYNs carried a window scale option, so windows are scaled (RFC 7323 section 2.2).
    scaled: bool,
    /// Picked up mid-stream: window checks are off.
    loose: bool,
    /// For a picked-up flow: the other side answered with a plausible acknowledgement.
    confirmed: bool,
    /// Closed by a RST one end sent (not by an inspector's rejection): see `on_segment`.
    #[serde(default)]
    reset_seen: bool,
}

/// `a < b` in sequence space (RFC 9293 section 3.4).
fn seq_lt(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).cast_signed() < 0
}
fn seq_leq(a: u32, b: u32) -> bool {
    !seq_lt(b, a)
}
fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}
fn seq_geq(a: u32, b: u32) -> bool {
    !seq_lt(a, b)
}

/// True for flag combinations a conforming stack sends, after masking PSH, ECE and CWR (the same table
/// netfilter's `tcp_valid_flags` uses). Everything else (SYN+FIN, SYN+RST, no flags, FIN
/// without ACK, ...) is a scan or an evasion attempt.
pub fn valid_flags(flags: TcpFlags) -> bool {
    const F: u8 = TcpFlags::FIN;
    const S: u8 = TcpFlags::SYN;
    const R: u8 = TcpFlags::RST;
    const A: u8 = TcpFlags::ACK;
    const U: u8 = TcpFlags::URG;
    let core = flags.0 & (F | S | R | A | U);
    matches!(
        core,
        x if x == S || x == S | U || x == S | A || x == R || x == R | A
            || x == F | A || x == F | A | U || x == A || x == A | U
    )
}

impl TcpTracker {
    /// Starts tracking from the initiator's SYN. The caller checks `seg` is a SYN without ACK.
    pub fn from_syn(seg: &TcpSegment<'_>) -> Self {
        let mut tracker = TcpTracker {
            state: TcpState::SynSent,
            peers: [Peer::default(); 2],
            scaled: false,
            loose: false,
            confirmed: true,
            reset_seen: false,
        };
        tracker.init_syn(Direction::Original, seg);
        tracker
    }

    /// Starts tracking a connection already under way (mid-stream pickup) from a segment sent
    /// in direction `dir`. Windows are not validated for such flows, since their scale factors
    /// were negotiated before we looked.
    pub fn picked_up(dir: Direction, seg: &TcpSegment<'_>) -> Self {
        let mut tracker = TcpTracker {
            state: TcpState::Established,
            peers: [Peer::default(); 2],
            scaled: false,
            loose: true,
            confirmed: false,
            reset_seen: false,
        };
        tracker.init_loose(dir, seg);
        if seg.flags.fin() {
            tracker.peers[dir.index()].fin_seq = Some(seg.seq.wrapping_add(seg_len(seg)));
            tracker.state = TcpState::FinWait;
        }
        tracker
    }

    /// True when an ICMP error quoting sequence number `seq` of a segment sent from `dir` can
    /// be about this connection: within a window of what that side sent (as pf checks).
    pub fn seq_plausible(&self, dir: Direction, seq: u32) -> bool {
        let src = &self.peers[dir.index()];
        let dst = &self.peers[dir.opposite().index()];
        self.loose
            || !src.seen
            || (seq_geq(seq_max(src.seqhi, src.seqlo), seq)
                && seq_geq(
                    seq,
                    src.seqlo.wrapping_sub(dst.max_win.max(1)).wrapping_sub(1),
                ))
    }

    /// Where the connection is.
    pub fn state(&self) -> TcpState {
        self.state
    }

    /// True when this flow was picked up mid-stream.
    pub fn is_picked_up(&self) -> bool {
        self.loose
    }

    /// True until the connection is confirmed: the handshake is not complete, or a picked-up
    /// flow has not been answered yet. Such flows are evicted first and time out sooner.
    pub fn is_embryonic(&self) -> bool {
        self.state.is_embryonic() || !self.confirmed
    }

    /// Sequence number of the first data byte from `dir`: the one after the SYN, or for a
    /// picked-up flow the first byte seen. `None` before that side was seen.
    pub fn stream_start(&self, dir: Direction) -> Option<u32> {
        let peer = &self.peers[dir.index()];
        if !peer.seen {
            None
        } else if self.loose {
            Some(peer.isn)
        } else {
            Some(peer.isn.wrapping_add(1))
        }
    }

    /// Payload bytes `dir` sent: from its first data byte to the highest sequence number it
    /// sent, its FIN not counted, so retransmissions count once. `None` for a picked-up or
    /// handed-over connection (its start is a guess) or a side never seen.
    pub fn payload_sent(&self, dir: Direction) -> Option<u64> {
        let peer = &self.peers[dir.index()];
        if self.loose || !peer.seen {
            return None;
        }
        let start = peer.isn.wrapping_add(1);
        // `fin_seq` is the FIN's own sequence number: one past the last data byte.
        let end = peer.fin_seq.unwrap_or(peer.seqlo);
        Some(u64::from(end.wrapping_sub(start)))
    }

    /// Hands a connection to the kernel from its opening SYN on (offload mode: a data
    /// connection a pinhole admitted). The kernel's connection tracking checks the handshake
    /// and the windows from here, so the connection counts as established (the established
    /// timeout, out of the embryonic set) and, since the responder's side was never seen,
    /// windows are not checked here any more, as for a picked-up flow.
    pub fn hand_over(&mut self) {
        if self.state == TcpState::SynSent {
            self.state = TcpState::Established;
            self.loose = true;
            self.confirmed = true;
        }
    }

    /// Ends the connection as a RST would (an inspector rejected it): nothing more passes.
    pub fn reset(&mut self) {
        self.state = TcpState::Closed;
        self.reset_seen = false;
    }

    /// Follows a FIN or RST of a connection the kernel carries (offload mode). The data in
    /// between was never seen, so sequence numbers cannot be checked: the kernel's own
    /// connection tracking validated the segment before handing it over. Both FINs end the
    /// connection in `TimeWait` (the last acknowledgement is not seen either).
    pub fn on_offloaded_segment(&mut self, dir: Direction, seg: &TcpSegment<'_>) {
        let flags = seg.flags;
        if self.state == TcpState::Closed {
            // Reset already: a late FIN must not bring it back.
            return;
        }
        if flags.rst() {
            self.state = TcpState::Closed;
            return;
        }
        if flags.fin() {
            let peer = &mut self.peers[dir.index()];
            peer.seen = true;
            if peer.fin_seq.is_none() {
                peer.fin_seq = Some(seg.seq.wrapping_add(seg_len(seg)));
            }
            let [a, b] = &self.peers;
            self.state = if a.fin_seq.is_some() && b.fin_seq.is_some() {
                TcpState::TimeWait
            } else {
                TcpState::FinWait
            };
        }
    }

    /// Judges `seg`, sent from `dir`, and advances the state when it fits.
    pub fn on_segment(&mut self, dir: Direction, seg: &TcpSegment<'_>) -> TcpVerdict {
        if !valid_flags(seg.flags) {
            return TcpVerdict::Drop(Reason::TcpInvalidFlags);
        }
        let flags = seg.flags;
        match self.state {
            TcpState::SynSent => self.in_syn_sent(dir, seg),
            TcpState::SynReceived => self.in_syn_received(dir, seg),
            TcpState::Closed => {
                if flags.syn() && !flags.ack() {
                    TcpVerdict::Reopen
                } else if self.reset_seen && !flags.syn() {
                    // RFC 5961 section 3.2: a receiver takes a RST only at exactly the
                    // sequence number it expects. One that arrives ahead of the data or FIN
                    // before it (reordered after this firewall) is answered with a challenge
                    // ACK, and the peer, whose socket is gone, answers that with an exact RST.
                    // Both must pass, or the receiver retransmits into a dead connection until
                    // it gives up. So segments that fit the windows still pass; the flow stays
                    // closed and leaves at the closed timeout.
                    let verdict = self.track(dir, seg);
                    self.state = TcpState::Closed;
                    verdict
                } else {
                    TcpVerdict::Drop(Reason::TcpAfterReset)
                }
            }
            TcpState::Established | TcpState::FinWait | TcpState::Closing | TcpState::TimeWait => {
                if flags.syn() {
                    if self.state == TcpState::TimeWait && !flags.ack() {
                        // A new connection on the same tuple (RFC 9293 section 3.10.7.4,
                        // TIME-WAIT): judged afresh as a new flow.
                        return TcpVerdict::Reopen;
                    }
                    let reply = &self.peers[Direction::Reply.index()];
                    let retransmitted_synack = dir == Direction::Reply
                        && flags.ack()
                        && seg.seq == reply.isn
                        && seq_gt(seg.ack, self.peers[0].isn)
                        && seq_leq(seg.ack, self.peers[0].seqlo);
                    if retransmitted_synack && !self.loose {
                        // The third segment was lost after passing us; the responder repeats
                        // its SYN-ACK. Harmless, and the handshake needs it.
                        return TcpVerdict::Accept;
                    }
                    return TcpVerdict::Drop(Reason::TcpSynInEstablished);
                }
                self.track(dir, seg)
            }
        }
    }

    fn in_syn_sent(&mut self, dir: Direction, seg: &TcpSegment<'_>) -> TcpVerdict {
        let flags = seg.flags;
        let orig = self.peers[Direction::Original.index()];
        match dir {
            Direction::Original => {
                if flags.syn() && !flags.ack() {
                    // Retransmitted SYN, possibly with a new ISN after a timeout.
                    self.init_syn(Direction::Original, seg);
                    TcpVerdict::Accept
                } else if flags.rst() {
                    // The initiator gives up: its RST carries the sequence after the SYN.
                    if seg.seq == orig.seqlo || seg.seq == orig.isn {
                        self.state = TcpState::Closed;
                        TcpVerdict::Accept
                    } else {
                        TcpVerdict::Drop(Reason::TcpRstOutOfWindow)
                    }
                } else {
                    TcpVerdict::Drop(Reason::TcpHandshakeViolation)
                }
            }
            Direction::Reply => {
                // RFC 9293 section 3.10.7.3: an ACK is acceptable when SND.UNA < SEG.ACK <=
                // SND.NXT (a SYN carrying data, RFC 7413, may be acknowledged only in part).
                let acks_syn =
                    flags.ack() && seq_gt(seg.ack, orig.isn) && seq_leq(seg.ack, orig.seqlo);
                if flags.syn() && flags.ack() {
                    if !acks_syn {
                        return TcpVerdict::Drop(Reason::TcpBadSynAck);
                    }
                    self.init_syn(Direction::Reply, seg);
                    self.state = TcpState::SynReceived;
                    TcpVerdict::Accept
                } else if flags.rst() {
                    // RFC 9293 section 3.10.7.3 (SYN-SENT): a RST is acceptable if its ACK
                    // acknowledges the SYN: the connection was refused.
                    if acks_syn {
                        self.state = TcpState::Closed;
                        TcpVerdict::Accept
                    } else {
                        TcpVerdict::Drop(Reason::TcpRstOutOfWindow)
                    }
                } else {
                    // A bare SYN (simultaneous open) or an ACK before any SYN-ACK.
                    TcpVerdict::Drop(Reason::TcpHandshakeViolation)
                }
            }
        }
    }

    fn in_syn_received(&mut self, dir: Direction, seg: &TcpSegment<'_>) -> TcpVerdict {
        let flags = seg.flags;
        let orig = self.peers[Direction::Original.index()];
        let reply = self.peers[Direction::Reply.index()];
        if flags.syn() {
            return match dir {
                Direction::Original if !flags.ack() && seg.seq == orig.isn => TcpVerdict::Accept,
                Direction::Reply
                    if flags.ack()
                        && seg.seq == reply.isn
                        && seq_gt(seg.ack, orig.isn)
                        && seq_leq(seg.ack, orig.seqlo) =>
                {
                    TcpVerdict::Accept
                }
                Direction::Reply if flags.ack() => TcpVerdict::Drop(Reason::TcpBadSynAck),
                _ => TcpVerdict::Drop(Reason::TcpHandshakeViolation),
            };
        }
        if dir == Direction::Original && flags.ack() && !flags.rst() {
            // The third segment acknowledges the SYN-ACK, and perhaps data the responder sent
            // since (TFO); data may ride along.
            if !(seq_gt(seg.ack, reply.isn) && seq_leq(seg.ack, reply.seqlo)) {
                return TcpVerdict::Drop(Reason::TcpHandshakeViolation);
            }
            let verdict = self.track(dir, seg);
            if verdict == TcpVerdict::Accept && self.state == TcpState::SynReceived {
                self.state = TcpState::Established;
            }
            return verdict;
        }
        // A RST from either side, or responder data before the third segment (TCP Fast Open,
        // RFC 7413 section 4.2): ordinary window checks.
        self.track(dir, seg)
    }

    fn init_syn(&mut self, dir: Direction, seg: &TcpSegment<'_>) {
        let other_max_win = self.peers[dir.opposite().index()].max_win;
        let end = seg.seq.wrapping_add(seg.seq_len());
        let peer = &mut self.peers[dir.index()];
        *peer = Peer {
            isn: seg.seq,
            seqlo: end,
            // What the other side may accept is unknown until it answers; its SYN-ACK window
            // (unscaled, RFC 7323 section 2.2) bounds it once known.
            seqhi: end.wrapping_add(other_max_win.max(1)),
            acked: seg.seq,
            max_win: u32::from(seg.window).max(1),
            wscale: seg.wscale,
            fin_seq: None,
            fin_acked: false,
            seen: true,
        };
        if dir == Direction::Reply {
            // The SYN-ACK acknowledges the SYN and advertises the responder's window.
            self.scaled = self.peers[0].wscale.is_some() && self.peers[1].wscale.is_some();
            let orig = &mut self.peers[Direction::Original.index()];
            orig.acked = seg.ack;
            orig.seqhi = seg.ack.wrapping_add(u32::from(seg.window).max(1));
        }
    }

    fn init_loose(&mut self, dir: Direction, seg: &TcpSegment<'_>) {
        let end = seg.seq.wrapping_add(seg.seq_len());
        self.peers[dir.index()] = Peer {
            isn: seg.seq,
            seqlo: end,
            seqhi: end,
            acked: seg.seq,
            max_win: u32::from(seg.window) << MAX_WSCALE,
            wscale: None,
            fin_seq: None,
            fin_acked: false,
            seen: true,
        };
    }

    /// Window shift for segments from `dir` (zero on SYN segments and unscaled connections).
    fn shift(&self, dir: Direction, seg: &TcpSegment<'_>) -> u32 {
        if !self.scaled || seg.flags.syn() {
            0
        } else {
            u32::from(self.peers[dir.index()].wscale.unwrap_or(0).min(MAX_WSCALE))
        }
    }

    /// The window checks and state updates for a segment in a synchronized state.
    fn track(&mut self, dir: Direction, seg: &TcpSegment<'_>) -> TcpVerdict {
        let (s, d) = (dir.index(), dir.opposite().index());
        if self.loose && !self.peers[s].seen {
            self.init_loose(dir, seg);
            // The answer confirms the picked-up flow if it acknowledges nothing the first side
            // did not send.
            let first = &self.peers[d];
            if seg.flags.ack()
                && seq_leq(seg.ack, first.seqlo)
                && seq_geq(seg.ack, first.isn.wrapping_sub(1 << 30))
            {
                self.confirmed = true;
            }
        }
        let flags = seg.flags;
        let win = u32::from(seg.window) << self.shift(dir, seg);
        let seq = seg.seq;
        let end = seq.wrapping_add(seg.seq_len());
        let ack = if flags.ack() {
            seg.ack
        } else {
            self.peers[d].seqlo
        };
        let src = self.peers[s];
        let dst = self.peers[d];

        if !self.loose {
            let in_window =
                seq_geq(src.seqhi, end) && seq_geq(seq, src.seqlo.wrapping_sub(dst.max_win.max(1)));
            // An ACK may lag behind what the other side sent by up to this side's window.
            let ack_slack = ACK_SLACK.max(src.max_win);
            let ack_ok = seq_leq(ack, dst.seqlo) && seq_geq(ack, dst.seqlo.wrapping_sub(ack_slack));
            if flags.rst() {
                // RFC 5961 section 3: only a RST whose sequence number is exactly the one the
                // receiver expects resets the connection; any other (in the window or not) is
                // what a blind attacker sends. The sender's next sequence number (pf's seqlo,
                // +-1 for stacks that count the FIN), or the acknowledgement it was sent in
                // answer to, is exact.
                let near_next = seq.wrapping_sub(src.seqlo).cast_signed().abs() <= 1;
                if !(near_next || seq == src.acked) {
                    return TcpVerdict::Drop(Reason::TcpRstOutOfWindow);
                }
            } else if !in_window || !ack_ok {
                return TcpVerdict::Drop(Reason::TcpOutOfWindow);
            }
        }
        if let Some(fin) = src.fin_seq {
            // Nothing may follow the FIN in sequence space.
            if seq_gt(end, fin.wrapping_add(1)) {
                return TcpVerdict::Drop(Reason::TcpDataAfterFin);
            }
        }

        // The segment fits: update both sides.
        let src = &mut self.peers[s];
        src.seen = true;
        src.max_win = src.max_win.max(win);
        if seq_gt(end, src.seqlo) {
            src.seqlo = end;
        }
        if flags.fin() && src.fin_seq.is_none() {
            src.fin_seq = Some(seq.wrapping_add(seg_len(seg)));
        }
        if flags.ack() {
            let dst = &mut self.peers[d];
            if seq_geq(ack.wrapping_add(win), dst.seqhi) {
                dst.seqhi = ack.wrapping_add(win.max(1));
            }
            if seq_gt(ack, dst.acked) {
                dst.acked = ack;
            }
            if let Some(fin) = dst.fin_seq
                && seq_geq(ack, fin.wrapping_add(1))
            {
                dst.fin_acked = true;
            }
        }
        if flags.rst() {
            self.state = TcpState::Closed;
            self.reset_seen = true;
        } else if self.state != TcpState::SynReceived {
            self.state = self.closing_state();
        }
        TcpVerdict::Accept
    }

    fn closing_state(&self) -> TcpState {
        let [a, b] = &self.peers;
        match (a.fin_seq.is_some(), b.fin_seq.is_some()) {
            (true, true) if a.fin_acked && b.fin_acked => TcpState::TimeWait,
            (true, true) => TcpState::Closing,
            (true, false) | (false, true) => TcpState::FinWait,
            (false, false) => TcpState::Established,
        }
    }
}

fn seg_len(seg: &TcpSegment<'_>) -> u32 {
    u32::try_from(seg.payload.len()).unwrap_or(u32::MAX)
}

/// The later of two sequence numbers.
fn seq_max(a: u32, b: u32) -> u32 {
    if seq_geq(a, b) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Original as O, Reply as R};

    const A: u8 = TcpFlags::ACK;
    const S: u8 = TcpFlags::SYN;
    const F: u8 = TcpFlags::FIN;
    const RST: u8 = TcpFlags::RST;
    const P: u8 = TcpFlags::PSH;

    const ISN_O: u32 = 1000;
    const ISN_R: u32 = 5000;

    fn seg(flags: u8, seq: u32, ack: u32, payload: &'static [u8]) -> TcpSegment<'static> {
        TcpSegment {
            sport: 40000,
            dport: 21,
            seq,
            ack,
            flags: TcpFlags(flags),
            window: 64000,
            wscale: None,
            urgent: 0,
            payload,
            bytes: payload,
        }
    }

    fn syn() -> TcpSegment<'static> {
        seg(S, ISN_O, 0, b"")
    }
    fn synack() -> TcpSegment<'static> {
        seg(S | A, ISN_R, ISN_O + 1, b"")
    }

    /// A connection after the three-way handshake.
    fn established() -> TcpTracker {
        let mut t = TcpTracker::from_syn(&syn());
        assert_eq!(t.on_segment(R, &synack()), TcpVerdict::Accept);
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 1, ISN_R + 1, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Established);
        t
    }

    fn drop(reason: Reason) -> TcpVerdict {
        TcpVerdict::Drop(reason)
    }

    #[test]
    fn after_a_rst_the_challenge_ack_and_the_exact_rst_pass() {
        // The client sent data and its FIN, then a RST; a reordering link behind the firewall
        // delivers the RST ahead of the FIN, so the server answers with a challenge ACK
        // (RFC 5961 section 3.2) and goes on retransmitting its own data.
        let mut t = established();
        let data = seg(A | TcpFlags::PSH, ISN_O + 1, ISN_R + 1, b"0123456789");
        assert_eq!(t.on_segment(O, &data), TcpVerdict::Accept);
        let fin = seg(A | TcpFlags::FIN, ISN_O + 11, ISN_R + 1, b"");
        assert_eq!(t.on_segment(O, &fin), TcpVerdict::Accept);
        let reply = seg(A | TcpFlags::PSH, ISN_R + 1, ISN_O + 12, b"ticket");
        assert_eq!(t.on_segment(R, &reply), TcpVerdict::Accept);
        assert_eq!(
            t.on_segment(O, &seg(TcpFlags::RST, ISN_O + 12, 0, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Closed);
        // The challenge ACK, and the retransmission, fit the windows: they pass.
        assert_eq!(
            t.on_segment(R, &seg(A, ISN_R + 7, ISN_O + 11, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.on_segment(R, &reply), TcpVerdict::Accept);
        // The client's answer, an exact RST, passes too; the flow stays closed.
        assert_eq!(
            t.on_segment(O, &seg(TcpFlags::RST, ISN_O + 12, 0, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Closed);
        // What does not fit the windows is still refused.
        assert_eq!(
            t.on_segment(R, &seg(A, ISN_R + 900_000, ISN_O + 12, b"x")),
            drop(Reason::TcpOutOfWindow)
        );
        // A connection an inspector rejected lets nothing more through.
        let mut t = established();
        t.reset();
        assert_eq!(
            t.on_segment(R, &seg(A, ISN_R + 1, ISN_O + 1, b"")),
            drop(Reason::TcpAfterReset)
        );
    }

    // ---- handshake -------------------------------------------------------------------------

    #[test]
    fn syn_starts_in_syn_sent() {
        let t = TcpTracker::from_syn(&syn());
        assert_eq!(t.state(), TcpState::SynSent);
        assert!(t.state().is_embryonic());
    }

    #[test]
    fn syn_sent_to_syn_received_on_matching_synack() {
        let mut t = TcpTracker::from_syn(&syn());
        assert_eq!(t.on_segment(R, &synack()), TcpVerdict::Accept);
        assert_eq!(t.state(), TcpState::SynReceived);
    }

    #[test]
    fn syn_sent_refuses_synack_with_wrong_ack() {
        let mut t = TcpTracker::from_syn(&syn());
        assert_eq!(
            t.on_segment(R, &seg(S | A, ISN_R, ISN_O + 7, b"")),
            drop(Reason::TcpBadSynAck)
        );
        assert_eq!(t.state(), TcpState::SynSent);
    }

    #[test]
    fn syn_sent_accepts_retransmitted_syn_even_with_new_isn() {
        let mut t = TcpTracker::from_syn(&syn());
        assert_eq!(t.on_segment(O, &syn()), TcpVerdict::Accept);
        assert_eq!(t.on_segment(O, &seg(S, 9000, 0, b"")), TcpVerdict::Accept);
        // The SYN-ACK must now acknowledge the new ISN.
        assert_eq!(t.on_segment(R, &synack()), drop(Reason::TcpBadSynAck));
        assert_eq!(
            t.on_segment(R, &seg(S | A, ISN_R, 9001, b"")),
            TcpVerdict::Accept
        );
    }

    #[test]
    fn syn_sent_refuses_data_and_acks_before_synack() {
        let mut t = TcpTracker::from_syn(&syn());
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 1, 1, b"x")),
            drop(Reason::TcpHandshakeViolation)
        );
        assert_eq!(
            t.on_segment(R, &seg(A, ISN_R, ISN_O + 1, b"")),
            drop(Reason::TcpHandshakeViolation)
        );
        // Simultaneous open is not supported: a bare SYN from the responder.
        assert_eq!(
            t.on_segment(R, &seg(S, ISN_R, 0, b"")),
            drop(Reason::TcpHandshakeViolation)
        );
    }

    #[test]
    fn syn_sent_to_closed_on_refusal() {
        let mut t = TcpTracker::from_syn(&syn());
        assert_eq!(
            t.on_segment(R, &seg(RST | A, 0, ISN_O + 1, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Closed);
    }

    #[test]
    fn syn_sent_refuses_blind_rst() {
        let mut t = TcpTracker::from_syn(&syn());
        assert_eq!(
            t.on_segment(R, &seg(RST | A, 0, ISN_O + 99, b"")),
            drop(Reason::TcpRstOutOfWindow)
        );
        assert_eq!(
            t.on_segment(R, &seg(RST, 0, 0, b"")),
            drop(Reason::TcpRstOutOfWindow)
        );
        assert_eq!(
            t.on_segment(O, &seg(RST, ISN_O + 500, 0, b"")),
            drop(Reason::TcpRstOutOfWindow)
        );
        assert_eq!(t.state(), TcpState::SynSent);
    }

    #[test]
    fn syn_sent_initiator_may_abort() {
        let mut t = TcpTracker::from_syn(&syn());
        assert_eq!(
            t.on_segment(O, &seg(RST, ISN_O + 1, 0, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Closed);
    }

    #[test]
    fn syn_received_to_established_on_third_segment() {
        let t = established();
        assert!(!t.state().is_embryonic());
    }

    #[test]
    fn syn_received_third_segment_may_carry_data() {
        let mut t = TcpTracker::from_syn(&syn());
        t.on_segment(R, &synack());
        assert_eq!(
            t.on_segment(O, &seg(A | P, ISN_O + 1, ISN_R + 1, b"USER x\r\n")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Established);
    }

    #[test]
    fn syn_received_refuses_wrong_third_ack() {
        let mut t = TcpTracker::from_syn(&syn());
        t.on_segment(R, &synack());
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 1, ISN_R + 9, b"")),
            drop(Reason::TcpHandshakeViolation)
        );
        assert_eq!(t.state(), TcpState::SynReceived);
    }

    #[test]
    fn syn_received_tolerates_retransmissions_only() {
        let mut t = TcpTracker::from_syn(&syn());
        t.on_segment(R, &synack());
        assert_eq!(t.on_segment(O, &syn()), TcpVerdict::Accept);
        assert_eq!(t.on_segment(R, &synack()), TcpVerdict::Accept);
        assert_eq!(
            t.on_segment(R, &seg(S | A, ISN_R + 1, ISN_O + 1, b"")),
            drop(Reason::TcpBadSynAck)
        );
        assert_eq!(
            t.on_segment(O, &seg(S, 7, 0, b"")),
            drop(Reason::TcpHandshakeViolation)
        );
        assert_eq!(t.state(), TcpState::SynReceived);
    }

    #[test]
    fn fast_open_synack_may_acknowledge_only_the_syn() {
        // RFC 7413: the SYN carries data; the SYN-ACK acknowledges just the SYN.
        let mut t = TcpTracker::from_syn(&seg(S, ISN_O, 0, b"USER a\r\n"));
        assert_eq!(
            t.on_segment(R, &seg(S | A, ISN_R, ISN_O + 1, b"")),
            TcpVerdict::Accept
        );
        // The responder answers with data before the third segment, which acknowledges it.
        assert_eq!(
            t.on_segment(R, &seg(A | P, ISN_R + 1, ISN_O + 9, b"331 ok\r\n")),
            TcpVerdict::Accept
        );
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 9, ISN_R + 9, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Established);
        // But never beyond what was sent.
        let mut t = TcpTracker::from_syn(&seg(S, ISN_O, 0, b"xy"));
        assert_eq!(
            t.on_segment(R, &seg(S | A, ISN_R, ISN_O + 4, b"")),
            drop(Reason::TcpBadSynAck)
        );
    }

    #[test]
    fn syn_received_rst_in_window_closes() {
        let mut t = TcpTracker::from_syn(&syn());
        t.on_segment(R, &synack());
        assert_eq!(
            t.on_segment(O, &seg(RST, ISN_O + 1, 0, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Closed);
    }

    // ---- established -----------------------------------------------------------------------

    #[test]
    fn established_data_both_ways() {
        let mut t = established();
        assert_eq!(
            t.on_segment(R, &seg(A | P, ISN_R + 1, ISN_O + 1, b"220 hi\r\n")),
            TcpVerdict::Accept
        );
        assert_eq!(
            t.on_segment(O, &seg(A | P, ISN_O + 1, ISN_R + 9, b"USER a\r\n")),
            TcpVerdict::Accept
        );
        // Retransmission of the same data is fine.
        assert_eq!(
            t.on_segment(O, &seg(A | P, ISN_O + 1, ISN_R + 9, b"USER a\r\n")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Established);
    }

    #[test]
    fn established_refuses_segment_beyond_window() {
        let mut t = established();
        let far = ISN_O + 1 + 64000 + 10;
        assert_eq!(
            t.on_segment(O, &seg(A, far, ISN_R + 1, b"x")),
            drop(Reason::TcpOutOfWindow)
        );
    }

    #[test]
    fn established_refuses_segment_more_than_a_window_back() {
        let mut t = established();
        let old = ISN_O.wrapping_sub(70_000);
        assert_eq!(
            t.on_segment(O, &seg(A, old, ISN_R + 1, b"x")),
            drop(Reason::TcpOutOfWindow)
        );
    }

    #[test]
    fn established_refuses_ack_of_unsent_data() {
        let mut t = established();
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 1, ISN_R + 100, b"")),
            drop(Reason::TcpOutOfWindow)
        );
    }

    #[test]
    fn established_refuses_syn_from_either_side() {
        let mut t = established();
        assert_eq!(
            t.on_segment(O, &seg(S, 77, 0, b"")),
            drop(Reason::TcpSynInEstablished)
        );
        assert_eq!(
            t.on_segment(R, &seg(S | A, 78, ISN_O + 1, b"")),
            drop(Reason::TcpSynInEstablished)
        );
        assert_eq!(t.state(), TcpState::Established);
    }

    #[test]
    fn established_lets_a_retransmitted_synack_through() {
        let mut t = established();
        assert_eq!(t.on_segment(R, &synack()), TcpVerdict::Accept);
        assert_eq!(t.state(), TcpState::Established);
    }

    #[test]
    fn invalid_flag_combinations() {
        let mut t = established();
        for flags in [S | F, S | RST, 0, F, F | P | TcpFlags::URG, S | F | RST | A] {
            assert_eq!(
                t.on_segment(O, &seg(flags, ISN_O + 1, ISN_R + 1, b"")),
                drop(Reason::TcpInvalidFlags),
                "{flags:#x}"
            );
        }
    }

    #[test]
    fn rst_in_window_closes_and_later_only_what_fits_the_windows_passes() {
        let mut t = established();
        assert_eq!(
            t.on_segment(R, &seg(RST | A, ISN_R + 1, ISN_O + 1, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Closed);
        // What fits (a challenge ACK, a segment that was in flight) passes; the flow stays
        // closed (see after_a_rst_the_challenge_ack_and_the_exact_rst_pass).
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 1, ISN_R + 1, b"x")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Closed);
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 5_000_000, ISN_R + 1, b"x")),
            drop(Reason::TcpOutOfWindow)
        );
        // A new connection on the tuple.
        assert_eq!(t.on_segment(O, &syn()), TcpVerdict::Reopen);
    }

    #[test]
    fn inexact_rst_inside_the_window_is_refused() {
        // RFC 5961 section 3: a blind attacker guessing within the window does not win.
        let mut t = established();
        assert_eq!(
            t.on_segment(R, &seg(RST, ISN_R + 1 + 40_000, 0, b"")),
            drop(Reason::TcpRstOutOfWindow)
        );
        assert_eq!(
            t.on_segment(R, &seg(RST, ISN_R + 3, 0, b"")),
            drop(Reason::TcpRstOutOfWindow)
        );
        assert_eq!(t.state(), TcpState::Established);
        // One off is tolerated, as pf does.
        assert_eq!(
            t.on_segment(R, &seg(RST, ISN_R + 2, 0, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Closed);
    }

    #[test]
    fn rst_out_of_window_is_refused() {
        let mut t = established();
        assert_eq!(
            t.on_segment(R, &seg(RST, ISN_R + 200_000, 0, b"")),
            drop(Reason::TcpRstOutOfWindow)
        );
        // Before what the receiver already acknowledged.
        assert_eq!(
            t.on_segment(R, &seg(RST, ISN_R - 10, 0, b"")),
            drop(Reason::TcpRstOutOfWindow)
        );
        assert_eq!(t.state(), TcpState::Established);
    }

    // ---- teardown --------------------------------------------------------------------------

    #[test]
    fn fin_handshake_to_time_wait() {
        let mut t = established();
        assert_eq!(
            t.on_segment(O, &seg(F | A, ISN_O + 1, ISN_R + 1, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::FinWait);
        assert_eq!(
            t.on_segment(R, &seg(A, ISN_R + 1, ISN_O + 2, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::FinWait);
        assert_eq!(
            t.on_segment(R, &seg(F | A, ISN_R + 1, ISN_O + 2, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::Closing);
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 2, ISN_R + 2, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::TimeWait);
        // The last ACK retransmitted is fine.
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 2, ISN_R + 2, b"")),
            TcpVerdict::Accept
        );
    }

    #[test]
    fn fin_wait_half_close_still_carries_the_other_direction() {
        let mut t = established();
        t.on_segment(O, &seg(F | A, ISN_O + 1, ISN_R + 1, b""));
        assert_eq!(
            t.on_segment(R, &seg(A | P, ISN_R + 1, ISN_O + 2, b"data")),
            TcpVerdict::Accept
        );
        assert_eq!(t.state(), TcpState::FinWait);
    }

    #[test]
    fn data_after_fin_is_refused() {
        let mut t = established();
        t.on_segment(O, &seg(F | A, ISN_O + 1, ISN_R + 1, b""));
        assert_eq!(
            t.on_segment(O, &seg(A, ISN_O + 2, ISN_R + 1, b"more")),
            drop(Reason::TcpDataAfterFin)
        );
        // A retransmitted FIN is not.
        assert_eq!(
            t.on_segment(O, &seg(F | A, ISN_O + 1, ISN_R + 1, b"")),
            TcpVerdict::Accept
        );
    }

    #[test]
    fn time_wait_syn_reopens() {
        let mut t = established();
        t.on_segment(O, &seg(F | A, ISN_O + 1, ISN_R + 1, b""));
        t.on_segment(R, &seg(F | A, ISN_R + 1, ISN_O + 2, b""));
        t.on_segment(O, &seg(A, ISN_O + 2, ISN_R + 2, b""));
        assert_eq!(t.state(), TcpState::TimeWait);
        assert_eq!(t.on_segment(O, &seg(S, 90_000, 0, b"")), TcpVerdict::Reopen);
    }

    #[test]
    fn closed_syn_reopens() {
        let mut t = established();
        t.on_segment(O, &seg(RST, ISN_O + 1, 0, b""));
        assert_eq!(t.state(), TcpState::Closed);
        assert_eq!(t.on_segment(O, &seg(S, 90_000, 0, b"")), TcpVerdict::Reopen);
    }

    #[test]
    fn icmp_quoted_sequence_numbers() {
        let t = established();
        assert!(t.seq_plausible(O, ISN_O + 1));
        assert!(!t.seq_plausible(O, ISN_O + 500_000));
        assert!(!t.seq_plausible(R, ISN_R.wrapping_sub(200_000)));
    }

    // ---- windows ---------------------------------------------------------------------------

    #[test]
    fn window_scaling_applies_only_when_both_sides_offer_it() {
        let mut syn = syn();
        syn.wscale = Some(7);
        let mut t = TcpTracker::from_syn(&syn);
        let mut synack = synack();
        synack.wscale = Some(7);
        synack.window = 1000;
        t.on_segment(R, &synack);
        t.on_segment(O, &seg(A, ISN_O + 1, ISN_R + 1, b""));
        // The responder now advertises 1000 << 7 = 128000 bytes.
        let mut ack = seg(A, ISN_R + 1, ISN_O + 1, b"");
        ack.window = 1000;
        assert_eq!(t.on_segment(R, &ack), TcpVerdict::Accept);
        let far = ISN_O + 1 + 100_000;
        assert_eq!(
            t.on_segment(O, &seg(A, far, ISN_R + 1, b"x")),
            TcpVerdict::Accept
        );

        // Without the responder's option the window is not scaled: 100 KB ahead is too far.
        let mut t = TcpTracker::from_syn(&syn);
        synack.wscale = None;
        t.on_segment(R, &synack);
        t.on_segment(O, &seg(A, ISN_O + 1, ISN_R + 1, b""));
        assert_eq!(t.on_segment(R, &ack), TcpVerdict::Accept);
        assert_eq!(
            t.on_segment(O, &seg(A, far, ISN_R + 1, b"x")),
            drop(Reason::TcpOutOfWindow)
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = TcpTracker::from_syn(&seg(S, u32::MAX - 1, 0, b""));
        assert_eq!(
            t.on_segment(R, &seg(S | A, ISN_R, u32::MAX, b"")),
            TcpVerdict::Accept
        );
        assert_eq!(
            t.on_segment(O, &seg(A, u32::MAX, ISN_R + 1, b"abcd")),
            TcpVerdict::Accept
        );
        assert_eq!(
            t.on_segment(O, &seg(A, 3, ISN_R + 1, b"efgh")),
            TcpVerdict::Accept
        );
        assert_eq!(
            t.on_segment(R, &seg(A, ISN_R + 1, 7, b"")),
            TcpVerdict::Accept
        );
    }

    #[test]
    fn picked_up_flow_stays_unconfirmed_when_the_answer_acknowledges_unsent_data() {
        let mut t = TcpTracker::picked_up(O, &seg(A, 5000, 1, b"x"));
        assert_eq!(t.on_segment(R, &seg(A, 1, 9000, b"")), TcpVerdict::Accept);
        assert!(t.is_embryonic());
    }

    #[test]
    fn picked_up_flows_skip_window_checks_but_not_flag_checks() {
        let mut t = TcpTracker::picked_up(O, &seg(A | P, 123_456, 999, b"RETR x\r\n"));
        assert_eq!(t.state(), TcpState::Established);
        assert!(t.is_picked_up());
        assert_eq!(
            t.on_segment(R, &seg(A, 999, 123_464, b"150 ok\r\n")),
            TcpVerdict::Accept
        );
        assert_eq!(
            t.on_segment(O, &seg(S | F, 1, 1, b"")),
            drop(Reason::TcpInvalidFlags)
        );
        assert_eq!(
            t.on_segment(O, &seg(S, 1, 1, b"")),
            drop(Reason::TcpSynInEstablished)
        );
    }
}
