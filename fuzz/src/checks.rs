//! The checks of the byte-level fuzz targets (`decode`, `ftp_command`, `ftp_reply`, `tftp`,
//! `tls_framing`) and
//! an engine wrapper that checks the bookkeeping of every verdict.
//!
//! Shared by the fuzz targets (through the `pinhole_fuzz` library) and by
//! `tests/fuzz_regressions.rs` (which includes this file by path), so an input under
//! `fuzz/regressions/<target>/` is replayed through exactly what the target runs. Every check
//! is an `assert!`: a failed check is a crash to the fuzzer and a failure to the test.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pinhole::alg::ftp::LineAssembler;
use pinhole::alg::ftp::tls::{Framing, Sender, TlsFollower};
use pinhole::wire::ftp::{self, Command};
use pinhole::wire::tftp::{self, Mode, RequestKind, TftpPacket};
use pinhole::wire::{LinkType, Transport, ip, link, transport};
use pinhole::{Decision, Engine, Expired, Instant, PacketInfo, Policy, Reason, Released, Verdict};

/// The link type a decode input's first byte selects (its low 3 bits).
pub fn link_type(selector: u8) -> LinkType {
    match selector & 7 {
        1 => LinkType::LinuxSll,
        2 => LinkType::LinuxSll2,
        3 => LinkType::RawIp,
        4 => LinkType::Null,
        5 => LinkType::Unsupported(147),
        _ => LinkType::Ethernet,
    }
}

/// The selector byte for `link` (the inverse of [`link_type`]), for seeds taken from captures.
pub fn link_selector(link: LinkType) -> u8 {
    match link {
        LinkType::Ethernet => 0,
        LinkType::LinuxSll => 1,
        LinkType::LinuxSll2 => 2,
        LinkType::RawIp => 3,
        LinkType::Null => 4,
        LinkType::Unsupported(_) => 5,
    }
}

/// The embedded default policy, parsed once.
pub fn default_policy() -> Arc<Policy> {
    static POLICY: OnceLock<Arc<Policy>> = OnceLock::new();
    POLICY
        .get_or_init(|| Arc::new(Policy::embedded_default()))
        .clone()
}

/// An engine whose every verdict is checked: a reason exactly on drops, held packets released
/// exactly once and never as held, and the counters adding up (see [`Tracked::check_counters`]).
pub struct Tracked {
    /// The engine under test.
    pub engine: Engine,
    /// The clock passed to the engine.
    pub now: Instant,
    next_handle: u64,
    held: BTreeSet<u64>,
    /// Flows and pinholes the engine started with (restored from a saved state).
    flow_base: u64,
    pinhole_base: u64,
    /// Print every decision to stderr (`PINHOLE_FUZZ_TRACE=1`).
    pub trace: bool,
    /// Every packet comes with the synced mark, as on a failover pair's standby
    /// (`PacketInfo::synced`).
    pub synced: bool,
}

impl Tracked {
    /// A fresh engine enforcing `policy`, its clock at `now`.
    pub fn new(policy: Arc<Policy>, now: Instant) -> Self {
        Tracked {
            engine: Engine::new(policy),
            now,
            next_handle: 0,
            held: BTreeSet::new(),
            flow_base: 0,
            pinhole_base: 0,
            trace: false,
            synced: false,
        }
    }

    /// Wraps an engine that already holds restored flows and pinholes (and no held packets).
    pub fn restored(engine: Engine, now: Instant) -> Self {
        let flow_base = engine.flows().len() as u64;
        let pinhole_base = engine.pinholes().len() as u64;
        Tracked {
            engine,
            now,
            next_handle: 0,
            held: BTreeSet::new(),
            flow_base,
            pinhole_base,
            trace: false,
            synced: false,
        }
    }

    /// Packets held for reassembly, waiting for a verdict.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
    }

    /// Judges one frame.
    pub fn process(
        &mut self,
        link: LinkType,
        frame: &[u8],
        verify: bool,
        offloaded: bool,
    ) -> Decision {
        let handle = self.next_handle;
        self.next_handle += 1;
        let mut info = PacketInfo::new(handle, link);
        info.verify_checksums = verify;
        info.offloaded = offloaded;
        info.synced = self.synced;
        let decision = self.engine.process(self.now, &info, frame);
        if self.trace {
            eprintln!(
                "  packet {handle}: {:?} {:?} {:?} events {:?}",
                decision.verdict, decision.reason, decision.flow, decision.events
            );
        }
        assert_eq!(
            decision.reason.is_some(),
            matches!(decision.verdict, Verdict::Drop | Verdict::Reject),
            "a reason exactly on drops: {decision:?}"
        );
        if !decision.rewrites.is_empty() {
            // A rewrite only on an accepted TCP segment, inside its payload, verbs to Xs, and
            // the adapter's rewriter takes it.
            assert_eq!(decision.verdict, Verdict::Accept, "{decision:?}");
            for r in &decision.rewrites {
                assert!(
                    !r.bytes.is_empty() && r.bytes.iter().all(|b| *b == b'X'),
                    "{r:?}"
                );
            }
            // (A rewrite of a fragmented segment is refused: the inline adapter drops the
            // packet rather than pass the command intact.)
            if let Ok(ip_packet) = link::ip_bytes(link, frame) {
                let rewrites = decision
                    .rewrites
                    .iter()
                    .map(|r| (r.offset, r.bytes.as_slice()));
                match transport::rewrite_tcp_payload(ip_packet, rewrites) {
                    Ok(_) | Err("a fragment, or not IP") => {}
                    Err(why) => panic!("a rewrite the adapter cannot apply: {why}: {decision:?}"),
                }
            }
        }
        self.release(&decision.released);
        if decision.verdict == Verdict::Held {
            assert!(self.held.insert(handle), "handle {handle} held twice");
        }
        decision
    }

    fn release(&mut self, released: &[Released]) {
        for r in released {
            assert_ne!(r.verdict, Verdict::Held, "released as held: {r:?}");
            assert_eq!(
                r.reason.is_some(),
                r.verdict != Verdict::Accept,
                "a reason exactly on drops: {r:?}"
            );
            assert!(
                self.held.remove(&r.handle),
                "released a packet that was not held (or twice): {r:?}"
            );
        }
    }

    /// Runs the timers due now. Afterwards no timer is due any more.
    pub fn expire(&mut self) -> Expired {
        let expired = self.engine.expire(self.now);
        self.release(&expired.released);
        if let Some(next) = self.engine.next_timeout() {
            assert!(
                next > self.now,
                "a timer still due after expire: next {next:?}, now {:?}",
                self.now
            );
        }
        expired
    }

    /// Ends the capture: every held packet gets its verdict.
    pub fn flush(&mut self) -> Expired {
        let flushed = self.engine.flush();
        self.release(&flushed.released);
        assert!(self.held.is_empty(), "held after flush: {:?}", self.held);
        flushed
    }

    /// The counters add up: every packet is accepted, dropped or still held; flows opened
    /// minus flows closed are the flows in the table; pinholes opened minus used, expired and
    /// closed are the pinholes in the table.
    pub fn check_counters(&self) {
        let c = self.engine.counters();
        assert_eq!(
            c.packets,
            c.accepted + c.dropped + self.held.len() as u64,
            "packets = accepted + dropped + held: {c:?}"
        );
        let dropped_by_reason: u64 = c.drops.nonzero().map(|(_, n)| n).sum();
        assert!(
            dropped_by_reason <= c.dropped,
            "drops by reason exceed drops: {c:?}"
        );
        assert_eq!(
            self.flow_base + c.flows_opened,
            c.flows_closed + self.engine.flows().len() as u64,
            "flows opened = closed + tracked: {c:?}"
        );
        assert!(c.flows_evicted <= c.flows_closed, "{c:?}");
        assert_eq!(
            self.pinhole_base + c.pinholes_opened,
            c.pinholes_used
                + c.pinholes_expired
                + c.pinholes_closed
                + self.engine.pinholes().len() as u64,
            "pinholes opened = used + expired + closed + pending: {c:?}"
        );
    }
}

// ---- decode ------------------------------------------------------------------------------------

/// `decode`: the first byte picks the link type (low 3 bits) and the packet's flags, the rest is
/// the frame. The wire decoders and a fresh engine (embedded default policy) must agree: a frame
/// the decoders refuse is dropped for exactly their reason. The frame is then sent again, the
/// timers run and the capture ends, with every verdict's bookkeeping checked.
pub fn decode(data: &[u8]) {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let link = link_type(selector);
    let verify = selector & 0x08 == 0;
    let offloaded = selector & 0x10 != 0;

    // The decoders on their own.
    let expected: Option<Reason> = match link::ip_bytes(link, frame) {
        Err(reason) => Some(reason),
        Ok(bytes) => {
            assert!(bytes.len() <= frame.len());
            match ip::decode(bytes) {
                Err(reason) => Some(reason),
                Ok(packet) => {
                    assert!(packet.payload.len() <= bytes.len());
                    if packet.fragment.is_some() {
                        None
                    } else {
                        match transport::decode(packet.proto, packet.is_ipv6(), packet.payload) {
                            Err(reason) => Some(reason),
                            Ok(t) => {
                                check_transport(&t, packet.payload);
                                None
                            }
                        }
                    }
                }
            }
        }
    };

    let mut t = Tracked::new(default_policy(), Instant::from_secs(1_000));
    t.engine.set_offload(selector & 0x20 != 0);
    let first = t.process(link, frame, verify, offloaded);
    assert!(
        first.released.is_empty(),
        "nothing was held before: {first:?}"
    );
    if let Some(reason) = expected {
        assert_eq!(
            (first.verdict, first.reason),
            (Verdict::Drop, Some(reason)),
            "the engine must drop what the decoders refuse"
        );
    }
    t.check_counters();
    t.advance(Duration::from_millis(1));
    let _ = t.process(link, frame, verify, offloaded);
    t.check_counters();
    t.advance(Duration::from_secs(7_200));
    let _ = t.expire();
    t.check_counters();
    let _ = t.flush();
    t.check_counters();
}

fn check_transport(t: &Transport<'_>, ip_payload: &[u8]) {
    match t {
        Transport::Tcp(seg) => {
            assert!(seg.payload.len() + 20 <= seg.bytes.len());
            assert!(seg.bytes.len() <= ip_payload.len());
        }
        Transport::Udp(udp) => {
            assert!(udp.payload.len() + 8 == udp.bytes.len());
            assert!(udp.bytes.len() <= ip_payload.len());
        }
        Transport::Icmp(_) | Transport::Other => {}
    }
}

// ---- FTP lines ---------------------------------------------------------------------------------

/// What a line assembler made of a stream: the lines, how it ended, the unfinished line.
type Assembled = (Vec<Vec<u8>>, Result<(), Reason>, Vec<u8>);

/// Feeds `stream` to a fresh assembler cut at `cuts` (sorted offsets); stops at the first
/// violation, as the inspector does.
fn assemble(stream: &[u8], max: usize, cuts: &[usize]) -> Assembled {
    let mut assembler = LineAssembler::new(max);
    let mut lines = Vec::new();
    let mut start = 0;
    let ends = cuts.iter().copied().chain(std::iter::once(stream.len()));
    for end in ends {
        let end = end.clamp(start, stream.len());
        let result = assembler.push(&stream[start..end], |line| {
            lines.push(line.to_vec());
            true
        });
        start = end;
        if result.is_err() {
            return (lines, result, Vec::new());
        }
    }
    let partial = assembler.partial().to_vec();
    (lines, Ok(()), partial)
}

/// A cheap deterministic hash (FNV-1a), to derive cut points from the input itself.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Cut points for `len` bytes from a seed: segments of 1 to 16 bytes.
fn cuts_from(seed: u64, len: usize) -> Vec<usize> {
    let mut state = seed | 1;
    let mut cuts = Vec::new();
    let mut at = 0usize;
    loop {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        at += 1 + (state % 16) as usize;
        if at >= len {
            return cuts;
        }
        cuts.push(at);
    }
}

/// The line assembler gives the same lines, the same violation and the same unfinished line
/// however the stream is cut (whole, byte by byte, pseudo-random segments), and no line holds
/// a CR, LF or NUL or exceeds the limit. Returns the lines (at the default limit, 1024).
pub fn lines_any_segmentation(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut whole_lines = Vec::new();
    for max in [64usize, 1024] {
        let whole = assemble(stream, max, &[]);
        for line in &whole.0 {
            assert!(line.len() <= max, "line over {max} bytes");
            assert!(
                !line.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                "CR, LF or NUL in an assembled line: {line:?}"
            );
        }
        let bytewise: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            assemble(stream, max, &bytewise),
            whole,
            "byte-by-byte differs from whole"
        );
        let random = cuts_from(fnv(stream) ^ max as u64, stream.len());
        assert_eq!(
            assemble(stream, max, &random),
            whole,
            "segments cut at {random:?} differ from whole"
        );
        whole_lines = whole.0;
    }
    whole_lines
}

/// The input as one line: a trailing CRLF or LF removed.
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `PORT`'s argument for `addr` (IPv4): `h1,h2,h3,h4,p1,p2`.
pub fn port_argument(addr: SocketAddr) -> Option<String> {
    let IpAddr::V4(ip) = addr.ip() else {
        return None;
    };
    let [h1, h2, h3, h4] = ip.octets();
    let [p1, p2] = addr.port().to_be_bytes();
    Some(format!("{h1},{h2},{h3},{h4},{p1},{p2}"))
}

/// `EPRT`'s argument for `addr` with delimiter `d`: `<d>1<d>addr<d>port<d>` (2 for IPv6).
pub fn eprt_argument(addr: SocketAddr, d: char) -> String {
    let af = if addr.is_ipv6() { 2 } else { 1 };
    format!("{d}{af}{d}{}{d}{}{d}", addr.ip(), addr.port())
}

/// `LPRT`'s argument (and a 228 reply's numbers) for `addr`.
pub fn lprt_argument(addr: SocketAddr) -> String {
    let (af, octets) = match addr.ip() {
        IpAddr::V4(ip) => (4, ip.octets().to_vec()),
        IpAddr::V6(ip) => (6, ip.octets().to_vec()),
    };
    let mut out = format!("{af},{}", octets.len());
    for o in octets {
        let _ = write!(out, ",{o}");
    }
    let [p1, p2] = addr.port().to_be_bytes();
    let _ = write!(out, ",2,{p1},{p2}");
    out
}

/// Upper-cases the verb if it has any lower-case letter, lower-cases it otherwise.
fn flip_verb_case(line: &[u8]) -> Vec<u8> {
    let verb_len = line.iter().position(|b| *b == b' ').unwrap_or(line.len());
    let upper = line[..verb_len].iter().any(u8::is_ascii_lowercase);
    let mut out = line.to_vec();
    for b in &mut out[..verb_len] {
        *b = if upper {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        };
    }
    out
}

fn check_active_address(addr: SocketAddr) {
    assert_ne!(addr.port(), 0, "a parsed data address has port 0");
}

/// One client line: `parse_command` does not depend on the verb's case, and every address it
/// reads formats back to text that parses to the same address.
pub fn command_line(line: &[u8]) {
    let command = ftp::parse_command(line);
    assert_eq!(
        ftp::parse_command(&flip_verb_case(line)),
        command,
        "verb case changed the command"
    );
    match &command {
        Command::Port(Ok(addr)) => {
            check_active_address(*addr);
            let Some(arg) = port_argument(*addr) else {
                panic!("PORT gave an IPv6 address: {addr}");
            };
            let again = ftp::parse_command(format!("PORT {arg}").as_bytes());
            assert_eq!(again, Command::Port(Ok(*addr)));
        }
        Command::Eprt(Ok(addr)) => {
            check_active_address(*addr);
            for d in ['|', '!', '#'] {
                let again =
                    ftp::parse_command(format!("EPRT {}", eprt_argument(*addr, d)).as_bytes());
                assert_eq!(again, Command::Eprt(Ok(*addr)), "delimiter {d}");
            }
        }
        Command::Lprt(Ok(addr)) => {
            check_active_address(*addr);
            let again = ftp::parse_command(format!("LPRT {}", lprt_argument(*addr)).as_bytes());
            assert_eq!(again, Command::Lprt(Ok(*addr)));
        }
        _ => {}
    }
    // The argument parsers straight on the bytes.
    if let Ok(addr) = ftp::parse_port(line) {
        check_active_address(addr);
        let arg = port_argument(addr).unwrap_or_default();
        assert_eq!(ftp::parse_port(arg.as_bytes()), Ok(addr));
    }
    if let Ok(addr) = ftp::parse_eprt(line) {
        check_active_address(addr);
        assert_eq!(
            ftp::parse_eprt(eprt_argument(addr, '|').as_bytes()),
            Ok(addr)
        );
    }
    if let Ok(addr) = ftp::parse_lprt(line) {
        check_active_address(addr);
        assert_eq!(ftp::parse_lprt(lprt_argument(addr).as_bytes()), Ok(addr));
    }
}

/// `ftp_command`: the input as one client line, and as a client stream through the line
/// assembler (any segmentation), every line through [`command_line`].
pub fn ftp_command(data: &[u8]) {
    command_line(strip_eol(data));
    for line in lines_any_segmentation(data) {
        command_line(&line);
    }
}

/// One server line: a reply line formats back to itself, and every passive address (227, 228,
/// 229) read from it formats back to text that parses to the same address.
pub fn reply_line(line: &[u8]) {
    let mut texts = vec![line];
    if let Some(reply) = ftp::parse_reply_line(line) {
        assert!((100..600).contains(&reply.code), "code {}", reply.code);
        let mut again = reply.code.to_string().into_bytes();
        if line.len() > 3 {
            again.push(if reply.continues { b'-' } else { b' ' });
            again.extend_from_slice(reply.text);
        }
        assert_eq!(again, line, "a reply line is code, separator, text");
        texts.push(reply.text);
    }
    for text in texts {
        if let Ok(addr) = ftp::parse_227(text) {
            check_active_address(addr);
            let Some(numbers) = port_argument(addr) else {
                panic!("227 gave an IPv6 address: {addr}");
            };
            for form in [
                format!("Entering Passive Mode ({numbers})."),
                format!("Entering Passive Mode {numbers}"),
                format!("={numbers}"),
            ] {
                assert_eq!(ftp::parse_227(form.as_bytes()), Ok(addr), "{form}");
            }
        }
        if let Ok(port) = ftp::parse_229(text) {
            assert_ne!(port, 0);
            for d in ['|', '!'] {
                let form = format!("Entering Extended Passive Mode ({d}{d}{d}{port}{d})");
                assert_eq!(ftp::parse_229(form.as_bytes()), Ok(port), "{form}");
            }
        }
        if let Ok(addr) = ftp::parse_228(text) {
            check_active_address(addr);
            let form = format!("Entering Long Passive Mode ({})", lprt_argument(addr));
            assert_eq!(ftp::parse_228(form.as_bytes()), Ok(addr), "{form}");
        }
    }
}

/// `ftp_reply`: the input as one server line, and as a server stream through the line
/// assembler (any segmentation), every line through [`reply_line`].
pub fn ftp_reply(data: &[u8]) {
    reply_line(strip_eol(data));
    for line in lines_any_segmentation(data) {
        reply_line(&line);
    }
}

// ---- FTPS: the TLS record framing --------------------------------------------------------------

/// What a follower made of a whole stream: records (how many headers), the cleartext after a
/// CCC at an absolute offset, or a violation.
#[derive(Debug, PartialEq, Eq)]
enum Followed {
    Records(u64),
    Cleartext(usize),
    Invalid,
}

/// Follows `stream` pushed in the pieces `cuts` gives, checking what each push returns.
fn follow(sender: Sender, stream: &[u8], cuts: &[usize]) -> Followed {
    let mut follower = TlsFollower::new(sender);
    let mut start = 0;
    for end in cuts.iter().copied().chain([stream.len()]) {
        if end <= start {
            continue;
        }
        match follower.push(&stream[start..end]) {
            Framing::Records => {}
            Framing::Invalid(detail) => {
                assert!(!detail.is_empty(), "a violation without a detail");
                return Followed::Invalid;
            }
            Framing::Cleartext { carried, from } => {
                assert!(from <= end - start, "cleartext starts past the push");
                let at = (start + from)
                    .checked_sub(carried.len())
                    .expect("more bytes carried than pushed before");
                assert_eq!(
                    carried,
                    &stream[at..start + from],
                    "the bytes carried over are not the stream's"
                );
                return Followed::Cleartext(at);
            }
        }
        start = end;
    }
    Followed::Records(follower.records())
}

/// The framing a simple walk over the whole stream finds: the offsets of the record headers
/// read before `end`, and whether an application-data record came first.
fn record_walk(stream: &[u8], end: usize) -> (u64, bool) {
    let (mut at, mut records, mut encrypted) = (0, 0, false);
    while at + 5 <= end {
        let header = [
            stream[at],
            stream[at + 1],
            stream[at + 2],
            stream[at + 3],
            stream[at + 4],
        ];
        let header = pinhole::wire::tls::parse_header(header).expect("a record the follower took");
        encrypted |= header.content_type == 23;
        records += 1;
        at += 5 + usize::from(header.length);
    }
    assert_eq!(
        at, end,
        "cleartext that does not start at a record boundary"
    );
    (records, encrypted)
}

/// `tls_framing`: the follower of an FTPS control stream gives the same answer however the
/// stream is cut into segments (whole, byte by byte, at random); cleartext is only ever taken
/// at a record boundary, after an application-data record, and where an FTP line starts
/// (a command from the client, a reply from the server); it never panics.
pub fn tls_framing(data: &[u8]) {
    for sender in [Sender::Client, Sender::Server] {
        let whole = follow(sender, data, &[]);
        let bytewise: Vec<usize> = (1..data.len()).collect();
        assert_eq!(
            follow(sender, data, &bytewise),
            whole,
            "byte by byte differs"
        );
        let random = cuts_from(fnv(data) ^ sender as u64, data.len());
        assert_eq!(
            follow(sender, data, &random),
            whole,
            "cut at {random:?} differs"
        );
        if let Followed::Cleartext(at) = whole {
            let (records, encrypted) = record_walk(data, at);
            assert!(
                records >= 1 && encrypted,
                "cleartext before the handshake ended"
            );
            let rest = &data[at..];
            let line_start = match sender {
                Sender::Client => {
                    let verb = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
                    (3..=4).contains(&verb) && matches!(rest.get(verb), Some(b' ' | b'\r' | b'\n'))
                }
                Sender::Server => {
                    // A code alone (`200\r\n`) is a reply line too.
                    rest.len() >= 4
                        && rest[..3].iter().all(u8::is_ascii_digit)
                        && matches!(rest[3], b' ' | b'-' | b'\r' | b'\n')
                }
            };
            assert!(
                line_start,
                "cleartext that is no FTP line: {:?}",
                &rest[..rest.len().min(8)]
            );
        }
    }
}

// ---- TFTP --------------------------------------------------------------------------------------

fn mode_name(mode: Mode) -> &'static [u8] {
    match mode {
        Mode::Netascii => b"netascii",
        Mode::Octet => b"octet",
        Mode::Mail => b"mail",
    }
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field);
    out.push(0);
}

fn push_options(out: &mut Vec<u8>, options: &tftp::Options<'_>) {
    let known = options.known;
    let numbers = [
        ("blksize", known.blksize.map(u64::from)),
        ("timeout", known.timeout.map(u64::from)),
        ("tsize", known.tsize),
        ("windowsize", known.windowsize.map(u64::from)),
    ];
    for (name, value) in numbers {
        if let Some(value) = value {
            push_field(out, name.as_bytes());
            push_field(out, value.to_string().as_bytes());
        }
    }
    for (name, value) in &options.unknown {
        push_field(out, name);
        push_field(out, value);
    }
}

/// The canonical bytes of a TFTP packet (RFC 1350, RFC 2347): lower-case mode, known options
/// first in a fixed order with plain decimal values, no padding.
pub fn encode_tftp(packet: &TftpPacket<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match packet {
        TftpPacket::Request {
            kind,
            filename,
            mode,
            options,
        } => {
            let op = match kind {
                RequestKind::Read => tftp::opcode::RRQ,
                RequestKind::Write => tftp::opcode::WRQ,
            };
            out.extend_from_slice(&op.to_be_bytes());
            push_field(&mut out, filename);
            push_field(&mut out, mode_name(*mode));
            push_options(&mut out, options);
        }
        TftpPacket::Data { block, data } => {
            out.extend_from_slice(&tftp::opcode::DATA.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
            out.extend_from_slice(data);
        }
        TftpPacket::Ack { block } => {
            out.extend_from_slice(&tftp::opcode::ACK.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
        }
        TftpPacket::Error { code, message } => {
            out.extend_from_slice(&tftp::opcode::ERROR.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            push_field(&mut out, message);
        }
        TftpPacket::Oack { options } => {
            out.extend_from_slice(&tftp::opcode::OACK.to_be_bytes());
            push_options(&mut out, options);
        }
    }
    out
}

/// How much a packet says: options, data bytes, message bytes.
fn tftp_size(packet: &TftpPacket<'_>) -> usize {
    match packet {
        TftpPacket::Request {
            filename, options, ..
        } => filename.len() + options.count(),
        TftpPacket::Oack { options } => options.count(),
        TftpPacket::Data { data, .. } => data.len(),
        TftpPacket::Ack { .. } => 0,
        TftpPacket::Error { message, .. } => message.len(),
    }
}

fn check_tftp_fields(packet: &TftpPacket<'_>) {
    let check_options = |options: &tftp::Options<'_>| {
        let k = options.known;
        assert!(k.blksize.is_none_or(|b| (8..=65_464).contains(&b)));
        assert!(k.timeout.is_none_or(|t| t >= 1));
        assert!(k.windowsize.is_none_or(|w| w >= 1));
        assert!(options.count() <= tftp::MAX_OPTIONS);
        for (name, value) in &options.unknown {
            assert!(!name.is_empty() && !name.contains(&0) && !value.contains(&0));
        }
    };
    match packet {
        TftpPacket::Request {
            kind,
            filename,
            options,
            ..
        } => {
            assert!(!filename.is_empty() && !filename.contains(&0));
            check_options(options);
            if *kind == RequestKind::Read {
                assert!(options.known.tsize.is_none_or(|t| t == 0));
            }
        }
        TftpPacket::Oack { options } => {
            check_options(options);
            assert!(options.count() > 0, "an empty OACK parsed");
        }
        TftpPacket::Error { message, .. } => assert!(!message.contains(&0)),
        TftpPacket::Data { .. } | TftpPacket::Ack { .. } => {}
    }
}

/// `tftp`: any bytes through `wire::tftp::parse`. A packet that parses has sane fields, its
/// canonical encoding parses back to the same packet, and no strict prefix of that encoding
/// parses into a different kind of packet or into one that says more.
pub fn tftp(data: &[u8]) {
    let Ok(packet) = tftp::parse(data) else {
        return;
    };
    check_tftp_fields(&packet);
    let bytes = encode_tftp(&packet);
    assert_eq!(
        tftp::parse(&bytes).as_ref(),
        Ok(&packet),
        "re-encoded as {bytes:02x?}"
    );
    if bytes.len() > 1024 {
        return;
    }
    let kind = std::mem::discriminant(&packet);
    for len in 0..bytes.len() {
        if let Ok(prefix) = tftp::parse(&bytes[..len]) {
            assert_eq!(
                std::mem::discriminant(&prefix),
                kind,
                "prefix {len} parsed as another kind: {prefix:?}"
            );
            assert!(
                tftp_size(&prefix) <= tftp_size(&packet),
                "prefix {len} says more than the whole: {prefix:?} vs {packet:?}"
            );
        }
    }
}
