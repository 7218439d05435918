//! The `engine_sequence` target: a structured sequence of operations on one engine (packets
//! built with `pinhole::testkit` between a few hosts, FTP dialogues from a dictionary, TFTP
//! datagrams, fragments, time, timers, reloads, a restart through saved state), with the
//! engine's invariants checked after every operation.
//!
//! The input types derive `Arbitrary` in the fuzz crate and `Serialize`/`Deserialize`
//! everywhere: a sequence can be written as JSON, which is how `fuzz/regressions/engine_sequence`
//! stores them (readable, and replayed by `tests/fuzz_regressions.rs`, which includes this file
//! by path and has no `arbitrary`; hence `cfg_attr(not(test), ...)`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pinhole::conntrack::FlowOrigin;
use pinhole::engine::EngineState;
use pinhole::testkit::{self, TcpSession, flags};
use pinhole::wire::LinkType;
use pinhole::{Engine, Instant, Policy};
use serde::{Deserialize, Serialize};

use crate::checks::{Tracked, link_type, lprt_argument, port_argument};

/// Operations run per input at most (longer inputs are cut, to keep each run short).
pub const MAX_OPS: usize = 200;

/// A whole input: the policy, the engine's mode and the operations.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub struct Sequence {
    /// The policy the engine starts with.
    pub policy: PolicyChoice,
    /// Offload mode (as `pinhole run --mode offload`).
    pub offload: bool,
    /// Run due timers before each packet, as the replay and the daemon do.
    pub auto_expire: bool,
    /// Every packet comes with the synced mark of a failover pair (`run --ha`): flows the
    /// engine does not track are taken over instead of refused. (Absent in older regression
    /// files: false.)
    #[serde(default)]
    pub synced: bool,
    /// What happens, in order.
    pub ops: Vec<Op>,
}

/// Policies with small limits, so that caps and quotas are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum PolicyChoice {
    /// The default rules (FTP on 21, TFTP on 69) plus web and ping, default options.
    Small,
    /// Zones, strict FTP and TFTP options, mid-stream pickup, short timeouts.
    Strict,
    /// Tiny tables: 4 flows, 2 pinholes.
    Tiny,
}

const SMALL: &str = r#"
default_action = "deny"

[[rule]]
name = "ftp"
proto = "tcp"
ports = [21]
action = "allow"
inspect = "ftp"

[rule.ftp]
ftps = "allow-passive-range"
ftps_passive_ports = "40000-40003"
ftps_max_connections = 1

[[rule]]
name = "tftp"
proto = "udp"
ports = [69]
action = "allow"
inspect = "tftp"

[[rule]]
name = "web"
proto = "tcp"
ports = [80]
action = "allow"

[[rule]]
name = "ping"
proto = "icmp"
action = "allow"

[limits]
max_flows = 64
max_flows_per_source = 24
max_pinholes = 16
max_pinholes_per_client = 8
max_fragment_datagrams = 4
max_fragment_bytes = 8192
max_fragments_per_datagram = 8
"#;

const STRICT: &str = r#"
default_action = "allow"

[zones.inside]
networks = ["192.0.2.0/24", "2001:db8:2::/64"]

[zones.outside]
networks = ["0.0.0.0/0", "::/0"]

[[rule]]
name = "ftp-in"
from = "outside"
to = "inside"
action = "allow"
inspect = "ftp"
ports = [21, 2121]

[rule.ftp]
data_timeout = 5
max_pending = 2
max_line = 64
active_from_port_20 = true
open_active_on = "command"
passive_address = "control"
ftps = "allow-uninspected"
on_violation = "drop"
data_outlives_control = false
deny_commands = ["DELE", "SITE", "XMKD"]
deny_users = ["root"]
deny_paths = ["*.key", "/etc/*", "/upload.bin"]

[[rule]]
name = "tftp-any"
action = "allow"
inspect = "tftp"

[rule.tftp]
write = false
deny_files = ["*..*"]
server_ports = "40000-40001"
reply_addresses = ["192.0.2.11"]
request_timeout = 2
transfer_timeout = 3
dally = 1
max_pending_per_client = 2

[[rule]]
name = "no-telnet"
proto = "tcp"
ports = [23]
action = "deny"

[timeouts]
tcp_handshake = 5
tcp_established = 60
tcp_fin_wait = 5
tcp_closing = 5
tcp_time_wait = 5
tcp_closed = 2
udp_unreplied = 3
udp_replied = 10
icmp = 3
other = 5
fragment = 2

[limits]
max_flows = 32
max_flows_per_source = 8
max_pinholes = 8
max_pinholes_per_client = 3
max_fragment_datagrams = 2
max_fragment_bytes = 4096
max_fragments_per_datagram = 4

[tcp]
midstream_pickup = true
"#;

const TINY: &str = r#"
default_action = "deny"

[[rule]]
proto = "tcp"
ports = [21]
action = "allow"
inspect = "ftp"

[[rule]]
proto = "udp"
ports = [69]
action = "allow"
inspect = "tftp"

[[rule]]
proto = "tcp"
ports = [80]
action = "allow"

[limits]
max_flows = 4
max_flows_per_source = 3
max_pinholes = 2
max_pinholes_per_client = 1
max_fragment_datagrams = 1
max_fragment_bytes = 2048
max_fragments_per_datagram = 3
"#;

impl PolicyChoice {
    /// The parsed policy (parsed once).
    pub fn policy(self) -> Arc<Policy> {
        static POLICIES: OnceLock<[Arc<Policy>; 3]> = OnceLock::new();
        let all = POLICIES.get_or_init(|| {
            [SMALL, STRICT, TINY].map(|text| match Policy::parse(text, "fuzz") {
                Ok(policy) => Arc::new(policy),
                Err(err) => panic!("fuzz policy does not parse: {err:?}"),
            })
        });
        all[self as usize].clone()
    }
}

/// One of the few hosts: two clients and a server (2001:db8:2::/64 and 192.0.2.0/24 are
/// "inside" in the strict policy), and a third party.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Host {
    /// 198.51.100.10 / 2001:db8:100::10.
    Client,
    /// 198.51.100.11 / 2001:db8:100::11.
    Client2,
    /// 192.0.2.10 / 2001:db8:2::10.
    Server,
    /// 203.0.113.9 / 2001:db8:3::9.
    Third,
}

impl Host {
    /// Every host.
    pub const ALL: [Host; 4] = [Host::Client, Host::Client2, Host::Server, Host::Third];

    /// Its address in one family.
    pub fn addr(self, v6: bool) -> IpAddr {
        let (v4, v6_addr) = match self {
            Host::Client => ([198, 51, 100, 10], [0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10]),
            Host::Client2 => ([198, 51, 100, 11], [0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11]),
            Host::Server => ([192, 0, 2, 10], [0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10]),
            Host::Third => ([203, 0, 113, 9], [0x2001, 0xdb8, 3, 0, 0, 0, 0, 9]),
        };
        if v6 {
            IpAddr::V6(Ipv6Addr::from(v6_addr))
        } else {
            IpAddr::V4(Ipv4Addr::from(v4))
        }
    }
}

/// A port, mostly from a small set so that announced data ports get connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Port {
    /// 21.
    Ftp,
    /// 20.
    FtpData,
    /// 69.
    Tftp,
    /// 80.
    Web,
    /// 1023, below the default `min_data_port`.
    Privileged,
    /// 40000 to 40003: data ports and TFTP transfer ports.
    Data(u8),
    /// 50000 to 50003: client ports.
    Ephemeral(u8),
    /// Any port.
    Any(u16),
}

impl Port {
    /// The number.
    pub fn number(self) -> u16 {
        match self {
            Port::Ftp => 21,
            Port::FtpData => 20,
            Port::Tftp => 69,
            Port::Web => 80,
            Port::Privileged => 1023,
            Port::Data(n) => 40_000 + u16::from(n % 4),
            Port::Ephemeral(n) => 50_000 + u16::from(n % 4),
            Port::Any(n) => n,
        }
    }
}

/// A client command line (CRLF added).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum FtpCommand {
    /// `USER anonymous`.
    User,
    /// `PASS x`.
    Pass,
    /// `TYPE I`.
    Type,
    /// `RETR image.bin`.
    Retr,
    /// `STOR upload.bin`.
    Stor,
    /// `LIST`.
    List,
    /// `NOOP`.
    Noop,
    /// `PASV`.
    Pasv,
    /// `EPSV`.
    Epsv,
    /// `EPSV ALL`.
    EpsvAll,
    /// `LPSV`.
    Lpsv,
    /// `PORT h1,h2,h3,h4,p1,p2` for a host's IPv4 address.
    Port {
        /// Whose address.
        host: Host,
        /// Which port.
        port: Port,
    },
    /// `PORT` with any six numbers (out of range, port 0, ...).
    PortNumbers([u16; 6]),
    /// `EPRT <d>af<d>addr<d>port<d>`.
    Eprt {
        /// Whose address.
        host: Host,
        /// Which port.
        port: Port,
        /// IPv6 (af 2) or IPv4 (af 1).
        v6: bool,
        /// The delimiter (any byte; RFC 2428 allows 33-126).
        delimiter: u8,
    },
    /// `LPRT af,hal,h...,2,p1,p2`.
    Lprt {
        /// Whose address.
        host: Host,
        /// Which port.
        port: Port,
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// `ABOR`, with the Telnet abort sequence in front when `telnet`.
    Abor {
        /// `IAC IP IAC DM` first.
        telnet: bool,
    },
    /// `QUIT`.
    Quit,
    /// `REIN`.
    Rein,
    /// `AUTH TLS`.
    Auth,
    /// Any bytes.
    Text(Vec<u8>),
}

/// A server reply (CRLF added).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum FtpReply {
    /// `220 ready`.
    Ready,
    /// `200 OK`.
    Ok,
    /// `150 Opening data connection`.
    Opening,
    /// `226 Transfer complete`.
    Done,
    /// `221 Goodbye`.
    Bye,
    /// `234 AUTH TLS OK`.
    AuthOk,
    /// `425 Can't open data connection`.
    CantOpen,
    /// `500 Unknown command`.
    Unknown,
    /// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).`
    Passive {
        /// Whose address.
        host: Host,
        /// Which port.
        port: Port,
    },
    /// `229 Entering Extended Passive Mode (|||port|)`.
    ExtendedPassive {
        /// Which port.
        port: Port,
    },
    /// `228 Entering Long Passive Mode (af,hal,...)`.
    LongPassive {
        /// Whose address.
        host: Host,
        /// Which port.
        port: Port,
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// A multi-line reply: `code-` lines, then `code text`.
    Multiline {
        /// The code (modulo 1000).
        code: u16,
        /// Continuation lines (modulo 4).
        lines: u8,
    },
    /// Any code and text.
    Code {
        /// The code (modulo 1000).
        code: u16,
        /// The text.
        text: Vec<u8>,
    },
}

/// A TLS record as an FTPS control connection carries it after the 234 (`testkit::tls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum TlsRecord {
    /// The side's hello: a ClientHello from the client, a ServerHello from the server.
    Hello,
    /// A whole handshake: hello, ChangeCipherSpec, Finished, application data.
    Flight,
    /// Application data of this many bytes.
    Data(u8),
    /// An encrypted alert (close_notify before a CCC's cleartext).
    CloseNotify,
    /// Any five bytes where a record header belongs.
    Header([u8; 5]),
}

/// How a payload is cut into TCP segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Delivery {
    /// One segment.
    Whole,
    /// Two segments, cut at `at` (modulo the length).
    Split {
        /// Where.
        at: u8,
        /// In which order they arrive.
        order: Order,
    },
}

/// The order of the two segments of a split payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Order {
    /// First, second.
    Forward,
    /// Second, first.
    Reversed,
    /// First, first again, second.
    DuplicateFirst,
    /// Second, first, second again.
    DuplicateLast,
    /// First, the first again with other bytes (a conflicting retransmission), second.
    Conflict,
}

/// A TFTP file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum FileName {
    /// `image.bin`.
    Image,
    /// `router1-confg`.
    Config,
    /// `../../etc/passwd`.
    Climb,
    /// Empty.
    Empty,
}

/// A TFTP mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum TftpMode {
    /// `octet`.
    Octet,
    /// `NetASCII`.
    Netascii,
    /// `mail`.
    Mail,
    /// `binary` (not a TFTP mode).
    Bad,
}

/// A TFTP option name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum OptionName {
    /// `blksize`.
    Blksize,
    /// `timeout`.
    Timeout,
    /// `tsize`.
    Tsize,
    /// `windowsize`.
    Windowsize,
    /// `blksize2` (tftpd-hpa).
    Blksize2,
    /// `x-vendor`.
    Unknown,
}

/// A TFTP option and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub struct TftpOption {
    /// The name.
    pub name: OptionName,
    /// The value, written in decimal.
    pub value: u32,
}

/// The length of a DATA block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum DataLen {
    /// 512 bytes.
    Full,
    /// Up to 255 bytes: the last block.
    Short(u8),
    /// Up to 1499 bytes.
    Size(u16),
}

/// A UDP payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum UdpMessage {
    /// RRQ.
    Rrq {
        /// File.
        file: FileName,
        /// Mode.
        mode: TftpMode,
        /// Options.
        options: Vec<TftpOption>,
    },
    /// WRQ.
    Wrq {
        /// File.
        file: FileName,
        /// Mode.
        mode: TftpMode,
        /// Options.
        options: Vec<TftpOption>,
    },
    /// DATA.
    Data {
        /// Block number.
        block: u8,
        /// Length.
        len: DataLen,
    },
    /// ACK.
    Ack {
        /// Block number.
        block: u8,
    },
    /// ERROR.
    Error {
        /// Code (0-8 are named).
        code: u8,
    },
    /// OACK.
    Oack {
        /// Options.
        options: Vec<TftpOption>,
    },
    /// Any bytes.
    Bytes(Vec<u8>),
}

/// How a datagram is fragmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub struct Fragments {
    /// Fragment data size: 8 times (1 + this modulo 64).
    pub chunk: u8,
    /// In which order they arrive.
    pub order: FragmentOrder,
    /// IP identification.
    pub id: u16,
}

/// Fragment delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum FragmentOrder {
    /// As cut.
    Forward,
    /// Last first.
    Reversed,
    /// The last one never arrives.
    WithoutLast,
    /// The first one twice.
    FirstTwice,
}

/// One operation. `slot` picks one of four TCP conversations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Op {
    /// A new TCP conversation in `slot`: its SYN, and the rest of the handshake when
    /// `handshake`.
    Connect {
        /// Which conversation (modulo 4).
        slot: u8,
        /// Client.
        from: Host,
        /// Server.
        to: Host,
        /// Client port.
        sport: Port,
        /// Server port.
        dport: Port,
        /// IPv6.
        v6: bool,
        /// Both initial sequence numbers are derived from it.
        isn: u32,
        /// Also send the SYN-ACK and the ACK.
        handshake: bool,
    },
    /// The SYN-ACK and the third ACK.
    Handshake {
        /// Which conversation.
        slot: u8,
    },
    /// A command from the client.
    Command {
        /// Which conversation.
        slot: u8,
        /// The line.
        command: FtpCommand,
        /// How it is segmented.
        delivery: Delivery,
    },
    /// A reply from the server.
    Reply {
        /// Which conversation.
        slot: u8,
        /// The line(s).
        reply: FtpReply,
        /// How it is segmented.
        delivery: Delivery,
    },
    /// Any bytes from either side.
    Bytes {
        /// Which conversation.
        slot: u8,
        /// From the client, else from the server.
        from_client: bool,
        /// The payload.
        bytes: Vec<u8>,
        /// How it is segmented.
        delivery: Delivery,
    },
    /// A TLS record (FTPS) from either side.
    Tls {
        /// Which conversation.
        slot: u8,
        /// From the client, else from the server.
        from_client: bool,
        /// The record.
        record: TlsRecord,
        /// How it is segmented.
        delivery: Delivery,
    },
    /// A segment with any flags and sequence number near the expected one; the conversation's
    /// state does not move.
    Segment {
        /// Which conversation.
        slot: u8,
        /// From the client, else from the server.
        from_client: bool,
        /// TCP flag bits.
        flags: u8,
        /// Offset from the next expected sequence number.
        seq_offset: i32,
        /// Payload length.
        len: u8,
        /// Marked as belonging to an offloaded connection.
        offloaded: bool,
    },
    /// A pure ACK.
    Ack {
        /// Which conversation.
        slot: u8,
        /// From the client, else from the server.
        from_client: bool,
    },
    /// A FIN.
    Fin {
        /// Which conversation.
        slot: u8,
        /// From the client, else from the server.
        from_client: bool,
        /// Marked as belonging to an offloaded connection.
        offloaded: bool,
    },
    /// A RST at the expected sequence number.
    Rst {
        /// Which conversation.
        slot: u8,
        /// From the client, else from the server.
        from_client: bool,
        /// Marked as belonging to an offloaded connection.
        offloaded: bool,
    },
    /// A UDP datagram, possibly fragmented.
    Udp {
        /// Sender.
        from: Host,
        /// Receiver.
        to: Host,
        /// Source port.
        sport: Port,
        /// Destination port.
        dport: Port,
        /// IPv6.
        v6: bool,
        /// Payload.
        message: UdpMessage,
        /// Fragmentation.
        fragments: Option<Fragments>,
    },
    /// An ICMP echo request or reply.
    Echo {
        /// Sender.
        from: Host,
        /// Receiver.
        to: Host,
        /// IPv6.
        v6: bool,
        /// Identifier.
        id: u8,
        /// Request, else reply.
        request: bool,
    },
    /// An ICMP error about the last segment of a conversation, from the other side.
    IcmpError {
        /// Which conversation.
        slot: u8,
        /// About the client's segment (sent by the server), else the reverse.
        about_client: bool,
        /// Type and code (destination unreachable, port unreachable, packet too big, ...).
        kind: u8,
    },
    /// Any frame.
    Raw {
        /// Link type selector (as the decode target's first byte).
        link: u8,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// The clock moves.
    Advance {
        /// Milliseconds (modulo two hours).
        millis: u32,
    },
    /// Timers run.
    Expire,
    /// The capture ends (held fragments are dropped).
    Flush,
    /// The policy is replaced.
    Reload {
        /// The new one.
        policy: PolicyChoice,
    },
    /// The engine's state is saved (through JSON) and restored into a new engine.
    Restart,
    /// Offload mode on or off.
    Offload {
        /// On.
        on: bool,
    },
}

fn command_text(command: &FtpCommand) -> Vec<u8> {
    let text = match command {
        FtpCommand::User => "USER anonymous".to_owned(),
        FtpCommand::Pass => "PASS x".to_owned(),
        FtpCommand::Type => "TYPE I".to_owned(),
        FtpCommand::Retr => "RETR image.bin".to_owned(),
        FtpCommand::Stor => "STOR upload.bin".to_owned(),
        FtpCommand::List => "LIST".to_owned(),
        FtpCommand::Noop => "NOOP".to_owned(),
        FtpCommand::Pasv => "PASV".to_owned(),
        FtpCommand::Epsv => "EPSV".to_owned(),
        FtpCommand::EpsvAll => "EPSV ALL".to_owned(),
        FtpCommand::Lpsv => "LPSV".to_owned(),
        FtpCommand::Port { host, port } => {
            let addr = SocketAddr::new(host.addr(false), port.number());
            format!("PORT {}", port_argument(addr).unwrap_or_default())
        }
        FtpCommand::PortNumbers(n) => {
            format!("PORT {},{},{},{},{},{}", n[0], n[1], n[2], n[3], n[4], n[5])
        }
        FtpCommand::Eprt {
            host,
            port,
            v6,
            delimiter,
        } => {
            let d = char::from(*delimiter);
            let af = if *v6 { 2 } else { 1 };
            format!("EPRT {d}{af}{d}{}{d}{}{d}", host.addr(*v6), port.number())
        }
        FtpCommand::Lprt { host, port, v6 } => {
            let addr = SocketAddr::new(host.addr(*v6), port.number());
            format!("LPRT {}", lprt_argument(addr))
        }
        FtpCommand::Abor { telnet } => {
            let mut line = if *telnet {
                b"\xff\xf4\xff\xf2".to_vec()
            } else {
                Vec::new()
            };
            line.extend_from_slice(b"ABOR\r\n");
            return line;
        }
        FtpCommand::Quit => "QUIT".to_owned(),
        FtpCommand::Rein => "REIN".to_owned(),
        FtpCommand::Auth => "AUTH TLS".to_owned(),
        FtpCommand::Text(bytes) => {
            let mut line = bytes.clone();
            line.extend_from_slice(b"\r\n");
            return line;
        }
    };
    let mut line = text.into_bytes();
    line.extend_from_slice(b"\r\n");
    line
}

fn reply_text(reply: &FtpReply) -> Vec<u8> {
    let text = match reply {
        FtpReply::Ready => "220 ready".to_owned(),
        FtpReply::Ok => "200 OK".to_owned(),
        FtpReply::Opening => "150 Opening data connection".to_owned(),
        FtpReply::Done => "226 Transfer complete".to_owned(),
        FtpReply::Bye => "221 Goodbye".to_owned(),
        FtpReply::AuthOk => "234 AUTH TLS OK".to_owned(),
        FtpReply::CantOpen => "425 Can't open data connection".to_owned(),
        FtpReply::Unknown => "500 Unknown command".to_owned(),
        FtpReply::Passive { host, port } => {
            let addr = SocketAddr::new(host.addr(false), port.number());
            format!(
                "227 Entering Passive Mode ({}).",
                port_argument(addr).unwrap_or_default()
            )
        }
        FtpReply::ExtendedPassive { port } => {
            format!("229 Entering Extended Passive Mode (|||{}|)", port.number())
        }
        FtpReply::LongPassive { host, port, v6 } => {
            let addr = SocketAddr::new(host.addr(*v6), port.number());
            format!("228 Entering Long Passive Mode ({})", lprt_argument(addr))
        }
        FtpReply::Multiline { code, lines } => {
            let code = code % 1000;
            let mut text = format!("{code:03}-First line\r\n");
            for i in 0..lines % 4 {
                let _ = write!(text, " continuation {i}\r\n");
            }
            let _ = write!(text, "{code:03} End");
            text
        }
        FtpReply::Code { code, text } => {
            let mut line = format!("{:03} ", code % 1000).into_bytes();
            line.extend_from_slice(text);
            line.extend_from_slice(b"\r\n");
            return line;
        }
    };
    let mut line = text.into_bytes();
    line.extend_from_slice(b"\r\n");
    line
}

fn file_name(file: FileName) -> &'static str {
    match file {
        FileName::Image => "image.bin",
        FileName::Config => "router1-confg",
        FileName::Climb => "../../etc/passwd",
        FileName::Empty => "",
    }
}

fn mode_text(mode: TftpMode) -> &'static str {
    match mode {
        TftpMode::Octet => "octet",
        TftpMode::Netascii => "NetASCII",
        TftpMode::Mail => "mail",
        TftpMode::Bad => "binary",
    }
}

fn option_pairs(options: &[TftpOption]) -> Vec<(&'static str, String)> {
    options
        .iter()
        .take(40)
        .map(|o| {
            let name = match o.name {
                OptionName::Blksize => "blksize",
                OptionName::Timeout => "timeout",
                OptionName::Tsize => "tsize",
                OptionName::Windowsize => "windowsize",
                OptionName::Blksize2 => "blksize2",
                OptionName::Unknown => "x-vendor",
            };
            (name, o.value.to_string())
        })
        .collect()
}

fn udp_payload(message: &UdpMessage) -> Vec<u8> {
    match message {
        UdpMessage::Rrq {
            file,
            mode,
            options,
        }
        | UdpMessage::Wrq {
            file,
            mode,
            options,
        } => {
            let pairs = option_pairs(options);
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            if matches!(message, UdpMessage::Rrq { .. }) {
                testkit::tftp::rrq(file_name(*file), mode_text(*mode), &refs)
            } else {
                testkit::tftp::wrq(file_name(*file), mode_text(*mode), &refs)
            }
        }
        UdpMessage::Data { block, len } => {
            let len = match len {
                DataLen::Full => 512,
                DataLen::Short(n) => usize::from(*n),
                DataLen::Size(n) => usize::from(n % 1500),
            };
            testkit::tftp::data(u16::from(*block), len)
        }
        UdpMessage::Ack { block } => testkit::tftp::ack(u16::from(*block)),
        UdpMessage::Error { code } => testkit::tftp::error(u16::from(*code), "error"),
        UdpMessage::Oack { options } => {
            let pairs = option_pairs(options);
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            testkit::tftp::oack(&refs)
        }
        UdpMessage::Bytes(bytes) => bytes.iter().copied().take(1500).collect(),
    }
}

/// A conversation and the last frame each side sent (for ICMP errors to quote).
struct Conversation {
    session: TcpSession,
    last_client: Vec<u8>,
    last_server: Vec<u8>,
}

/// Runs a sequence and checks the engine after every operation.
pub struct Harness {
    t: Tracked,
    policy: Arc<Policy>,
    offload: bool,
    auto_expire: bool,
    conversations: [Option<Conversation>; 4],
    /// Limits a reload or restart may have left exceeded: no check fails for what was there
    /// before, but nothing may be added beyond the cap.
    pinhole_slack: usize,
    client_slack: usize,
    source_slack: usize,
}

impl Harness {
    /// A fresh engine for `sequence`'s policy and mode.
    pub fn new(sequence: &Sequence) -> Self {
        let policy = sequence.policy.policy();
        let mut t = Tracked::new(policy.clone(), Instant::from_secs(1_000));
        t.engine.set_offload(sequence.offload);
        t.synced = sequence.synced;
        Harness {
            t,
            policy,
            offload: sequence.offload,
            auto_expire: sequence.auto_expire,
            conversations: [None, None, None, None],
            pinhole_slack: 0,
            client_slack: 0,
            source_slack: 0,
        }
    }

    fn send(&mut self, frame: &[u8], offloaded: bool) {
        self.t.advance(Duration::from_millis(1));
        if self.auto_expire
            && self
                .t
                .engine
                .next_timeout()
                .is_some_and(|at| at <= self.t.now)
        {
            let _ = self.t.expire();
        }
        let _ = self.t.process(LinkType::Ethernet, frame, true, offloaded);
    }

    fn send_split(&mut self, first: &[u8], second: &[u8], conflict: &[u8], order: Order) {
        let frames: Vec<&[u8]> = match order {
            Order::Forward => vec![first, second],
            Order::Reversed => vec![second, first],
            Order::DuplicateFirst => vec![first, first, second],
            Order::DuplicateLast => vec![second, first, second],
            Order::Conflict => vec![first, conflict, second],
        };
        for frame in frames {
            self.send(frame, false);
        }
    }

    /// Sends `payload` on conversation `slot` from one side, cut as `delivery` says.
    fn payload(&mut self, slot: u8, from_client: bool, payload: &[u8], delivery: Delivery) {
        let Some(c) = self.conversations[usize::from(slot % 4)].as_mut() else {
            return;
        };
        let flags_psh = flags::PSH | flags::ACK;
        let cut = match delivery {
            Delivery::Split { at, order } if payload.len() > 1 => {
                Some((1 + usize::from(at) % (payload.len() - 1), order))
            }
            _ => None,
        };
        let Some((cut, order)) = cut else {
            let frame = if from_client {
                c.session.client_data(payload)
            } else {
                c.session.server_data(payload)
            };
            if from_client {
                c.last_client.clone_from(&frame);
            } else {
                c.last_server.clone_from(&frame);
            }
            self.send(&frame, false);
            return;
        };
        let (head, tail) = payload.split_at(cut);
        let mut altered = head.to_vec();
        if let Some(last) = altered.last_mut() {
            *last ^= 0x20;
        }
        let raw = |s: &TcpSession, offset: usize, bytes: &[u8]| {
            if from_client {
                s.client_raw(flags_psh, offset as i64, bytes)
            } else {
                s.server_raw(flags_psh, offset as i64, bytes)
            }
        };
        let first = raw(&c.session, 0, head);
        let second = raw(&c.session, cut, tail);
        let conflict = raw(&c.session, 0, &altered);
        // Move the conversation past the payload.
        let _ = if from_client {
            c.session.client_data(payload)
        } else {
            c.session.server_data(payload)
        };
        if from_client {
            c.last_client.clone_from(&second);
        } else {
            c.last_server.clone_from(&second);
        }
        self.send_split(&first, &second, &conflict, order);
    }

    fn tcp_frame(
        &mut self,
        slot: u8,
        make: impl FnOnce(&mut TcpSession) -> Vec<u8>,
        from_client: bool,
    ) -> Option<Vec<u8>> {
        let c = self.conversations[usize::from(slot % 4)].as_mut()?;
        let frame = make(&mut c.session);
        if from_client {
            c.last_client.clone_from(&frame);
        } else {
            c.last_server.clone_from(&frame);
        }
        Some(frame)
    }

    /// Runs one operation.
    pub fn op(&mut self, op: &Op) {
        match op {
            Op::Connect {
                slot,
                from,
                to,
                sport,
                dport,
                v6,
                isn,
                handshake,
            } => {
                let client = SocketAddr::new(from.addr(*v6), sport.number());
                let server = SocketAddr::new(to.addr(*v6), dport.number());
                let mut session =
                    TcpSession::new(client, server, *isn, isn.rotate_left(16) ^ 0x5a5a_5a5a);
                let syn = session.syn();
                self.conversations[usize::from(slot % 4)] = Some(Conversation {
                    session,
                    last_client: syn.clone(),
                    last_server: Vec::new(),
                });
                self.send(&syn, false);
                if *handshake {
                    self.op(&Op::Handshake { slot: *slot });
                }
            }
            Op::Handshake { slot } => {
                if let Some(frame) = self.tcp_frame(*slot, TcpSession::syn_ack, false) {
                    self.send(&frame, false);
                }
                if let Some(frame) = self.tcp_frame(*slot, TcpSession::client_ack, true) {
                    self.send(&frame, false);
                }
            }
            Op::Command {
                slot,
                command,
                delivery,
            } => {
                let line = command_text(command);
                self.payload(*slot, true, &line, *delivery);
            }
            Op::Reply {
                slot,
                reply,
                delivery,
            } => {
                let line = reply_text(reply);
                self.payload(*slot, false, &line, *delivery);
            }
            Op::Bytes {
                slot,
                from_client,
                bytes,
                delivery,
            } => {
                let bytes: Vec<u8> = bytes.iter().copied().take(2048).collect();
                if !bytes.is_empty() {
                    self.payload(*slot, *from_client, &bytes, *delivery);
                }
            }
            Op::Tls {
                slot,
                from_client,
                record,
                delivery,
            } => {
                let hello = if *from_client { 1 } else { 2 };
                let bytes = match record {
                    TlsRecord::Hello => testkit::tls::hello(hello, 64),
                    TlsRecord::Flight => testkit::tls::flight(hello, 48),
                    TlsRecord::Data(len) => {
                        testkit::tls::record(23, &vec![0x17; usize::from(*len)])
                    }
                    TlsRecord::CloseNotify => testkit::tls::close_notify(),
                    TlsRecord::Header(header) => header.to_vec(),
                };
                self.payload(*slot, *from_client, &bytes, *delivery);
            }
            Op::Segment {
                slot,
                from_client,
                flags: bits,
                seq_offset,
                len,
                offloaded,
            } => {
                let payload = vec![b'x'; usize::from(*len)];
                let offset = i64::from(*seq_offset);
                let frame = self.tcp_frame(
                    *slot,
                    |s| {
                        if *from_client {
                            s.client_raw(*bits, offset, &payload)
                        } else {
                            s.server_raw(*bits, offset, &payload)
                        }
                    },
                    *from_client,
                );
                if let Some(frame) = frame {
                    self.send(&frame, *offloaded);
                }
            }
            Op::Ack { slot, from_client } => {
                let make = if *from_client {
                    TcpSession::client_ack
                } else {
                    TcpSession::server_ack
                };
                if let Some(frame) = self.tcp_frame(*slot, make, *from_client) {
                    self.send(&frame, false);
                }
            }
            Op::Fin {
                slot,
                from_client,
                offloaded,
            } => {
                let make = if *from_client {
                    TcpSession::client_fin
                } else {
                    TcpSession::server_fin
                };
                if let Some(frame) = self.tcp_frame(*slot, make, *from_client) {
                    self.send(&frame, *offloaded);
                }
            }
            Op::Rst {
                slot,
                from_client,
                offloaded,
            } => {
                let frame = self.tcp_frame(
                    *slot,
                    |s| {
                        if *from_client {
                            s.client_rst()
                        } else {
                            s.server_raw(flags::RST | flags::ACK, 0, &[])
                        }
                    },
                    *from_client,
                );
                if let Some(frame) = frame {
                    self.send(&frame, *offloaded);
                }
            }
            Op::Udp {
                from,
                to,
                sport,
                dport,
                v6,
                message,
                fragments,
            } => {
                let src = SocketAddr::new(from.addr(*v6), sport.number());
                let dst = SocketAddr::new(to.addr(*v6), dport.number());
                let frame = testkit::udp(src, dst, &udp_payload(message));
                match fragments {
                    None => self.send(&frame, false),
                    Some(f) => {
                        let chunk = 8 * (1 + usize::from(f.chunk % 64));
                        let mut pieces = testkit::fragment(&frame, chunk, u32::from(f.id));
                        match f.order {
                            FragmentOrder::Forward => {}
                            FragmentOrder::Reversed => pieces.reverse(),
                            FragmentOrder::WithoutLast => {
                                pieces.pop();
                            }
                            FragmentOrder::FirstTwice => {
                                if let Some(first) = pieces.first().cloned() {
                                    pieces.insert(1, first);
                                }
                            }
                        }
                        for piece in pieces.iter().take(64) {
                            self.send(piece, false);
                        }
                    }
                }
            }
            Op::Echo {
                from,
                to,
                v6,
                id,
                request,
            } => {
                let frame =
                    testkit::icmp_echo(from.addr(*v6), to.addr(*v6), u16::from(*id), 1, *request);
                self.send(&frame, false);
            }
            Op::IcmpError {
                slot,
                about_client,
                kind,
            } => {
                let Some(c) = self.conversations[usize::from(slot % 4)].as_ref() else {
                    return;
                };
                let quoted = if *about_client {
                    &c.last_client
                } else {
                    &c.last_server
                };
                if quoted.is_empty() {
                    return;
                }
                let (src, dst) = if *about_client {
                    (c.session.server().ip(), c.session.client().ip())
                } else {
                    (c.session.client().ip(), c.session.server().ip())
                };
                let (icmp_type, code) = match (src.is_ipv6(), kind % 4) {
                    (false, 0) => (3, 3),
                    (false, 1) => (3, 4),
                    (false, 2) => (11, 0),
                    (false, _) => (3, 1),
                    (true, 0) => (1, 4),
                    (true, 1) => (2, 0),
                    (true, 2) => (3, 0),
                    (true, _) => (1, 1),
                };
                let frame = testkit::icmp_error(src, dst, icmp_type, code, quoted);
                self.send(&frame, false);
            }
            Op::Raw { link, bytes } => {
                let bytes: Vec<u8> = bytes.iter().copied().take(2048).collect();
                self.t.advance(Duration::from_millis(1));
                let _ = self
                    .t
                    .process(link_type(*link), &bytes, link & 8 == 0, link & 16 != 0);
            }
            Op::Advance { millis } => {
                self.t
                    .advance(Duration::from_millis(u64::from(millis % 7_200_000)));
            }
            Op::Expire => {
                let _ = self.t.expire();
            }
            Op::Flush => {
                let _ = self.t.flush();
            }
            Op::Reload { policy } => {
                let policy = policy.policy();
                let _ = self.t.engine.set_policy(policy.clone());
                self.policy = policy;
                self.note_slack();
            }
            Op::Restart => self.restart(),
            Op::Offload { on } => {
                self.offload = *on;
                self.t.engine.set_offload(*on);
            }
        }
    }

    /// Save, serialize, deserialize, restore into a new engine: everything saved comes back.
    fn restart(&mut self) {
        // Held fragments are not saved; the daemon gives them their verdicts first.
        let _ = self.t.flush();
        let state = self.t.engine.save_state();
        let flows = state.flows.len();
        let pinholes = state.pinholes.len();
        assert_eq!(flows, self.t.engine.flows().len());
        assert_eq!(pinholes, self.t.engine.pinholes().len());
        let json = match serde_json::to_vec(&state) {
            Ok(json) => json,
            Err(err) => panic!("state does not serialize: {err}"),
        };
        let state: EngineState = match serde_json::from_slice(&json) {
            Ok(state) => state,
            Err(err) => panic!("saved state does not deserialize: {err}"),
        };
        let mut engine = Engine::new(self.policy.clone());
        engine.set_offload(self.offload);
        let summary = engine.restore_state(state);
        assert_eq!(
            (
                summary.flows,
                summary.duplicate_flows,
                summary.over_capacity
            ),
            (flows, 0, 0),
            "every saved flow is restored: {summary:?}"
        );
        assert_eq!(
            summary.pinholes + summary.dropped_pinholes,
            pinholes,
            "{summary:?}"
        );
        assert_eq!(engine.flows().len(), flows);
        assert_eq!(engine.pinholes().len(), summary.pinholes);
        let synced = self.t.synced;
        self.t = Tracked::restored(engine, self.t.now);
        self.t.synced = synced;
        self.note_slack();
    }

    /// Records how far a reload or restart left the tables over their new caps.
    fn note_slack(&mut self) {
        let (pinholes, clients, sources) = self.usage();
        self.pinhole_slack = pinholes;
        self.client_slack = clients.values().copied().max().unwrap_or(0);
        self.source_slack = sources.values().copied().max().unwrap_or(0);
    }

    /// Pending pinholes, pinholes per client, rule-admitted flows per source.
    fn usage(&self) -> (usize, BTreeMap<IpAddr, usize>, BTreeMap<IpAddr, usize>) {
        let engine = &self.t.engine;
        let mut clients = BTreeMap::new();
        for pinhole in engine.pinholes().iter() {
            if let Some(parent) = pinhole.spec.parent {
                *clients.entry(parent.flow.src).or_insert(0) += 1;
            }
        }
        let mut sources = BTreeMap::new();
        for (_, flow) in engine.flows().iter() {
            if matches!(flow.origin, FlowOrigin::Rule(_) | FlowOrigin::Pickup(_)) {
                *sources.entry(flow.tuple.src).or_insert(0) += 1;
            }
        }
        (engine.pinholes().len(), clients, sources)
    }

    /// The invariants: tables within their caps, their indexes consistent with their contents,
    /// pinhole parents alive, counters adding up, a timer whenever there is state.
    pub fn check(&mut self) {
        let engine = &self.t.engine;
        let limits = &engine.policy().limits;
        let flows = engine.flows();
        let pinholes = engine.pinholes();

        assert_eq!(flows.capacity(), limits.max_flows);
        assert!(
            flows.len() <= limits.max_flows,
            "{} flows, cap {}",
            flows.len(),
            limits.max_flows
        );
        for (handle, flow) in flows.iter() {
            assert_eq!(
                flows.lookup(&flow.tuple.key()),
                Some(handle),
                "flow index disagrees for {}",
                flow.tuple
            );
            assert!(flows.deadline(handle).is_some());
        }

        let (pending, clients, sources) = self.usage();
        assert!(
            pending <= limits.max_pinholes.max(self.pinhole_slack),
            "{pending} pinholes, cap {}",
            limits.max_pinholes
        );
        for p in pinholes.iter() {
            assert_eq!(pinholes.get(p.id).map(|q| q.id), Some(p.id));
            if let Some(parent) = p.spec.parent {
                assert_eq!(
                    flows.get(parent.handle).map(|f| f.tuple),
                    Some(parent.flow),
                    "pinhole {} outlives its parent flow",
                    p.id.0
                );
            }
        }
        for (client, n) in &clients {
            assert_eq!(
                pinholes.count_for_client(*client),
                *n,
                "per-client index of {client}"
            );
            assert!(
                *n <= limits.max_pinholes_per_client.max(self.client_slack),
                "client {client} holds {n} pinholes, cap {}",
                limits.max_pinholes_per_client
            );
        }
        for host in Host::ALL {
            for v6 in [false, true] {
                let addr = host.addr(v6);
                assert_eq!(
                    pinholes.count_for_client(addr),
                    clients.get(&addr).copied().unwrap_or(0),
                    "per-client index of {addr}"
                );
                assert_eq!(
                    flows.count_from(addr),
                    sources.get(&addr).copied().unwrap_or(0),
                    "per-source index of {addr}"
                );
            }
        }
        for (source, n) in &sources {
            assert!(
                *n <= limits.max_flows_per_source.max(self.source_slack),
                "source {source} holds {n} flows, cap {}",
                limits.max_flows_per_source
            );
        }
        if !flows.is_empty() || !pinholes.is_empty() || self.t.held() > 0 {
            assert!(
                engine.next_timeout().is_some(),
                "state without a timer: {} flows, {} pinholes, {} held",
                flows.len(),
                pinholes.len(),
                self.t.held()
            );
        }
        self.t.check_counters();

        // A cap exceeded after a reload can only come down.
        self.pinhole_slack = if pending > limits.max_pinholes {
            pending
        } else {
            0
        };
        self.client_slack = clients
            .values()
            .copied()
            .filter(|n| *n > limits.max_pinholes_per_client)
            .max()
            .unwrap_or(0);
        self.source_slack = sources
            .values()
            .copied()
            .filter(|n| *n > limits.max_flows_per_source)
            .max()
            .unwrap_or(0);
    }

    /// The engine's counters.
    pub fn counters(&self) -> &pinhole::counters::Counters {
        self.t.engine.counters()
    }

    /// Ends the run: held packets get their verdicts, all timers run.
    pub fn finish(&mut self) {
        let _ = self.t.flush();
        self.check();
        self.t.advance(Duration::from_secs(100_000));
        let _ = self.t.expire();
        self.check();
        assert!(
            self.t.engine.pinholes().is_empty() && self.t.engine.flows().is_empty(),
            "state left after every timeout"
        );
    }
}

/// True when `PINHOLE_FUZZ_TRACE` is set: every operation and decision goes to stderr.
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("PINHOLE_FUZZ_TRACE").is_some())
}

/// Runs `sequence` (at most [`MAX_OPS`] operations) with every check.
pub fn run(sequence: &Sequence) {
    let mut harness = Harness::new(sequence);
    let trace = tracing();
    harness.t.trace = trace;
    harness.check();
    for op in sequence.ops.iter().take(MAX_OPS) {
        if trace {
            eprintln!("{op:?}");
        }
        harness.op(op);
        harness.t.trace = trace;
        harness.check();
    }
    harness.finish();
}
