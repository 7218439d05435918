//! The kernel's connection tracking helpers a policy needs on a NAT router: `ftp` for the
//! ports of rules that inspect FTP, `tftp` for those that inspect TFTP. The kernel's helpers
//! (`nf_conntrack_ftp`/`nf_nat_ftp`, `nf_conntrack_tftp`/`nf_nat_tftp`) translate what pinhole
//! cannot: the addresses in FTP payloads (with the TCP sequence adjustments that follow), and
//! the data connections and TFTP transfers of translated sessions. pinhole still judges every
//! packet of those connections; see ARCHITECTURE.md, "Behind NAT".

use std::ops::RangeInclusive;

use crate::alg::Inspect;
use crate::conntrack::FlowTuple;
use crate::wire::transport::proto;

use super::{Action, Policy, ProtoMatch};

/// Which ports get which kernel helper.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelHelpers {
    /// TCP destination ports of rules that inspect FTP.
    pub ftp: Vec<RangeInclusive<u16>>,
    /// UDP destination ports of rules that inspect TFTP.
    pub tftp: Vec<RangeInclusive<u16>>,
}

impl KernelHelpers {
    /// The helpers a router needs: all of [`KernelHelpers::of`], or on a router of a
    /// failover pair (`run --ha`) the FTP helper only. The FTP helper's expectations are how a
    /// pending pinhole reaches the peer (conntrackd's `ExpectationSync`). The TFTP helper's
    /// would tie each transfer to its request's entry, and conntrackd commits an entry with a
    /// master only while the master exists (`ctnetlink_create_conntrack` answers ENOENT): a
    /// request's entry, never answered from port 69, leaves 30 s after it came, so a longer
    /// transfer could not be carried over. Without the helper a transfer is an entry of its
    /// own, which carries pinhole's admitted mark whatever its age. The price: on a pair that
    /// translates addresses, TFTP is not translated.
    pub fn for_router(policy: &Policy, failover_pair: bool) -> Self {
        let mut helpers = KernelHelpers::of(policy);
        if failover_pair {
            helpers.tftp.clear();
        }
        helpers
    }

    /// The helpers `policy` needs: its allowing rules with an inspector, by port (an
    /// inspected rule always has ports: its protocol's well-known one when it names none).
    pub fn of(policy: &Policy) -> Self {
        let mut helpers = KernelHelpers::default();
        for rule in &policy.rules {
            let (Action::Allow, Some(inspect)) = (rule.action, &rule.inspect) else {
                continue;
            };
            let (list, number) = match inspect {
                Inspect::Ftp(_) => (&mut helpers.ftp, proto::TCP),
                Inspect::Tftp(_) => (&mut helpers.tftp, proto::UDP),
            };
            if !matches!(rule.proto, ProtoMatch::Number(n) if n == number) {
                continue;
            }
            for ports in &rule.ports {
                if !list.contains(ports) {
                    list.push(ports.clone());
                }
            }
        }
        helpers
    }

    /// True when the kernel's helper follows the connection of a packet with tuple `packet`
    /// (either direction): the only packets whose entry the worker asks the kernel for.
    pub fn covers(&self, packet: &FlowTuple) -> bool {
        let list = match packet.proto {
            proto::TCP => &self.ftp,
            proto::UDP => &self.tftp,
            _ => return false,
        };
        list.iter()
            .any(|r| r.contains(&packet.dport) || r.contains(&packet.sport))
    }

    /// True when no helper is needed.
    pub fn is_empty(&self) -> bool {
        self.ftp.is_empty() && self.tftp.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspected_ports_get_their_helper() {
        let policy = Policy::parse(
            r#"
default_action = "deny"
[[rule]]
name = "ftp"
proto = "tcp"
ports = [21, "2121-2122"]
action = "allow"
inspect = "ftp"
[[rule]]
name = "tftp"
proto = "udp"
ports = [69]
action = "allow"
inspect = "tftp"
[[rule]]
name = "ftp-default-port"
proto = "tcp"
action = "allow"
inspect = "ftp"
[[rule]]
name = "web"
proto = "tcp"
ports = [80]
action = "allow"
"#,
            "t.toml",
        )
        .unwrap();
        let helpers = KernelHelpers::of(&policy);
        assert_eq!(helpers.ftp, vec![21..=21, 2121..=2122]);
        assert_eq!(helpers.tftp, vec![69..=69]);
        let t = |proto, sport, dport| FlowTuple {
            proto,
            src: "10.0.0.1".parse().unwrap(),
            sport,
            dst: "10.0.0.2".parse().unwrap(),
            dport,
        };
        assert!(helpers.covers(&t(proto::TCP, 40000, 2122)));
        assert!(
            helpers.covers(&t(proto::TCP, 21, 40000)),
            "the reply direction"
        );
        assert!(!helpers.covers(&t(proto::TCP, 40000, 80)));
        assert!(!helpers.covers(&t(proto::UDP, 40000, 21)));
        assert!(helpers.covers(&t(proto::UDP, 69, 1234)));
    }
}
