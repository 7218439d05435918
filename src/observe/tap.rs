//! A worker's side of the event log and the drop capture: turns its engine's decisions into
//! items for the [`super::Sink`], without blocking and without allocating when both are off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::conntrack::FlowTuple;
use crate::decision::{Decision, Expired, Released, Verdict};
use crate::event::Event;
use crate::output::is_contract_event;
use crate::wire::LinkType;

use super::sink::{Item, SinkHandle};

/// Most bytes of held packets (IP fragments waiting for their datagram) kept as copies, so
/// that a fragment dropped later can still be captured.
const HELD_BYTES: usize = 16 << 20;

/// One worker's tap.
#[derive(Debug)]
pub struct Tap {
    sink: Option<SinkHandle>,
    source: Arc<str>,
    link: LinkType,
    held: HashMap<u64, Vec<u8>>,
    held_bytes: usize,
}

impl Tap {
    /// A tap sending to `sink` (none: a tap that does nothing), naming its records' source
    /// `source` (`nfqueue:0`, `iface:eth1`), whose frames are framed as `link`.
    pub fn new(sink: Option<SinkHandle>, source: &str, link: LinkType) -> Tap {
        Tap {
            sink,
            source: Arc::from(source),
            link,
            held: HashMap::new(),
            held_bytes: 0,
        }
    }

    /// Reports what the engine decided about packet `packet`, whose bytes were `frame`.
    pub fn decision(&mut self, packet: u64, frame: &[u8], decision: &Decision) {
        let Some(sink) = self.sink.as_ref() else {
            return;
        };
        let at = SystemTime::now();
        if sink.capture
            && decision.verdict == Verdict::Held
            && self.held_bytes + frame.len() <= HELD_BYTES
        {
            self.held_bytes += frame.len();
            self.held.insert(packet, frame.to_vec());
        }
        self.released(&decision.released, at);
        if matches!(decision.verdict, Verdict::Drop | Verdict::Reject) {
            self.dropped(
                packet,
                at,
                decision.reason,
                decision.flow,
                decision.verdict,
                Some(frame),
            );
        }
        self.events(packet, &decision.events, at);
    }

    /// Reports what the timers did; `packet` is the last packet number seen.
    pub fn expired(&mut self, packet: u64, expired: &Expired) {
        if self.sink.is_none() {
            return;
        }
        let at = SystemTime::now();
        self.released(&expired.released, at);
        self.events(packet, &expired.events, at);
    }

    /// Reports events that came without a packet (a reload's).
    pub fn events(&mut self, packet: u64, events: &[Event], at: SystemTime) {
        let Some(sink) = self.sink.as_ref() else {
            return;
        };
        if !sink.events {
            return;
        }
        for event in events {
            if sink.flows || is_contract_event(event) {
                sink.send(Item::Event {
                    source: self.source.clone(),
                    packet,
                    at,
                    event: event.clone(),
                });
            }
        }
    }

    fn released(&mut self, released: &[Released], at: SystemTime) {
        for r in released {
            let frame = self.held.remove(&r.handle);
            if let Some(frame) = &frame {
                self.held_bytes -= frame.len();
            }
            if matches!(r.verdict, Verdict::Drop | Verdict::Reject) {
                self.dropped(r.handle, at, r.reason, r.flow, r.verdict, frame.as_deref());
            }
        }
    }

    fn dropped(
        &self,
        packet: u64,
        at: SystemTime,
        reason: Option<crate::decision::Reason>,
        flow: Option<FlowTuple>,
        verdict: Verdict,
        frame: Option<&[u8]>,
    ) {
        let Some(sink) = self.sink.as_ref() else {
            return;
        };
        if sink.events {
            sink.send(Item::Drop {
                source: self.source.clone(),
                packet,
                at,
                reason,
                flow,
                tuple: frame.and_then(|f| FlowTuple::of_frame(self.link, f)),
                reset: verdict == Verdict::Reject,
            });
        }
        if sink.capture
            && let Some(frame) = frame
        {
            sink.send_packet(at, frame);
        }
    }
}
