//! Builders for packets and TCP conversations, for tests, benchmarks and crafted captures.
//!
//! Frames are Ethernet II with fixed MAC addresses. Nothing here is used by the engine.

// Test support: a builder given a malformed address or an impossible frame is a bug in the test
// that called it, so it panics with a message instead of returning errors nobody could handle.
#![allow(
    clippy::missing_panics_doc,
    clippy::panic,
    clippy::expect_used,
    clippy::cast_sign_loss
)]

use std::net::{IpAddr, SocketAddr};

use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, TcpHeader, TcpOptionElement};

use crate::time::Instant;

/// MAC address of the "outside" side of test frames.
pub const MAC_OUTSIDE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// MAC address of the "inside" side of test frames.
pub const MAC_INSIDE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Length of the Ethernet header the builders prepend.
pub const ETHERNET_LEN: usize = 14;

/// Parses `"192.0.2.10:21"` or `"[2001:db8::1]:21"`; panics on a typo (test input).
pub fn sock(text: &str) -> SocketAddr {
    match text.parse() {
        Ok(addr) => addr,
        Err(err) => panic!("bad socket address {text:?}: {err}"),
    }
}

/// Parses an IP address; panics on a typo (test input).
pub fn addr(text: &str) -> IpAddr {
    match text.parse() {
        Ok(addr) => addr,
        Err(err) => panic!("bad address {text:?}: {err}"),
    }
}

fn ip_step(src: IpAddr, dst: IpAddr, ttl: u8) -> PacketBuilderStep<IpHeaders> {
    let eth = PacketBuilder::ethernet2(MAC_OUTSIDE, MAC_INSIDE);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), ttl),
        _ => panic!("mixed address families: {src} -> {dst}"),
    }
}

/// TCP flag bits for [`tcp`].
pub mod flags {
    pub use crate::wire::TcpFlags;
    /// FIN.
    pub const FIN: u8 = TcpFlags::FIN;
    /// SYN.
    pub const SYN: u8 = TcpFlags::SYN;
    /// RST.
    pub const RST: u8 = TcpFlags::RST;
    /// PSH.
    pub const PSH: u8 = TcpFlags::PSH;
    /// ACK.
    pub const ACK: u8 = TcpFlags::ACK;
    /// URG.
    pub const URG: u8 = TcpFlags::URG;
}

/// A TCP segment in an Ethernet frame, with any flag combination.
pub struct TcpBuilder {
    src: SocketAddr,
    dst: SocketAddr,
    header: TcpHeader,
}

impl TcpBuilder {
    /// A segment from `src` to `dst` with these flags, numbers and window.
    pub fn new(
        src: SocketAddr,
        dst: SocketAddr,
        flag_bits: u8,
        seq: u32,
        ack: u32,
        window: u16,
    ) -> Self {
        let mut header = TcpHeader::new(src.port(), dst.port(), seq, window);
        header.fin = flag_bits & flags::FIN != 0;
        header.syn = flag_bits & flags::SYN != 0;
        header.rst = flag_bits & flags::RST != 0;
        header.psh = flag_bits & flags::PSH != 0;
        header.ack = flag_bits & flags::ACK != 0;
        header.urg = flag_bits & flags::URG != 0;
        header.acknowledgment_number = ack;
        TcpBuilder { src, dst, header }
    }

    /// Adds MSS and window-scale options (as on a SYN).
    #[must_use]
    pub fn syn_options(mut self, wscale: Option<u8>) -> Self {
        let mut options = vec![TcpOptionElement::MaximumSegmentSize(1460)];
        if let Some(shift) = wscale {
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::WindowScale(shift));
        }
        self.header.set_options(&options).expect("options fit");
        self
    }

    /// Sets the urgent pointer.
    #[must_use]
    pub fn urgent(mut self, pointer: u16) -> Self {
        self.header.urgent_pointer = pointer;
        self
    }

    /// The frame carrying `payload`.
    pub fn build(self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ip_step(self.src.ip(), self.dst.ip(), 64)
            .tcp_header(self.header)
            .write(&mut out, payload)
            .expect("frame builds");
        out
    }
}

/// A TCP segment frame.
pub fn tcp(
    src: SocketAddr,
    dst: SocketAddr,
    flag_bits: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    TcpBuilder::new(src, dst, flag_bits, seq, ack, 64_240).build(payload)
}

/// A UDP datagram frame.
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ip_step(src.ip(), dst.ip(), 64)
        .udp(src.port(), dst.port())
        .write(&mut out, payload)
        .expect("frame builds");
    out
}

/// An ICMP or ICMPv6 echo request (`request`) or reply frame.
pub fn icmp_echo(src: IpAddr, dst: IpAddr, id: u16, seq: u16, request: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let step = ip_step(src, dst, 64);
    let payload = b"pinhole-ping";
    let written = match (src.is_ipv6(), request) {
        (false, true) => step.icmpv4_echo_request(id, seq).write(&mut out, payload),
        (false, false) => step.icmpv4_echo_reply(id, seq).write(&mut out, payload),
        (true, true) => step.icmpv6_echo_request(id, seq).write(&mut out, payload),
        (true, false) => step.icmpv6_echo_reply(id, seq).write(&mut out, payload),
    };
    written.expect("frame builds");
    out
}

/// An ICMP error of `icmp_type`/`code` from `src` to `dst`, quoting `quoted_frame` (an
/// Ethernet frame built here; its IP header and first 8 transport bytes are quoted).
pub fn icmp_error(
    src: IpAddr,
    dst: IpAddr,
    icmp_type: u8,
    code: u8,
    quoted_frame: &[u8],
) -> Vec<u8> {
    let ip = &quoted_frame[ETHERNET_LEN..];
    let header_len = if src.is_ipv6() {
        40
    } else {
        usize::from(ip[0] & 0x0f) * 4
    };
    let quote = &ip[..(header_len + 8).min(ip.len())];
    let mut out = Vec::new();
    let step = ip_step(src, dst, 64);
    if src.is_ipv6() {
        step.icmpv6_raw(icmp_type, code, [0; 4])
            .write(&mut out, quote)
            .expect("frame builds");
    } else {
        step.icmpv4_raw(icmp_type, code, [0; 4])
            .write(&mut out, quote)
            .expect("frame builds");
    }
    out
}

/// A frame of IP protocol `proto` with a raw payload (GRE, ESP, ...). IPv4 only.
pub fn raw_ipv4(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        panic!("raw_ipv4 needs IPv4")
    };
    let mut header =
        etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber(proto), s.octets(), d.octets())
            .expect("header");
    header.set_payload_len(payload.len()).expect("length fits");
    let mut out = Vec::new();
    etherparse::Ethernet2Header {
        source: MAC_OUTSIDE,
        destination: MAC_INSIDE,
        ether_type: etherparse::EtherType::IPV4,
    }
    .write(&mut out)
    .expect("header");
    header.write(&mut out).expect("header");
    out.extend_from_slice(payload);
    out
}

/// RFC 1071 Internet checksum.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Splits an Ethernet frame carrying IPv4 or IPv6 into fragments of at most `chunk` data bytes
/// each (rounded down to a multiple of 8), with identification `id`.
pub fn fragment(frame: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(ETHERNET_LEN);
    let chunk = (chunk / 8).max(1) * 8;
    let v6 = ip[0] >> 4 == 6;
    let header_len = if v6 {
        40
    } else {
        usize::from(ip[0] & 0x0f) * 4
    };
    let (header, data) = ip.split_at(header_len);
    let pieces: Vec<&[u8]> = data.chunks(chunk).collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let offset = i * chunk;
            let more = i != last;
            let mut out = eth.to_vec();
            if v6 {
                let mut h = header.to_vec();
                let next = h[6];
                h[6] = 44;
                h[4..6].copy_from_slice(&((8 + piece.len()) as u16).to_be_bytes());
                out.extend_from_slice(&h);
                out.push(next);
                out.push(0);
                out.extend_from_slice(
                    &(((offset / 8) as u16) << 3 | u16::from(more)).to_be_bytes(),
                );
                out.extend_from_slice(&id.to_be_bytes());
            } else {
                let mut h = header.to_vec();
                h[2..4].copy_from_slice(&((header_len + piece.len()) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&(id as u16).to_be_bytes());
                h[6..8]
                    .copy_from_slice(&(u16::from(more) << 13 | (offset / 8) as u16).to_be_bytes());
                h[10..12].copy_from_slice(&[0, 0]);
                let sum = checksum(&h);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                out.extend_from_slice(&h);
            }
            out.extend_from_slice(piece);
            out
        })
        .collect()
}

/// One side's sequence state in a [`TcpSession`].
#[derive(Clone, Copy, Debug)]
struct Side {
    addr: SocketAddr,
    /// Next sequence number to send.
    next: u32,
    /// Receive window advertised.
    window: u16,
}

/// A TCP conversation between a client and a server, producing correct frames as it goes.
#[derive(Clone, Debug)]
pub struct TcpSession {
    client: Side,
    server: Side,
}

impl TcpSession {
    /// A session from `client` to `server` with these initial sequence numbers.
    pub fn new(client: SocketAddr, server: SocketAddr, client_isn: u32, server_isn: u32) -> Self {
        TcpSession {
            client: Side {
                addr: client,
                next: client_isn,
                window: 64_240,
            },
            server: Side {
                addr: server,
                next: server_isn,
                window: 65_160,
            },
        }
    }

    /// The client's address.
    pub fn client(&self) -> SocketAddr {
        self.client.addr
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server.addr
    }

    /// Next sequence number the client would send.
    pub fn client_next(&self) -> u32 {
        self.client.next
    }

    /// Next sequence number the server would send.
    pub fn server_next(&self) -> u32 {
        self.server.next
    }

    /// The client's SYN.
    pub fn syn(&mut self) -> Vec<u8> {
        let frame = TcpBuilder::new(
            self.client.addr,
            self.server.addr,
            flags::SYN,
            self.client.next,
            0,
            self.client.window,
        )
        .syn_options(Some(7))
        .build(&[]);
        self.client.next = self.client.next.wrapping_add(1);
        frame
    }

    /// The server's SYN-ACK.
    pub fn syn_ack(&mut self) -> Vec<u8> {
        let frame = TcpBuilder::new(
            self.server.addr,
            self.client.addr,
            flags::SYN | flags::ACK,
            self.server.next,
            self.client.next,
            self.server.window,
        )
        .syn_options(Some(7))
        .build(&[]);
        self.server.next = self.server.next.wrapping_add(1);
        frame
    }

    /// The three handshake frames.
    pub fn handshake(&mut self) -> Vec<Vec<u8>> {
        vec![self.syn(), self.syn_ack(), self.client_ack()]
    }

    fn send(&mut self, from_client: bool, flag_bits: u8, payload: &[u8]) -> Vec<u8> {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        // Windows after the handshake are scaled by 7 (both SYNs offered it).
        let frame = TcpBuilder::new(
            src.addr,
            dst.addr,
            flag_bits,
            src.next,
            dst.next,
            src.window >> 7,
        )
        .build(payload);
        let advance = payload.len() as u32 + u32::from(flag_bits & flags::FIN != 0);
        let side = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        side.next = side.next.wrapping_add(advance);
        frame
    }

    /// A pure ACK from the client.
    pub fn client_ack(&mut self) -> Vec<u8> {
        self.send(true, flags::ACK, &[])
    }

    /// A pure ACK from the server.
    pub fn server_ack(&mut self) -> Vec<u8> {
        self.send(false, flags::ACK, &[])
    }

    /// Data from the client (PSH, ACK).
    pub fn client_data(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(true, flags::PSH | flags::ACK, payload)
    }

    /// Data from the server (PSH, ACK).
    pub fn server_data(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(false, flags::PSH | flags::ACK, payload)
    }

    /// FIN from the client.
    pub fn client_fin(&mut self) -> Vec<u8> {
        self.send(true, flags::FIN | flags::ACK, &[])
    }

    /// FIN from the server.
    pub fn server_fin(&mut self) -> Vec<u8> {
        self.send(false, flags::FIN | flags::ACK, &[])
    }

    /// RST from the client at its current sequence number.
    pub fn client_rst(&mut self) -> Vec<u8> {
        self.send(true, flags::RST | flags::ACK, &[])
    }

    /// A segment from the client with explicit flags and sequence offset from what it would
    /// send next (for out-of-window and injection cases); does not advance state.
    pub fn client_raw(&self, flag_bits: u8, seq_offset: i64, payload: &[u8]) -> Vec<u8> {
        let seq = (i64::from(self.client.next) + seq_offset) as u32;
        TcpBuilder::new(
            self.client.addr,
            self.server.addr,
            flag_bits,
            seq,
            self.server.next,
            self.client.window >> 7,
        )
        .build(payload)
    }

    /// Like [`TcpSession::client_raw`], from the server.
    pub fn server_raw(&self, flag_bits: u8, seq_offset: i64, payload: &[u8]) -> Vec<u8> {
        let seq = (i64::from(self.server.next) + seq_offset) as u32;
        TcpBuilder::new(
            self.server.addr,
            self.client.addr,
            flag_bits,
            seq,
            self.client.next,
            self.server.window >> 7,
        )
        .build(payload)
    }
}

/// Frames with timestamps, to write as a capture.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// The frames, in order.
    pub frames: Vec<(Instant, Vec<u8>)>,
    now: Instant,
}

impl Timeline {
    /// An empty timeline starting at `start`.
    pub fn starting(start: Instant) -> Self {
        Timeline {
            frames: Vec::new(),
            now: start,
        }
    }

    /// Appends a frame `millis` after the previous one.
    pub fn push(&mut self, millis: u64, frame: Vec<u8>) {
        self.now = self.now + std::time::Duration::from_millis(millis);
        self.frames.push((self.now, frame));
    }

    /// Appends frames 1 ms apart.
    pub fn extend(&mut self, frames: Vec<Vec<u8>>) {
        for frame in frames {
            self.push(1, frame);
        }
    }

    /// The pcap bytes of this timeline (Ethernet link type).
    pub fn to_pcap(&self) -> Vec<u8> {
        let mut writer =
            crate::io::pcap::PcapWriter::new(Vec::new(), crate::wire::LinkType::Ethernet)
                .expect("in memory");
        for (at, frame) in &self.frames {
            writer.write(*at, frame).expect("in memory");
        }
        writer.finish().expect("in memory")
    }
}

/// TLS records as an FTPS control connection carries them (RFC 8446 section 5.1): the
/// framing pinhole follows; the bodies are filler, nothing is encrypted.
pub mod tls {
    /// A record of `content_type` (20-23) with version 3.3 and `body`.
    pub fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![content_type, 3, 3];
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    /// A handshake record holding a hello of `kind` (1 ClientHello, 2 ServerHello) of
    /// `len` body bytes.
    pub fn hello(kind: u8, len: usize) -> Vec<u8> {
        let mut body = vec![0x5a; len.max(4)];
        body[0] = kind;
        record(22, &body)
    }

    /// A side's handshake up to its first encrypted record: the hello, a ChangeCipherSpec,
    /// an encrypted Finished, then an application-data record of `data` bytes.
    pub fn flight(kind: u8, data: usize) -> Vec<u8> {
        let mut f = hello(kind, 120);
        f.extend(record(20, &[1]));
        f.extend(record(22, &[0x9c; 40]));
        f.extend(record(23, &vec![0x17; data]));
        f
    }

    /// An encrypted alert record (a close_notify as TLS 1.2 sends it).
    pub fn close_notify() -> Vec<u8> {
        record(21, &[0x33; 26])
    }
}

/// TFTP payloads (RFC 1350 section 5, RFC 2347 section 2), to put in [`udp`] datagrams.
pub mod tftp {
    use crate::wire::tftp::opcode;

    fn with_opcode(op: u16) -> Vec<u8> {
        op.to_be_bytes().to_vec()
    }

    fn strings(out: &mut Vec<u8>, parts: &[&str]) {
        for part in parts {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
    }

    /// A read request for `file` in `mode`, with RFC 2347 `options` (name, value).
    pub fn rrq(file: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
        request(opcode::RRQ, file, mode, options)
    }

    /// A write request for `file` in `mode`, with RFC 2347 `options` (name, value).
    pub fn wrq(file: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
        request(opcode::WRQ, file, mode, options)
    }

    fn request(op: u16, file: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
        let mut out = with_opcode(op);
        strings(&mut out, &[file, mode]);
        for (name, value) in options {
            strings(&mut out, &[name, value]);
        }
        out
    }

    /// DATA `block` carrying `len` bytes of filler.
    pub fn data(block: u16, len: usize) -> Vec<u8> {
        let mut out = with_opcode(opcode::DATA);
        out.extend_from_slice(&block.to_be_bytes());
        out.resize(4 + len, 0x5a);
        out
    }

    /// ACK `block`.
    pub fn ack(block: u16) -> Vec<u8> {
        let mut out = with_opcode(opcode::ACK);
        out.extend_from_slice(&block.to_be_bytes());
        out
    }

    /// ERROR `code` with `message`.
    pub fn error(code: u16, message: &str) -> Vec<u8> {
        let mut out = with_opcode(opcode::ERROR);
        out.extend_from_slice(&code.to_be_bytes());
        strings(&mut out, &[message]);
        out
    }

    /// OACK acknowledging `options` (name, value).
    pub fn oack(options: &[(&str, &str)]) -> Vec<u8> {
        let mut out = with_opcode(opcode::OACK);
        for (name, value) in options {
            strings(&mut out, &[name, value]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Transport, ip, link, transport};

    fn decode(frame: &[u8]) -> (ip::IpPacket<'_>, Option<Transport<'_>>) {
        let bytes = link::ip_bytes(crate::wire::LinkType::Ethernet, frame).unwrap();
        let packet = ip::decode(bytes).unwrap();
        let t = packet
            .fragment
            .is_none()
            .then(|| transport::decode(packet.proto, packet.is_ipv6(), packet.payload).unwrap());
        (packet, t)
    }

    #[test]
    fn session_frames_decode_with_the_right_numbers() {
        let mut s = TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:21"), 100, 900);
        let syn = s.syn();
        let (_, Some(Transport::Tcp(seg))) = decode(&syn) else {
            panic!()
        };
        assert!(seg.flags.syn() && seg.wscale == Some(7) && seg.seq == 100);
        let synack = s.syn_ack();
        let (_, Some(Transport::Tcp(seg))) = decode(&synack) else {
            panic!()
        };
        assert_eq!((seg.seq, seg.ack), (900, 101));
        let data = s.client_data(b"USER x\r\n");
        let (_, Some(Transport::Tcp(seg))) = decode(&data) else {
            panic!()
        };
        assert_eq!(
            (seg.seq, seg.ack, seg.payload),
            (101, 901, &b"USER x\r\n"[..])
        );
        assert_eq!(s.client_next(), 109);
    }

    #[test]
    fn fragments_have_consistent_offsets_v4_and_v6() {
        for (client, server) in [
            ("198.51.100.10:1000", "192.0.2.10:69"),
            ("[2001:db8:100::10]:1000", "[2001:db8:2::10]:69"),
        ] {
            let frame = udp(sock(client), sock(server), &[7u8; 100]);
            let pieces = fragment(&frame, 40, 77);
            assert_eq!(pieces.len(), 3);
            let mut total = 0;
            for (i, piece) in pieces.iter().enumerate() {
                let (packet, _) = decode(piece);
                let info = packet.fragment.unwrap();
                assert_eq!(info.offset as usize, i * 40);
                assert_eq!(info.more, i < 2);
                assert_eq!(info.id, 77);
                total += packet.payload.len();
            }
            assert_eq!(total, 108);
        }
    }

    #[test]
    fn icmp_error_quotes_header_and_8_bytes() {
        let original = udp(
            sock("198.51.100.10:1000"),
            sock("192.0.2.10:5999"),
            b"hello",
        );
        let error = icmp_error(addr("192.0.2.10"), addr("198.51.100.10"), 3, 3, &original);
        let (_, Some(Transport::Icmp(msg))) = decode(&error) else {
            panic!()
        };
        let crate::wire::IcmpKind::Error { quoted } = msg.kind else {
            panic!()
        };
        assert_eq!(quoted.len(), 28);
    }
}
