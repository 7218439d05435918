//! The sessions of the synthetic workload: each is a short script of steps over one or two
//! connections, turned into frames one step at a time (so a million open sessions cost a few
//! hundred bytes each, not their frames).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::testkit::{self, TcpSession, flags};

use super::Rng;

/// Filler for data segments and datagrams.
static FILLER: [u8; 1448] = [0x5a; 1448];
/// TCP payload of a full-sized data segment (1500-byte MTU, timestamps off).
const MSS: u16 = 1448;
/// TFTP block size without the blksize option (RFC 1350 section 2).
const TFTP_BLOCK: u16 = 512;

/// The FTP servers' addresses (one per family).
pub(super) const FTP_SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const FTP_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10);
const WEB_SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);
const WEB_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x30);
const DNS_SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const DNS_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x53);
const TFTP_SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 69);
const TFTP_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x69);
/// A host outside every zone of the bench policy: the target of FTP bounce attempts.
const BOUNCE_TARGET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

/// What a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An FTP control connection with several transfers (PASV, EPSV, PORT, EPRT).
    Ftp,
    /// A TFTP read.
    Tftp,
    /// A TCP connection to a web server: requests and responses.
    Web,
    /// A DNS query and its answer.
    Dns,
    /// An FTP session whose PORT names a third host (refused as `ftp_bounce`).
    AttackBounce,
    /// A SYN to a port no rule allows (dropped as `default_deny`).
    AttackScan,
    /// A web connection into which a segment far outside the window is injected
    /// (dropped as `tcp_out_of_window`).
    AttackInjection,
    /// A TFTP read during which a datagram arrives from another server port
    /// (dropped as `tftp_unknown_tid`).
    AttackTid,
}

impl Kind {
    /// Every kind, in the order of [`super::Summary`]'s counts.
    pub const ALL: [Kind; 8] = [
        Kind::Ftp,
        Kind::Tftp,
        Kind::Web,
        Kind::Dns,
        Kind::AttackBounce,
        Kind::AttackScan,
        Kind::AttackInjection,
        Kind::AttackTid,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ftp => "ftp",
            Kind::Tftp => "tftp",
            Kind::Web => "web",
            Kind::Dns => "dns",
            Kind::AttackBounce => "attack_ftp_bounce",
            Kind::AttackScan => "attack_scan",
            Kind::AttackInjection => "attack_injection",
            Kind::AttackTid => "attack_tftp_tid",
        }
    }

    /// The drop reason the one hostile packet of this kind must get, if it is an attack.
    pub fn expected_drop(self) -> Option<&'static str> {
        match self {
            Kind::AttackBounce => Some("ftp_bounce"),
            Kind::AttackScan => Some("default_deny"),
            Kind::AttackInjection => Some("tcp_out_of_window"),
            Kind::AttackTid => Some("tftp_unknown_tid"),
            _ => None,
        }
    }
}

/// One step of a session.
#[derive(Clone, Copy, Debug)]
enum Step {
    Syn(u8),
    SynAck(u8),
    Ack(u8, Side),
    /// An FTP line (index into the session's texts).
    Line(u8, Side, u8),
    /// A data segment of this many filler bytes.
    Data(u8, Side, u16),
    Fin(u8, Side),
    /// A segment a billion bytes ahead of the sender's sequence number.
    OutOfWindow(u8, Side),
    /// A TFTP request (index into the texts) from the client to port 69.
    TftpRequest(u8),
    /// TFTP DATA `block` with `len` bytes, from the server's transfer port.
    TftpData(u16, u16),
    /// TFTP ACK `block` from the client.
    TftpAck(u16),
    /// A TFTP DATA from the wrong server port.
    TftpForeign,
    /// A UDP datagram of this many filler bytes (conn 0).
    Datagram(Side, u16),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

#[derive(Clone, Debug)]
enum Conn {
    Tcp(TcpSession),
    Udp {
        client: SocketAddr,
        server: SocketAddr,
    },
}

/// One session: its connections and its remaining script.
#[derive(Clone, Debug)]
pub(super) struct Session {
    kind: Kind,
    conns: Vec<Conn>,
    texts: Vec<Box<[u8]>>,
    steps: Vec<Step>,
    next: usize,
    /// The index in `steps` of the attack's hostile packet, if this is an attack.
    hostile: Option<usize>,
}

/// Addresses a session may use; unique per session number, so no two open sessions share a
/// 5-tuple.
struct Addrs {
    v6: bool,
    client: IpAddr,
    /// Client port of the first connection.
    port: u16,
    /// Client ports for data connections: `data_port..data_port + 8`.
    data_port: u16,
}

impl Addrs {
    fn for_session(id: u64, v6: bool) -> Addrs {
        // 198.18.0.0/15 and 2001:2::/48 are the benchmarking ranges (RFC 2544, RFC 5180).
        let host = (id % 131_072) as u32;
        let round = (id / 131_072) as u32;
        let client = if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                2,
                0,
                0,
                0,
                0,
                (host >> 16) as u16,
                host as u16,
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(0xc612_0000 | host))
        };
        Addrs {
            v6,
            client,
            port: 1024 + (round % 4096) as u16,
            data_port: 32_768 + ((round % 4096) * 8) as u16,
        }
    }

    fn server(&self, v4: Ipv4Addr, v6: Ipv6Addr, port: u16) -> SocketAddr {
        if self.v6 {
            SocketAddr::new(IpAddr::V6(v6), port)
        } else {
            SocketAddr::new(IpAddr::V4(v4), port)
        }
    }
}

impl Session {
    /// A new session number `id` of `kind`.
    pub(super) fn new(kind: Kind, id: u64, rng: &mut Rng) -> Session {
        let v6 = rng.below(10) == 0;
        let addrs = Addrs::for_session(id, v6);
        let mut session = Session {
            kind,
            conns: Vec::new(),
            texts: Vec::new(),
            steps: Vec::new(),
            next: 0,
            hostile: None,
        };
        match kind {
            Kind::Ftp => session.script_ftp(&addrs, rng, false),
            Kind::AttackBounce => {
                // The third host is IPv4; a v6 control connection would be refused as a
                // family mismatch instead.
                let addrs = Addrs::for_session(id, false);
                session.script_ftp(&addrs, rng, true);
            }
            Kind::Tftp => session.script_tftp(&addrs, rng, false),
            Kind::AttackTid => session.script_tftp(&addrs, rng, true),
            Kind::Web => session.script_web(&addrs, rng, false),
            Kind::AttackInjection => session.script_web(&addrs, rng, true),
            Kind::Dns => session.script_dns(&addrs, rng),
            Kind::AttackScan => {
                let server = addrs.server(WEB_SERVER_V4, WEB_SERVER_V6, 1 + rng.below(19) as u16);
                session.tcp(addrs.client, addrs.port, server, rng);
                session.push_hostile(Step::Syn(0));
            }
        }
        session
    }

    /// Its kind.
    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    /// Appends the attack's one hostile step.
    fn push_hostile(&mut self, step: Step) {
        self.hostile = Some(self.steps.len());
        self.steps.push(step);
    }

    fn tcp(&mut self, client: IpAddr, port: u16, server: SocketAddr, rng: &mut Rng) -> u8 {
        let isn = rng.next_u64();
        self.conns.push(Conn::Tcp(TcpSession::new(
            SocketAddr::new(client, port),
            server,
            isn as u32,
            (isn >> 32) as u32,
        )));
        (self.conns.len() - 1) as u8
    }

    fn text(&mut self, line: String) -> u8 {
        self.texts.push(line.into_bytes().into_boxed_slice());
        (self.texts.len() - 1) as u8
    }

    fn exchange(&mut self, conn: u8, command: String, reply: String) {
        let command = self.text(command);
        let reply = self.text(reply);
        self.steps.push(Step::Line(conn, Side::Client, command));
        self.steps.push(Step::Line(conn, Side::Server, reply));
    }

    fn handshake(&mut self, conn: u8) {
        self.steps.push(Step::Syn(conn));
        self.steps.push(Step::SynAck(conn));
        self.steps.push(Step::Ack(conn, Side::Client));
    }

    /// `from` closes first, the other side answers with its own FIN, `from` acknowledges.
    fn close(&mut self, conn: u8, from: Side) {
        let other = if from == Side::Client {
            Side::Server
        } else {
            Side::Client
        };
        self.steps.push(Step::Fin(conn, from));
        self.steps.push(Step::Fin(conn, other));
        self.steps.push(Step::Ack(conn, from));
    }

    /// `segments` full-sized segments from `from`, acknowledged every second one.
    fn bulk(&mut self, conn: u8, from: Side, segments: u32) {
        let to = if from == Side::Client {
            Side::Server
        } else {
            Side::Client
        };
        for i in 0..segments {
            self.steps.push(Step::Data(conn, from, MSS));
            if i % 2 == 1 || i + 1 == segments {
                self.steps.push(Step::Ack(conn, to));
            }
        }
    }

    /// RFC 959 section 4.1 (PASV, PORT) and RFC 2428 (EPSV, EPRT); replies as vsftpd words
    /// them.
    fn script_ftp(&mut self, addrs: &Addrs, rng: &mut Rng, bounce: bool) {
        let server_ip = if addrs.v6 {
            IpAddr::V6(FTP_SERVER_V6)
        } else {
            IpAddr::V4(FTP_SERVER_V4)
        };
        let control = self.tcp(
            addrs.client,
            addrs.port,
            SocketAddr::new(server_ip, 21),
            rng,
        );
        self.handshake(control);
        let banner = self.text("220 (vsFTPd 3.0.3)\r\n".into());
        self.steps.push(Step::Line(control, Side::Server, banner));
        self.steps.push(Step::Ack(control, Side::Client));
        self.exchange(
            control,
            "USER anonymous\r\n".into(),
            "331 Please specify the password.\r\n".into(),
        );
        self.exchange(
            control,
            "PASS bench@example.org\r\n".into(),
            "230 Login successful.\r\n".into(),
        );
        self.exchange(
            control,
            "TYPE I\r\n".into(),
            "200 Switching to Binary mode.\r\n".into(),
        );
        if bounce {
            let command = self.text(format!(
                "PORT {},{},{}\r\n",
                BOUNCE_TARGET.to_string().replace('.', ","),
                addrs.data_port >> 8,
                addrs.data_port & 0xff
            ));
            self.push_hostile(Step::Line(control, Side::Client, command));
            return;
        }
        let transfers = 2 + rng.below(3) as u16;
        for transfer in 0..transfers {
            self.ftp_transfer(addrs, rng, control, server_ip, transfer);
        }
        self.exchange(control, "QUIT\r\n".into(), "221 Goodbye.\r\n".into());
        self.close(control, Side::Server);
    }

    /// One transfer on an FTP control connection: the mode command and its reply, the data
    /// connection (opened by the client for PASV/EPSV, by the server from port 20 for
    /// PORT/EPRT), RETR, the data, 226.
    fn ftp_transfer(
        &mut self,
        addrs: &Addrs,
        rng: &mut Rng,
        control: u8,
        server_ip: IpAddr,
        transfer: u16,
    ) {
        let data_port = addrs.data_port + transfer;
        let mode = rng.below(4);
        let passive = mode < 2;
        let server_port = 30_000 + rng.below(10_000) as u16;
        let (command, reply) = match (mode, addrs.v6) {
            (0, false) => (
                "PASV\r\n".to_owned(),
                format!(
                    "227 Entering Passive Mode ({},{},{}).\r\n",
                    FTP_SERVER_V4.to_string().replace('.', ","),
                    server_port >> 8,
                    server_port & 0xff
                ),
            ),
            (0 | 1, _) => (
                "EPSV\r\n".to_owned(),
                format!("229 Entering Extended Passive Mode (|||{server_port}|)\r\n"),
            ),
            (2, false) => (
                format!(
                    "PORT {},{},{}\r\n",
                    addrs.client.to_string().replace('.', ","),
                    data_port >> 8,
                    data_port & 0xff
                ),
                "200 PORT command successful. Consider using PASV.\r\n".to_owned(),
            ),
            (_, v6) => (
                format!(
                    "EPRT |{}|{}|{}|\r\n",
                    if v6 { 2 } else { 1 },
                    addrs.client,
                    data_port
                ),
                "200 EPRT command successful. Consider using EPSV.\r\n".to_owned(),
            ),
        };
        self.exchange(control, command, reply);
        let segments = 4 + rng.below(60);
        let size = u64::from(segments) * u64::from(MSS);
        let retr = self.text(format!("RETR file{transfer}.bin\r\n"));
        let opening = self.text(format!(
            "150 Opening BINARY mode data connection for file{transfer}.bin ({size} bytes).\r\n"
        ));
        let data = if passive {
            let data = self.tcp(
                addrs.client,
                data_port,
                SocketAddr::new(server_ip, server_port),
                rng,
            );
            self.handshake(data);
            self.steps.push(Step::Line(control, Side::Client, retr));
            self.steps.push(Step::Line(control, Side::Server, opening));
            data
        } else {
            self.steps.push(Step::Line(control, Side::Client, retr));
            // The server connects from port 20 (RFC 959 section 3.2) before its 150.
            let data = self.tcp(server_ip, 20, SocketAddr::new(addrs.client, data_port), rng);
            self.handshake(data);
            self.steps.push(Step::Line(control, Side::Server, opening));
            data
        };
        // In an active transfer the server is the data connection's "client" side.
        let sender = if passive { Side::Server } else { Side::Client };
        self.bulk(data, sender, segments);
        self.close(data, sender);
        let done = self.text("226 Transfer complete.\r\n".into());
        self.steps.push(Step::Line(control, Side::Server, done));
        self.steps.push(Step::Ack(control, Side::Client));
    }

    /// RFC 1350: a read of a few blocks in lock step, the last one short.
    fn script_tftp(&mut self, addrs: &Addrs, rng: &mut Rng, foreign: bool) {
        let tid = 40_000 + rng.below(20_000) as u16;
        let client = SocketAddr::new(addrs.client, addrs.port);
        self.conns.push(Conn::Udp {
            client,
            server: addrs.server(TFTP_SERVER_V4, TFTP_SERVER_V6, 69),
        });
        self.conns.push(Conn::Udp {
            client,
            server: addrs.server(TFTP_SERVER_V4, TFTP_SERVER_V6, tid),
        });
        let request = testkit::tftp::rrq("config.bin", "octet", &[]);
        self.texts.push(request.into_boxed_slice());
        self.steps.push(Step::TftpRequest(0));
        let blocks = 1 + rng.below(8) as u16;
        for block in 1..=blocks {
            let len = if block == blocks {
                rng.below(u32::from(TFTP_BLOCK)) as u16
            } else {
                TFTP_BLOCK
            };
            self.steps.push(Step::TftpData(block, len));
            if foreign && block == 1 {
                self.push_hostile(Step::TftpForeign);
            }
            self.steps.push(Step::TftpAck(block));
        }
    }

    /// A TLS-like exchange: a few requests, each answered by one to three full segments.
    fn script_web(&mut self, addrs: &Addrs, rng: &mut Rng, inject: bool) {
        let server = addrs.server(WEB_SERVER_V4, WEB_SERVER_V6, 443);
        let conn = self.tcp(addrs.client, addrs.port, server, rng);
        self.handshake(conn);
        let requests = 1 + rng.below(4);
        for request in 0..requests {
            self.steps
                .push(Step::Data(conn, Side::Client, 100 + rng.below(400) as u16));
            if inject && request == 0 {
                self.push_hostile(Step::OutOfWindow(conn, Side::Server));
            }
            let segments = 1 + rng.below(3);
            for _ in 0..segments {
                self.steps.push(Step::Data(conn, Side::Server, MSS));
            }
            self.steps.push(Step::Ack(conn, Side::Client));
        }
        self.close(conn, Side::Client);
    }

    fn script_dns(&mut self, addrs: &Addrs, rng: &mut Rng) {
        self.conns.push(Conn::Udp {
            client: SocketAddr::new(addrs.client, addrs.port),
            server: addrs.server(DNS_SERVER_V4, DNS_SERVER_V6, 53),
        });
        self.steps
            .push(Step::Datagram(Side::Client, 30 + rng.below(30) as u16));
        self.steps
            .push(Step::Datagram(Side::Server, 60 + rng.below(400) as u16));
    }

    /// The next frame and whether it is the attack's hostile packet, or `None` when the
    /// script is done.
    pub(super) fn next_frame(&mut self) -> Option<(Vec<u8>, bool)> {
        let index = self.next;
        let step = *self.steps.get(index)?;
        self.next += 1;
        Some((self.frame(step), self.hostile == Some(index)))
    }

    fn tcp_conn(&mut self, conn: u8) -> &mut TcpSession {
        match &mut self.conns[usize::from(conn)] {
            Conn::Tcp(session) => session,
            Conn::Udp { .. } => unreachable!("a TCP step on a UDP connection"),
        }
    }

    fn udp_conn(&self, conn: usize) -> (SocketAddr, SocketAddr) {
        match &self.conns[conn] {
            Conn::Udp { client, server } => (*client, *server),
            Conn::Tcp(_) => unreachable!("a UDP step on a TCP connection"),
        }
    }

    fn frame(&mut self, step: Step) -> Vec<u8> {
        match step {
            Step::Syn(c) => self.tcp_conn(c).syn(),
            Step::SynAck(c) => self.tcp_conn(c).syn_ack(),
            Step::Ack(c, Side::Client) => self.tcp_conn(c).client_ack(),
            Step::Ack(c, Side::Server) => self.tcp_conn(c).server_ack(),
            Step::Line(c, side, text) => {
                let text = std::mem::take(&mut self.texts[usize::from(text)]);
                let session = self.tcp_conn(c);
                match side {
                    Side::Client => session.client_data(&text),
                    Side::Server => session.server_data(&text),
                }
            }
            Step::Data(c, side, len) => {
                let payload = &FILLER[..usize::from(len)];
                let session = self.tcp_conn(c);
                match side {
                    Side::Client => session.client_data(payload),
                    Side::Server => session.server_data(payload),
                }
            }
            Step::Fin(c, Side::Client) => self.tcp_conn(c).client_fin(),
            Step::Fin(c, Side::Server) => self.tcp_conn(c).server_fin(),
            Step::OutOfWindow(c, side) => {
                let session = self.tcp_conn(c);
                let bits = flags::PSH | flags::ACK;
                match side {
                    Side::Client => session.client_raw(bits, 1 << 30, &FILLER[..100]),
                    Side::Server => session.server_raw(bits, 1 << 30, &FILLER[..100]),
                }
            }
            Step::TftpRequest(text) => {
                let (client, server) = self.udp_conn(0);
                testkit::udp(client, server, &self.texts[usize::from(text)])
            }
            Step::TftpData(block, len) => {
                let (client, server) = self.udp_conn(1);
                testkit::udp(server, client, &testkit::tftp::data(block, len.into()))
            }
            Step::TftpAck(block) => {
                let (client, server) = self.udp_conn(1);
                testkit::udp(client, server, &testkit::tftp::ack(block))
            }
            Step::TftpForeign => {
                let (client, server) = self.udp_conn(1);
                let foreign = SocketAddr::new(server.ip(), server.port() ^ 0x100);
                testkit::udp(foreign, client, &testkit::tftp::data(1, 512))
            }
            Step::Datagram(side, len) => {
                let (client, server) = self.udp_conn(0);
                let payload = &FILLER[..usize::from(len)];
                match side {
                    Side::Client => testkit::udp(client, server, payload),
                    Side::Server => testkit::udp(server, client, payload),
                }
            }
        }
    }
}
