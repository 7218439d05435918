//! FTP control-line grammar: commands with data-connection arguments and the replies that
//! announce data addresses. Pure functions on complete lines (Telnet sequences already
//! removed, CRLF stripped); the stateful parts live in `alg::ftp`.
//!
//! Every number is range-checked; anything that does not parse is an error, never a guess,
//! because a command the inspector cannot read must not reach a server that might.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a data-connection argument was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrError {
    /// Not the grammar of the command or reply.
    Malformed,
    /// A host or port byte above 255, or a decimal port above 65535.
    OutOfRange,
    /// Port 0.
    PortZero,
    /// An address family the command does not allow (EPRT other than 1 or 2, LPRT other
    /// than 4 or 6, or lengths that do not fit the family).
    Family,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrError::Malformed => "malformed",
            AddrError::OutOfRange => "number out of range",
            AddrError::PortZero => "port 0",
            AddrError::Family => "unsupported address family",
        })
    }
}

/// A client command, as far as the inspector cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `PORT h1,h2,h3,h4,p1,p2` (RFC 959 section 4.1.2).
    Port(Result<SocketAddr, AddrError>),
    /// `EPRT |af|addr|port|` (RFC 2428 section 2).
    Eprt(Result<SocketAddr, AddrError>),
    /// `LPRT af,hal,h...,pal,p...` (RFC 1639 section 2).
    Lprt(Result<SocketAddr, AddrError>),
    /// `PASV` (RFC 959).
    Pasv,
    /// `EPSV`, `EPSV 1`, `EPSV 2` (RFC 2428 section 3).
    Epsv,
    /// `EPSV ALL` (RFC 2428 section 4): only EPSV from now on.
    EpsvAll,
    /// `LPSV` (RFC 1639).
    Lpsv,
    /// `AUTH mechanism` (RFC 2228 section 3): TLS or SSL starts after a 234 reply.
    Auth,
    /// `ABOR` (RFC 959 section 4.1.3).
    Abor,
    /// `QUIT`.
    Quit,
    /// `REIN` (reinitialize).
    Rein,
    /// Anything else (USER, RETR, LIST, ...).
    Other,
}

impl Command {
    /// True for the commands that ask the server to connect to the client.
    pub fn is_active(&self) -> bool {
        matches!(self, Command::Port(_) | Command::Eprt(_) | Command::Lprt(_))
    }

    /// True for the commands that ask the server to listen.
    pub fn is_passive(&self) -> bool {
        matches!(self, Command::Pasv | Command::Epsv | Command::Lpsv)
    }
}

/// Longest verb looked at (RFC 959 verbs are 3 or 4 letters; extensions up to 4 too).
const MAX_VERB: usize = 16;

/// Splits a command line into its verb (upper-cased) and argument.
pub fn split_command(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|b| *b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

/// Parses a client line (RFC 959 section 5.3: verbs are case-insensitive, one space before
/// the argument).
pub fn parse_command(line: &[u8]) -> Command {
    let (verb, arg) = split_command(line);
    if verb.len() > MAX_VERB {
        return Command::Other;
    }
    let mut upper = [0u8; MAX_VERB];
    for (u, b) in upper.iter_mut().zip(verb) {
        *u = b.to_ascii_uppercase();
    }
    let arg = trim(arg);
    match &upper[..verb.len()] {
        b"PORT" => Command::Port(parse_port(arg)),
        b"EPRT" => Command::Eprt(parse_eprt(arg)),
        b"LPRT" => Command::Lprt(parse_lprt(arg)),
        b"PASV" => Command::Pasv,
        b"EPSV" if arg.eq_ignore_ascii_case(b"ALL") => Command::EpsvAll,
        b"EPSV" => Command::Epsv,
        b"LPSV" => Command::Lpsv,
        b"AUTH" => Command::Auth,
        b"ABOR" => Command::Abor,
        b"QUIT" => Command::Quit,
        b"REIN" => Command::Rein,
        _ => Command::Other,
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A decimal number of at most 5 digits, no sign.
fn decimal(bytes: &[u8]) -> Result<u32, AddrError> {
    if bytes.is_empty() || bytes.len() > 5 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(AddrError::Malformed);
    }
    Ok(bytes.iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0')))
}

fn byte(bytes: &[u8]) -> Result<u8, AddrError> {
    u8::try_from(decimal(trim(bytes))?).map_err(|_| AddrError::OutOfRange)
}

fn port_from(hi: u8, lo: u8) -> Result<u16, AddrError> {
    match u16::from_be_bytes([hi, lo]) {
        0 => Err(AddrError::PortZero),
        port => Ok(port),
    }
}

/// `h1,h2,h3,h4,p1,p2`: the RFC 959 host-port form.
pub fn parse_port(arg: &[u8]) -> Result<SocketAddr, AddrError> {
    let fields: Vec<&[u8]> = arg.split(|b| *b == b',').collect();
    let [h1, h2, h3, h4, p1, p2] = fields.as_slice() else {
        return Err(AddrError::Malformed);
    };
    let addr = Ipv4Addr::new(byte(h1)?, byte(h2)?, byte(h3)?, byte(h4)?);
    Ok(SocketAddr::new(
        IpAddr::V4(addr),
        port_from(byte(p1)?, byte(p2)?)?,
    ))
}

/// `<d>af<d>addr<d>port<d>` with any delimiter d in ASCII 33-126 (RFC 2428 section 2).
pub fn parse_eprt(arg: &[u8]) -> Result<SocketAddr, AddrError> {
    let (&d, rest) = arg.split_first().ok_or(AddrError::Malformed)?;
    if !(33..=126).contains(&d) || d.is_ascii_digit() || d == b'.' || d == b':' {
        return Err(AddrError::Malformed);
    }
    let fields: Vec<&[u8]> = rest.split(|b| *b == d).collect();
    let [af, addr, port, end] = fields.as_slice() else {
        return Err(AddrError::Malformed);
    };
    if !end.is_empty() {
        return Err(AddrError::Malformed);
    }
    let text = std::str::from_utf8(addr).map_err(|_| AddrError::Malformed)?;
    let ip = match decimal(af)? {
        1 => IpAddr::V4(text.parse::<Ipv4Addr>().map_err(|_| AddrError::Malformed)?),
        2 => IpAddr::V6(text.parse::<Ipv6Addr>().map_err(|_| AddrError::Malformed)?),
        _ => return Err(AddrError::Family),
    };
    Ok(SocketAddr::new(ip, decimal_port(port)?))
}

fn decimal_port(bytes: &[u8]) -> Result<u16, AddrError> {
    match decimal(bytes)? {
        0 => Err(AddrError::PortZero),
        n => u16::try_from(n).map_err(|_| AddrError::OutOfRange),
    }
}

/// `af,hal,h1,...,hn,pal,p1,...,pn` (RFC 1639 section 2): af 4 with 4 address bytes or
/// af 6 with 16, and 2 port bytes.
pub fn parse_lprt(arg: &[u8]) -> Result<SocketAddr, AddrError> {
    let fields: Vec<u8> = arg
        .split(|b| *b == b',')
        .map(byte)
        .collect::<Result<_, _>>()?;
    let (&af, rest) = fields.split_first().ok_or(AddrError::Malformed)?;
    let (&hal, rest) = rest.split_first().ok_or(AddrError::Malformed)?;
    let hal = usize::from(hal);
    if rest.len() < hal + 1 {
        return Err(AddrError::Malformed);
    }
    let (host, rest) = rest.split_at(hal);
    let (&pal, port) = rest.split_first().ok_or(AddrError::Malformed)?;
    if usize::from(pal) != port.len() {
        return Err(AddrError::Malformed);
    }
    let ip = match (af, hal, pal) {
        (4, 4, 2) => IpAddr::V4(Ipv4Addr::new(host[0], host[1], host[2], host[3])),
        (6, 16, 2) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(host);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return Err(AddrError::Family),
    };
    Ok(SocketAddr::new(ip, port_from(port[0], port[1])?))
}

/// A server reply line (RFC 959 section 4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The three-digit code.
    pub code: u16,
    /// `ddd-` starts a multi-line reply; `ddd ` (or just `ddd`) ends one.
    pub continues: bool,
    /// The text after the code and separator.
    pub text: &'a [u8],
}

/// Reads a line as a reply line: three digits, the first 1-5, then a space, a hyphen or the
/// end of the line. Anything else is not a reply line (text inside a multi-line reply).
pub fn parse_reply_line(line: &[u8]) -> Option<ReplyLine<'_>> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&digits[0]) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match line.get(3) {
        None => Some(ReplyLine {
            code,
            continues: false,
            text: &[],
        }),
        Some(b' ') => Some(ReplyLine {
            code,
            continues: false,
            text: &line[4..],
        }),
        Some(b'-') => Some(ReplyLine {
            code,
            continues: true,
            text: &line[4..],
        }),
        Some(_) => None,
    }
}

/// The address in a 227 reply: RFC 1123 section 4.1.2.6 says to scan the text for the first
/// digit and read six comma-separated numbers from there, whatever surrounds them.
pub fn parse_227(text: &[u8]) -> Result<SocketAddr, AddrError> {
    let start = text
        .iter()
        .position(u8::is_ascii_digit)
        .ok_or(AddrError::Malformed)?;
    let rest = &text[start..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b',' || *b == b' '))
        .unwrap_or(rest.len());
    let numbers = trim(&rest[..end]);
    let numbers = numbers.strip_suffix(b",").unwrap_or(numbers);
    parse_port(numbers)
}

/// The port in a 229 reply: `(<d><d><d>port<d>)` (RFC 2428 section 3).
pub fn parse_229(text: &[u8]) -> Result<u16, AddrError> {
    let open = text
        .iter()
        .position(|b| *b == b'(')
        .ok_or(AddrError::Malformed)?;
    let inner = &text[open + 1..];
    let close = inner
        .iter()
        .position(|b| *b == b')')
        .ok_or(AddrError::Malformed)?;
    let inner = &inner[..close];
    let (&d, rest) = inner.split_first().ok_or(AddrError::Malformed)?;
    if !(33..=126).contains(&d) || d.is_ascii_digit() {
        return Err(AddrError::Malformed);
    }
    let fields: Vec<&[u8]> = rest.split(|b| *b == d).collect();
    // After the first delimiter: "", "", port, "" (net-prt and net-addr are empty).
    let [af, addr, port, end] = fields.as_slice() else {
        return Err(AddrError::Malformed);
    };
    if !af.is_empty() || !addr.is_empty() || !end.is_empty() {
        return Err(AddrError::Malformed);
    }
    decimal_port(port)
}

/// The address in a 228 reply: LPRT's argument form, usually in parentheses (RFC 1639).
pub fn parse_228(text: &[u8]) -> Result<SocketAddr, AddrError> {
    let start = text
        .iter()
        .position(u8::is_ascii_digit)
        .ok_or(AddrError::Malformed)?;
    let rest = &text[start..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b',' || *b == b' '))
        .unwrap_or(rest.len());
    parse_lprt(trim(&rest[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn port_command() {
        assert_eq!(
            parse_command(b"PORT 198,51,100,10,195,80"),
            Command::Port(Ok(sa("198.51.100.10:50000")))
        );
        assert_eq!(
            parse_command(b"port 1,2,3,4,0,21"),
            Command::Port(Ok(sa("1.2.3.4:21")))
        );
        assert_eq!(
            parse_command(b"PORT 1,2,3,256,0,21"),
            Command::Port(Err(AddrError::OutOfRange))
        );
        assert_eq!(
            parse_command(b"PORT 1,2,3,4,0,0"),
            Command::Port(Err(AddrError::PortZero))
        );
        assert_eq!(
            parse_command(b"PORT 1,2,3,4,5"),
            Command::Port(Err(AddrError::Malformed))
        );
        assert_eq!(
            parse_command(b"PORT 1,2,3,4,5,6,7"),
            Command::Port(Err(AddrError::Malformed))
        );
        assert_eq!(
            parse_command(b"PORT -1,2,3,4,5,6"),
            Command::Port(Err(AddrError::Malformed))
        );
        assert_eq!(
            parse_command(b"PORT 1,2,3,4,5,999999"),
            Command::Port(Err(AddrError::Malformed))
        );
        assert_eq!(
            parse_command(b"PORT"),
            Command::Port(Err(AddrError::Malformed))
        );
    }

    #[test]
    fn eprt_command_with_any_delimiter() {
        assert_eq!(
            parse_command(b"EPRT |1|198.51.100.10|50000|"),
            Command::Eprt(Ok(sa("198.51.100.10:50000")))
        );
        assert_eq!(
            parse_command(b"EPRT |2|2001:db8:100::10|50000|"),
            Command::Eprt(Ok(sa("[2001:db8:100::10]:50000")))
        );
        assert_eq!(
            parse_command(b"EPRT !1!198.51.100.10!50000!"),
            Command::Eprt(Ok(sa("198.51.100.10:50000")))
        );
        assert_eq!(
            parse_command(b"EPRT |3|1.2.3.4|5|"),
            Command::Eprt(Err(AddrError::Family))
        );
        assert_eq!(
            parse_command(b"EPRT |1|2001:db8::1|5|"),
            Command::Eprt(Err(AddrError::Malformed))
        );
        assert_eq!(
            parse_command(b"EPRT |1|1.2.3.4|70000|"),
            Command::Eprt(Err(AddrError::OutOfRange))
        );
        assert_eq!(
            parse_command(b"EPRT |1|1.2.3.4|0|"),
            Command::Eprt(Err(AddrError::PortZero))
        );
        assert_eq!(
            parse_command(b"EPRT |1|1.2.3.4|5"),
            Command::Eprt(Err(AddrError::Malformed))
        );
        assert_eq!(
            parse_command(b"EPRT |1|1.2.3.4|5|x"),
            Command::Eprt(Err(AddrError::Malformed))
        );
        assert_eq!(
            parse_command(b"EPRT 1|1.2.3.4|5|"),
            Command::Eprt(Err(AddrError::Malformed))
        );
    }

    #[test]
    fn lprt_command() {
        assert_eq!(
            parse_command(b"LPRT 4,4,198,51,100,10,2,195,80"),
            Command::Lprt(Ok(sa("198.51.100.10:50000")))
        );
        let v6 = b"LPRT 6,16,32,1,13,184,1,0,0,0,0,0,0,0,0,0,0,16,2,195,80";
        assert_eq!(
            parse_command(v6),
            Command::Lprt(Ok(sa("[2001:db8:100::10]:50000")))
        );
        assert_eq!(
            parse_command(b"LPRT 4,16,1,2,3,4,2,0,21"),
            Command::Lprt(Err(AddrError::Malformed))
        );
        assert_eq!(
            parse_command(b"LPRT 5,4,1,2,3,4,2,0,21"),
            Command::Lprt(Err(AddrError::Family))
        );
        assert_eq!(
            parse_command(b"LPRT 4,4,1,2,3,4,2,0"),
            Command::Lprt(Err(AddrError::Malformed))
        );
    }

    #[test]
    fn other_commands() {
        assert_eq!(parse_command(b"PASV"), Command::Pasv);
        assert_eq!(parse_command(b"epsv"), Command::Epsv);
        assert_eq!(parse_command(b"EPSV 2"), Command::Epsv);
        assert_eq!(parse_command(b"EPSV ALL"), Command::EpsvAll);
        assert_eq!(parse_command(b"LPSV"), Command::Lpsv);
        assert_eq!(parse_command(b"AUTH TLS"), Command::Auth);
        assert_eq!(parse_command(b"ABOR"), Command::Abor);
        assert_eq!(parse_command(b"QUIT"), Command::Quit);
        assert_eq!(parse_command(b"REIN"), Command::Rein);
        assert_eq!(parse_command(b"USER PORT 1,2,3,4,5,6"), Command::Other);
        assert_eq!(parse_command(b" PORT 1,2,3,4,5,6"), Command::Other);
        assert_eq!(parse_command(b""), Command::Other);
    }

    #[test]
    fn reply_lines() {
        assert_eq!(
            parse_reply_line(b"220 ready"),
            Some(ReplyLine {
                code: 220,
                continues: false,
                text: b"ready"
            })
        );
        assert_eq!(
            parse_reply_line(b"227-Entering"),
            Some(ReplyLine {
                code: 227,
                continues: true,
                text: b"Entering"
            })
        );
        assert_eq!(
            parse_reply_line(b"226"),
            Some(ReplyLine {
                code: 226,
                continues: false,
                text: b""
            })
        );
        assert_eq!(parse_reply_line(b"600 no"), None);
        assert_eq!(parse_reply_line(b"22x no"), None);
        assert_eq!(parse_reply_line(b"2200 no"), None);
        assert_eq!(parse_reply_line(b" 227 (1,2,3,4,5,6)"), None);
    }

    #[test]
    fn replies_227_rfc1123_tolerant() {
        let want = Ok(sa("192.0.2.10:38160"));
        assert_eq!(
            parse_227(b"Entering Passive Mode (192,0,2,10,149,16)."),
            want
        );
        assert_eq!(parse_227(b"=192,0,2,10,149,16"), want);
        assert_eq!(parse_227(b"Entering Passive Mode 192,0,2,10,149,16"), want);
        assert_eq!(parse_227(b"ok (192, 0, 2, 10, 149, 16)"), want);
        assert_eq!(
            parse_227(b"Entering Passive Mode (192,0,2,10,149)"),
            Err(AddrError::Malformed)
        );
        assert_eq!(
            parse_227(b"Entering Passive Mode (300,0,2,10,149,16)"),
            Err(AddrError::OutOfRange)
        );
        assert_eq!(parse_227(b"no numbers"), Err(AddrError::Malformed));
    }

    #[test]
    fn replies_229_and_228() {
        assert_eq!(
            parse_229(b"Entering Extended Passive Mode (|||38160|)"),
            Ok(38160)
        );
        assert_eq!(
            parse_229(b"Entering Extended Passive Mode (!!!38160!)"),
            Ok(38160)
        );
        assert_eq!(parse_229(b"(|||0|)"), Err(AddrError::PortZero));
        assert_eq!(parse_229(b"(|||65536|)"), Err(AddrError::OutOfRange));
        assert_eq!(parse_229(b"(|1|1.2.3.4|5|)"), Err(AddrError::Malformed));
        assert_eq!(parse_229(b"(|||38160)"), Err(AddrError::Malformed));
        assert_eq!(parse_229(b"|||38160|"), Err(AddrError::Malformed));
        assert_eq!(
            parse_228(b"Entering Long Passive Mode (4,4,192,0,2,10,2,149,16)"),
            Ok(sa("192.0.2.10:38160"))
        );
    }

    #[test]
    fn parsers_never_panic_on_prefixes() {
        let lines: [&[u8]; 6] = [
            b"PORT 198,51,100,10,195,80",
            b"EPRT |2|2001:db8:100::10|50000|",
            b"LPRT 6,16,32,1,13,184,1,0,0,0,0,0,0,0,0,0,0,16,2,195,80",
            b"227 Entering Passive Mode (192,0,2,10,149,16).",
            b"229 Entering Extended Passive Mode (|||38160|)",
            b"228 Entering Long Passive Mode (4,4,192,0,2,10,2,149,16)",
        ];
        for line in lines {
            for len in 0..line.len() {
                let prefix = &line[..len];
                let _ = parse_command(prefix);
                let _ = parse_reply_line(prefix);
                let _ = parse_227(prefix);
                let _ = parse_228(prefix);
                let _ = parse_229(prefix);
            }
        }
    }
}
