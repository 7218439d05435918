//! The kernel's connection tracking entry of a queued packet, over netlink (ctnetlink).
//!
//! Two sources, one format: the `CTA_*` attributes of `linux/netfilter/nfnetlink_conntrack.h`.
//!
//! * With `NFQA_CFG_F_CONNTRACK`, the kernel attaches them to each queued packet (`NFQA_CT`,
//!   and the packet's direction in `NFQA_CT_INFO`). That needs a kernel built with
//!   `CONFIG_NETFILTER_NETLINK_GLUE_CT`; without it the queue refuses the flag
//!   (`EOPNOTSUPP`).
//! * Otherwise [`CtQuery`] asks for the entry with `IPCTNL_MSG_CT_GET`, by the packet's tuple
//!   (which is the entry's original tuple or the inverse of its reply tuple, in the FORWARD
//!   chain where pinhole sees it). The kernel answers synchronously. The worker asks only for
//!   packets of the connections the kernel's helpers follow (the inspected FTP and TFTP
//!   ports): the only ones whose payloads the kernel rewrites.
//!
//! Parsing is bounds-checked and never panics; anything malformed is "no information".

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
};

use super::netlink::{
    NFGEN_HDRLEN, NLA_F_NESTED, NLA_HDRLEN, NLM_F_REQUEST, NLMSG_ERROR, NLMSG_HDRLEN, align4,
    attributes, be16, be32, be64,
};
use crate::conntrack::{FlowTuple, KernelConn, SeqAdjust};

pub(super) const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;

// enum ctattr_type
pub(super) const CTA_TUPLE_ORIG: u16 = 1;
pub(super) const CTA_TUPLE_REPLY: u16 = 2;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_SEQ_ADJ_ORIG: u16 = 15;
const CTA_SEQ_ADJ_REPLY: u16 = 16;
// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
// enum ctattr_seqadj
const CTA_SEQADJ_CORRECTION_POS: u16 = 1;
const CTA_SEQADJ_OFFSET_BEFORE: u16 = 2;
const CTA_SEQADJ_OFFSET_AFTER: u16 = 3;

/// `enum ip_conntrack_info`: values from `IP_CT_IS_REPLY` (3) on are the reply direction;
/// `IP_CT_UNTRACKED` (7) has no entry.
const IP_CT_IS_REPLY: u32 = 3;
const IP_CT_UNTRACKED: u32 = 7;

/// An entry's tuples and sequence adjustments, without the direction of any packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnFacts {
    /// `CTA_TUPLE_ORIG`.
    pub original: FlowTuple,
    /// `CTA_TUPLE_REPLY`.
    pub reply: FlowTuple,
    /// `CTA_SEQ_ADJ_ORIG`, `CTA_SEQ_ADJ_REPLY` (zero when absent).
    pub seq_adjust: [SeqAdjust; 2],
    /// `CTA_COUNTERS_ORIG`, `CTA_COUNTERS_REPLY`: packets and IP bytes each way, when the
    /// kernel keeps accounting (`net.netfilter.nf_conntrack_acct`, from the entry's creation).
    pub counters: Option<[Counter; 2]>,
}

/// One direction's conntrack accounting (`ctattr_counters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// IP bytes, headers included.
    pub bytes: u64,
}

fn parse_counter(attrs: &[u8]) -> Counter {
    let mut counter = Counter::default();
    for (kind, value) in attributes(attrs, None) {
        match kind {
            CTA_COUNTERS_PACKETS => counter.packets = be64(value).unwrap_or(0),
            CTA_COUNTERS_BYTES => counter.bytes = be64(value).unwrap_or(0),
            _ => {}
        }
    }
    counter
}

impl ConnFacts {
    /// The kernel translates the connection: its reply tuple is not the original reversed.
    pub fn is_translated(&self) -> bool {
        self.reply != self.original.reversed()
    }

    /// The entry as the engine takes it, for a packet whose own tuple is `packet`; `None` when
    /// the packet belongs to neither direction.
    pub fn for_packet(&self, packet: &FlowTuple) -> Option<KernelConn> {
        let is_reply = if (packet.src, packet.sport) == (self.original.src, self.original.sport) {
            false
        } else if (packet.src, packet.sport) == (self.reply.src, self.reply.sport) {
            true
        } else {
            return None;
        };
        Some(self.with_direction(is_reply))
    }

    /// The entry as the engine takes it, for a packet of the given direction.
    pub fn with_direction(&self, packet_is_reply: bool) -> KernelConn {
        KernelConn {
            original: self.original,
            reply: self.reply,
            packet_is_reply,
            seq_adjust: self.seq_adjust,
        }
    }
}

/// The entry carried by a queued packet (`NFQA_CT`, `NFQA_CT_INFO`).
pub fn from_queue(ct: &[u8], ct_info: Option<u32>) -> Option<KernelConn> {
    let info = ct_info?;
    if info == IP_CT_UNTRACKED {
        return None;
    }
    Some(parse_entry(ct)?.with_direction(info >= IP_CT_IS_REPLY))
}

/// Parses the `CTA_*` attributes of an entry.
pub fn parse_entry(attrs: &[u8]) -> Option<ConnFacts> {
    let mut original = None;
    let mut reply = None;
    let mut seq_adjust = [SeqAdjust::default(); 2];
    let mut counters: Option<[Counter; 2]> = None;
    for (kind, value) in attributes(attrs, None) {
        match kind {
            CTA_COUNTERS_ORIG => counters.get_or_insert_default()[0] = parse_counter(value),
            CTA_COUNTERS_REPLY => counters.get_or_insert_default()[1] = parse_counter(value),
            CTA_TUPLE_ORIG => original = parse_tuple(value),
            CTA_TUPLE_REPLY => reply = parse_tuple(value),
            CTA_SEQ_ADJ_ORIG => seq_adjust[0] = parse_seq_adjust(value),
            CTA_SEQ_ADJ_REPLY => seq_adjust[1] = parse_seq_adjust(value),
            _ => {}
        }
    }
    Some(ConnFacts {
        original: original?,
        reply: reply?,
        seq_adjust,
        counters,
    })
}

fn parse_tuple(attrs: &[u8]) -> Option<FlowTuple> {
    let (mut src, mut dst) = (None, None);
    let (mut proto, mut sport, mut dport) = (None, 0, 0);
    for (kind, value) in attributes(attrs, None) {
        match kind {
            CTA_TUPLE_IP => {
                for (kind, value) in attributes(value, None) {
                    let addr = match value.len() {
                        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?)),
                        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(value).ok()?)),
                        _ => continue,
                    };
                    match kind {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(addr),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(addr),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (kind, value) in attributes(value, None) {
                    match kind {
                        CTA_PROTO_NUM => proto = value.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(value).unwrap_or(0),
                        CTA_PROTO_DST_PORT => dport = be16(value).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(FlowTuple {
        proto: proto?,
        src: src?,
        sport,
        dst: dst?,
        dport,
    })
}

fn parse_seq_adjust(attrs: &[u8]) -> SeqAdjust {
    let mut adjust = SeqAdjust::default();
    for (kind, value) in attributes(attrs, None) {
        let Some(v) = be32(value) else { continue };
        match kind {
            CTA_SEQADJ_CORRECTION_POS => adjust.correction_pos = v,
            CTA_SEQADJ_OFFSET_BEFORE => adjust.offset_before = v.cast_signed(),
            CTA_SEQADJ_OFFSET_AFTER => adjust.offset_after = v.cast_signed(),
            _ => {}
        }
    }
    adjust
}

/// Builds nested netlink attributes.
#[derive(Default)]
pub(super) struct Writer {
    pub(super) buf: Vec<u8>,
}

impl Writer {
    pub(super) fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = (NLA_HDRLEN + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    pub(super) fn nested(&mut self, kind: u16, build: impl FnOnce(&mut Writer)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; NLA_HDRLEN]);
        build(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }
}

/// The `IPCTNL_MSG_CT_GET` request for the entry with tuple `tuple` (either direction's).
pub fn get_request(tuple: &FlowTuple, seq: u32) -> Vec<u8> {
    let mut body = Writer::default();
    body.nested(CTA_TUPLE_ORIG, |w| {
        w.nested(CTA_TUPLE_IP, |w| match (tuple.src, tuple.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                w.attr(CTA_IP_V4_SRC, &s.octets());
                w.attr(CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                w.attr(CTA_IP_V6_SRC, &v6(s).octets());
                w.attr(CTA_IP_V6_DST, &v6(d).octets());
            }
        });
        w.nested(CTA_TUPLE_PROTO, |w| {
            w.attr(CTA_PROTO_NUM, &[tuple.proto]);
            w.attr(CTA_PROTO_SRC_PORT, &tuple.sport.to_be_bytes());
            w.attr(CTA_PROTO_DST_PORT, &tuple.dport.to_be_bytes());
        });
    });
    let family: u8 = if tuple.src.is_ipv4() { 2 } else { 10 };
    let len = (NLMSG_HDRLEN + NFGEN_HDRLEN + body.buf.len()) as u32;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET).to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, NFNETLINK_V0, res_id 0.
    msg.extend_from_slice(&[family, 0, 0, 0]);
    msg.extend_from_slice(&body.buf);
    msg
}

fn v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// What one answer datagram says about request `seq`.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The entry.
    Entry(ConnFacts),
    /// An error (`ENOENT`: no such entry, for instance one not confirmed yet).
    Error(i32),
    /// Nothing about this request.
    Unrelated,
}

/// Reads an answer datagram for request `seq`.
pub fn parse_answer(datagram: &[u8], seq: u32) -> Answer {
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let msg = &rest[..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        let kind = u16::from_ne_bytes([msg[4], msg[5]]);
        let msg_seq = u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]);
        if msg_seq != seq {
            continue;
        }
        let body = &msg[NLMSG_HDRLEN..];
        if kind == NLMSG_ERROR {
            let code = body
                .get(..4)
                .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
            return Answer::Error(code.saturating_abs());
        }
        if kind == (NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW) {
            return match body.get(NFGEN_HDRLEN..).and_then(parse_entry) {
                Some(facts) => Answer::Entry(facts),
                None => Answer::Error(Errno::EBADMSG as i32),
            };
        }
    }
    Answer::Unrelated
}

/// A netlink socket asking the kernel for connection tracking entries, one at a time.
pub struct CtQuery {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

/// How long an answer may take (the kernel answers before `send` returns; this only bounds a
/// kernel that does not).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(50);

impl CtQuery {
    /// Opens the socket. Needs `CAP_NET_ADMIN` in the network namespace for the answers.
    pub fn open() -> io::Result<CtQuery> {
        let fd = nix::sys::socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(CtQuery {
            fd,
            seq: 0,
            buf: vec![0; 16 * 1024],
        })
    }

    /// The entry whose original or reply tuple is `tuple`; `Ok(None)` when there is none.
    pub fn get(&mut self, tuple: &FlowTuple) -> io::Result<Option<ConnFacts>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        send(
            self.fd.as_raw_fd(),
            &get_request(tuple, seq),
            MsgFlags::empty(),
        )?;
        let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => match parse_answer(&self.buf[..n], seq) {
                    Answer::Entry(facts) => return Ok(Some(facts)),
                    Answer::Error(errno) if errno == Errno::ENOENT as i32 => return Ok(None),
                    Answer::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
                    Answer::Unrelated => {}
                },
                Err(Errno::EAGAIN) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer from the kernel's connection tracking",
                        ));
                    }
                    let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
                    let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::from(millis)) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(err) => return Err(err.into()),
                    }
                }
                Err(Errno::EINTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The entry of the connection a packet with tuple `packet` (sender first) belongs to.
    /// In the FORWARD chain the packet's tuple is the entry's original tuple or the inverse of
    /// its reply tuple (after DNAT, before SNAT): both are tried.
    pub fn lookup(&mut self, packet: &FlowTuple) -> io::Result<Option<ConnFacts>> {
        match self.get(packet)? {
            Some(facts) => Ok(Some(facts)),
            None => self.get(&packet.reversed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::transport::proto;

    fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> FlowTuple {
        FlowTuple {
            proto: proto::TCP,
            src: src.parse().unwrap(),
            sport,
            dst: dst.parse().unwrap(),
            dport,
        }
    }

    /// An entry as the kernel writes it (`ctnetlink_fill_info`), built with the request's
    /// own writer plus the sequence adjustment attributes.
    fn entry(original: &FlowTuple, reply: &FlowTuple, adjust: Option<SeqAdjust>) -> Vec<u8> {
        let tuple_attrs = |t: &FlowTuple| {
            let request = get_request(t, 0);
            // The request's body is one CTA_TUPLE_ORIG nest: reuse its contents.
            let nest = &request[NLMSG_HDRLEN + NFGEN_HDRLEN..];
            nest[NLA_HDRLEN..].to_vec()
        };
        let mut w = Writer::default();
        w.nested(CTA_TUPLE_ORIG, |w| w.buf.extend(tuple_attrs(original)));
        w.nested(CTA_TUPLE_REPLY, |w| w.buf.extend(tuple_attrs(reply)));
        w.attr(3, &0x188u32.to_be_bytes()); // CTA_STATUS, ignored
        w.nested(CTA_COUNTERS_REPLY, |w| {
            w.attr(CTA_COUNTERS_PACKETS, &7u64.to_be_bytes());
            w.attr(CTA_COUNTERS_BYTES, &4242u64.to_be_bytes());
        });
        if let Some(a) = adjust {
            w.nested(CTA_SEQ_ADJ_REPLY, |w| {
                w.attr(CTA_SEQADJ_CORRECTION_POS, &a.correction_pos.to_be_bytes());
                w.attr(CTA_SEQADJ_OFFSET_BEFORE, &a.offset_before.to_be_bytes());
                w.attr(CTA_SEQADJ_OFFSET_AFTER, &a.offset_after.to_be_bytes());
            });
        }
        w.buf
    }

    #[test]
    fn entries_parse_with_tuples_and_adjustments() {
        let original = tuple("10.0.2.10", 5000, "203.0.113.20", 21);
        let reply = tuple("203.0.113.20", 21, "203.0.113.1", 5000);
        let adjust = SeqAdjust {
            correction_pos: 77,
            offset_before: 3,
            offset_after: -2,
        };
        let facts = parse_entry(&entry(&original, &reply, Some(adjust))).unwrap();
        assert_eq!(facts.original, original);
        assert_eq!(facts.reply, reply);
        assert_eq!(facts.seq_adjust, [SeqAdjust::default(), adjust]);
        let counter = Counter {
            packets: 7,
            bytes: 4242,
        };
        assert_eq!(facts.counters, Some([Counter::default(), counter]));
        // Direction from the packet's own tuple (FORWARD: before SNAT, after DNAT).
        let from_server = tuple("203.0.113.20", 21, "10.0.2.10", 5000);
        assert!(facts.for_packet(&from_server).unwrap().packet_is_reply);
        assert!(!facts.for_packet(&original).unwrap().packet_is_reply);
        assert_eq!(
            facts.for_packet(&tuple("192.0.2.9", 1, "192.0.2.8", 2)),
            None
        );
        // The queue's form: the same attributes, the direction from ctinfo.
        let queued = from_queue(&entry(&original, &reply, None), Some(3)).unwrap();
        assert!(queued.packet_is_reply);
        assert_eq!(from_queue(&entry(&original, &reply, None), Some(7)), None);
        assert_eq!(from_queue(&entry(&original, &reply, None), None), None);
    }

    #[test]
    fn ipv6_requests_and_entries_round_trip() {
        let original = tuple("fd00:2::10", 5000, "2001:db8:113::20", 21);
        let reply = tuple("2001:db8:113::20", 21, "2001:db8:113::1", 5000);
        let facts = parse_entry(&entry(&original, &reply, None)).unwrap();
        assert_eq!((facts.original, facts.reply), (original, reply));
        assert_eq!(
            get_request(&original, 1)[NLMSG_HDRLEN],
            10,
            "AF_INET6 in nfgenmsg"
        );
    }

    #[test]
    fn malformed_entries_are_no_information() {
        let original = tuple("10.0.2.10", 5000, "203.0.113.20", 21);
        let full = entry(&original, &original.reversed(), None);
        for cut in 0..full.len() {
            // Never a panic; a cut entry either lacks a tuple or is still whole up to it.
            let _ = parse_entry(&full[..cut]);
        }
        assert_eq!(parse_entry(&[0xff; 40]), None);
    }

    #[test]
    fn answers_are_matched_by_sequence() {
        let original = tuple("10.0.2.10", 5000, "203.0.113.20", 21);
        let body = entry(&original, &original.reversed(), None);
        let message = |kind: u16, seq: u32, body: &[u8]| {
            let mut m = Vec::new();
            let len = (NLMSG_HDRLEN + NFGEN_HDRLEN + body.len()) as u32;
            m.extend_from_slice(&len.to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&0u16.to_ne_bytes());
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&[2, 0, 0, 0]);
            m.extend_from_slice(body);
            m
        };
        let new = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW;
        let mut two = message(new, 4, &body);
        two.extend(message(new, 5, &body));
        assert!(matches!(parse_answer(&two, 5), Answer::Entry(_)));
        assert_eq!(parse_answer(&two, 6), Answer::Unrelated);
        // NLMSG_ERROR with -ENOENT; its "nfgenmsg" is the error code's first bytes.
        let mut error = Vec::new();
        error.extend_from_slice(&(NLMSG_HDRLEN as u32 + 20).to_ne_bytes());
        error.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error.extend_from_slice(&0u16.to_ne_bytes());
        error.extend_from_slice(&9u32.to_ne_bytes());
        error.extend_from_slice(&0u32.to_ne_bytes());
        error.extend_from_slice(&(-2i32).to_ne_bytes());
        error.extend_from_slice(&[0; 16]);
        assert_eq!(parse_answer(&error, 9), Answer::Error(2));
    }
}
