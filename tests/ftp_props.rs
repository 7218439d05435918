//! Property tests for the FTP parsers and inspector: no input panics them, every data address
//! format round-trips, a prefix of a line never reads as more than the line, and cutting a
//! control stream into segments anywhere, delivered in any order and duplicated, changes
//! nothing about what is opened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::Harness;
use pinhole::alg::ftp::LineAssembler;
use pinhole::event::{Event, PinholeAction};
use pinhole::testkit::{TcpSession, flags, sock};
use pinhole::wire::ftp::{self, Command};
use pinhole::{Decision, Verdict};
use proptest::prelude::*;

/// EPRT and 229 delimiters (RFC 2428: any printable ASCII; not a digit, and for addresses not
/// `.` or `:`).
fn delimiter() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        '|', '!', '#', '$', '%', '&', '*', '+', '/', '=', '^', '~', 'x',
    ])
}

/// `h1,h2,h3,h4,p1,p2`.
fn host_port(addr: Ipv4Addr, port: u16) -> String {
    let [h1, h2, h3, h4] = addr.octets();
    let [p1, p2] = port.to_be_bytes();
    format!("{h1},{h2},{h3},{h4},{p1},{p2}")
}

/// LPRT's argument, 228's numbers: `af,hal,h1,...,hn,2,p1,p2`.
fn long_host_port(addr: IpAddr, port: u16) -> String {
    let octets = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let af = if addr.is_ipv6() { 6 } else { 4 };
    let mut fields = vec![af, octets.len() as u16];
    fields.extend(octets.iter().map(|o| u16::from(*o)));
    let [p1, p2] = port.to_be_bytes();
    fields.extend([2, u16::from(p1), u16::from(p2)]);
    fields
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The data address a command line announces, if it parses.
fn announced(line: &[u8]) -> Option<SocketAddr> {
    match ftp::parse_command(line) {
        Command::Port(Ok(a)) | Command::Eprt(Ok(a)) | Command::Lprt(Ok(a)) => Some(a),
        _ => None,
    }
}

proptest! {
    /// PORT, EPRT (both families, any delimiter), LPRT, and the 227, 228 and 229 replies built
    /// from an address and a port parse back to exactly that address and port.
    #[test]
    fn address_formats_round_trip(
        a4 in any::<[u8; 4]>().prop_map(Ipv4Addr::from),
        a6 in any::<[u8; 16]>().prop_map(Ipv6Addr::from),
        port in 1u16..=65535,
        d in delimiter(),
        lower in any::<bool>(),
    ) {
        let v4 = SocketAddr::from((a4, port));
        let v6 = SocketAddr::from((a6, port));
        let verb = |v: &str| if lower { v.to_ascii_lowercase() } else { v.to_owned() };
        let port_line = format!("{} {}", verb("PORT"), host_port(a4, port));
        prop_assert_eq!(ftp::parse_command(port_line.as_bytes()), Command::Port(Ok(v4)));
        let eprt4 = format!("{} {d}1{d}{a4}{d}{port}{d}", verb("EPRT"));
        prop_assert_eq!(ftp::parse_command(eprt4.as_bytes()), Command::Eprt(Ok(v4)));
        let eprt6 = format!("{} {d}2{d}{a6}{d}{port}{d}", verb("EPRT"));
        prop_assert_eq!(ftp::parse_command(eprt6.as_bytes()), Command::Eprt(Ok(v6)));
        for addr in [v4, v6] {
            let lprt = format!("{} {}", verb("LPRT"), long_host_port(addr.ip(), port));
            prop_assert_eq!(ftp::parse_command(lprt.as_bytes()), Command::Lprt(Ok(addr)));
            let line = format!("228 Entering Long Passive Mode ({})", long_host_port(addr.ip(), port));
            let reply = ftp::parse_reply_line(line.as_bytes()).unwrap();
            prop_assert_eq!((reply.code, reply.continues), (228, false));
            prop_assert_eq!(ftp::parse_228(reply.text), Ok(addr));
        }
        let line = format!("227 Entering Passive Mode ({}).", host_port(a4, port));
        let reply = ftp::parse_reply_line(line.as_bytes()).unwrap();
        prop_assert_eq!((reply.code, reply.continues), (227, false));
        prop_assert_eq!(ftp::parse_227(reply.text), Ok(v4));
        let line = format!("229 Entering Extended Passive Mode ({d}{d}{d}{port}{d})");
        let reply = ftp::parse_reply_line(line.as_bytes()).unwrap();
        prop_assert_eq!((reply.code, reply.continues), (229, false));
        prop_assert_eq!(ftp::parse_229(reply.text), Ok(port));
    }

    /// Every strict prefix of a valid data-address line is refused or read as no more than the
    /// line: the same address with a port no larger (cutting decimal digits only makes numbers
    /// smaller), the same reply code with a prefix of its text. Nothing panics.
    #[test]
    fn prefixes_of_address_lines_never_read_as_more(
        a4 in any::<[u8; 4]>().prop_map(Ipv4Addr::from),
        a6 in any::<[u8; 16]>().prop_map(Ipv6Addr::from),
        port in 1u16..=65535,
        d in delimiter(),
    ) {
        let v4 = SocketAddr::from((a4, port));
        let v6 = SocketAddr::from((a6, port));
        let commands = [
            (format!("PORT {}", host_port(a4, port)), v4),
            (format!("EPRT {d}1{d}{a4}{d}{port}{d}"), v4),
            (format!("EPRT {d}2{d}{a6}{d}{port}{d}"), v6),
            (format!("LPRT {}", long_host_port(v4.ip(), port)), v4),
            (format!("LPRT {}", long_host_port(v6.ip(), port)), v6),
        ];
        for (line, addr) in &commands {
            let line = line.as_bytes();
            prop_assert_eq!(announced(line), Some(*addr));
            for len in 0..line.len() {
                if let Some(a) = announced(&line[..len]) {
                    prop_assert!(
                        a.ip() == addr.ip() && a.port() <= addr.port(),
                        "prefix {:?} of {:?} reads as {}", &line[..len], line, a
                    );
                }
            }
        }
        let replies = [
            format!("227 Entering Passive Mode ({}).", host_port(a4, port)),
            format!("228 Entering Long Passive Mode ({})", long_host_port(v6.ip(), port)),
            format!("229 Entering Extended Passive Mode ({d}{d}{d}{port}{d})"),
        ];
        for line in &replies {
            let line = line.as_bytes();
            let whole = ftp::parse_reply_line(line).unwrap();
            for len in 0..line.len() {
                let prefix = &line[..len];
                let Some(reply) = ftp::parse_reply_line(prefix) else {
                    prop_assert!(len < 3, "prefix {:?} is not a reply line", prefix);
                    continue;
                };
                prop_assert_eq!(reply.code, whole.code);
                prop_assert!(!reply.continues && whole.text.starts_with(reply.text));
                let read = match reply.code {
                    227 => ftp::parse_227(reply.text).ok(),
                    228 => ftp::parse_228(reply.text).ok(),
                    _ => ftp::parse_229(reply.text).ok().map(|p| SocketAddr::new(v6.ip(), p)),
                };
                let addr = if reply.code == 227 { v4 } else { v6 };
                if let Some(a) = read {
                    prop_assert!(
                        a.ip() == addr.ip() && a.port() <= port,
                        "prefix {:?} reads as {}", prefix, a
                    );
                }
            }
        }
    }

    #[test]
    fn parsers_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = ftp::parse_command(&bytes);
        let _ = ftp::parse_reply_line(&bytes);
        let _ = ftp::parse_227(&bytes);
        let _ = ftp::parse_228(&bytes);
        let _ = ftp::parse_229(&bytes);
        let _ = ftp::parse_port(&bytes);
        let _ = ftp::parse_eprt(&bytes);
        let _ = ftp::parse_lprt(&bytes);
    }

    #[test]
    fn parsers_take_any_number_lists(numbers in proptest::collection::vec(0u32..100_000, 0..24), sep in prop::sample::select(vec![",", "|", " ", ",,"])) {
        let text: Vec<String> = numbers.iter().map(ToString::to_string).collect();
        let arg = text.join(sep);
        for line in [format!("PORT {arg}"), format!("LPRT {arg}"), format!("EPRT |1|{arg}|"), format!("227 ({arg})"), format!("228 ({arg})")] {
            let _ = ftp::parse_command(line.as_bytes());
            let _ = ftp::parse_227(line.as_bytes());
            let _ = ftp::parse_228(line.as_bytes());
        }
    }

    #[test]
    fn line_assembly_does_not_depend_on_segmentation(cuts in proptest::collection::vec(0usize..200, 0..12)) {
        let stream = b"USER anonymous\r\nPASS x\r\n\xff\xf4\xff\xf2ABOR\r\nPORT 198,51,100,10,195,80\r\nA\xff\xffB\nQUIT\r\n";
        let lines = |parts: &[&[u8]]| {
            let mut assembler = LineAssembler::new(1024);
            let mut out = Vec::new();
            for part in parts {
                assembler.push(part, |l| { out.push(l.to_vec()); true }).unwrap();
            }
            out
        };
        let whole = lines(&[stream]);
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c % stream.len()).collect();
        points.sort_unstable();
        let mut parts = Vec::new();
        let mut last = 0;
        for p in points {
            parts.push(&stream[last..p]);
            last = p;
        }
        parts.push(&stream[last..]);
        prop_assert_eq!(lines(&parts), whole);
    }

    /// A session's control stream, both directions, cut at random points and delivered out of
    /// order and with duplicates (within the window, as a reordering or retransmitting network
    /// delivers it) passes whole and opens exactly the pinholes the same session opens when each
    /// line is sent whole and in order.
    #[test]
    fn inspection_does_not_depend_on_segmentation(
        client_cuts in proptest::collection::vec(1usize..200, 0..10),
        server_cuts in proptest::collection::vec(1usize..300, 0..10),
        client_order in proptest::collection::vec((any::<u16>(), 0u8..3), 11),
        server_order in proptest::collection::vec((any::<u16>(), 0u8..3), 11),
    ) {
        let commands: &[u8] =
            b"TYPE I\r\nPORT 198,51,100,10,195,80\r\nPASV\r\nEPSV\r\nEPRT |1|198.51.100.10|50001|\r\n";
        let replies: &[u8] = b"200 Switching to Binary mode.\r\n200 PORT command successful.\r\n\
            227 Entering Passive Mode (192,0,2,10,156,64).\r\n\
            229 Entering Extended Passive Mode (|||40001|)\r\n200 EPRT command successful.\r\n";
        let lines = |stream: &'static [u8]| -> Vec<(usize, &'static [u8])> {
            let mut at = 0;
            stream
                .split_inclusive(|b| *b == b'\n')
                .map(|line| {
                    at += line.len();
                    (at - line.len(), line)
                })
                .collect()
        };
        let reference = run_control_stream(&lines(commands), commands, &lines(replies), replies);
        prop_assert_eq!(reference.len(), 4, "{:?}", reference);
        let client = deliveries(commands, &client_cuts, &client_order);
        let server = deliveries(replies, &server_cuts, &server_order);
        prop_assert_eq!(run_control_stream(&client, commands, &server, replies), reference);
    }
}

/// `stream` cut at `cuts` (offsets modulo its length) into segments (offset, bytes), reordered
/// by the keys of `order` (one per segment), each delivered again right after itself (1) or at
/// the end (2) as `order` says.
fn deliveries<'a>(stream: &'a [u8], cuts: &[usize], order: &[(u16, u8)]) -> Vec<(usize, &'a [u8])> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| c % stream.len())
        .filter(|p| *p > 0)
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut parts = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain(std::iter::once(stream.len())) {
        parts.push((last, &stream[last..p]));
        last = p;
    }
    let mut keyed: Vec<_> = order.iter().copied().zip(parts).collect();
    keyed.sort_by_key(|((key, _), (offset, _))| (*key, *offset));
    let mut out = Vec::new();
    let mut late = Vec::new();
    for ((_, again), part) in keyed {
        out.push(part);
        match again {
            1 => out.push(part),
            2 => late.push(part),
            _ => {}
        }
    }
    out.extend(late);
    out
}

/// Runs a control connection: the client's segments (offset into `commands`, bytes) in the
/// given order, then the server's (offsets into `replies`); every segment must pass. Returns
/// the pinholes opened: (peer, destination, port).
fn run_control_stream(
    client: &[(usize, &[u8])],
    commands: &[u8],
    server: &[(usize, &[u8])],
    replies: &[u8],
) -> Vec<(IpAddr, IpAddr, u16)> {
    let mut h = Harness::default_policy();
    let mut s = TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:21"), 1, 9);
    for frame in s.handshake() {
        h.accept(&frame);
    }
    h.accept(&s.server_data(b"220 ready\r\n"));
    let mut opened = Vec::new();
    let mut record = |d: Decision| {
        assert_eq!(d.verdict, Verdict::Accept, "{d:?}");
        for e in d.events {
            if let Event::Pinhole {
                action: PinholeAction::Open,
                pinhole,
                ..
            } = e
            {
                opened.push((
                    pinhole.opening.src,
                    pinhole.opening.dst,
                    pinhole.opening.dport,
                ));
            }
        }
    };
    for (offset, bytes) in client {
        record(h.send(&s.client_raw(
            flags::PSH | flags::ACK,
            i64::try_from(*offset).unwrap(),
            bytes,
        )));
    }
    let _ = s.client_data(commands); // the conversation moves past what was sent
    for (offset, bytes) in server {
        record(h.send(&s.server_raw(
            flags::PSH | flags::ACK,
            i64::try_from(*offset).unwrap(),
            bytes,
        )));
    }
    let _ = s.server_data(replies);
    record(h.send(&s.client_ack()));
    opened
}
