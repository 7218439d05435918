//! A worker's source of the kernel's connection tracking entries (see
//! [`crate::conntrack::kernel`] for what the engine does with them), for the packets of
//! connections the kernel's helpers follow (the inspected FTP and TFTP ports): the only ones
//! whose payloads the kernel rewrites.
//!
//! The entry comes with the queued packet (`NFQA_CT`) when the kernel can attach it.
//! Otherwise it is asked for over ctnetlink, and kept per connection: an entry changes only
//! when the kernel's helper rewrites a segment, which it does only to segments carrying one of
//! the commands and replies it looks for (`PORT`, `EPRT`, `227 `, `229 `: the `search` table of
//! `net/netfilter/nf_conntrack_ftp.c`). Such a segment marks its connection's entry stale; the
//! helper rewrites it when pinhole's verdict reaches the kernel (inside the `send` of the
//! verdicts), so the entry is asked for again by the first packet judged after the next
//! verdicts went out. Packets judged before that cannot depend on the rewrite: they left
//! their sender before the rewritten segment was forwarded. So a control connection costs one
//! query per rewritable segment instead of one per packet; either way the engine gets the
//! same facts. A connection the kernel does not translate is asked for once: its entry never
//! changes.

use std::io;
use std::sync::Once;

use hashbrown::HashMap;

use crate::conntrack::{FlowKey, FlowTuple, KernelConn};
use crate::event::Event;
use crate::io::ctnetlink::{self, ConnFacts, CtQuery};
use crate::io::nfqueue::{QueueSocket, QueuedPacket};
use crate::observe::LIFECYCLE;
use crate::policy::KernelHelpers;
use crate::wire::{LinkType, Transport, ip, link, transport};

/// Asks the kernel for a connection's entry by a packet's own tuple (the adapter's query, or
/// a test's stand-in).
pub trait EntryLookup: Send {
    /// The entry of the connection a packet with tuple `packet` belongs to; `Ok(None)` when
    /// the kernel has none (yet).
    fn lookup(&mut self, packet: &FlowTuple) -> io::Result<Option<ConnFacts>>;
}

impl EntryLookup for CtQuery {
    fn lookup(&mut self, packet: &FlowTuple) -> io::Result<Option<ConnFacts>> {
        CtQuery::lookup(self, packet)
    }
}

/// Where a worker's entries come from.
enum Source {
    /// The queue attaches them.
    Queue,
    /// Asked for, and kept per connection.
    Query(Box<dyn EntryLookup>),
    /// Not read (no helpers, or no way to read them).
    Off,
}

/// A connection's entry as last asked for.
struct Kept {
    facts: ConnFacts,
    /// A segment the kernel's helper may rewrite was judged in this verdict epoch: from the
    /// next epoch on, the entry must be asked for again.
    stale_from: Option<u64>,
}

/// Most connections whose entries are kept; beyond, all are forgotten (and asked for again).
const MAX_KEPT: usize = 1 << 16;

/// One worker's reader of the kernel's connection tracking.
pub struct KernelConntrack {
    source: Source,
    helpers: KernelHelpers,
    kept: HashMap<FlowKey, Kept, foldhash::fast::RandomState>,
    /// Verdict batches sent so far.
    epoch: u64,
    /// Entries asked for.
    pub queries: u64,
    /// Queries that failed (other than "no such entry").
    pub errors: u64,
}

static QUEUE_FALLBACK_LOGGED: Once = Once::new();

impl KernelConntrack {
    /// Sets up reading for `socket`'s packets when `helpers` follow any port.
    pub fn new(socket: &mut QueueSocket, helpers: &KernelHelpers) -> Self {
        let source = if helpers.is_empty() {
            Source::Off
        } else {
            match socket.request_conntrack() {
                Ok(()) => Source::Queue,
                Err(queue_err) => match CtQuery::open() {
                    Ok(query) => {
                        QUEUE_FALLBACK_LOGGED.call_once(|| {
                            tracing::info!(
                                target: LIFECYCLE,
                                %queue_err,
                                "the kernel does not attach connection tracking to queued packets (CONFIG_NETFILTER_NETLINK_GLUE_CT); asking ctnetlink for the packets of inspected ports instead"
                            );
                        });
                        Source::Query(Box::new(query))
                    }
                    Err(err) => {
                        tracing::warn!(
                            %queue_err,
                            %err,
                            "cannot read the kernel's connection tracking: sessions through NAT are not followed"
                        );
                        Source::Off
                    }
                },
            }
        };
        Self::with_source(source, helpers)
    }

    /// A reader asking `lookup`.
    #[cfg(test)]
    fn with_lookup(lookup: Box<dyn EntryLookup>, helpers: &KernelHelpers) -> Self {
        Self::with_source(Source::Query(lookup), helpers)
    }

    fn with_source(source: Source, helpers: &KernelHelpers) -> Self {
        KernelConntrack {
            source,
            helpers: helpers.clone(),
            kept: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            epoch: 0,
            queries: 0,
            errors: 0,
        }
    }

    /// The entry of `packet`'s connection, for packets of the helpers' ports. `tracked` says
    /// whether the engine has a flow for a tuple: a datagram of a flow it does not have (a
    /// TFTP request) is the first pinhole sees of that connection, so the kernel has not
    /// confirmed an entry for it yet (it does when the first accepted packet leaves
    /// POSTROUTING) and asking would only return "no such entry", twice. (TCP skips its first
    /// SYN the same way; a later segment of an untracked connection may be picked up
    /// mid-stream and is asked for.)
    pub fn entry(
        &mut self,
        packet: &QueuedPacket<'_>,
        tracked: impl Fn(&FlowTuple) -> bool,
    ) -> Option<KernelConn> {
        if matches!(self.source, Source::Off) {
            return None;
        }
        let seen = Seen::of(packet.payload)?;
        if !self.helpers.covers(&seen.tuple) {
            return None;
        }
        match &self.source {
            Source::Queue => ctnetlink::from_queue(packet.ct?, packet.ct_info),
            Source::Query(_) => self.queried(&seen, tracked),
            Source::Off => None,
        }
    }

    /// Follows a reload: the ports of the helpers attached now. (A worker that started with
    /// no helper port reads nothing until a restart.)
    pub fn set_helpers(&mut self, helpers: KernelHelpers) {
        self.helpers = helpers;
    }

    /// The verdicts judged so far reached the kernel (its helpers have rewritten what they
    /// rewrite).
    pub fn verdicts_sent(&mut self) {
        self.epoch += 1;
    }

    /// Forgets the connections of flows that ended (`events` of a decision or of timers).
    pub fn forget(&mut self, events: &[Event]) {
        if self.kept.is_empty() {
            return;
        }
        for event in events {
            if let Event::FlowClosed { flow, .. } = event {
                self.kept.remove(&flow.key());
            }
        }
    }

    /// The kept or asked-for entry of a packet of the helpers' ports.
    fn queried(
        &mut self,
        seen: &Seen<'_>,
        tracked: impl Fn(&FlowTuple) -> bool,
    ) -> Option<KernelConn> {
        let key = seen.tuple.key();
        let epoch = self.epoch;
        let fresh = self
            .kept
            .get(&key)
            .filter(|kept| kept.stale_from.is_none_or(|from| from >= epoch))
            .map(|kept| (kept.facts, kept.stale_from));
        let (facts, stale_from) = match fresh {
            Some(kept) => kept,
            // A connection's first packet: its entry is confirmed only after it passes.
            None if seen.first_syn || (seen.datagram && !tracked(&seen.tuple)) => return None,
            None => {
                let Source::Query(lookup) = &mut self.source else {
                    return None;
                };
                self.queries += 1;
                match lookup.lookup(&seen.tuple) {
                    Ok(Some(facts)) => (facts, None),
                    Ok(None) => return None,
                    Err(err) => {
                        self.errors += 1;
                        if self.errors.is_power_of_two() {
                            tracing::warn!(%err, errors = self.errors, "ctnetlink query failed");
                        }
                        return None;
                    }
                }
            }
        };
        if self.kept.len() >= MAX_KEPT && !self.kept.contains_key(&key) {
            self.kept.clear();
        }
        self.kept.insert(
            key,
            Kept {
                facts,
                // An entry the kernel does not translate never changes: `nf_nat_ftp` runs
                // only for connections with a NAT binding (`IPS_NAT_MASK`, checked in
                // `nf_conntrack_ftp.c`'s `help()`), and a connection's binding is fixed when
                // its entry is confirmed, before any packet asked for here.
                stale_from: if facts.is_translated() && may_be_rewritten(seen.tcp_payload) {
                    Some(epoch)
                } else {
                    stale_from
                },
            },
        );
        facts.for_packet(&seen.tuple)
    }
}

/// What the reader needs of a queued packet.
struct Seen<'a> {
    tuple: FlowTuple,
    /// A SYN without ACK.
    first_syn: bool,
    /// UDP.
    datagram: bool,
    /// The TCP data (empty for UDP), looked at only for packets of the helpers' ports.
    tcp_payload: &'a [u8],
}

impl Seen<'_> {
    fn of(ip_packet: &[u8]) -> Option<Seen<'_>> {
        let bytes = link::ip_bytes(LinkType::RawIp, ip_packet).ok()?;
        let packet = ip::decode(bytes).ok()?;
        if packet.fragment.is_some_and(|f| f.offset != 0) {
            return None;
        }
        let (sport, dport, first_syn, tcp_payload): (u16, u16, bool, &[u8]) =
            match transport::decode(packet.proto, packet.is_ipv6(), packet.payload).ok()? {
                Transport::Tcp(seg) => (
                    seg.sport,
                    seg.dport,
                    seg.flags.syn() && !seg.flags.ack(),
                    seg.payload,
                ),
                Transport::Udp(udp) => (udp.sport, udp.dport, false, &[][..]),
                _ => return None,
            };
        Some(Seen {
            tuple: FlowTuple {
                proto: packet.proto,
                src: packet.src,
                sport,
                dst: packet.dst,
                dport,
            },
            first_syn,
            datagram: packet.proto == transport::proto::UDP,
            tcp_payload,
        })
    }
}

/// True when `payload` holds anything the kernel's FTP helper looks for, anywhere (it looks at
/// line starts; anywhere is the safe side).
fn may_be_rewritten(payload: &[u8]) -> bool {
    payload.windows(4).any(|w| {
        w.eq_ignore_ascii_case(b"PORT")
            || w.eq_ignore_ascii_case(b"EPRT")
            || w == b"227 "
            || w == b"229 "
    })
}

/// The NAT halves of the kernel helpers `helpers` uses (`nf_nat_ftp`, `nf_nat_tftp`) that the
/// kernel has neither loaded (`proc_modules`: `/proc/modules`) nor built in (`builtin`:
/// `/lib/modules/RELEASE/modules.builtin`). iptables' CT target loads a helper's conntrack
/// half by itself, not its NAT half, and without it translated sessions fail. Empty when it
/// cannot be told (a kernel without module support has no `/proc/modules`).
pub fn missing_nat_modules(
    helpers: &KernelHelpers,
    proc_modules: Option<&str>,
    builtin: Option<&str>,
) -> Vec<&'static str> {
    let Some(loaded) = proc_modules else {
        return Vec::new();
    };
    let wanted = [
        (!helpers.ftp.is_empty(), "nf_nat_ftp"),
        (!helpers.tftp.is_empty(), "nf_nat_tftp"),
    ];
    wanted
        .into_iter()
        .filter(|&(used, _)| used)
        .map(|(_, name)| name)
        .filter(|name| {
            let is_loaded = loaded
                .lines()
                .any(|line| line.split(' ').next() == Some(name));
            let is_builtin = builtin.is_some_and(|text| {
                text.lines()
                    .any(|line| line.rsplit('/').next() == Some(&format!("{name}.ko")))
            });
            !is_loaded && !is_builtin
        })
        .collect()
}

/// Warns about [`missing_nat_modules`] on this machine, with the fix.
pub fn warn_missing_nat_modules(helpers: &KernelHelpers) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let proc_modules = std::fs::read_to_string("/proc/modules").ok();
    let builtin = std::fs::read_to_string(format!("/lib/modules/{release}/modules.builtin")).ok();
    let missing = missing_nat_modules(helpers, proc_modules.as_deref(), builtin.as_deref());
    if !missing.is_empty() {
        let list = missing.join(" ");
        tracing::warn!(
            "kernel modules {list} are not loaded: FTP/TFTP sessions the router translates (NAT) will fail; run `modprobe -a {list}` (the Debian package loads them at boot from /usr/lib/modules-load.d/pinhole.conf)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::SeqAdjust;
    use crate::testkit::{TcpBuilder, flags, sock};
    use crate::wire::transport::proto;
    use std::sync::{Arc, Mutex};

    /// A kernel whose entry is `facts`; counts the lookups.
    struct FakeKernel(Arc<Mutex<(ConnFacts, usize)>>);

    impl EntryLookup for FakeKernel {
        fn lookup(&mut self, _packet: &FlowTuple) -> io::Result<Option<ConnFacts>> {
            let mut state = self.0.lock().unwrap();
            state.1 += 1;
            Ok(Some(state.0))
        }
    }

    fn queued(frame: &[u8]) -> QueuedPacket<'_> {
        QueuedPacket {
            queue: 0,
            id: 1,
            mark: 0,
            indev: 0,
            outdev: 0,
            // testkit builds Ethernet frames; the queue hands over IP packets.
            payload: &frame[14..],
            cap_len: None,
            checksum_not_ready: false,
            gso: false,
            ct: None,
            ct_info: None,
        }
    }

    #[test]
    fn entries_are_asked_for_once_and_again_after_a_rewritable_segment_went_out() {
        let (client, public, server) = (
            sock("198.51.100.10:40000"),
            sock("203.0.113.1:21"),
            sock("10.0.1.10:21"),
        );
        let tuple = |a: std::net::SocketAddr, b: std::net::SocketAddr| FlowTuple {
            proto: proto::TCP,
            src: a.ip(),
            sport: a.port(),
            dst: b.ip(),
            dport: b.port(),
        };
        let facts = ConnFacts {
            original: tuple(client, public),
            reply: tuple(server, client),
            seq_adjust: [SeqAdjust::default(); 2],
            counters: None,
        };
        let kernel = Arc::new(Mutex::new((facts, 0)));
        let lookups = || kernel.lock().unwrap().1;
        let helpers = KernelHelpers {
            ftp: vec![21..=21],
            tftp: Vec::new(),
        };
        let mut ct = KernelConntrack::with_lookup(Box::new(FakeKernel(kernel.clone())), &helpers);
        let c2s =
            |f: u8, payload: &[u8]| TcpBuilder::new(client, server, f, 1, 1, 100).build(payload);
        let s2c =
            |f: u8, payload: &[u8]| TcpBuilder::new(server, client, f, 1, 1, 100).build(payload);

        // The first SYN has no confirmed entry: not even asked.
        assert_eq!(ct.entry_any(&queued(&c2s(flags::SYN, b""))), None);
        assert_eq!(lookups(), 0);
        let synack = ct
            .entry_any(&queued(&s2c(flags::SYN | flags::ACK, b"")))
            .unwrap();
        assert!(synack.packet_is_reply);
        assert_eq!(lookups(), 1);
        ct.verdicts_sent();
        assert!(
            !ct.entry_any(&queued(&c2s(flags::ACK, b"")))
                .unwrap()
                .packet_is_reply
        );
        assert!(
            ct.entry_any(&queued(&c2s(flags::PSH | flags::ACK, b"PASV\r\n")))
                .is_some()
        );
        assert_eq!(lookups(), 1, "kept while nothing can have changed it");

        // A 227 the kernel's helper may rewrite; its verdict has not gone out yet, so packets
        // judged with it still use the entry kept.
        let reply = b"227 Entering Passive Mode (10,0,1,10,156,64).\r\n";
        ct.entry_any(&queued(&s2c(flags::PSH | flags::ACK, reply)));
        ct.entry_any(&queued(&c2s(flags::ACK, b"")));
        assert_eq!(lookups(), 1);
        // The helper rewrote it when the verdicts went out: asked for again, once.
        let adjusted = SeqAdjust {
            correction_pos: 1,
            offset_before: 0,
            offset_after: 3,
        };
        kernel.lock().unwrap().0.seq_adjust[1] = adjusted;
        ct.verdicts_sent();
        let after = ct.entry_any(&queued(&c2s(flags::ACK, b""))).unwrap();
        assert_eq!(after.seq_adjust[1], adjusted);
        ct.verdicts_sent();
        ct.entry_any(&queued(&c2s(flags::PSH | flags::ACK, b"RETR x\r\n")));
        assert_eq!(lookups(), 2);
        // A client's PORT (any case) too.
        ct.entry_any(&queued(&c2s(
            flags::PSH | flags::ACK,
            b"port 10,0,0,1,4,1\r\n",
        )));
        ct.verdicts_sent();
        ct.entry_any(&queued(&s2c(flags::ACK, b"")));
        assert_eq!(lookups(), 3);

        // Forgotten when the flow ends.
        ct.forget(&[Event::FlowClosed {
            flow: tuple(client, server),
            cause: crate::event::CloseCause::Fin,
            packets: 1,
            bytes: 1,
        }]);
        ct.entry_any(&queued(&s2c(flags::ACK, b"")));
        assert_eq!(lookups(), 4);
        // Other ports are not the helpers'.
        let web = TcpBuilder::new(client, sock("10.0.1.10:80"), flags::ACK, 1, 1, 100).build(b"");
        assert_eq!(ct.entry_any(&queued(&web)), None);
        assert_eq!(lookups(), 4);
        assert_eq!(ct.queries, 4);
    }

    impl KernelConntrack {
        /// `entry` for a connection the engine tracks.
        fn entry_any(&mut self, packet: &QueuedPacket<'_>) -> Option<KernelConn> {
            self.entry(packet, |_| true)
        }
    }

    /// A kernel whose entry for `client -> server` is not translated; counts the lookups.
    fn untranslated(
        p: u8,
        client: std::net::SocketAddr,
        server: std::net::SocketAddr,
    ) -> (FlowTuple, Arc<Mutex<(ConnFacts, usize)>>) {
        let original = FlowTuple {
            proto: p,
            src: client.ip(),
            sport: client.port(),
            dst: server.ip(),
            dport: server.port(),
        };
        let facts = ConnFacts {
            original,
            reply: original.reversed(),
            seq_adjust: [SeqAdjust::default(); 2],
            counters: None,
        };
        assert!(!facts.is_translated());
        (original, Arc::new(Mutex::new((facts, 0))))
    }

    #[test]
    fn a_connection_the_engine_does_not_track_is_not_asked_for() {
        let (client, server) = (sock("198.51.100.10:40000"), sock("192.0.2.10:69"));
        let (original, kernel) = untranslated(proto::UDP, client, server);
        let helpers = KernelHelpers {
            ftp: Vec::new(),
            tftp: vec![69..=69],
        };
        let mut ct = KernelConntrack::with_lookup(Box::new(FakeKernel(kernel.clone())), &helpers);
        let request = crate::testkit::udp(client, server, b"\0\x01f\0octet\0");
        assert_eq!(ct.entry(&queued(&request), |_| false), None);
        assert_eq!(
            kernel.lock().unwrap().1,
            0,
            "a new flow's entry is not confirmed yet"
        );
        assert!(ct.entry(&queued(&request), |t| *t == original).is_some());
        assert_eq!(kernel.lock().unwrap().1, 1);
    }

    #[test]
    fn an_untranslated_connection_is_asked_for_once() {
        let (client, server) = (sock("198.51.100.10:40000"), sock("192.0.2.10:21"));
        let (_, kernel) = untranslated(proto::TCP, client, server);
        let helpers = KernelHelpers {
            ftp: vec![21..=21],
            tftp: Vec::new(),
        };
        let mut ct = KernelConntrack::with_lookup(Box::new(FakeKernel(kernel.clone())), &helpers);
        let s2c = |payload: &[u8]| {
            TcpBuilder::new(server, client, flags::PSH | flags::ACK, 1, 1, 100).build(payload)
        };
        for _ in 0..3 {
            ct.entry_any(&queued(&s2c(
                b"227 Entering Passive Mode (192,0,2,10,156,64).\r\n",
            )));
            ct.verdicts_sent();
        }
        assert_eq!(kernel.lock().unwrap().1, 1, "no NAT, no rewrite: one query");
    }

    #[test]
    fn nat_halves_missing_are_named_when_the_kernel_can_tell() {
        let both = KernelHelpers {
            ftp: vec![21..=21],
            tftp: vec![69..=69],
        };
        let loaded =
            "nf_conntrack_ftp 28672 1 nf_nat_ftp, Live 0x0\nnf_nat_tftp 12288 0 - Live 0x0\n";
        assert_eq!(
            missing_nat_modules(&both, Some(loaded), None),
            vec!["nf_nat_ftp"]
        );
        let builtin = "kernel/net/netfilter/nf_nat_ftp.ko\n";
        assert!(missing_nat_modules(&both, Some(loaded), Some(builtin)).is_empty());
        // Only what the policy uses.
        let ftp_only = KernelHelpers {
            ftp: vec![21..=21],
            tftp: Vec::new(),
        };
        assert_eq!(
            missing_nat_modules(&ftp_only, Some(""), None),
            vec!["nf_nat_ftp"]
        );
        // No /proc/modules: a kernel without modules has everything built in.
        assert!(missing_nat_modules(&both, None, None).is_empty());
    }
}
