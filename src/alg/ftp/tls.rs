//! Following the TLS record framing of one direction of an FTPS control connection, without
//! decrypting anything.
//!
//! After the server's 234 to AUTH TLS (RFC 4217 section 4), or from the first byte on an
//! implicit-FTPS port, each direction must carry TLS records: a five-byte header
//! ([`crate::wire::tls`]) and a body of the length it gives. The follower keeps five header
//! bytes and a count of body bytes still to skip, so it costs the same whatever the records
//! hold. It checks:
//!
//! - every header: content type 20-23, version 3.x, length within the limit;
//! - the first record: a handshake record opening with a ClientHello (client) or a
//!   ServerHello (server), or an alert (a server refusing the handshake);
//! - where the TLS stream ends: bytes that are no record header are taken as the cleartext
//!   that follows a CCC (RFC 4217 section 12.3) only once this direction has sent
//!   application data (the handshake is over) and only if they start like an FTP command or
//!   reply. Anything else is a violation: cleartext commands behind a fake AUTH TLS never get
//!   past the follower uninspected.

use serde::{Deserialize, Serialize};

use crate::wire::tls::{self, HEADER_LEN, content, handshake};

/// Which end's bytes a follower reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sender {
    /// The client: its first record must hold a ClientHello, its cleartext commands.
    Client,
    /// The server: its first record must hold a ServerHello (or be an alert), its cleartext
    /// replies.
    Server,
}

/// What the bytes pushed were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// TLS records (or parts of them), all well framed.
    Records,
    /// The TLS stream ended: cleartext starts with `carried` (header bytes kept from earlier
    /// pushes), then the pushed bytes from index `from` on.
    Cleartext {
        /// Bytes of earlier pushes that belong to the cleartext.
        carried: Vec<u8>,
        /// Where in the pushed bytes the rest of the cleartext starts.
        from: usize,
    },
    /// Bytes that are neither TLS records nor the cleartext after a CCC.
    Invalid(String),
}

/// The framing state of one direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFollower {
    sender: Sender,
    /// Header bytes collected so far (`have` of them).
    header: [u8; HEADER_LEN],
    have: u8,
    /// Body bytes of the current record still to come.
    left: u16,
    /// Records whose header was read.
    records: u64,
    /// The body's first byte must be this handshake type (the first record).
    expect_hello: Option<u8>,
    /// This direction has sent an application-data record: the handshake is over.
    encrypted: bool,
    /// The other side went cleartext first: no more records may come from this one.
    #[serde(default)]
    cleartext_due: bool,
}

impl TlsFollower {
    /// A follower of the bytes `sender` sends from the start of its TLS stream.
    pub fn new(sender: Sender) -> Self {
        TlsFollower {
            sender,
            header: [0; HEADER_LEN],
            have: 0,
            left: 0,
            records: 0,
            expect_hello: None,
            encrypted: false,
            cleartext_due: false,
        }
    }

    /// The other side (the server) went cleartext: the next bytes of this one must be
    /// cleartext too, since the other end reads them so. A record header is a violation.
    pub fn expect_cleartext(&mut self) {
        self.cleartext_due = true;
    }

    /// Records whose header was read.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Follows the next bytes of the stream. After [`Framing::Cleartext`] or
    /// [`Framing::Invalid`] the follower is done: the caller drops it.
    pub fn push(&mut self, bytes: &[u8]) -> Framing {
        let mut at = 0;
        while at < bytes.len() {
            if self.left > 0 {
                let take = usize::from(self.left).min(bytes.len() - at);
                if let Some(expected) = self.expect_hello.take()
                    && bytes[at] != expected
                {
                    return Framing::Invalid(format!(
                        "the first TLS record is a handshake of type {}, not a {}",
                        bytes[at],
                        hello_name(expected)
                    ));
                }
                // `take` is at most `left`, a u16.
                self.left -= u16::try_from(take).unwrap_or(self.left);
                at += take;
                continue;
            }
            let take = (HEADER_LEN - usize::from(self.have)).min(bytes.len() - at);
            let have = usize::from(self.have);
            self.header[have..have + take].copy_from_slice(&bytes[at..at + take]);
            // At most HEADER_LEN.
            self.have += u8::try_from(take).unwrap_or(0);
            at += take;
            if usize::from(self.have) < HEADER_LEN {
                break;
            }
            self.have = 0;
            match tls::parse_header(self.header) {
                Ok(_) if self.cleartext_due => {
                    return Framing::Invalid(format!(
                        "a TLS record ({}) after the other side cleared the control channel, which reads it as cleartext",
                        super::shown(&self.header)
                    ));
                }
                Ok(header) => {
                    if let Err(detail) = self.check_order(header) {
                        return Framing::Invalid(detail);
                    }
                    self.records += 1;
                    self.left = header.length;
                }
                Err(err) => {
                    // The header started `HEADER_LEN` bytes back: in this push from
                    // `start`, or partly in earlier ones.
                    let start = at.saturating_sub(HEADER_LEN);
                    let carried_len = HEADER_LEN - (at - start);
                    if (self.encrypted || self.cleartext_due) && self.starts_line(&self.header) {
                        return Framing::Cleartext {
                            carried: self.header[..carried_len].to_vec(),
                            from: start,
                        };
                    }
                    return Framing::Invalid(self.not_a_record(err));
                }
            }
        }
        Framing::Records
    }

    /// The order rules: the first record opens the handshake.
    fn check_order(&mut self, header: tls::RecordHeader) -> Result<(), String> {
        if self.records == 0 {
            let hello = match self.sender {
                Sender::Client => handshake::CLIENT_HELLO,
                Sender::Server => handshake::SERVER_HELLO,
            };
            let alert_allowed = self.sender == Sender::Server;
            match header.content_type {
                content::HANDSHAKE if header.length > 0 => self.expect_hello = Some(hello),
                content::ALERT if alert_allowed => {}
                other => {
                    return Err(format!(
                        "the first TLS record has content type {other} and length {}, not a handshake opening with a {}",
                        header.length,
                        hello_name(hello)
                    ));
                }
            }
        }
        if header.content_type == content::APPLICATION_DATA {
            self.encrypted = true;
        }
        Ok(())
    }

    /// True when `bytes` start like the line this sender would send in the clear.
    fn starts_line(&self, bytes: &[u8]) -> bool {
        match self.sender {
            Sender::Client => super::starts_command(bytes),
            Sender::Server => super::starts_reply(bytes),
        }
    }

    fn not_a_record(&self, err: tls::HeaderError) -> String {
        let shown = super::shown(&self.header);
        if self.records == 0 {
            format!("{shown:?} where the TLS handshake should start: {err}")
        } else if !self.encrypted {
            format!(
                "{shown:?} after {} TLS record(s), before the handshake ended: {err}",
                self.records
            )
        } else {
            format!(
                "{shown:?} after the TLS stream: neither a TLS record ({err}) nor an FTP {}",
                match self.sender {
                    Sender::Client => "command",
                    Sender::Server => "reply",
                }
            )
        }
    }
}

fn hello_name(kind: u8) -> &'static str {
    match kind {
        handshake::CLIENT_HELLO => "ClientHello",
        _ => "ServerHello",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![content_type, 3, 3];
        r.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    /// A client's stream: ClientHello, ChangeCipherSpec, Finished, application data.
    fn client_stream() -> Vec<u8> {
        let mut s = record(22, &[1, 0, 0, 3, 3, 3, 0]);
        s.extend(record(20, &[1]));
        s.extend(record(22, &[0x9c; 40]));
        s.extend(record(23, &[0x55; 100]));
        s
    }

    #[test]
    fn records_in_any_split_are_followed() {
        let stream = client_stream();
        for chunk in 1..stream.len() {
            let mut f = TlsFollower::new(Sender::Client);
            for part in stream.chunks(chunk) {
                assert_eq!(f.push(part), Framing::Records, "chunk {chunk}");
            }
            assert_eq!(f.records(), 4);
        }
    }

    #[test]
    fn a_maximal_record_is_followed() {
        let mut stream = record(22, &[1, 0, 0, 1, 0]);
        stream.extend(record(23, &vec![0; usize::from(tls::MAX_RECORD_LEN)]));
        stream.extend(record(23, &[1]));
        let mut f = TlsFollower::new(Sender::Client);
        assert_eq!(f.push(&stream), Framing::Records);
        assert_eq!(f.records(), 3);
    }

    #[test]
    fn cleartext_commands_instead_of_a_client_hello_are_invalid() {
        let mut f = TlsFollower::new(Sender::Client);
        let Framing::Invalid(detail) = f.push(b"PORT 10,0,0,9,4,1\r\n") else {
            panic!("accepted")
        };
        assert!(
            detail.starts_with("\"PORT \" where the TLS handshake should start"),
            "{detail}"
        );
    }

    #[test]
    fn the_first_record_must_open_with_the_hello() {
        let mut f = TlsFollower::new(Sender::Client);
        assert!(matches!(
            f.push(&record(23, &[1, 2, 3])),
            Framing::Invalid(_)
        ));
        let mut f = TlsFollower::new(Sender::Client);
        let Framing::Invalid(detail) = f.push(&record(22, &[2, 0, 0, 0])) else {
            panic!("a ServerHello from the client accepted")
        };
        assert!(detail.contains("not a ClientHello"), "{detail}");
        let mut f = TlsFollower::new(Sender::Client);
        assert!(matches!(f.push(&record(22, &[])), Framing::Invalid(_)));
        // The server may refuse the handshake with an alert.
        let mut f = TlsFollower::new(Sender::Server);
        assert_eq!(f.push(&record(21, &[2, 40])), Framing::Records);
        let mut f = TlsFollower::new(Sender::Server);
        assert_eq!(f.push(&record(22, &[2, 0])), Framing::Records);
    }

    #[test]
    fn cleartext_after_the_handshake_is_a_ccc_when_it_is_ftp() {
        let mut stream = client_stream();
        stream.extend(record(21, &[0x11; 26])); // close_notify, encrypted
        let split = stream.len() - 2;
        stream.extend_from_slice(b"PASV\r\n");
        let mut f = TlsFollower::new(Sender::Client);
        assert_eq!(f.push(&stream[..split]), Framing::Records);
        assert_eq!(
            f.push(&stream[split..]),
            Framing::Cleartext {
                carried: Vec::new(),
                from: 2
            }
        );
        // A header split across pushes: the bytes carried over are given back.
        let mut f = TlsFollower::new(Sender::Client);
        let at = stream.len() - 4;
        assert_eq!(f.push(&stream[..at]), Framing::Records);
        assert_eq!(
            f.push(&stream[at..]),
            Framing::Cleartext {
                carried: b"PA".to_vec(),
                from: 0
            }
        );
        // A server's reply.
        let mut f = TlsFollower::new(Sender::Server);
        let mut s = record(22, &[2, 0, 0, 0]);
        s.extend(record(23, &[7; 30]));
        s.extend_from_slice(b"227 Entering Passive Mode (10,0,0,1,4,1)\r\n");
        assert!(matches!(f.push(&s), Framing::Cleartext { .. }));
    }

    #[test]
    fn garbage_after_the_handshake_is_invalid() {
        let mut stream = client_stream();
        stream.extend_from_slice(&[0x16, 0x03, 0x03, 0xff, 0xff]);
        let mut f = TlsFollower::new(Sender::Client);
        let Framing::Invalid(detail) = f.push(&stream) else {
            panic!("accepted")
        };
        assert!(detail.contains("record length 65535"), "{detail}");
        let mut stream = client_stream();
        stream.extend_from_slice(b"\x01\x02junk\r\n");
        let mut f = TlsFollower::new(Sender::Client);
        assert!(matches!(f.push(&stream), Framing::Invalid(_)));
        // A reply line from the client is no command.
        let mut stream = client_stream();
        stream.extend_from_slice(b"200 fine\r\n");
        let mut f = TlsFollower::new(Sender::Client);
        assert!(matches!(f.push(&stream), Framing::Invalid(_)));
    }

    #[test]
    fn cleartext_before_the_handshake_ended_is_invalid() {
        let mut stream = record(22, &[1, 0, 0, 3]);
        stream.extend_from_slice(b"USER root\r\n");
        let mut f = TlsFollower::new(Sender::Client);
        let Framing::Invalid(detail) = f.push(&stream) else {
            panic!("accepted")
        };
        assert!(detail.contains("before the handshake ended"), "{detail}");
    }
}
