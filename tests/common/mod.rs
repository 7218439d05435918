//! Test harness shared by the integration tests: an engine with a clock and packet numbering.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pinhole::conntrack::PortMatch;
use pinhole::event::{Event, PinholeAction};
use pinhole::policy::Policy;
use pinhole::wire::LinkType;
use pinhole::{Decision, Engine, Expired, Instant, PacketInfo, Reason, Verdict};

/// An engine with a clock (1 ms per packet) and packet numbering.
pub struct Harness {
    pub engine: Engine,
    pub now: Instant,
    pub next: u64,
}

impl Harness {
    /// An engine enforcing the policy text.
    pub fn new(policy: &str) -> Self {
        let policy = Policy::parse(policy, "test").unwrap();
        Harness::with(policy)
    }

    /// An engine enforcing the embedded default policy.
    pub fn default_policy() -> Self {
        Harness::with(Policy::embedded_default())
    }

    fn with(policy: Policy) -> Self {
        Harness {
            engine: Engine::new(Arc::new(policy)),
            now: Instant::from_secs(1000),
            next: 0,
        }
    }

    /// Processes a frame 1 ms after the previous one.
    pub fn send(&mut self, frame: &[u8]) -> Decision {
        self.now = self.now + Duration::from_millis(1);
        let info = PacketInfo::new(self.next, LinkType::Ethernet);
        self.next += 1;
        self.engine.process(self.now, &info, frame)
    }

    /// Processes a frame with what the kernel's connection tracking says about it.
    pub fn send_with_kernel(
        &mut self,
        frame: &[u8],
        kernel: Option<pinhole::conntrack::KernelConn>,
    ) -> Decision {
        self.now = self.now + Duration::from_millis(1);
        let mut info = PacketInfo::new(self.next, LinkType::Ethernet);
        info.kernel = kernel;
        self.next += 1;
        self.engine.process(self.now, &info, frame)
    }

    /// Processes a frame whose kernel entry says a pinhole admitted its connection (the
    /// synced mark of a failover pair's rules).
    pub fn send_synced(&mut self, frame: &[u8]) -> Decision {
        self.now = self.now + Duration::from_millis(1);
        let mut info = PacketInfo::new(self.next, LinkType::Ethernet);
        info.synced = true;
        self.next += 1;
        self.engine.process(self.now, &info, frame)
    }

    /// Processes a frame the kernel marked as part of an offloaded connection.
    pub fn send_offloaded(&mut self, frame: &[u8]) -> Decision {
        self.now = self.now + Duration::from_millis(1);
        let mut info = PacketInfo::new(self.next, LinkType::Ethernet);
        info.offloaded = true;
        self.next += 1;
        self.engine.process(self.now, &info, frame)
    }

    /// Processes a frame that must be accepted.
    pub fn accept(&mut self, frame: &[u8]) -> Decision {
        let d = self.send(frame);
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Accept, None),
            "expected accept: {d:?}"
        );
        d
    }

    /// Processes a frame that must be dropped for `reason`.
    pub fn drop(&mut self, frame: &[u8], reason: Reason) -> Decision {
        let d = self.send(frame);
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Drop, Some(reason)),
            "expected drop {reason}: {d:?}"
        );
        d
    }

    /// Processes a frame that must be rejected (dropped with a reset) for `reason`.
    pub fn reject(&mut self, frame: &[u8], reason: Reason) -> Decision {
        let d = self.send(frame);
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Reject, Some(reason)),
            "expected reject {reason}: {d:?}"
        );
        d
    }

    /// Moves the clock and runs the timers.
    pub fn advance(&mut self, secs: u64) -> Expired {
        self.now = self.now + Duration::from_secs(secs);
        self.engine.expire(self.now)
    }
}

/// The pinhole events of `wanted` kind among `events`: (peer, its port, destination, port).
pub fn pinhole_events(
    events: &[Event],
    wanted: PinholeAction,
) -> Vec<(IpAddr, PortMatch, IpAddr, u16)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Pinhole {
                action, pinhole, ..
            } if *action == wanted => {
                let o = pinhole.opening;
                Some((o.src, o.sport, o.dst, o.dport))
            }
            _ => None,
        })
        .collect()
}

/// The pinholes a decision opened: (peer, its port, destination, port).
pub fn opened(d: &Decision) -> Vec<(IpAddr, PortMatch, IpAddr, u16)> {
    pinhole_events(&d.events, PinholeAction::Open)
}

/// The reasons of the violations a decision reported.
pub fn violations(d: &Decision) -> Vec<Reason> {
    d.events
        .iter()
        .filter_map(|e| match e {
            Event::Violation { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}
