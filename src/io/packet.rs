//! A passive capture socket on one interface (`AF_PACKET`, `SOCK_RAW`), for `pinhole monitor`.
//!
//! Why not pnet's datalink: the monitor needs the socket's file descriptor (to wait on it with
//! the engine's timers), the packet type of each frame (on a loopback device every packet is
//! seen twice, outgoing and incoming; the outgoing copy must be skipped), the frame's real
//! length (`MSG_TRUNC`, so a cut frame is known as such) and the kernel's drop counter
//! (`PACKET_STATISTICS`). Those are a few calls; they go through `nix` where it has them and
//! through `libc` with a `SAFETY` note where it does not (binding to an interface, promiscuous
//! membership, statistics). See packet(7).

#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, recvmsg, setsockopt,
    socket, sockopt,
};

use crate::wire::LinkType;

/// How the capture socket is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Put the interface in promiscuous mode while capturing (a span port receives frames for
    /// other hosts' addresses).
    pub promiscuous: bool,
    /// Receive buffer in bytes.
    pub rcvbuf: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            promiscuous: true,
            rcvbuf: 8 << 20,
        }
    }
}

/// One received frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The bytes received (at most the buffer's size).
    pub data: &'a [u8],
    /// The frame's real length; larger than `data` when the buffer was too small.
    pub len: usize,
}

/// A capture socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    link: LinkType,
    loopback: bool,
}

/// `ARPHRD_*` numbers (linux/if_arp.h) of the devices whose frames are Ethernet.
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;
/// Devices without a link-layer header: the frame is the IP packet (tun, IP-in-IP, GRE,
/// SIT, WireGuard).
const ARPHRD_RAW_IP: [u32; 6] = [65534, 768, 769, 776, 778, 823];

impl PacketSocket {
    /// Opens a capture socket on `iface`.
    pub fn open(iface: &str, config: CaptureConfig) -> io::Result<PacketSocket> {
        let index = nix::net::if_::if_nametoindex(iface).map_err(|err| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("interface {iface:?}: {err} (see `ip link`)"),
            )
        })?;
        let hatype = std::fs::read_to_string(format!("/sys/class/net/{iface}/type"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .unwrap_or(ARPHRD_ETHER);
        let link = match hatype {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => LinkType::Ethernet,
            t if ARPHRD_RAW_IP.contains(&t) => LinkType::RawIp,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "interface {iface:?} has link type {other} (linux/if_arp.h); pinhole monitor reads Ethernet and IP-only devices"
                    ),
                ));
            }
        };
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::EthAll,
        )?;
        let ifindex = i32::try_from(index).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index too large")
        })?;
        bind_to_interface(&fd, ifindex)?;
        if config.promiscuous {
            join_promiscuous(&fd, ifindex)?;
        }
        // RCVBUFFORCE goes past rmem_max with CAP_NET_ADMIN; without it, ask for what may be had.
        if setsockopt(&fd, sockopt::RcvBufForce, &config.rcvbuf).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &config.rcvbuf)?;
        }
        Ok(PacketSocket {
            fd,
            link,
            loopback: hatype == ARPHRD_LOOPBACK,
        })
    }

    /// How its frames are framed.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// Waits up to `timeout` for a frame; true when one can be read.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(n) => Ok(n > 0),
            Err(Errno::EINTR) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Reads one frame into `buf`; `None` when there is none waiting. On a loopback device the
    /// outgoing copy of each packet is skipped (the same packet comes back as incoming).
    pub fn recv<'a>(&self, buf: &'a mut [u8]) -> io::Result<Option<Frame<'a>>> {
        loop {
            let (len, pkttype) = {
                let mut iov = [IoSliceMut::new(buf)];
                match recvmsg::<LinkAddr>(self.fd.as_raw_fd(), &mut iov, None, MsgFlags::MSG_TRUNC)
                {
                    Ok(msg) => (
                        msg.bytes,
                        msg.address.map_or(libc::PACKET_HOST, |a| a.pkttype()),
                    ),
                    Err(Errno::EAGAIN) => return Ok(None),
                    Err(Errno::EINTR) => continue,
                    Err(err) => return Err(err.into()),
                }
            };
            if pkttype == libc::PACKET_OUTGOING && self.loopback {
                continue;
            }
            let copied = len.min(buf.len());
            return Ok(Some(Frame {
                data: &buf[..copied],
                len,
            }));
        }
    }

    /// The kernel's counts since the last call: packets queued to the socket, and packets it
    /// dropped because the socket's buffer was full (reading resets them).
    pub fn statistics(&self) -> io::Result<(u64, u64)> {
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `stats` is a valid, writable tpacket_stats and `len` holds its size, as
        // PACKET_STATISTICS expects (packet(7)); the kernel writes at most `len` bytes and
        // updates `len`. The descriptor is an open packet socket owned by `self`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut stats).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((u64::from(stats.tp_packets), u64::from(stats.tp_drops)))
    }
}

/// Binds the socket to one interface, all protocols.
fn bind_to_interface(fd: &OwnedFd, ifindex: i32) -> io::Result<()> {
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `addr` is a fully initialised sockaddr_ll that lives across the call, and the
    // length passed is its size, as bind(2) on an AF_PACKET socket expects (packet(7)). The
    // descriptor is an open packet socket.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the interface in promiscuous mode for as long as the socket is open (the kernel undoes
/// it when the socket closes, even if the process dies).
fn join_promiscuous(fd: &OwnedFd, ifindex: i32) -> io::Result<()> {
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    // SAFETY: `mreq` is a fully initialised packet_mreq that lives across the call, and the
    // length passed is its size, as PACKET_ADD_MEMBERSHIP expects (packet(7)).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&raw const mreq).cast(),
            size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_interface_is_named_in_the_error() {
        let err = PacketSocket::open("no-such-if0", CaptureConfig::default()).unwrap_err();
        assert!(err.to_string().contains("no-such-if0"), "{err}");
    }
}
