//! A passive capture socket on one interface (`AF_PACKET`, `SOCK_RAW`), for `pinhole monitor`.
//!
//! Why not pnet's datalink: the monitor needs the socket's file descriptor (to wait on it with
//! the engine's timers), the packet type of each frame (on a loopback device every packet is
//! seen twice, outgoing and incoming; the outgoing copy must be skipped), the frame's real
//! length (so a cut frame is known as such), the kernel's drop counters
//! (`PACKET_STATISTICS`), a memory-mapped ring and a fanout group. Those are a few calls; they
//! go through `nix` where it has them and through `libc` with a `SAFETY` note where it does
//! not (binding to an interface, promiscuous membership, statistics, the ring, fanout). See
//! packet(7).
//!
//! Two ways to read:
//! - the `TPACKET_V3` ring ([`crate::io::packet_ring`]): the kernel hands over blocks of
//!   frames in memory shared with pinhole, one `poll` per block;
//! - one `recvmsg` per frame (`MSG_TRUNC` gives the real length), where the ring cannot be set
//!   up (an old kernel, a memory limit) or when asked ([`CaptureConfig::ring`] `None`).
//!
//! Several sockets on one interface share its frames in a fanout group
//! ([`PacketSocket::create_fanout`], [`PacketSocket::join_fanout`]) whose classic BPF program
//! ([`crate::io::fanout`]) sends both directions of an address pair to the same socket.

#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, recvmsg, setsockopt, socket, sockopt,
};

use super::packet_ring::{RingConfig, RxRing, set_packet_option};
use crate::wire::LinkType;

/// How the capture socket is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Put the interface in promiscuous mode while capturing (a span port receives frames for
    /// other hosts' addresses).
    pub promiscuous: bool,
    /// Receive buffer in bytes (the `recvmsg` path's queue; the ring has its own memory).
    pub rcvbuf: usize,
    /// The memory-mapped ring to read through; `None`: `recvmsg`, one frame per call.
    pub ring: Option<RingConfig>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            promiscuous: true,
            rcvbuf: 8 << 20,
            ring: Some(RingConfig::of_mib(16)),
        }
    }
}

/// One received frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The bytes received (at most the buffer's size, or the ring block's).
    pub data: &'a [u8],
    /// The frame's real length; larger than `data` when the buffer was too small.
    pub len: usize,
    /// The frame left this host with its TCP/UDP checksum for the hardware to fill in
    /// (`TP_STATUS_CSUMNOTREADY`; known on the ring only): nothing to verify.
    pub checksum_not_ready: bool,
}

/// How frames are read.
#[derive(Debug)]
pub enum Reader {
    /// The `TPACKET_V3` ring.
    Ring(RxRing),
    /// `recvmsg`, one frame per call; `why` says why not the ring (`None`: asked for).
    Recvmsg {
        /// The ring's setup error, when it was tried and failed.
        why: Option<String>,
    },
}

/// The kernel's capture counters since the last reading (`PACKET_STATISTICS` resets them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames the kernel passed to the socket (delivered or dropped).
    pub packets: u64,
    /// Frames dropped: the receive queue or the ring was full.
    pub drops: u64,
    /// Times the ring froze: every block was still with pinhole when a frame came
    /// (`tp_freeze_q_cnt`, `TPACKET_V3` only); the frames of a freeze are in `drops`.
    pub freezes: u64,
}

/// A capture socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    link: LinkType,
    loopback: bool,
    reader: Reader,
    /// The `recvmsg` path's frame buffer (empty on the ring).
    buf: Vec<u8>,
}

/// The `recvmsg` path's buffer: GRO can hand over aggregated frames of 64 KiB and more.
const FRAME_BUFFER: usize = 256 << 10;

/// `ARPHRD_*` numbers (linux/if_arp.h) of the devices whose frames are Ethernet.
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;
/// Devices without a link-layer header: the frame is the IP packet (tun, IP-in-IP, GRE,
/// SIT, WireGuard).
const ARPHRD_RAW_IP: [u32; 6] = [65534, 768, 769, 776, 778, 823];

/// `PACKET_FANOUT_CBPF` (linux/if_packet.h).
const FANOUT_CBPF: u32 = libc::PACKET_FANOUT_CBPF;

impl PacketSocket {
    /// Opens a capture socket on `iface`. With `config.ring`, the ring is set up before the
    /// socket is bound, so no frame is queued outside it; if that fails the socket reads with
    /// `recvmsg` instead ([`PacketSocket::reader`] says which, and why).
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
        // Protocol 0: the socket receives nothing until it is bound to the interface with
        // ETH_P_ALL, after the ring is in place (packet(7)).
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let ifindex = i32::try_from(index).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index too large")
        })?;
        let reader = match config.ring {
            Some(ring) => match RxRing::new(&fd, ring) {
                Ok(ring) => Reader::Ring(ring),
                Err(err) => {
                    // A half-made ring leaves PACKET_VERSION at V3; the recvmsg path does not
                    // mind, and the statistics read the V3 layout.
                    Reader::Recvmsg {
                        why: Some(format!(
                            "{err} (a TPACKET_V3 ring of {} MiB)",
                            ring.bytes() >> 20
                        )),
                    }
                }
            },
            None => Reader::Recvmsg { why: None },
        };
        bind_to_interface(&fd, ifindex)?;
        if config.promiscuous {
            join_promiscuous(&fd, ifindex)?;
        }
        // RCVBUFFORCE goes past rmem_max with CAP_NET_ADMIN; without it, ask for what may be had.
        if setsockopt(&fd, sockopt::RcvBufForce, &config.rcvbuf).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &config.rcvbuf)?;
        }
        let buf = match reader {
            Reader::Ring(_) => Vec::new(),
            Reader::Recvmsg { .. } => vec![0u8; FRAME_BUFFER],
        };
        Ok(PacketSocket {
            fd,
            link,
            loopback: hatype == ARPHRD_LOOPBACK,
            reader,
            buf,
        })
    }

    /// How its frames are framed.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// How it reads.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Waits up to `timeout` for a frame; true when one can be read.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        if let Reader::Ring(ring) = &self.reader
            && ring.ready()
        {
            return Ok(true);
        }
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(n) => n > 0,
            Err(Errno::EINTR) => false,
            Err(err) => return Err(err.into()),
        };
        // The interface went down or away (the kernel sets ENETDOWN on its packet sockets):
        // say so, as recvmsg would, instead of polling a socket that stays in error.
        if fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR))
        {
            let pending = nix::sys::socket::getsockopt(&self.fd, sockopt::SocketError)?;
            if pending != 0 {
                return Err(io::Error::from_raw_os_error(pending));
            }
        }
        Ok(ready)
    }

    /// Reads what is waiting, without blocking, and calls `each` for every frame: up to
    /// `max_blocks` blocks of the ring, or `max_frames` frames through `recvmsg`. Returns the
    /// frames passed to `each`. On a loopback device the outgoing copy of each packet is
    /// skipped (the same packet comes back as incoming).
    pub fn read(
        &mut self,
        max_blocks: usize,
        max_frames: usize,
        mut each: impl FnMut(Frame<'_>),
    ) -> io::Result<usize> {
        let loopback = self.loopback;
        let mut n = 0;
        match &mut self.reader {
            Reader::Ring(ring) => {
                for _ in 0..max_blocks {
                    let Some(block) = ring.next_block() else {
                        break;
                    };
                    block.frames(|frame| {
                        if loopback && frame.pkttype == libc::PACKET_OUTGOING {
                            return;
                        }
                        n += 1;
                        each(Frame {
                            data: frame.data,
                            len: frame.len,
                            checksum_not_ready: frame.status & libc::TP_STATUS_CSUMNOTREADY != 0,
                        });
                    });
                }
            }
            Reader::Recvmsg { .. } => {
                for _ in 0..max_frames {
                    match recv_one(&self.fd, &mut self.buf, loopback)? {
                        Some(len) => {
                            n += 1;
                            let copied = len.min(self.buf.len());
                            each(Frame {
                                data: &self.buf[..copied],
                                len,
                                checksum_not_ready: false,
                            });
                        }
                        None => break,
                    }
                }
            }
        }
        Ok(n)
    }

    /// The kernel's counts since the last call (reading resets them).
    pub fn statistics(&self) -> io::Result<KernelStats> {
        // The V3 layout; a socket of another version fills the first two fields only.
        let mut stats = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `stats` is a valid, writable tpacket_stats_v3 and `len` holds its size, as
        // PACKET_STATISTICS expects (packet(7)); the kernel writes at most `len` bytes (fewer,
        // a tpacket_stats, for a socket that is not TPACKET_V3) and updates `len`. The
        // descriptor is an open packet socket owned by `self`.
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
        Ok(KernelStats {
            packets: u64::from(stats.tp_packets),
            drops: u64::from(stats.tp_drops),
            freezes: u64::from(stats.tp_freeze_q_cnt),
        })
    }

    /// Makes this socket the first of a new fanout group split by `program` (classic BPF
    /// returning the member's index; see [`crate::io::fanout`]) and returns the group's id,
    /// for the other sockets to [`join`](Self::join_fanout). The kernel picks an id no other
    /// group on the machine uses (`PACKET_FANOUT_FLAG_UNIQUEID`); a kernel without that flag
    /// (before 4.16?) gets one derived from the process id.
    pub fn create_fanout(&self, program: &[libc::sock_filter]) -> io::Result<u16> {
        let unique = FANOUT_CBPF | libc::PACKET_FANOUT_FLAG_UNIQUEID;
        let id = match set_packet_option(&self.fd, libc::PACKET_FANOUT, &(unique << 16)) {
            Ok(()) => self.fanout_id()?,
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                let id = (std::process::id() & 0xffff) as u16;
                self.join_fanout(id).map_err(|err| {
                    io::Error::new(
                        err.kind(),
                        format!("fanout group {id}: {err} (another capture holds this id?)"),
                    )
                })?;
                id
            }
            Err(err) => return Err(err),
        };
        let len = u16::try_from(program.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
        let fprog = libc::sock_fprog {
            len,
            filter: program.as_ptr().cast_mut(),
        };
        // The kernel copies the program during the call (fanout_set_data_cbpf), so the
        // pointer need only live across it; `program` does.
        set_packet_option(&self.fd, libc::PACKET_FANOUT_DATA, &fprog)?;
        Ok(id)
    }

    /// Joins the fanout group `id` made by [`create_fanout`](Self::create_fanout).
    pub fn join_fanout(&self, id: u16) -> io::Result<()> {
        let arg: u32 = u32::from(id) | (FANOUT_CBPF << 16);
        set_packet_option(&self.fd, libc::PACKET_FANOUT, &arg)
    }

    /// The fanout group's id (the kernel's choice, after `PACKET_FANOUT_FLAG_UNIQUEID`).
    fn fanout_id(&self) -> io::Result<u16> {
        let mut value: u32 = 0;
        let mut len = size_of::<u32>() as libc::socklen_t;
        // SAFETY: `value` is a writable u32 and `len` its size; PACKET_FANOUT reads back as
        // one u32 (id in the low 16 bits, type and flags above; packet(7)).
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_FANOUT,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((value & 0xffff) as u16)
    }
}

/// One `recvmsg`: the frame's real length, or `None` when nothing is waiting.
fn recv_one(fd: &OwnedFd, buf: &mut [u8], loopback: bool) -> io::Result<Option<usize>> {
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let (len, pkttype) =
            match recvmsg::<LinkAddr>(fd.as_raw_fd(), &mut iov, None, MsgFlags::MSG_TRUNC) {
                Ok(msg) => (
                    msg.bytes,
                    msg.address.map_or(libc::PACKET_HOST, |a| a.pkttype()),
                ),
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err.into()),
            };
        if pkttype == libc::PACKET_OUTGOING && loopback {
            continue;
        }
        return Ok(Some(len));
    }
}

/// Sends raw frames out of one interface in batches (`sendmmsg`), bypassing the qdisc: the
/// load generator of `benches/monitor.sh` (`examples/pcap_blast.rs`), not used by pinhole.
#[derive(Debug)]
pub struct PacketSender {
    fd: OwnedFd,
}

impl PacketSender {
    /// A sending socket bound to `iface`.
    pub fn open(iface: &str) -> io::Result<PacketSender> {
        let index = nix::net::if_::if_nametoindex(iface).map_err(|err| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("interface {iface:?}: {err}"),
            )
        })?;
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let ifindex = i32::try_from(index)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        // Protocol 0 in the bind: the socket sends, and receives nothing.
        bind(&fd, ifindex, 0)?;
        let one: libc::c_int = 1;
        set_packet_option(&fd, libc::PACKET_QDISC_BYPASS, &one)?;
        setsockopt(&fd, sockopt::SndBuf, &(4usize << 20))?;
        Ok(PacketSender { fd })
    }

    /// Sends `frames` (at most 1024), blocking while the device queue is full; returns how
    /// many went.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let frames = &frames[..frames.len().min(1024)];
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value (no address,
                // no control data), and the fields that matter are set below.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = std::ptr::from_mut(iov);
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            let count = u32::try_from(msgs.len() - sent).unwrap_or(u32::MAX);
            // SAFETY: `msgs[sent..]` are initialised mmsghdrs, each pointing at one iovec of
            // `iovs` that describes a live, readable frame of `frames`; all outlive the call,
            // and `count` is their number. The kernel only reads the frames.
            let rc =
                unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs[sent..].as_mut_ptr(), count, 0) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS | libc::EAGAIN) => {
                        std::thread::yield_now();
                        continue;
                    }
                    _ if sent > 0 => return Ok(sent),
                    _ => return Err(err),
                }
            }
            sent += usize::try_from(rc).unwrap_or(0);
        }
        Ok(sent)
    }
}

/// Binds the socket to one interface, all protocols.
fn bind_to_interface(fd: &OwnedFd, ifindex: i32) -> io::Result<()> {
    bind(fd, ifindex, libc::ETH_P_ALL as u16)
}

/// Binds the socket to one interface and `protocol` (host order; 0: none).
fn bind(fd: &OwnedFd, ifindex: i32, protocol: u16) -> io::Result<()> {
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
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
    use std::net::UdpSocket;
    use std::time::Instant;

    #[test]
    fn an_unknown_interface_is_named_in_the_error() {
        let err = PacketSocket::open("no-such-if0", CaptureConfig::default()).unwrap_err();
        assert!(err.to_string().contains("no-such-if0"), "{err}");
    }

    /// Opens a capture on `lo`, or `None` without the privilege (CAP_NET_RAW) to.
    fn open_lo(ring: Option<RingConfig>) -> Option<PacketSocket> {
        let config = CaptureConfig {
            promiscuous: false,
            rcvbuf: 1 << 20,
            ring,
        };
        match PacketSocket::open("lo", config) {
            Ok(socket) => Some(socket),
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: no CAP_NET_RAW to open a packet socket");
                None
            }
            Err(err) => panic!("opening a capture on lo: {err}"),
        }
    }

    /// Sends `count` UDP datagrams carrying `tag` over loopback and collects the frames the
    /// capture sees that carry it: (frame bytes, real length).
    fn capture_tagged(
        socket: &mut PacketSocket,
        tag: &[u8],
        count: usize,
        size: usize,
    ) -> Vec<(Vec<u8>, usize)> {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut payload = tag.to_vec();
        payload.resize(size.max(tag.len()), 0x5a);
        for _ in 0..count {
            tx.send_to(&payload, rx.local_addr().unwrap()).unwrap();
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while got.len() < count && Instant::now() < deadline {
            if socket.wait_readable(Duration::from_millis(50)).unwrap() {
                socket
                    .read(64, 64, |f| {
                        if f.data.windows(tag.len()).any(|w| w == tag) {
                            got.push((f.data.to_vec(), f.len));
                        }
                    })
                    .unwrap();
            }
        }
        // Anything late (a second copy) would show up within a block timeout.
        std::thread::sleep(Duration::from_millis(60));
        let _ = socket.read(64, 64, |f| {
            if f.data.windows(tag.len()).any(|w| w == tag) {
                got.push((f.data.to_vec(), f.len));
            }
        });
        got
    }

    #[test]
    fn the_ring_delivers_each_loopback_frame_once_within_the_block_timeout() {
        let Some(mut socket) = open_lo(Some(RingConfig::of_mib(2))) else {
            return;
        };
        assert!(
            matches!(socket.reader(), Reader::Ring(_)),
            "{:?}",
            socket.reader()
        );
        let tag = b"pinhole-ring-test-7f3a";
        let started = Instant::now();
        let got = capture_tagged(&mut socket, tag, 5, 100);
        assert_eq!(
            got.len(),
            5,
            "each datagram once (the outgoing copy skipped)"
        );
        for (data, len) in &got {
            assert_eq!(*len, data.len());
            assert_eq!(
                data.len(),
                14 + 20 + 8 + 100,
                "Ethernet + IPv4 + UDP + payload"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        let stats = socket.statistics().unwrap();
        assert!(stats.packets >= 5, "{stats:?}");
    }

    #[test]
    fn the_recvmsg_path_delivers_each_loopback_frame_once_and_knows_a_cut_frame() {
        let Some(mut socket) = open_lo(None) else {
            return;
        };
        assert!(matches!(socket.reader(), Reader::Recvmsg { why: None }));
        let tag = b"pinhole-recvmsg-test-91c2";
        let got = capture_tagged(&mut socket, tag, 3, 100);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(d, len)| d.len() == *len));
        // A frame larger than the buffer: cut, with its real length.
        socket.buf.truncate(64);
        // (The tag lies in the first 64 bytes: 42 of headers, then the payload.)
        let got = capture_tagged(&mut socket, b"ph-cut-3e1", 1, 300);
        let cut = got.iter().find(|(_, len)| *len == 14 + 20 + 8 + 300);
        assert!(cut.is_some_and(|(d, _)| d.len() == 64), "{got:?}");
    }

    #[test]
    fn a_ring_that_cannot_be_made_falls_back_to_recvmsg_and_says_why() {
        // Blocks that are not a multiple of the page size: refused before the kernel is asked.
        let bad = RingConfig {
            block_size: 1000,
            blocks: 2,
            retire_ms: 10,
        };
        let Some(mut socket) = open_lo(Some(bad)) else {
            return;
        };
        match socket.reader() {
            Reader::Recvmsg { why: Some(why) } => assert!(why.contains("page size"), "{why}"),
            other => panic!("{other:?}"),
        }
        let got = capture_tagged(&mut socket, b"pinhole-fallback-test-0b1d", 2, 50);
        assert_eq!(got.len(), 2);
    }

    /// The kernel runs the fanout program: both directions of each loopback address pair
    /// reach the same member of a group of two (the outgoing copies, hashed on the way out,
    /// are skipped on loopback; the incoming ones are hashed at the network header), and the
    /// pairs spread over both.
    #[test]
    fn a_fanout_group_keeps_both_directions_of_a_pair_on_one_socket() {
        let Some(mut first) = open_lo(Some(RingConfig::of_mib(2))) else {
            return;
        };
        let Some(mut second) = open_lo(None) else {
            return;
        };
        let id = first
            .create_fanout(&crate::io::fanout::symmetric_program(2))
            .unwrap();
        second.join_fanout(id).unwrap();
        // A second group gets another id.
        let Some(other) = open_lo(None) else { return };
        assert_ne!(
            other
                .create_fanout(&crate::io::fanout::symmetric_program(2))
                .unwrap(),
            id
        );
        let server = UdpSocket::bind("127.0.0.200:0").unwrap();
        let pairs = 24u8;
        for k in 1..=pairs {
            let client = UdpSocket::bind(format!("127.0.0.{k}:0")).unwrap();
            let tag = format!("ph-fanout-{k:03}-out");
            client
                .send_to(tag.as_bytes(), server.local_addr().unwrap())
                .unwrap();
            let back = format!("ph-fanout-{k:03}-back");
            server
                .send_to(back.as_bytes(), client.local_addr().unwrap())
                .unwrap();
        }
        let mut seen: Vec<(u8, usize)> = Vec::new(); // (pair, socket)
        let deadline = Instant::now() + Duration::from_secs(3);
        while seen.len() < 2 * usize::from(pairs) && Instant::now() < deadline {
            for (which, socket) in [&mut first, &mut second].into_iter().enumerate() {
                if socket.wait_readable(Duration::from_millis(10)).unwrap() {
                    socket
                        .read(8, 64, |f| {
                            if let Some(at) = f.data.windows(10).position(|w| w == b"ph-fanout-") {
                                let digits = &f.data[at + 10..at + 13];
                                let k = std::str::from_utf8(digits).unwrap().parse().unwrap();
                                seen.push((k, which));
                            }
                        })
                        .unwrap();
                }
            }
        }
        assert_eq!(seen.len(), 2 * usize::from(pairs), "{seen:?}");
        for k in 1..=pairs {
            let sockets: Vec<usize> = seen.iter().filter(|s| s.0 == k).map(|s| s.1).collect();
            assert_eq!(sockets.len(), 2, "pair {k}: {seen:?}");
            assert_eq!(sockets[0], sockets[1], "pair {k} split: {seen:?}");
        }
        let on_first = seen.iter().filter(|s| s.1 == 0).count();
        assert!(
            on_first > 0 && on_first < seen.len(),
            "all on one socket: {seen:?}"
        );
    }

    #[test]
    fn the_ring_cuts_a_frame_to_the_block_and_keeps_its_real_length() {
        // 1 MiB blocks and 64 KiB loopback datagrams fit; a ring frame is never longer than
        // its block: checked by walk_block. Here, the whole frame arrives.
        let Some(mut socket) = open_lo(Some(RingConfig::of_mib(2))) else {
            return;
        };
        let got = capture_tagged(&mut socket, b"pinhole-big-frame-55e0", 1, 60_000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, 14 + 20 + 8 + 60_000);
        assert_eq!(got[0].0.len(), got[0].1);
    }
}
