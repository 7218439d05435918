//! A small NFQUEUE client speaking nfnetlink directly (no libnetfilter_queue).
//!
//! Why not the `nfq` crate: the daemon needs the socket's file descriptor (to wait on it
//! together with the engine's timers), a sized receive buffer, counted ENOBUFS, verdicts sent
//! in batches (many netlink messages in one `send`), and no panics on a message it does not
//! expect. The protocol is small: `linux/netfilter/nfnetlink_queue.h` and `linux/netlink.h`.
//! Every message is parsed with bounds checks; nothing here uses `unsafe` (the syscalls go
//! through `nix`).
//!
//! Layout of a netlink message: a 16-byte header (`nlmsghdr`, host byte order), then for
//! nfnetlink a 4-byte `nfgenmsg` whose `res_id` is the queue number (network order), then
//! attributes (`nlattr`: 16-bit length and type, host order, payload padded to 4 bytes).
//! NFQUEUE attribute payloads are in network byte order.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;

use super::netlink::{
    NFGEN_HDRLEN, NLA_HDRLEN, NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN,
    NLMSG_NOOP, NLMSG_OVERRUN, align4, attributes, be32, u16_ne,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, sockopt,
};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

// Config attributes (enum nfqnl_attr_config).
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;

/// Accept packets when the queue is full instead of dropping them.
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
/// Attach the packet's connection tracking entry (`NFQA_CT`, `NFQA_CT_INFO`).
const NFQA_CFG_F_CONNTRACK: u32 = 2;
/// Hand over GSO/GRO super-packets whole instead of segmenting them first.
const NFQA_CFG_F_GSO: u32 = 4;

// Packet attributes (enum nfqnl_attr_type).
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_IFINDEX_OUTDEV: u16 = 6;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CT: u16 = 11;
const NFQA_CT_INFO: u16 = 12;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_SKB_INFO: u16 = 14;

/// The checksum of the packet is not computed yet (it left a local socket with offload).
const NFQA_SKB_CSUMNOTREADY: u32 = 1;
/// The packet is a GSO super-packet.
const NFQA_SKB_GSO: u32 = 2;

/// What the kernel does with a queued packet (`NF_*` in `linux/netfilter.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelVerdict {
    /// `NF_DROP`.
    Drop,
    /// `NF_ACCEPT`: the packet continues with the next hook (the rest of this chain is not
    /// traversed).
    Accept,
    /// `NF_REPEAT`: the packet traverses the same hook again (with the mark set in the
    /// verdict), so a rule before the queue rule can act on that mark.
    Repeat,
}

impl KernelVerdict {
    const fn code(self) -> u32 {
        match self {
            KernelVerdict::Drop => 0,
            KernelVerdict::Accept => 1,
            KernelVerdict::Repeat => 4,
        }
    }
}

/// How a queue is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Bytes of each packet copied to userspace (at most 65535).
    pub copy_range: u32,
    /// Packets the kernel keeps waiting for a verdict before the queue counts as full.
    pub max_len: u32,
    /// Accept instead of drop when the queue is full (`NFQA_CFG_F_FAIL_OPEN`).
    pub fail_open: bool,
    /// Take GSO/GRO super-packets whole (`NFQA_CFG_F_GSO`).
    pub gso: bool,
    /// Receive buffer of the netlink socket, in bytes (`SO_RCVBUFFORCE`).
    pub rcvbuf: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            copy_range: 0xffff,
            max_len: 4096,
            fail_open: false,
            gso: true,
            rcvbuf: 8 << 20,
        }
    }
}

/// A queued packet, borrowed from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedPacket<'a> {
    /// The queue it came from.
    pub queue: u16,
    /// The kernel's id for the verdict.
    pub id: u32,
    /// The packet mark (`skb->mark`).
    pub mark: u32,
    /// Interface index it came in by (0 when unknown).
    pub indev: u32,
    /// Interface index it leaves by (0 when unknown).
    pub outdev: u32,
    /// The packet from its IP header, at most the copy range long.
    pub payload: &'a [u8],
    /// Its full length when the payload was cut to the copy range.
    pub cap_len: Option<u32>,
    /// Its TCP/UDP checksum is not computed yet (left a local socket, or a GSO packet).
    pub checksum_not_ready: bool,
    /// A GSO super-packet (several segments' worth of data in one).
    pub gso: bool,
    /// The connection tracking entry's attributes (`NFQA_CT`: `CTA_*`, see
    /// [`crate::io::ctnetlink`]), when the queue asked for them and the packet has one.
    pub ct: Option<&'a [u8]>,
    /// The packet's `enum ip_conntrack_info` (`NFQA_CT_INFO`).
    pub ct_info: Option<u32>,
}

impl QueuedPacket<'_> {
    /// True when the payload is shorter than the packet (cut to the copy range).
    pub fn is_truncated(&self) -> bool {
        self.cap_len
            .is_some_and(|len| len as usize > self.payload.len())
    }
}

/// One message from the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A packet waiting for its verdict.
    Packet(QueuedPacket<'a>),
    /// An acknowledgement (`errno` 0) or an error reply to a request with sequence `seq`.
    Ack {
        /// The request's sequence number.
        seq: u32,
        /// 0 for success, else the positive errno.
        errno: i32,
    },
    /// Something malformed or of a type this client does not use; skipped.
    Other,
}

/// Iterates over the netlink messages in one received datagram.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            rest = &[];
            return Some(Message::Other);
        }
        let msg = &rest[..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(parse_message(msg))
    })
}

fn parse_message(msg: &[u8]) -> Message<'_> {
    let kind = u16_ne(&msg[4..6]);
    let body = &msg[NLMSG_HDRLEN..];
    match kind {
        NLMSG_ERROR => {
            let Some(code) = body.get(..4) else {
                return Message::Other;
            };
            let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
            // The error is followed by the header of the request it answers.
            let seq = body
                .get(4 + 8..4 + 12)
                .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
            Message::Ack {
                seq,
                errno: code.saturating_abs(),
            }
        }
        NLMSG_NOOP | NLMSG_DONE | NLMSG_OVERRUN => Message::Other,
        k if k == (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET) => {
            parse_packet(body).map_or(Message::Other, Message::Packet)
        }
        _ => Message::Other,
    }
}

fn parse_packet(body: &[u8]) -> Option<QueuedPacket<'_>> {
    let genmsg = body.get(..NFGEN_HDRLEN)?;
    let queue = u16::from_be_bytes([genmsg[2], genmsg[3]]);
    let mut packet = QueuedPacket {
        queue,
        id: 0,
        mark: 0,
        indev: 0,
        outdev: 0,
        payload: &[],
        cap_len: None,
        checksum_not_ready: false,
        gso: false,
        ct: None,
        ct_info: None,
    };
    let mut has_header = false;
    for (kind, value) in attributes(&body[NFGEN_HDRLEN..], Some(NFQA_PAYLOAD)) {
        match kind {
            // A short attribute leaves its field at the default: once the id is known the
            // packet must get a verdict, so nothing after the header makes it unusable.
            NFQA_PACKET_HDR => {
                // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }
                if let Some(id) = be32(value) {
                    packet.id = id;
                    has_header = true;
                }
            }
            NFQA_MARK => packet.mark = be32(value).unwrap_or(0),
            NFQA_IFINDEX_INDEV => packet.indev = be32(value).unwrap_or(0),
            NFQA_IFINDEX_OUTDEV => packet.outdev = be32(value).unwrap_or(0),
            NFQA_PAYLOAD => packet.payload = value,
            NFQA_CAP_LEN => packet.cap_len = be32(value),
            NFQA_CT => packet.ct = Some(value),
            NFQA_CT_INFO => packet.ct_info = be32(value),
            NFQA_SKB_INFO => {
                let info = be32(value).unwrap_or(0);
                packet.checksum_not_ready = info & NFQA_SKB_CSUMNOTREADY != 0;
                packet.gso = info & NFQA_SKB_GSO != 0;
            }
            _ => {}
        }
    }
    has_header.then_some(packet)
}

/// Builds netlink messages into a byte buffer.
struct MessageWriter {
    buf: Vec<u8>,
}

impl MessageWriter {
    fn new() -> Self {
        MessageWriter { buf: Vec::new() }
    }

    /// Starts a message; returns its offset for [`MessageWriter::finish`].
    fn begin(&mut self, kind: u16, flags: u16, seq: u32, queue: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        self.buf
            .extend_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | kind).to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, queue number in network order.
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&queue.to_be_bytes());
        start
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = (NLA_HDRLEN + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn finish(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// Verdicts collected while a batch of packets is judged, sent in one `send`.
pub struct VerdictBatch {
    writer: MessageWriter,
    count: usize,
}

impl Default for VerdictBatch {
    fn default() -> Self {
        VerdictBatch {
            writer: MessageWriter::new(),
            count: 0,
        }
    }
}

impl VerdictBatch {
    /// Adds the verdict for packet `id` of `queue`, optionally setting its mark.
    pub fn push(&mut self, queue: u16, id: u32, verdict: KernelVerdict, mark: Option<u32>) {
        self.push_with_payload(queue, id, verdict, mark, None);
    }

    /// Adds the verdict for packet `id` of `queue`, optionally setting its mark and replacing
    /// the packet with `payload` (`NFQA_PAYLOAD`: the whole IP packet; the kernel copies it
    /// over the queued one in `nfqnl_mangle`, `net/netfilter/nfnetlink_queue.c`, and marks its
    /// checksum as not computed, so the packet must carry a right one).
    pub fn push_with_payload(
        &mut self,
        queue: u16,
        id: u32,
        verdict: KernelVerdict,
        mark: Option<u32>,
        payload: Option<&[u8]>,
    ) {
        let start = self
            .writer
            .begin(NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, queue);
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&verdict.code().to_be_bytes());
        header[4..].copy_from_slice(&id.to_be_bytes());
        self.writer.attr(NFQA_VERDICT_HDR, &header);
        if let Some(mark) = mark {
            self.writer.attr(NFQA_MARK, &mark.to_be_bytes());
        }
        if let Some(payload) = payload {
            self.writer.attr(NFQA_PAYLOAD, payload);
        }
        self.writer.finish(start);
        self.count += 1;
    }

    /// Verdicts waiting to be sent.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    #[cfg(test)]
    fn bytes(&self) -> &[u8] {
        &self.writer.buf
    }

    /// The messages in runs of at most `max` bytes (a message is never split).
    fn chunks(&self, max: usize) -> Vec<&[u8]> {
        let buf = &self.writer.buf;
        let mut chunks = Vec::new();
        let (mut start, mut at) = (0, 0);
        while at + 4 <= buf.len() {
            let len = align4(
                u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize,
            );
            if len == 0 {
                break;
            }
            if at + len - start > max && at > start {
                chunks.push(&buf[start..at]);
                start = at;
            }
            at += len;
        }
        if start < buf.len() {
            chunks.push(&buf[start..]);
        }
        chunks
    }

    fn clear(&mut self) {
        self.writer.buf.clear();
        self.count = 0;
    }
}

/// A netlink socket bound to one NFQUEUE queue.
pub struct QueueSocket {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
    /// Packets that arrived while a configuration request waited for its acknowledgement.
    early: VecDeque<Vec<u8>>,
}

/// Largest verdict datagram sent at once (the default socket send buffer is 208 KiB).
pub const SEND_CHUNK: usize = 32 * 1024;

/// Largest datagram the kernel sends: a 64 KiB payload plus the attributes around it.
pub const RECV_BUFFER: usize = 0x10000 + 0x2000;

impl QueueSocket {
    /// Opens a socket, binds `queue` and applies `config`. Fails with the kernel's error,
    /// `EBUSY` when another process holds the queue, `EPERM` without `CAP_NET_ADMIN`.
    pub fn open(queue: u16, config: &QueueConfig) -> io::Result<QueueSocket> {
        let fd = nix::sys::socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        if setsockopt(&fd, sockopt::RcvBufForce, &config.rcvbuf).is_err() {
            // Without CAP_NET_ADMIN the forced size is refused; the capped one still helps.
            setsockopt(&fd, sockopt::RcvBuf, &config.rcvbuf)?;
        }
        let mut socket = QueueSocket {
            fd,
            queue,
            seq: 0,
            early: VecDeque::new(),
        };
        let mut flags = 0;
        if config.fail_open {
            flags |= NFQA_CFG_F_FAIL_OPEN;
        }
        if config.gso {
            flags |= NFQA_CFG_F_GSO;
        }
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&config.copy_range.min(0xffff).to_be_bytes());
        params[4] = NFQNL_COPY_PACKET;
        // One message: the kernel binds, then applies the copy mode, length and flags before
        // it answers, so no packet is ever queued to us without its bytes (a fresh queue
        // starts in NFQNL_COPY_NONE).
        socket.request(|w| {
            // struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }
            w.attr(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
            w.attr(NFQA_CFG_PARAMS, &params);
            w.attr(NFQA_CFG_QUEUE_MAXLEN, &config.max_len.to_be_bytes());
            w.attr(NFQA_CFG_FLAGS, &flags.to_be_bytes());
            w.attr(
                NFQA_CFG_MASK,
                &(NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO).to_be_bytes(),
            );
        })?;
        Ok(socket)
    }

    /// Asks the kernel to attach each packet's connection tracking entry (`NFQA_CT`). Fails
    /// with `EOPNOTSUPP` on kernels built without `CONFIG_NETFILTER_NETLINK_GLUE_CT`; the
    /// queue works as before then.
    pub fn request_conntrack(&mut self) -> io::Result<()> {
        self.request(|w| {
            w.attr(NFQA_CFG_FLAGS, &NFQA_CFG_F_CONNTRACK.to_be_bytes());
            w.attr(NFQA_CFG_MASK, &NFQA_CFG_F_CONNTRACK.to_be_bytes());
        })
    }

    /// The queue number.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Unbinds the queue. Closing the socket does it too; this reports errors.
    pub fn unbind(&mut self) -> io::Result<()> {
        self.request(|w| w.attr(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_UNBIND, 0, 0, 0]))
    }

    /// Sends one configuration message and waits (up to 2 s) for its acknowledgement.
    fn request(&mut self, build: impl FnOnce(&mut MessageWriter)) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut writer = MessageWriter::new();
        let start = writer.begin(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, self.queue);
        build(&mut writer);
        writer.finish(start);
        send(self.fd.as_raw_fd(), &writer.buf, MsgFlags::empty())?;
        let mut buf = vec![0u8; RECV_BUFFER];
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from the kernel to an NFQUEUE configuration request",
                ));
            }
            if !self.wait_readable(left)? {
                continue;
            }
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR | Errno::ENOBUFS) => continue,
                Err(err) => return Err(err.into()),
            };
            let data = &buf[..n];
            let mut answer = None;
            let mut has_packets = false;
            for message in messages(data) {
                match message {
                    Message::Ack { seq: s, errno } if s == seq => answer = Some(errno),
                    Message::Packet(_) => has_packets = true,
                    _ => {}
                }
            }
            if has_packets {
                self.early.push_back(data.to_vec());
            }
            match answer {
                Some(0) => return Ok(()),
                Some(errno) => return Err(io::Error::from_raw_os_error(errno)),
                None => {}
            }
        }
    }

    /// Waits until the socket is readable or `timeout` passes; true when readable.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        Ok(self.wait_readable_with(None, timeout)?.0)
    }

    /// Waits until the socket or `other` is readable, or `timeout` passes; says which are.
    pub fn wait_readable_with(
        &self,
        other: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> io::Result<(bool, bool)> {
        if !self.early.is_empty() {
            return Ok((true, false));
        }
        let millis = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [
            PollFd::new(self.fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(other.unwrap_or(self.fd.as_fd()), PollFlags::POLLIN),
        ];
        let n = if other.is_some() { 2 } else { 1 };
        let readable = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        match poll(&mut fds[..n], PollTimeout::from(millis)) {
            Ok(0) | Err(Errno::EINTR) => Ok((false, false)),
            Ok(_) => Ok((readable(&fds[0]), n == 2 && readable(&fds[1]))),
            Err(err) => Err(err.into()),
        }
    }

    /// Receives one datagram into `buf` without waiting. `Ok(None)`: nothing waiting.
    /// `ENOBUFS` (the kernel dropped messages because the socket buffer was full) is returned
    /// as an error of that kind for the caller to count; the socket keeps working.
    pub fn recv<'b>(&mut self, buf: &'b mut Vec<u8>) -> io::Result<Option<&'b [u8]>> {
        if let Some(early) = self.early.pop_front() {
            *buf = early;
            return Ok(Some(buf.as_slice()));
        }
        buf.resize(RECV_BUFFER, 0);
        match recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => Ok(Some(&buf[..n])),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Sends the batch's verdicts and empties it: in datagrams of at most [`SEND_CHUNK`]
    /// bytes (below the default socket send buffer), each retried a few times on a transient
    /// error, since a packet whose verdict is lost stays queued in the kernel until unbind.
    pub fn send_verdicts(&mut self, batch: &mut VerdictBatch) -> io::Result<()> {
        let mut result = Ok(());
        for chunk in batch.chunks(SEND_CHUNK) {
            if let Err(err) = self.send_with_retries(chunk) {
                result = Err(err);
            }
        }
        batch.clear();
        result
    }

    fn send_with_retries(&self, bytes: &[u8]) -> io::Result<()> {
        let mut attempts = 0;
        loop {
            match send(self.fd.as_raw_fd(), bytes, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(err @ (Errno::EAGAIN | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    attempts += 1;
                    if attempts > 5 {
                        return Err(err.into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The socket, for waiting on it together with other descriptors.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The kernel's view of one queue: a line of `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelQueueStats {
    /// The queue number.
    pub queue: u16,
    /// Packets waiting for a verdict now.
    pub queue_total: u64,
    /// Packets dropped because the queue was full (`--queue-maxlen`).
    pub queue_dropped: u64,
    /// Packets that could not be delivered to the socket (its buffer was full).
    pub user_dropped: u64,
}

/// Where the kernel lists its queues (for the network namespace of the reading process).
pub const PROC_QUEUES: &str = "/proc/net/netfilter/nfnetlink_queue";

/// Parses the kernel's queue list: per line `queue portid queue_total copy_mode copy_range
/// queue_dropped user_dropped id_sequence 1`. Lines that do not parse are skipped.
pub fn parse_kernel_queue_stats(text: &str) -> Vec<KernelQueueStats> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<u64> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if fields.len() < 7 {
                return None;
            }
            Some(KernelQueueStats {
                queue: u16::try_from(fields[0]).ok()?,
                queue_total: fields[2],
                queue_dropped: fields[5],
                user_dropped: fields[6],
            })
        })
        .collect()
}

/// The kernel's statistics for `queues` (empty when the file cannot be read: no queues bound
/// in this namespace, or not Linux).
pub fn kernel_queue_stats(queues: &std::ops::RangeInclusive<u16>) -> Vec<KernelQueueStats> {
    std::fs::read_to_string(PROC_QUEUES)
        .map(|text| {
            parse_kernel_queue_stats(&text)
                .into_iter()
                .filter(|q| queues.contains(&q.queue))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_queue_lines_parse() {
        let text =
            "    0  12345     3 2 65531     7     2   981  1\n    1 -4000 0 2 65531 0 0 0 1\nbad\n";
        // Queue 1's negative port id does not parse as unsigned: that line is skipped.
        assert_eq!(
            parse_kernel_queue_stats(text),
            vec![KernelQueueStats {
                queue: 0,
                queue_total: 3,
                queue_dropped: 7,
                user_dropped: 2,
            }]
        );
    }

    use super::*;

    /// A packet message as the kernel builds it.
    fn packet_message(queue: u16, id: u32, mark: u32, payload: &[u8], skb_info: u32) -> Vec<u8> {
        let mut w = MessageWriter::new();
        let start = w.begin(NFQNL_MSG_PACKET, 0, 0, queue);
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(2);
        w.attr(NFQA_PACKET_HDR, &hdr);
        w.attr(NFQA_MARK, &mark.to_be_bytes());
        w.attr(NFQA_IFINDEX_INDEV, &7u32.to_be_bytes());
        w.attr(NFQA_IFINDEX_OUTDEV, &9u32.to_be_bytes());
        w.attr(NFQA_SKB_INFO, &skb_info.to_be_bytes());
        w.attr(NFQA_PAYLOAD, payload);
        w.finish(start);
        w.buf
    }

    #[test]
    fn packet_messages_parse_with_every_field() {
        let mut buf = packet_message(3, 77, 0x1000_0000, b"\x45abcde", NFQA_SKB_CSUMNOTREADY);
        buf.extend(packet_message(3, 78, 0, b"\x60xyz", NFQA_SKB_GSO));
        let parsed: Vec<Message<'_>> = messages(&buf).collect();
        let [Message::Packet(a), Message::Packet(b)] = parsed.as_slice() else {
            panic!("{parsed:?}");
        };
        assert_eq!(
            (a.queue, a.id, a.mark, a.indev, a.outdev, a.payload),
            (3, 77, 0x1000_0000, 7, 9, &b"\x45abcde"[..])
        );
        assert!(a.checksum_not_ready && !a.gso && !a.is_truncated());
        assert_eq!((b.id, b.payload, b.gso), (78, &b"\x60xyz"[..], true));
    }

    #[test]
    fn every_truncation_of_a_message_is_skipped_without_panicking() {
        let buf = packet_message(1, 5, 0, b"\x45payload", 0);
        for cut in 0..buf.len() {
            let mut short = buf[..cut].to_vec();
            // Keep the header's length field honest for the cut, as a lying kernel would not.
            if cut >= 4 {
                short[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            for message in messages(&short) {
                if let Message::Packet(p) = message {
                    assert_eq!(p.id, 5, "a packet is only reported with its header");
                }
            }
        }
    }

    #[test]
    fn a_payload_whose_length_wrapped_runs_to_the_end_of_the_message() {
        // A 65535-byte packet: the attribute length 65539 is written as 3.
        let mut buf = packet_message(0, 9, 0, b"", 0);
        let payload_attr = buf.len() - 4;
        buf[payload_attr..payload_attr + 2].copy_from_slice(&3u16.to_ne_bytes());
        buf.extend(std::iter::repeat_n(0x45, 65535));
        let len = buf.len() as u32;
        buf[..4].copy_from_slice(&len.to_ne_bytes());
        let parsed: Vec<Message<'_>> = messages(&buf).collect();
        let [Message::Packet(p)] = parsed.as_slice() else {
            panic!("{:?}", parsed.len());
        };
        assert_eq!((p.id, p.payload.len()), (9, 65535));
    }

    #[test]
    fn a_packet_with_a_short_attribute_still_gets_its_id() {
        let mut w = MessageWriter::new();
        let start = w.begin(NFQNL_MSG_PACKET, 0, 0, 1);
        w.attr(NFQA_PACKET_HDR, &[0, 0, 0, 42, 8, 0, 2]);
        w.attr(NFQA_MARK, &[1, 2]);
        w.attr(NFQA_PAYLOAD, b"\x45");
        w.finish(start);
        let parsed: Vec<Message<'_>> = messages(&w.buf).collect();
        assert!(
            matches!(parsed.as_slice(), [Message::Packet(p)] if p.id == 42 && p.mark == 0 && p.payload == b"\x45"),
            "{parsed:?}"
        );
    }

    #[test]
    fn verdicts_are_sent_in_chunks_that_never_split_a_message() {
        let mut batch = VerdictBatch::default();
        for id in 0..1000 {
            batch.push(0, id, KernelVerdict::Accept, None);
        }
        let chunks = batch.chunks(SEND_CHUNK);
        assert_eq!(chunks.len(), 1, "32 bytes x 1000 fits one chunk");
        let small = batch.chunks(100);
        assert_eq!(small.len(), 334, "three 32-byte messages per 100 bytes");
        assert!(small.iter().all(|c| c.len() % 32 == 0 && !c.is_empty()));
        assert_eq!(small.iter().map(|c| c.len()).sum::<usize>(), 32_000);
    }

    #[test]
    fn error_replies_carry_the_request_sequence() {
        let mut msg = Vec::new();
        msg.extend_from_slice(&36u32.to_ne_bytes());
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&9u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(-16i32).to_ne_bytes()); // -EBUSY
        // The request's header: len, type, flags, seq 42, pid.
        msg.extend_from_slice(&[0; 8]);
        msg.extend_from_slice(&42u32.to_ne_bytes());
        msg.extend_from_slice(&[0; 4]);
        assert_eq!(
            messages(&msg).collect::<Vec<_>>(),
            vec![Message::Ack { seq: 42, errno: 16 }]
        );
    }

    #[test]
    fn verdict_batches_hold_one_message_per_packet() {
        let mut batch = VerdictBatch::default();
        batch.push(2, 10, KernelVerdict::Accept, None);
        batch.push(2, 11, KernelVerdict::Repeat, Some(0x2000_0000));
        assert_eq!(batch.len(), 2);
        let bytes = batch.bytes();
        // Two messages: 16 + 4 + 12 = 32 bytes, then 32 + 8 = 40 bytes with the mark.
        assert_eq!(bytes.len(), 72);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 32);
        assert_eq!(u32::from_ne_bytes(bytes[32..36].try_into().unwrap()), 40);
        // The second verdict: NF_REPEAT for id 11, mark in network order.
        assert_eq!(&bytes[32 + 24..32 + 32], &[0, 0, 0, 4, 0, 0, 0, 11]);
        assert_eq!(&bytes[32 + 36..32 + 40], &0x2000_0000u32.to_be_bytes());
    }
}
