//! TFTP packets (RFC 1350) with options (RFC 2347, 2348, 2349, 7440).
//!
//! Every field is checked: requests must have a non-empty NUL-terminated filename, a known mode
//! and well-formed options with values in their RFCs' ranges; an option may appear only once.
//! Unknown options are kept (and reported) since RFC 2347 lets servers ignore them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A TFTP opcode (RFC 1350 section 5, RFC 2347 for OACK).
pub mod opcode {
    /// Read request.
    pub const RRQ: u16 = 1;
    /// Write request.
    pub const WRQ: u16 = 2;
    /// Data.
    pub const DATA: u16 = 3;
    /// Acknowledgment.
    pub const ACK: u16 = 4;
    /// Error.
    pub const ERROR: u16 = 5;
    /// Option acknowledgment (RFC 2347).
    pub const OACK: u16 = 6;
}

/// Why a TFTP packet is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TftpError {
    /// Shorter than its opcode and fixed fields.
    Truncated,
    /// Opcode 0 or above 6.
    BadOpcode(u16),
    /// A string field without its terminating NUL.
    MissingNul,
    /// A request with an empty filename.
    EmptyFilename,
    /// A mode other than netascii, octet or mail.
    BadMode,
    /// An option with an empty name, a value out of range, or given twice.
    BadOption,
    /// More than [`MAX_OPTIONS`] options.
    TooManyOptions,
    /// An ACK or ERROR followed by bytes other than zero padding.
    TrailingBytes,
}

/// Most options one request or OACK may carry. RFC 2347 limits a request to 512 octets; this
/// bounds the work and the events of one packet without refusing long filenames.
pub const MAX_OPTIONS: usize = 32;

impl fmt::Display for TftpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TftpError::Truncated => f.write_str("packet cut short"),
            TftpError::BadOpcode(op) => write!(f, "opcode {op} is not a TFTP opcode"),
            TftpError::MissingNul => f.write_str("a string field has no terminating NUL"),
            TftpError::EmptyFilename => f.write_str("empty filename"),
            TftpError::BadMode => f.write_str("mode is not netascii, octet or mail"),
            TftpError::BadOption => f.write_str("malformed, duplicate or out-of-range option"),
            TftpError::TooManyOptions => write!(f, "more than {MAX_OPTIONS} options"),
            TftpError::TrailingBytes => f.write_str("bytes after the end of the packet"),
        }
    }
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestKind {
    /// RRQ: the client reads a file from the server.
    Read,
    /// WRQ: the client writes a file to the server.
    Write,
}

impl RequestKind {
    /// `RRQ` or `WRQ`.
    pub const fn name(self) -> &'static str {
        match self {
            RequestKind::Read => "RRQ",
            RequestKind::Write => "WRQ",
        }
    }
}

/// Transfer mode (RFC 1350 section 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Text with CRLF line ends.
    Netascii,
    /// Raw bytes.
    Octet,
    /// Obsolete: deliver to a user.
    Mail,
}

impl Mode {
    /// The mode's name, lower case, as RFC 1350 spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
        }
    }
}

/// The options pinhole understands (RFC 2348, 2349, 7440), as requested or acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KnownOptions {
    /// `blksize`: 8 to 65464 bytes per DATA packet (RFC 2348).
    pub blksize: Option<u16>,
    /// `timeout`: 1 to 255 seconds (RFC 2349).
    pub timeout: Option<u8>,
    /// `tsize`: transfer size in bytes (RFC 2349); 0 in a read request.
    pub tsize: Option<u64>,
    /// `windowsize`: 1 to 65535 blocks per window (RFC 7440).
    pub windowsize: Option<u16>,
}

impl KnownOptions {
    /// True when no option is present.
    pub fn is_empty(&self) -> bool {
        *self == KnownOptions::default()
    }
}

/// Options of a request or OACK.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options<'a> {
    /// The understood ones.
    pub known: KnownOptions,
    /// The others, name and value, as sent.
    pub unknown: Vec<(&'a [u8], &'a [u8])>,
}

impl Options<'_> {
    /// How many options are present, understood or not.
    pub fn count(&self) -> usize {
        let k = self.known;
        usize::from(k.blksize.is_some())
            + usize::from(k.timeout.is_some())
            + usize::from(k.tsize.is_some())
            + usize::from(k.windowsize.is_some())
            + self.unknown.len()
    }
}

/// A decoded TFTP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TftpPacket<'a> {
    /// RRQ or WRQ.
    Request {
        /// Read or write.
        kind: RequestKind,
        /// The file, as sent.
        filename: &'a [u8],
        /// Transfer mode.
        mode: Mode,
        /// Requested options.
        options: Options<'a>,
    },
    /// DATA.
    Data {
        /// Block number (wraps at 65535).
        block: u16,
        /// The block's bytes.
        data: &'a [u8],
    },
    /// ACK.
    Ack {
        /// Block number acknowledged.
        block: u16,
    },
    /// ERROR.
    Error {
        /// Error code (RFC 1350 appendix, RFC 2347 for 8).
        code: u16,
        /// Message.
        message: &'a [u8],
    },
    /// OACK: the options the server accepted.
    Oack {
        /// Accepted options.
        options: Options<'a>,
    },
}

/// The name of an ERROR code (RFC 1350 section 5, RFC 2347 for code 8).
pub fn error_name(code: u16) -> &'static str {
    match code {
        0 => "Not defined",
        1 => "File not found",
        2 => "Access violation",
        3 => "Disk full or allocation exceeded",
        4 => "Illegal TFTP operation",
        5 => "Unknown transfer ID",
        6 => "File already exists",
        7 => "No such user",
        8 => "Option negotiation refused",
        _ => "Unknown error code",
    }
}

/// Splits off a NUL-terminated field.
fn field(bytes: &[u8]) -> Result<(&[u8], &[u8]), TftpError> {
    let end = bytes
        .iter()
        .position(|b| *b == 0)
        .ok_or(TftpError::MissingNul)?;
    Ok((&bytes[..end], &bytes[end + 1..]))
}

fn decimal(value: &[u8]) -> Result<u64, TftpError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(TftpError::BadOption);
    }
    Ok(value.iter().fold(0u64, |n, b| n * 10 + u64::from(b - b'0')))
}

fn in_range(value: &[u8], lo: u64, hi: u64) -> Result<u64, TftpError> {
    let n = decimal(value)?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(TftpError::BadOption)
    }
}

fn zero_padding(bytes: &[u8]) -> Result<(), TftpError> {
    if bytes.iter().all(|b| *b == 0) {
        Ok(())
    } else {
        Err(TftpError::TrailingBytes)
    }
}

/// Reads `name NUL value NUL` pairs to the end of the packet.
fn options(mut rest: &[u8]) -> Result<Options<'_>, TftpError> {
    let mut out = Options::default();
    let mut seen: Vec<&[u8]> = Vec::new();
    while !rest.is_empty() {
        let (name, after) = field(rest)?;
        let (value, after) = field(after)?;
        rest = after;
        if name.is_empty() {
            return Err(TftpError::BadOption);
        }
        if seen.len() == MAX_OPTIONS {
            return Err(TftpError::TooManyOptions);
        }
        // Option names are case-insensitive (RFC 2347 section 2).
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return Err(TftpError::BadOption);
        }
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        if is(b"blksize") {
            out.known.blksize = Some(in_range(value, 8, 65_464)? as u16);
        } else if is(b"timeout") {
            out.known.timeout = Some(in_range(value, 1, 255)? as u8);
        } else if is(b"tsize") {
            out.known.tsize = Some(decimal(value)?);
        } else if is(b"windowsize") {
            out.known.windowsize = Some(in_range(value, 1, 65_535)? as u16);
        } else {
            out.unknown.push((name, value));
        }
        seen.push(name);
    }
    Ok(out)
}

/// Decodes one TFTP packet (a UDP payload).
pub fn parse(payload: &[u8]) -> Result<TftpPacket<'_>, TftpError> {
    let op = payload
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(TftpError::Truncated)?;
    let rest = &payload[2..];
    let number = || {
        rest.get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(TftpError::Truncated)
    };
    match op {
        opcode::RRQ | opcode::WRQ => {
            let (filename, rest) = field(rest)?;
            let (mode, rest) = field(rest)?;
            if filename.is_empty() {
                return Err(TftpError::EmptyFilename);
            }
            let mode = [
                (&b"netascii"[..], Mode::Netascii),
                (b"octet", Mode::Octet),
                (b"mail", Mode::Mail),
            ]
            .into_iter()
            .find_map(|(name, m)| mode.eq_ignore_ascii_case(name).then_some(m))
            .ok_or(TftpError::BadMode)?;
            let options = options(rest)?;
            let kind = if op == opcode::RRQ {
                RequestKind::Read
            } else {
                RequestKind::Write
            };
            if kind == RequestKind::Read && options.known.tsize.is_some_and(|t| t != 0) {
                return Err(TftpError::BadOption); // RFC 2349: a read request asks with tsize 0
            }
            Ok(TftpPacket::Request {
                kind,
                filename,
                mode,
                options,
            })
        }
        opcode::DATA => Ok(TftpPacket::Data {
            block: number()?,
            data: &rest[2..],
        }),
        // Some stacks pad short packets with zeros; anything else after the end would be a
        // channel the inspector cannot see into.
        opcode::ACK => {
            let block = number()?;
            zero_padding(&rest[2..])?;
            Ok(TftpPacket::Ack { block })
        }
        opcode::ERROR => {
            let code = number()?;
            let (message, after) = field(&rest[2..])?;
            zero_padding(after)?;
            Ok(TftpPacket::Error { code, message })
        }
        opcode::OACK => {
            let options = options(rest)?;
            // RFC 2347: an OACK lists the options accepted; an empty one acknowledges nothing.
            if options.known.is_empty() && options.unknown.is_empty() {
                return Err(TftpError::BadOption);
            }
            Ok(TftpPacket::Oack { options })
        }
        other => Err(TftpError::BadOpcode(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_options() {
        let rrq = b"\x00\x01image.bin\x00OCTET\x00blksize\x001428\x00tsize\x000\x00windowsize\x004\x00x-vendor\x00yes\x00";
        let TftpPacket::Request {
            kind,
            filename,
            mode,
            options,
        } = parse(rrq).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (kind, filename, mode),
            (RequestKind::Read, &b"image.bin"[..], Mode::Octet)
        );
        assert_eq!(
            options.known,
            KnownOptions {
                blksize: Some(1428),
                timeout: None,
                tsize: Some(0),
                windowsize: Some(4)
            }
        );
        assert_eq!(options.unknown, vec![(&b"x-vendor"[..], &b"yes"[..])]);
        let wrq = b"\x00\x02backup.cfg\x00netascii\x00tsize\x002048\x00";
        assert!(matches!(
            parse(wrq).unwrap(),
            TftpPacket::Request {
                kind: RequestKind::Write,
                ..
            }
        ));
    }

    #[test]
    fn malformed_requests() {
        assert_eq!(parse(b"\x00\x01file\x00octet"), Err(TftpError::MissingNul));
        assert_eq!(parse(b"\x00\x01file"), Err(TftpError::MissingNul));
        assert_eq!(
            parse(b"\x00\x01\x00octet\x00"),
            Err(TftpError::EmptyFilename)
        );
        assert_eq!(
            parse(b"\x00\x01file\x00binary\x00"),
            Err(TftpError::BadMode)
        );
        assert_eq!(
            parse(b"\x00\x01f\x00octet\x00blksize\x004\x00"),
            Err(TftpError::BadOption)
        );
        assert_eq!(
            parse(b"\x00\x01f\x00octet\x00blksize\x0070000\x00"),
            Err(TftpError::BadOption)
        );
        assert_eq!(
            parse(b"\x00\x01f\x00octet\x00timeout\x000\x00"),
            Err(TftpError::BadOption)
        );
        assert_eq!(
            parse(b"\x00\x01f\x00octet\x00windowsize\x00x\x00"),
            Err(TftpError::BadOption)
        );
        assert_eq!(
            parse(b"\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x00512\x00"),
            Err(TftpError::BadOption)
        );
        assert_eq!(
            parse(b"\x00\x01f\x00octet\x00tsize\x005\x00"),
            Err(TftpError::BadOption)
        );
        assert_eq!(
            parse(b"\x00\x01f\x00octet\x00\x00x\x00"),
            Err(TftpError::BadOption)
        );
        assert_eq!(
            parse(b"\x00\x01f\x00octet\x00blksize\x00"),
            Err(TftpError::MissingNul)
        );
        assert_eq!(
            parse(b"\x00\x00f\x00octet\x00"),
            Err(TftpError::BadOpcode(0))
        );
        assert_eq!(
            parse(b"\x00\x07f\x00octet\x00"),
            Err(TftpError::BadOpcode(7))
        );
        assert_eq!(parse(b"\x00"), Err(TftpError::Truncated));
    }

    #[test]
    fn data_ack_error_oack() {
        assert_eq!(
            parse(b"\x00\x03\x00\x01hello"),
            Ok(TftpPacket::Data {
                block: 1,
                data: b"hello"
            })
        );
        assert_eq!(
            parse(b"\x00\x03\xff\xff"),
            Ok(TftpPacket::Data {
                block: 65535,
                data: b""
            })
        );
        assert_eq!(parse(b"\x00\x04\x00\x00"), Ok(TftpPacket::Ack { block: 0 }));
        assert_eq!(
            parse(b"\x00\x04\x00\x00\x00"),
            Ok(TftpPacket::Ack { block: 0 })
        );
        assert_eq!(
            parse(b"\x00\x04\x00\x01data"),
            Err(TftpError::TrailingBytes)
        );
        assert_eq!(
            parse(b"\x00\x05\x00\x01gone\x00\x00\x00"),
            Ok(TftpPacket::Error {
                code: 1,
                message: b"gone"
            })
        );
        assert_eq!(
            parse(b"\x00\x05\x00\x01gone\x00more"),
            Err(TftpError::TrailingBytes)
        );
        assert_eq!(parse(b"\x00\x06"), Err(TftpError::BadOption));
        let mut many = b"\x00\x01f\x00octet\x00".to_vec();
        for i in 0..MAX_OPTIONS {
            many.extend_from_slice(format!("x{i}\x00v\x00").as_bytes());
        }
        let Ok(TftpPacket::Request { options, .. }) = parse(&many) else {
            panic!()
        };
        assert_eq!(options.unknown.len(), MAX_OPTIONS);
        many.extend_from_slice(b"one-more\x00v\x00");
        assert_eq!(parse(&many), Err(TftpError::TooManyOptions));
        assert_eq!(
            parse(b"\x00\x05\x00\x01File not found\x00"),
            Ok(TftpPacket::Error {
                code: 1,
                message: b"File not found"
            })
        );
        assert_eq!(parse(b"\x00\x05\x00\x01no nul"), Err(TftpError::MissingNul));
        let TftpPacket::Oack { options } = parse(b"\x00\x06blksize\x001024\x00").unwrap() else {
            panic!()
        };
        assert_eq!(options.known.blksize, Some(1024));
        assert_eq!(error_name(8), "Option negotiation refused");
    }

    #[test]
    fn every_truncated_prefix_is_an_error_or_a_shorter_valid_packet() {
        let packets: [&[u8]; 5] = [
            b"\x00\x01image.bin\x00octet\x00blksize\x001428\x00tsize\x000\x00",
            b"\x00\x03\x00\x07data",
            b"\x00\x04\x00\x07",
            b"\x00\x05\x00\x01File not found\x00",
            b"\x00\x06blksize\x001024\x00",
        ];
        for packet in packets {
            for len in 0..packet.len() {
                let prefix = &packet[..len];
                match parse(prefix) {
                    // A DATA packet cut anywhere after its header is a shorter DATA packet.
                    Ok(TftpPacket::Data { .. }) => assert!(len >= 4),
                    // An OACK or request cut right after a complete option is still valid.
                    Ok(TftpPacket::Oack { .. } | TftpPacket::Request { .. }) => {
                        assert_eq!(prefix.last(), Some(&0));
                    }
                    Ok(other) => panic!("prefix {len} of {packet:?} parsed as {other:?}"),
                    Err(_) => {}
                }
            }
        }
    }
}
