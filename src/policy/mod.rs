//! The policy: zones, ordered rules, a default action, timeouts and limits.
//!
//! A policy is read from a TOML rules file ([`Policy::from_file`], [`Policy::parse`]) or is the
//! embedded default ([`Policy::embedded_default`], `rules/default.toml`). Parsing validates
//! everything up front and reports each problem with file, line, column and a fix
//! ([`PolicyError`]); a compiled [`Policy`] cannot be wrong at run time.
//!
//! Rules are consulted once per new flow, first match wins. Packets of tracked flows, and new
//! flows admitted by a pinhole, do not consult the rules.

mod alg_options;
mod check;
mod error;
mod file;
mod helpers;
mod hint;
mod rule;
mod syntax;
#[cfg(test)]
mod test_errors;

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use error::{PolicyError, PolicyErrors};
pub use helpers::KernelHelpers;

use crate::alg::Inspect;
use crate::wire::transport::proto;

/// The embedded default policy's source.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.toml");

/// What a rule (or the default) does with a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Admit the flow and track it.
    Allow,
    /// Drop the packet; no state is created.
    Deny,
}

/// An interface name as the kernel knows it (at most 15 bytes, `IFNAMSIZ - 1`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfaceName {
    bytes: [u8; 16],
    len: u8,
}

impl IfaceName {
    /// Longest interface name Linux accepts.
    pub const MAX_LEN: usize = 15;

    /// An interface name, if `name` is one Linux could have: 1 to 15 bytes, no `/`, no
    /// whitespace, not `.` or `..`.
    pub fn new(name: &str) -> Option<IfaceName> {
        let valid = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name != "."
            && name != ".."
            && !name
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
        if !valid {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(IfaceName {
            bytes,
            len: name.len() as u8,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl fmt::Debug for IfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for IfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named part of the network, by interface and/or address prefix.
///
/// A packet's side (its source with the ingress interface, or its destination with the egress
/// interface) is in the zone when the interface is one of `interfaces` (if any are listed) and
/// the address is in one of `networks` (if any are listed). When the interface is not known,
/// as in a pcap replay, only `networks` decide, and a zone with interfaces but no networks
/// matches nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// The zone's name in the rules file.
    pub name: String,
    /// Interfaces that lead into the zone.
    pub interfaces: Vec<IfaceName>,
    /// Address prefixes of the zone.
    pub networks: Vec<IpNet>,
}

impl Zone {
    fn contains(&self, iface: Option<IfaceName>, addr: IpAddr) -> bool {
        let by_iface = match iface {
            Some(iface) => self.interfaces.is_empty() || self.interfaces.contains(&iface),
            None => !self.networks.is_empty(),
        };
        by_iface
            && (self.networks.is_empty() || self.networks.iter().any(|net| net.contains(&addr)))
    }
}

/// Which zone a rule's `from` or `to` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneRef {
    /// `any` (or omitted): every packet.
    Any,
    /// Index into [`Policy::zones`].
    Zone(usize),
}

/// Which protocols a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoMatch {
    /// Every protocol.
    Any,
    /// ICMP and ICMPv6.
    Icmp,
    /// One IP protocol number (`tcp` = 6, `udp` = 17, or a number).
    Number(u8),
}

impl ProtoMatch {
    fn matches(self, number: u8) -> bool {
        match self {
            ProtoMatch::Any => true,
            ProtoMatch::Icmp => number == proto::ICMP || number == proto::ICMPV6,
            ProtoMatch::Number(n) => n == number,
        }
    }
}

/// One rule of the ordered rule list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name (from the file, or `rule-N` by position); events name it.
    pub name: Arc<str>,
    /// Where the new flow comes from.
    pub from: ZoneRef,
    /// Where it goes.
    pub to: ZoneRef,
    /// Which protocols.
    pub proto: ProtoMatch,
    /// Destination ports (TCP/UDP); empty means every port.
    pub ports: Vec<RangeInclusive<u16>>,
    /// Allow or deny.
    pub action: Action,
    /// The inspector (with its options) for flows this rule admits.
    pub inspect: Option<Inspect>,
}

/// Index of a rule in [`Policy::rules`].
pub type RuleId = usize;

/// Timeouts: how long state lives without traffic. All configurable under `[timeouts]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP before the handshake completes.
    pub tcp_handshake: Duration,
    /// Established TCP (Cisco `ip inspect tcp idle-time` defaults to an hour too).
    pub tcp_established: Duration,
    /// TCP after one side sent FIN.
    pub tcp_fin_wait: Duration,
    /// TCP after both sides sent FIN, until both are acknowledged.
    pub tcp_closing: Duration,
    /// TCP after both FINs were acknowledged (2 MSL).
    pub tcp_time_wait: Duration,
    /// TCP after a RST.
    pub tcp_closed: Duration,
    /// UDP before any reply.
    pub udp_unreplied: Duration,
    /// UDP after a reply.
    pub udp_replied: Duration,
    /// ICMP echo flows.
    pub icmp: Duration,
    /// Other protocols.
    pub other: Duration,
    /// Reassembly of a fragmented datagram (RFC 8200 section 4.5: 60 s at most).
    pub fragment: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_handshake: Duration::from_secs(30),
            tcp_established: Duration::from_secs(3600),
            tcp_fin_wait: Duration::from_secs(120),
            tcp_closing: Duration::from_secs(30),
            tcp_time_wait: Duration::from_secs(120),
            tcp_closed: Duration::from_secs(10),
            udp_unreplied: Duration::from_secs(30),
            udp_replied: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
            other: Duration::from_secs(60),
            fragment: Duration::from_secs(30),
        }
    }
}

/// Table sizes: hard caps, each with an eviction rule or a counted refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Tracked flows per engine. When full, a handshake-stage flow (or unanswered UDP) is
    /// evicted first, then the flow closest to its timeout.
    pub max_flows: usize,
    /// Flows one address may initiate through the rules (a SYN flood from one source, a
    /// scan). Beyond it, its new flows are dropped as `flow_source_limit`; flows admitted by
    /// pinholes are not counted against it.
    pub max_flows_per_source: usize,
    /// Pending pinholes per engine; when full, new pinholes are refused (and counted).
    pub max_pinholes: usize,
    /// Pending pinholes negotiated by one client (the address that opened the control
    /// connection or sent the TFTP requests), over all its connections. Beyond it, new
    /// pinholes are refused like a full table.
    pub max_pinholes_per_client: usize,
    /// Bytes the FTP inspectors of one engine hold in all (unacknowledged and out-of-order
    /// control-stream bytes, partial lines): beyond it, control segments that carry data are
    /// dropped as `ftp_reassembly_limit` (TCP sends them again) until acknowledgements free
    /// room. Each connection has its own smaller caps too.
    pub max_stream_bytes: usize,
    /// Datagrams under reassembly; when full, the oldest is evicted.
    pub max_fragment_datagrams: usize,
    /// Bytes held for reassembly; when full, the oldest datagrams are evicted.
    pub max_fragment_bytes: usize,
    /// Fragments of one datagram.
    pub max_fragments_per_datagram: usize,
    /// Fragments held in all, waiting for their datagrams. Inline, every held fragment
    /// occupies a slot of the kernel's queue, so keep this below the queue length. When full,
    /// the oldest datagram is evicted.
    pub max_fragments_held: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: 262_144,
            max_flows_per_source: 16_384,
            max_pinholes: 65_536,
            max_pinholes_per_client: 256,
            max_stream_bytes: 64 << 20,
            max_fragment_datagrams: 1024,
            max_fragment_bytes: 4 << 20,
            max_fragments_per_datagram: 64,
            max_fragments_held: 1024,
        }
    }
}

/// TCP tracking options under `[tcp]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// Track connections whose handshake was not seen (for captures that start mid-stream).
    /// Their windows are not validated. Off by default: a segment without a handshake is
    /// dropped, which is what closes the "permit established" hole.
    pub midstream_pickup: bool,
}

/// A validated, compiled policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Where the policy came from (a path, or `<embedded default>`).
    pub origin: String,
    /// Zones, in the order of their names.
    pub zones: Vec<Zone>,
    /// Rules, in evaluation order.
    pub rules: Vec<Rule>,
    /// What happens to a new flow no rule matches.
    pub default_action: Action,
    /// State timeouts.
    pub timeouts: Timeouts,
    /// Table caps.
    pub limits: Limits,
    /// TCP options.
    pub tcp: TcpOptions,
}

/// The facts about a new flow that rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowContext {
    /// Interface the first packet arrived on, if known.
    pub ingress: Option<IfaceName>,
    /// Interface it leaves by, if known.
    pub egress: Option<IfaceName>,
    /// Initiator address.
    pub src: IpAddr,
    /// Responder address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Responder port (0 for protocols without ports).
    pub dport: u16,
}

/// The outcome of consulting the rules for a new flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    /// The rule that matched, or `None` for the default action.
    pub rule: Option<RuleId>,
    /// What to do.
    pub action: Action,
    /// The inspector to attach (only with [`Action::Allow`]).
    pub inspect: Option<Inspect>,
}

impl Policy {
    /// The embedded default policy (`rules/default.toml`).
    pub fn embedded_default() -> Policy {
        match file::parse(DEFAULT_RULES, "<embedded default>") {
            Ok(policy) => policy,
            // The embedded file is checked by a unit test; this cannot happen in a release.
            Err(errors) => unreachable!("embedded default policy is invalid: {errors}"),
        }
    }

    /// Parses and validates policy text. `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyErrors> {
        file::parse(text, origin)
    }

    /// Reads, parses and validates a rules file.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyErrors> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| {
            PolicyErrors(vec![PolicyError {
                origin: origin.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read the rules file: {err}"),
                help: "check the path and that the file is readable".to_owned(),
            }])
        })?;
        file::parse(&text, &origin)
    }

    /// The same rules with no inspector attached: what the policy does without an ALG (each
    /// rule keeps the ports its inspector implied). For comparisons (`pinhole run
    /// --no-inspect`): passive and active data connections and TFTP replies from new ports are
    /// then refused, as on a firewall without inspection.
    #[must_use]
    pub fn without_inspection(mut self) -> Policy {
        for rule in &mut self.rules {
            rule.inspect = None;
        }
        self
    }

    /// The first rule matching a new flow, or the default action.
    pub fn evaluate(&self, flow: &FlowContext) -> RuleMatch {
        for (id, rule) in self.rules.iter().enumerate() {
            if self.rule_matches(rule, flow) {
                return RuleMatch {
                    rule: Some(id),
                    action: rule.action,
                    inspect: rule.inspect.clone(),
                };
            }
        }
        RuleMatch {
            rule: None,
            action: self.default_action,
            inspect: None,
        }
    }

    fn rule_matches(&self, rule: &Rule, flow: &FlowContext) -> bool {
        rule.proto.matches(flow.proto)
            && (rule.ports.is_empty() || rule.ports.iter().any(|range| range.contains(&flow.dport)))
            && self.zone_matches(rule.from, flow.ingress, flow.src)
            && self.zone_matches(rule.to, flow.egress, flow.dst)
    }

    fn zone_matches(&self, zone: ZoneRef, iface: Option<IfaceName>, addr: IpAddr) -> bool {
        match zone {
            ZoneRef::Any => true,
            ZoneRef::Zone(index) => self
                .zones
                .get(index)
                .is_some_and(|z| z.contains(iface, addr)),
        }
    }

    /// The rule with this id.
    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(src: &str, dst: &str, proto: u8, dport: u16) -> FlowContext {
        FlowContext {
            ingress: None,
            egress: None,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            dport,
        }
    }

    #[test]
    fn embedded_default_policy() {
        let policy = Policy::embedded_default();
        assert_eq!(policy.default_action, Action::Deny);
        assert!(!policy.tcp.midstream_pickup);
        let ftp = policy.evaluate(&ctx("198.51.100.10", "192.0.2.10", proto::TCP, 21));
        assert_eq!(
            (ftp.action, ftp.inspect.map(|i| i.alg())),
            (Action::Allow, Some(crate::alg::Alg::Ftp))
        );
        let tftp = policy.evaluate(&ctx("2001:db8::1", "2001:db8::2", proto::UDP, 69));
        assert_eq!(
            (tftp.action, tftp.inspect.map(|i| i.alg())),
            (Action::Allow, Some(crate::alg::Alg::Tftp))
        );
        for (p, port) in [
            (proto::TCP, 22),
            (proto::UDP, 21),
            (proto::TCP, 69),
            (proto::ICMP, 0),
        ] {
            let m = policy.evaluate(&ctx("198.51.100.10", "192.0.2.10", p, port));
            assert_eq!((m.rule, m.action), (None, Action::Deny), "{p}/{port}");
        }
    }

    #[test]
    fn without_inspection_keeps_the_ports_and_drops_the_inspectors() {
        let policy = Policy::embedded_default().without_inspection();
        let ftp = policy.evaluate(&ctx("198.51.100.10", "192.0.2.10", proto::TCP, 21));
        assert_eq!((ftp.action, ftp.inspect), (Action::Allow, None));
        let data = policy.evaluate(&ctx("198.51.100.10", "192.0.2.10", proto::TCP, 40000));
        assert_eq!((data.rule, data.action), (None, Action::Deny));
    }

    #[test]
    fn zones_by_interface_and_network() {
        let policy = Policy::parse(
            r#"
            [zones.inside]
            interfaces = ["lan0"]
            networks = ["192.0.2.0/24"]
            [zones.outside]
            interfaces = ["wan0"]
            [[rule]]
            from = "outside"
            to = "inside"
            proto = "tcp"
            ports = [80]
            action = "allow"
            "#,
            "test",
        )
        .unwrap();
        let wan0 = IfaceName::new("wan0");
        let lan0 = IfaceName::new("lan0");
        let mut flow = ctx("198.51.100.10", "192.0.2.10", proto::TCP, 80);
        // Interfaces unknown: "outside" has no networks, so it matches nothing.
        assert_eq!(policy.evaluate(&flow).action, Action::Deny);
        flow.ingress = wan0;
        flow.egress = lan0;
        assert_eq!(policy.evaluate(&flow).action, Action::Allow);
        // Right interface, wrong network.
        flow.dst = "203.0.113.5".parse().unwrap();
        assert_eq!(policy.evaluate(&flow).action, Action::Deny);
        // Wrong ingress interface.
        flow.dst = "192.0.2.10".parse().unwrap();
        flow.ingress = lan0;
        assert_eq!(policy.evaluate(&flow).action, Action::Deny);
    }

    #[test]
    fn first_match_wins() {
        let policy = Policy::parse(
            r#"
            default_action = "allow"
            [[rule]]
            name = "no-telnet"
            proto = "tcp"
            ports = [23]
            action = "deny"
            [[rule]]
            proto = "tcp"
            ports = ["1-1024"]
            action = "allow"
            "#,
            "test",
        )
        .unwrap();
        let telnet = policy.evaluate(&ctx("1.1.1.1", "2.2.2.2", proto::TCP, 23));
        assert_eq!((telnet.rule, telnet.action), (Some(0), Action::Deny));
        assert_eq!(&*policy.rules[0].name, "no-telnet");
        assert_eq!(&*policy.rules[1].name, "rule-2");
        let other = policy.evaluate(&ctx("1.1.1.1", "2.2.2.2", proto::UDP, 5000));
        assert_eq!((other.rule, other.action), (None, Action::Allow));
    }

    #[test]
    fn interface_names() {
        assert!(IfaceName::new("eth0").is_some());
        assert!(IfaceName::new("a-very-long-nam").is_some());
        assert!(IfaceName::new("a-very-long-name").is_none());
        assert!(IfaceName::new("").is_none());
        assert!(IfaceName::new("a/b").is_none());
        assert_eq!(IfaceName::new("wan0").unwrap().as_str(), "wan0");
    }
}
