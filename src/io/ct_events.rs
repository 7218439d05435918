//! The kernel's connection tracking telling when it removes a connection: ctnetlink destroy
//! events (`NFNLGRP_CONNTRACK_DESTROY`).
//!
//! In offload mode the kernel forwards an offloaded connection by itself, to its last packet:
//! its FIN and RST segments included. pinhole learns that the connection is gone from the
//! event the kernel sends when it removes the entry (`nf_conntrack_event(IPCT_DESTROY, ...)`,
//! written by `ctnetlink_conntrack_event` in `net/netfilter/nf_conntrack_netlink.c`):
//!
//! * the message is `IPCTNL_MSG_CT_DELETE` with the entry's `CTA_*` attributes: both tuples,
//!   `CTA_MARK` (the connmark, which carries the offload bit) and, for TCP,
//!   `CTA_PROTOINFO_TCP_STATE`, the state the connection was in when it went;
//! * a connection that closed with FINs goes when its `TIME_WAIT` runs out (120 s by default,
//!   `nf_conntrack_tcp_timeout_time_wait`) and one that was reset when `CLOSE` does (10 s), at
//!   the next pass of the kernel's garbage collector or the next lookup that finds it expired;
//! * an entry deleted by a program (`conntrack -D`, a flush) carries that program's netlink
//!   port id in the header; the kernel's own removals carry 0.
//!
//! Events are sent only while someone listens (`net.netfilter.nf_conntrack_events` = 2, the
//! default since Linux 6.0; 1 sends them always, 0 never) and need
//! `CONFIG_NF_CONNTRACK_EVENTS`. A listener whose socket buffer is full loses events: the
//! kernel then reports `ENOBUFS` once, and the lost connections stay in pinhole's table until
//! their idle timeout. Every listener gets every event; filtering by mark is done here.
//!
//! Parsing is bounds-checked and never panics; a malformed message is skipped.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, setsockopt,
    sockopt,
};

use super::ctnetlink::{NFNL_SUBSYS_CTNETLINK, parse_entry};
use super::netlink::{NFGEN_HDRLEN, NLMSG_HDRLEN, align4, attributes, be32};
use crate::conntrack::FlowTuple;
use crate::event::CloseCause;

/// `enum cntl_msg_types`: the message of a removed entry.
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// `enum nfnetlink_groups`.
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
// enum ctattr_type
const CTA_PROTOINFO: u16 = 4;
const CTA_MARK: u16 = 8;
// enum ctattr_protoinfo, enum ctattr_protoinfo_tcp
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
// enum tcp_conntrack (include/uapi/linux/netfilter/nf_conntrack_tcp.h)
const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
const TCP_CONNTRACK_CLOSE: u8 = 8;

/// A removed entry, as the event describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestroyedConn {
    /// `CTA_TUPLE_ORIG`: the connection as its first packet arrived.
    pub original: FlowTuple,
    /// `CTA_TUPLE_REPLY`: the tuple its replies carried (after translation).
    pub reply: FlowTuple,
    /// `CTA_MARK`, the connmark (0 when absent).
    pub mark: u32,
    /// `CTA_PROTOINFO_TCP_STATE` for TCP: the `enum tcp_conntrack` state it ended in.
    pub tcp_state: Option<u8>,
    /// A program deleted it (the header names its netlink port), not the kernel's timers.
    pub deleted: bool,
}

impl DestroyedConn {
    /// The connection as the engine knows it. pinhole sees packets in FORWARD, after DNAT and
    /// before SNAT: from the original source to the destination the replies come from
    /// (`reply.src`).
    pub fn tuple(&self) -> FlowTuple {
        FlowTuple {
            proto: self.original.proto,
            src: self.original.src,
            sport: self.original.sport,
            dst: self.reply.src,
            dport: self.reply.sport,
        }
    }

    /// How it ended: by the state the kernel removed it in (`TIME_WAIT` after FINs, `CLOSE`
    /// after a RST, any other when the kernel's timeout for that state ran out), or deleted
    /// by a program.
    pub fn cause(&self) -> CloseCause {
        if self.deleted {
            return CloseCause::Deleted;
        }
        match self.tcp_state {
            Some(TCP_CONNTRACK_TIME_WAIT) => CloseCause::Fin,
            Some(TCP_CONNTRACK_CLOSE) => CloseCause::Reset,
            _ => CloseCause::Timeout,
        }
    }
}

/// Appends the removed entries in one datagram of events to `out`; other messages and
/// malformed ones are skipped. Returns how many it appended.
pub fn parse_events(datagram: &[u8], out: &mut Vec<DestroyedConn>) -> usize {
    let before = out.len();
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let msg = &rest[..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        let kind = u16::from_ne_bytes([msg[4], msg[5]]);
        if kind != (NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE) {
            continue;
        }
        let port = u32::from_ne_bytes([msg[12], msg[13], msg[14], msg[15]]);
        if let Some(conn) = msg
            .get(NLMSG_HDRLEN + NFGEN_HDRLEN..)
            .and_then(|attrs| parse_destroyed(attrs, port != 0))
        {
            out.push(conn);
        }
    }
    out.len() - before
}

fn parse_destroyed(attrs: &[u8], deleted: bool) -> Option<DestroyedConn> {
    let facts = parse_entry(attrs)?;
    let mut mark = 0;
    let mut tcp_state = None;
    for (kind, value) in attributes(attrs, None) {
        match kind {
            CTA_MARK => mark = be32(value).unwrap_or(0),
            CTA_PROTOINFO => {
                for (kind, value) in attributes(value, None) {
                    if kind != CTA_PROTOINFO_TCP {
                        continue;
                    }
                    tcp_state = attributes(value, None)
                        .find(|(kind, _)| *kind == CTA_PROTOINFO_TCP_STATE)
                        .and_then(|(_, v)| v.first().copied());
                }
            }
            _ => {}
        }
    }
    Some(DestroyedConn {
        original: facts.original,
        reply: facts.reply,
        mark,
        tcp_state,
        deleted,
    })
}

/// A netlink socket subscribed to the kernel's destroy events. Non-blocking: poll its
/// descriptor, then [`DestroyEvents::read`].
pub struct DestroyEvents {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl DestroyEvents {
    /// Subscribes, with a receive buffer of `rcvbuf` bytes (forced past `rmem_max` when the
    /// process may). Needs `CAP_NET_ADMIN` in the network namespace.
    pub fn open(rcvbuf: usize) -> io::Result<DestroyEvents> {
        let fd = nix::sys::socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkNetFilter,
        )?;
        if setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &rcvbuf)?;
        }
        let groups = 1 << (NFNLGRP_CONNTRACK_DESTROY - 1);
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        Ok(DestroyEvents {
            fd,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Reads up to `max` datagrams that are waiting and appends the removed entries to
    /// `out`. Returns how many datagrams it read (0: nothing waiting). `ENOBUFS` is returned
    /// as an error: the kernel dropped events; reading can go on.
    pub fn read(&mut self, max: usize, out: &mut Vec<DestroyedConn>) -> io::Result<usize> {
        for read in 0..max {
            match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    parse_events(&self.buf[..n], out);
                }
                Err(Errno::EAGAIN) => return Ok(read),
                Err(Errno::EINTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(max)
    }
}

impl AsFd for DestroyEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::super::ctnetlink::{CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, Writer, get_request};
    use super::*;
    use crate::wire::transport::proto;

    fn tuple(p: u8, src: &str, sport: u16, dst: &str, dport: u16) -> FlowTuple {
        FlowTuple {
            proto: p,
            src: src.parse().unwrap(),
            sport,
            dst: dst.parse().unwrap(),
            dport,
        }
    }

    /// A destroy event as `ctnetlink_conntrack_event` writes it.
    fn event(
        original: &FlowTuple,
        reply: &FlowTuple,
        mark: Option<u32>,
        tcp_state: Option<u8>,
        port: u32,
    ) -> Vec<u8> {
        let tuple_attrs = |t: &FlowTuple| {
            let request = get_request(t, 0);
            request[NLMSG_HDRLEN + NFGEN_HDRLEN + 4..].to_vec()
        };
        let mut w = Writer::default();
        w.nested(CTA_TUPLE_ORIG, |w| w.buf.extend(tuple_attrs(original)));
        w.nested(CTA_TUPLE_REPLY, |w| w.buf.extend(tuple_attrs(reply)));
        w.attr(3, &0x18eu32.to_be_bytes()); // CTA_STATUS, ignored
        if let Some(state) = tcp_state {
            w.nested(CTA_PROTOINFO, |w| {
                w.nested(CTA_PROTOINFO_TCP, |w| {
                    w.attr(CTA_PROTOINFO_TCP_STATE, &[state]);
                    w.attr(2, &[7]); // CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, ignored
                });
            });
        }
        if let Some(mark) = mark {
            w.attr(CTA_MARK, &mark.to_be_bytes());
        }
        let len = (NLMSG_HDRLEN + NFGEN_HDRLEN + w.buf.len()) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&port.to_ne_bytes());
        m.extend_from_slice(&[2, 0, 0, 0]);
        m.extend_from_slice(&w.buf);
        m
    }

    #[test]
    fn destroy_events_parse_with_mark_state_and_who_removed_them() {
        // A DNAT'd server: the client sent to the public address, the replies come from the
        // private one, which is where pinhole saw the packets go.
        let original = tuple(proto::TCP, "198.51.100.7", 40000, "203.0.113.1", 30001);
        let reply = tuple(proto::TCP, "10.0.1.10", 30001, "198.51.100.7", 40000);
        let mut out = Vec::new();
        let mut datagram = event(
            &original,
            &reply,
            Some(0x1000_0000),
            Some(TCP_CONNTRACK_TIME_WAIT),
            0,
        );
        datagram.extend(event(&original, &reply, None, Some(TCP_CONNTRACK_CLOSE), 0));
        datagram.extend(event(&original, &reply, Some(1), Some(3), 4242));
        assert_eq!(parse_events(&datagram, &mut out), 3);
        assert_eq!(out[0].mark, 0x1000_0000);
        assert_eq!(out[1].mark, 0, "no CTA_MARK: no mark");
        assert_eq!(out[0].cause(), CloseCause::Fin);
        assert_eq!(
            out[0].tuple(),
            tuple(proto::TCP, "198.51.100.7", 40000, "10.0.1.10", 30001)
        );
        assert_eq!(out[1].cause(), CloseCause::Reset);
        assert!(out[2].deleted);
        assert_eq!(out[2].cause(), CloseCause::Deleted);
    }

    #[test]
    fn udp_and_ipv6_entries_end_by_timeout() {
        let original = tuple(proto::UDP, "2001:db8::7", 5000, "2001:db8:1::10", 69);
        let mut out = Vec::new();
        parse_events(
            &event(&original, &original.reversed(), Some(0x10), None, 0),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tcp_state, None);
        assert_eq!(
            (out[0].tuple(), out[0].cause()),
            (original, CloseCause::Timeout)
        );
    }

    #[test]
    fn other_messages_and_malformed_ones_are_skipped() {
        let original = tuple(proto::TCP, "192.0.2.1", 1, "192.0.2.2", 2);
        let full = event(&original, &original.reversed(), Some(1), Some(7), 0);
        let mut out = Vec::new();
        for cut in 0..full.len() {
            let mut cut_msg = full[..cut].to_vec();
            if cut >= 4 {
                // The header claims only what is there.
                cut_msg[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            parse_events(&cut_msg, &mut out);
        }
        // A cut message either lacks a tuple (skipped) or is whole up to its mark or state.
        assert!(out.iter().all(|c| c.original == original));
        let mut new = full.clone();
        new[4..6].copy_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8).to_ne_bytes());
        out.clear();
        assert_eq!(
            parse_events(&new, &mut out),
            0,
            "IPCTNL_MSG_CT_NEW is not an end"
        );
        assert_eq!(parse_events(&[0xff; 64], &mut out), 0);
    }
}
