//! The kernel rules that send forwarded traffic to pinhole's queues, and carry out its marks.
//!
//! Everything lives in one chain, `PINHOLE`, jumped to from the top of `FORWARD` in the
//! `filter` table. The same script is valid for `iptables-restore --noflush` and
//! `ip6tables-restore --noflush`, with iptables-nft and iptables-legacy alike. (nft's own
//! `queue` statement needs `nft_queue`, which not every kernel ships; the iptables NFQUEUE
//! target works everywhere iptables does.)
//!
//! Marks: a verdict can only accept or drop a packet, and `NF_ACCEPT` ends the chain, so a rule
//! after the queue rule never sees an accepted packet. pinhole therefore answers
//! `NF_REPEAT` with a mark instead when it wants the kernel to do more, and the rules at the
//! top of the chain act on that mark when the packet comes through again:
//!
//! * the **reject mark**: the packet is rejected (a TCP reset, or ICMP port unreachable);
//! * the **offload mark** (offload mode): the mark is saved on the connection (connmark) and
//!   the packet accepted; from then on the kernel forwards that connection's packets itself,
//!   to its last one. pinhole learns that the connection ended from the kernel's destroy
//!   event (`io::ct_events`); with `--offload-ends segments` (for kernels without conntrack
//!   events) the FIN and RST segments are queued instead, with the offload mark set.
//!
//! On a NAT router the kernel's FTP and TFTP helpers translate what addresses in payloads and
//! data connections need; a second chain, `PINHOLE_HELPERS` in the `raw` table, attaches them
//! (`CT --helper ftp|tftp`) to new connections on the ports the policy inspects, before
//! connection tracking and NAT see the first packet (a helper attached later leaves the
//! connection without the sequence-adjustment extension NAT of FTP needs). pinhole still
//! judges every packet: the helpers only translate. See `crate::policy::KernelHelpers`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::policy::KernelHelpers;

/// Name of the chain pinhole owns.
pub const CHAIN: &str = "PINHOLE";

/// Name of the `raw`-table chain attaching the kernel's helpers.
pub const HELPER_CHAIN: &str = "PINHOLE_HELPERS";

/// How forwarded packets are split between the kernel and pinhole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// New connections and inspected flows are judged by pinhole; flows it admitted and no
    /// longer needs to inspect are carried by the kernel's connection tracking.
    Offload,
    /// Every forwarded packet is judged by pinhole.
    InspectAll,
}

impl Mode {
    /// The name used on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Offload => "offload",
            Mode::InspectAll => "inspect-all",
        }
    }
}

/// Which iptables flavour installs the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavour {
    /// Whatever `iptables-restore` is on this system.
    Auto,
    /// `iptables-nft-restore` (nf_tables backend).
    Nft,
    /// `iptables-legacy-restore` (x_tables backend).
    Legacy,
}

impl Flavour {
    /// The `iptables` and `iptables-restore` commands for IPv4 or IPv6.
    fn commands(self, v6: bool) -> (String, String) {
        let family = if v6 { "ip6tables" } else { "iptables" };
        let suffix = match self {
            Flavour::Auto => "",
            Flavour::Nft => "-nft",
            Flavour::Legacy => "-legacy",
        };
        (
            format!("{family}{suffix}"),
            format!("{family}{suffix}-restore"),
        )
    }
}

/// The two mark bits of a router in a failover pair (`run --ha`), where conntrackd carries
/// the kernel's connection tracking entries, their connection marks included, to the peer.
///
/// * `admitted`: a connection mark. pinhole sets it on every connection it admits (an accept
///   verdict `NF_REPEAT` with this packet mark bit, which the rules save on the connection),
///   and clears it on a connection it rejects.
/// * `synced`: a packet mark. The rules set it on a queued packet whose kernel entry carries
///   `admitted` and either existed before this packet (`--ctstatus CONFIRMED`: committed by
///   conntrackd at a takeover, or admitted here earlier) or was created from an expectation
///   of such a connection (`--ctstate RELATED`: the kernel's FTP helper expected it, and a
///   connection created from an expectation starts with its master's mark, `init_conntrack`
///   in `net/netfilter/nf_conntrack_core.c`). It is the evidence a standby takes a connection
///   over by (see `crate::engine` on takeover).
///
/// The queue cannot attach the entry itself on every kernel (`NFQA_CT` needs
/// `CONFIG_NETFILTER_NETLINK_GLUE_CT`), and a mark always travels with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HaMarks {
    /// Connection mark bit: admitted by a pinhole.
    pub admitted: u32,
    /// Packet mark bit: the kernel's entry says admitted.
    pub synced: u32,
}

/// How pinhole learns that an offloaded connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OffloadEnds {
    /// From the kernel's connection tracking destroy events: the kernel forwards the whole
    /// connection, FIN and RST included (needs `CONFIG_NF_CONNTRACK_EVENTS`).
    Events,
    /// From its FIN and RST segments, which stay queued (one queue round trip each).
    Segments,
}

/// Everything the rules depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesConfig {
    /// The queues to balance over (one worker each).
    pub queues: RangeInclusive<u16>,
    /// Offload or inspect-all.
    pub mode: Mode,
    /// Accept packets instead of dropping them when nobody listens on the queue.
    pub fail_open: bool,
    /// The mark bit meaning "offload this connection" / "an offloaded connection".
    pub offload_mark: u32,
    /// The mark bit meaning "reject this packet".
    pub reject_mark: u32,
    /// The kernel helpers to attach, by port (none: no `raw` chain).
    pub helpers: KernelHelpers,
    /// How an offloaded connection's end reaches pinhole (offload mode).
    pub offload_ends: OffloadEnds,
    /// A router of a failover pair: the marks that carry admissions over (`None`: a single
    /// router).
    pub ha: Option<HaMarks>,
}

impl RulesConfig {
    /// The `iptables-restore --noflush` script.
    pub fn script(&self) -> String {
        let mut s = String::new();
        let o = self.offload_mark;
        let r = self.reject_mark;
        let _ = writeln!(
            s,
            "# pinhole kernel rules: mode {}, queues {}-{}, fail-{}.",
            self.mode.as_str(),
            self.queues.start(),
            self.queues.end(),
            if self.fail_open { "open" } else { "closed" }
        );
        let _ = writeln!(
            s,
            "# Load with `iptables-restore --noflush` and `ip6tables-restore --noflush`; remove with\n\
             # `iptables -D FORWARD -j {CHAIN}; iptables -F {CHAIN}; iptables -X {CHAIN}` (and ip6tables).\n\
             # Keep your FORWARD policy DROP: pinhole accepts what it admits, and its rules act only\n\
             # while they are loaded."
        );
        s.push_str("*filter\n");
        let _ = writeln!(s, ":{CHAIN} - [0:0]");
        let _ = writeln!(s, "-I FORWARD 1 -j {CHAIN}");
        if let Some(ha) = self.ha {
            // A rejected connection is not admitted: the peer must not take it over.
            let admitted = ha.admitted;
            let _ = writeln!(
                s,
                "-A {CHAIN} -m mark --mark {r:#x}/{r:#x} -j CONNMARK --set-xmark 0x0/{admitted:#x}"
            );
        }
        let _ = writeln!(
            s,
            "-A {CHAIN} -p tcp -m mark --mark {r:#x}/{r:#x} -j REJECT --reject-with tcp-reset"
        );
        let _ = writeln!(s, "-A {CHAIN} -m mark --mark {r:#x}/{r:#x} -j REJECT");
        if self.mode == Mode::Offload {
            let _ = writeln!(
                s,
                "-A {CHAIN} -m mark --mark {o:#x}/{o:#x} -m connmark ! --mark {o:#x}/{o:#x} -j CONNMARK --set-xmark {o:#x}/{o:#x}"
            );
        }
        if let Some(ha) = self.ha {
            let admitted = ha.admitted;
            let _ = writeln!(
                s,
                "-A {CHAIN} -m mark --mark {admitted:#x}/{admitted:#x} -m connmark ! --mark {admitted:#x}/{admitted:#x} -j CONNMARK --set-xmark {admitted:#x}/{admitted:#x}"
            );
        }
        if self.mode == Mode::Offload {
            match self.offload_ends {
                OffloadEnds::Events => {
                    let _ = writeln!(s, "-A {CHAIN} -m connmark --mark {o:#x}/{o:#x} -j ACCEPT");
                }
                OffloadEnds::Segments => {
                    let _ = writeln!(
                        s,
                        "-A {CHAIN} -m connmark --mark {o:#x}/{o:#x} -p tcp --tcp-flags FIN,RST NONE -j ACCEPT"
                    );
                    let _ = writeln!(
                        s,
                        "-A {CHAIN} -m connmark --mark {o:#x}/{o:#x} ! -p tcp -j ACCEPT"
                    );
                    let _ = writeln!(
                        s,
                        "-A {CHAIN} -m connmark --mark {o:#x}/{o:#x} -j MARK --set-xmark {o:#x}/{o:#x}"
                    );
                }
            }
        }
        if let Some(ha) = self.ha {
            let (admitted, synced) = (ha.admitted, ha.synced);
            // The packet pinhole just admitted (after the offload rules: an offloaded one is
            // the kernel's from here).
            let _ = writeln!(
                s,
                "-A {CHAIN} -m mark --mark {admitted:#x}/{admitted:#x} -j ACCEPT"
            );
            for evidence in ["--ctstatus CONFIRMED", "--ctstate RELATED"] {
                let _ = writeln!(
                    s,
                    "-A {CHAIN} -m connmark --mark {admitted:#x}/{admitted:#x} -m conntrack {evidence} -j MARK --set-xmark {synced:#x}/{synced:#x}"
                );
            }
        }
        let queue = if self.queues.start() == self.queues.end() {
            format!("--queue-num {}", self.queues.start())
        } else {
            format!(
                "--queue-balance {}:{}",
                self.queues.start(),
                self.queues.end()
            )
        };
        let bypass = if self.fail_open {
            " --queue-bypass"
        } else {
            ""
        };
        let _ = writeln!(s, "-A {CHAIN} -j NFQUEUE {queue}{bypass}");
        s.push_str("COMMIT\n");
        self.helper_script(&mut s);
        s
    }

    /// The `raw` table part: the kernel's helpers on the inspected ports.
    fn helper_script(&self, s: &mut String) {
        if self.helpers.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "# The kernel's FTP/TFTP helpers translate addresses in payloads and data connections\n\
             # on a NAT router; pinhole still judges every packet. Remove with\n\
             # `iptables -t raw -D PREROUTING -j {HELPER_CHAIN}; iptables -t raw -F {HELPER_CHAIN};\n\
             # iptables -t raw -X {HELPER_CHAIN}` (and ip6tables)."
        );
        s.push_str("*raw\n");
        let _ = writeln!(s, ":{HELPER_CHAIN} - [0:0]");
        let _ = writeln!(s, "-I PREROUTING 1 -j {HELPER_CHAIN}");
        helper_rules(&self.helpers, s);
        s.push_str("COMMIT\n");
    }
}

/// The `-A PINHOLE_HELPERS` lines for `helpers`.
fn helper_rules(helpers: &KernelHelpers, s: &mut String) {
    for (proto, helper, ports) in [("tcp", "ftp", &helpers.ftp), ("udp", "tftp", &helpers.tftp)] {
        for range in ports {
            let port = if range.start() == range.end() {
                range.start().to_string()
            } else {
                format!("{}:{}", range.start(), range.end())
            };
            let _ = writeln!(
                s,
                "-A {HELPER_CHAIN} -p {proto} --dport {port} -j CT --helper {helper}"
            );
        }
    }
}

/// The script that replaces the helper chain's rules with `helpers` (after a reload): one
/// `raw`-table transaction, the chain and its jump kept, so no new connection misses its helper
/// in between.
pub fn helpers_replacement(helpers: &KernelHelpers) -> String {
    let mut s = String::from("*raw\n");
    let _ = writeln!(s, ":{HELPER_CHAIN} - [0:0]");
    let _ = writeln!(s, "-F {HELPER_CHAIN}");
    helper_rules(helpers, &mut s);
    s.push_str("COMMIT\n");
    s
}

/// Installs and removes the rules for both address families.
pub struct Installer {
    flavour: Flavour,
}

impl Installer {
    /// An installer using `flavour`.
    pub fn new(flavour: Flavour) -> Self {
        Installer { flavour }
    }

    /// Removes any earlier copy (a daemon that was killed leaves its chain), then loads the
    /// rules for IPv4 and IPv6. On failure nothing stays loaded.
    pub fn install(&self, config: &RulesConfig) -> Result<(), String> {
        self.remove();
        let script = config.script();
        for v6 in [false, true] {
            if let Err(err) = self.restore(v6, &script) {
                self.remove();
                return Err(err);
            }
        }
        Ok(())
    }

    /// Replaces the rules of the helper chain with `helpers`, for both families (the chain
    /// must be installed: [`Installer::install`] with helpers).
    pub fn replace_helpers(&self, helpers: &KernelHelpers) -> Result<(), String> {
        let script = helpers_replacement(helpers);
        for v6 in [false, true] {
            self.restore(v6, &script)?;
        }
        Ok(())
    }

    /// Removes the jump and the chain for both families; quiet when they are not there.
    pub fn remove(&self) {
        for v6 in [false, true] {
            let (iptables, _) = self.flavour.commands(v6);
            // Every jump (a killed daemon restarted by hand may have left more than one).
            for _ in 0..16 {
                if !run_quiet(&iptables, &["-w", "-D", "FORWARD", "-j", CHAIN]) {
                    break;
                }
            }
            run_quiet(&iptables, &["-w", "-F", CHAIN]);
            run_quiet(&iptables, &["-w", "-X", CHAIN]);
            for _ in 0..16 {
                if !run_quiet(
                    &iptables,
                    &["-w", "-t", "raw", "-D", "PREROUTING", "-j", HELPER_CHAIN],
                ) {
                    break;
                }
            }
            run_quiet(&iptables, &["-w", "-t", "raw", "-F", HELPER_CHAIN]);
            run_quiet(&iptables, &["-w", "-t", "raw", "-X", HELPER_CHAIN]);
        }
    }

    fn restore(&self, v6: bool, script: &str) -> Result<(), String> {
        let (_, restore) = self.flavour.commands(v6);
        let mut child = Command::new(&restore)
            .args(["--noflush", "-w"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot run {restore}: {err} (install the iptables package)"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|err| format!("{restore}: {err}"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|err| format!("{restore}: {err}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{restore} refused the rules ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: Mode, queues: RangeInclusive<u16>, fail_open: bool) -> RulesConfig {
        RulesConfig {
            queues,
            mode,
            fail_open,
            offload_mark: 0x1000_0000,
            reject_mark: 0x2000_0000,
            helpers: KernelHelpers::default(),
            offload_ends: OffloadEnds::Events,
            ha: None,
        }
    }

    fn rules(script: &str) -> Vec<&str> {
        script.lines().filter(|l| l.starts_with("-A")).collect()
    }

    #[test]
    fn inspect_all_queues_everything_and_rejects_by_mark() {
        let script = config(Mode::InspectAll, 0..=3, false).script();
        assert!(script.contains("*filter\n:PINHOLE - [0:0]\n-I FORWARD 1 -j PINHOLE\n"));
        assert_eq!(
            rules(&script),
            vec![
                "-A PINHOLE -p tcp -m mark --mark 0x20000000/0x20000000 -j REJECT --reject-with tcp-reset",
                "-A PINHOLE -m mark --mark 0x20000000/0x20000000 -j REJECT",
                "-A PINHOLE -j NFQUEUE --queue-balance 0:3",
            ]
        );
        assert!(script.ends_with("COMMIT\n"));
        assert!(!script.contains("*raw"), "no helpers asked for");
    }

    #[test]
    fn helpers_are_attached_in_the_raw_table_by_port() {
        let mut config = config(Mode::Offload, 0..=0, false);
        config.helpers = KernelHelpers {
            ftp: vec![21..=21, 2121..=2122],
            tftp: vec![69..=69],
        };
        let script = config.script();
        let raw = &script[script.find("*raw\n").unwrap()..];
        assert!(
            raw.starts_with("*raw\n:PINHOLE_HELPERS - [0:0]\n-I PREROUTING 1 -j PINHOLE_HELPERS\n")
        );
        assert_eq!(
            rules(raw),
            vec![
                "-A PINHOLE_HELPERS -p tcp --dport 21 -j CT --helper ftp",
                "-A PINHOLE_HELPERS -p tcp --dport 2121:2122 -j CT --helper ftp",
                "-A PINHOLE_HELPERS -p udp --dport 69 -j CT --helper tftp",
            ]
        );
        assert!(raw.ends_with("COMMIT\n"));
        // After a reload with other ports: the chain's rules replaced in one transaction.
        let replaced = helpers_replacement(&KernelHelpers {
            ftp: vec![2121..=2121],
            tftp: Vec::new(),
        });
        assert_eq!(
            replaced,
            "*raw\n:PINHOLE_HELPERS - [0:0]\n-F PINHOLE_HELPERS\n-A PINHOLE_HELPERS -p tcp --dport 2121 -j CT --helper ftp\nCOMMIT\n"
        );
    }

    #[test]
    fn offload_saves_the_mark_and_leaves_the_connection_to_the_kernel() {
        let script = config(Mode::Offload, 0..=1, false).script();
        assert_eq!(
            rules(&script)[2..],
            [
                "-A PINHOLE -m mark --mark 0x10000000/0x10000000 -m connmark ! --mark 0x10000000/0x10000000 -j CONNMARK --set-xmark 0x10000000/0x10000000",
                "-A PINHOLE -m connmark --mark 0x10000000/0x10000000 -j ACCEPT",
                "-A PINHOLE -j NFQUEUE --queue-balance 0:1",
            ]
        );
    }

    #[test]
    fn offload_by_segments_still_queues_fin_and_rst() {
        let mut config = config(Mode::Offload, 0..=0, true);
        config.offload_ends = OffloadEnds::Segments;
        let script = config.script();
        let rules = rules(&script);
        assert_eq!(rules.len(), 7);
        assert!(rules[2].contains("-j CONNMARK --set-xmark 0x10000000/0x10000000"));
        assert!(rules[3].contains("--tcp-flags FIN,RST NONE -j ACCEPT"));
        assert!(rules[4].ends_with("! -p tcp -j ACCEPT"));
        assert!(rules[5].ends_with("-j MARK --set-xmark 0x10000000/0x10000000"));
        assert_eq!(
            rules[6],
            "-A PINHOLE -j NFQUEUE --queue-num 0 --queue-bypass"
        );
    }

    #[test]
    fn a_failover_pair_marks_admitted_connections_and_tells_pinhole_which_the_kernel_knows() {
        let mut config = config(Mode::Offload, 0..=0, false);
        config.ha = Some(HaMarks {
            admitted: 0x4000_0000,
            synced: 0x0800_0000,
        });
        let script = config.script();
        assert_eq!(
            rules(&script),
            [
                "-A PINHOLE -m mark --mark 0x20000000/0x20000000 -j CONNMARK --set-xmark 0x0/0x40000000",
                "-A PINHOLE -p tcp -m mark --mark 0x20000000/0x20000000 -j REJECT --reject-with tcp-reset",
                "-A PINHOLE -m mark --mark 0x20000000/0x20000000 -j REJECT",
                "-A PINHOLE -m mark --mark 0x10000000/0x10000000 -m connmark ! --mark 0x10000000/0x10000000 -j CONNMARK --set-xmark 0x10000000/0x10000000",
                "-A PINHOLE -m mark --mark 0x40000000/0x40000000 -m connmark ! --mark 0x40000000/0x40000000 -j CONNMARK --set-xmark 0x40000000/0x40000000",
                "-A PINHOLE -m connmark --mark 0x10000000/0x10000000 -j ACCEPT",
                "-A PINHOLE -m mark --mark 0x40000000/0x40000000 -j ACCEPT",
                "-A PINHOLE -m connmark --mark 0x40000000/0x40000000 -m conntrack --ctstatus CONFIRMED -j MARK --set-xmark 0x8000000/0x8000000",
                "-A PINHOLE -m connmark --mark 0x40000000/0x40000000 -m conntrack --ctstate RELATED -j MARK --set-xmark 0x8000000/0x8000000",
                "-A PINHOLE -j NFQUEUE --queue-num 0",
            ]
        );
    }
}
