//! Telnet and lines: the FTP control connection is a Telnet NVT stream (RFC 959 section 4.1,
//! RFC 854). This turns the reassembled bytes of one direction into command or reply lines.
//!
//! - Telnet commands are removed: `IAC IAC` is a literal 0xFF; `IAC WILL/WONT/DO/DONT x`,
//!   `IAC SB ... IAC SE` and the one-byte commands (IP, DM, AO, ...) vanish. So the abort
//!   sequence `IAC IP IAC DM ABOR` (RFC 959 section 4.1.3), sent with the DM as TCP urgent
//!   data, reads as `ABOR`. Urgent data is parsed in-band like everything else: discarding it
//!   would let a server that reads it inline see bytes the inspector never checked.
//! - Lines end with CRLF; a bare LF is tolerated. A CR followed by anything else, a NUL, or a
//!   line longer than the limit is a violation: these are the ways to make a server and an
//!   inspector disagree about where a command starts.
//! - Memory is bounded by the line limit (and a cap on Telnet subnegotiation).

use crate::decision::Reason;
use serde::{Deserialize, Serialize};

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
/// Longest Telnet subnegotiation skipped before it counts as an overlong line.
const MAX_SUBNEGOTIATION: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Telnet {
    Data,
    Iac,
    /// After WILL/WONT/DO/DONT: the option byte follows.
    Option,
    /// Inside SB ... IAC SE, with the bytes skipped so far.
    Sub(usize),
    SubIac(usize),
}

/// Splits one direction of a control connection into lines.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LineAssembler {
    line: Vec<u8>,
    telnet: Telnet,
    cr: bool,
    max: usize,
    /// Discarding bytes up to the next LF (joined mid-stream, mid-line).
    resync: bool,
    /// While resynchronizing, tells whether the first bytes seen start a line after all.
    line_start: Option<LineStart>,
    /// Stream bytes taken so far, Telnet commands and line breaks included.
    #[serde(default)]
    consumed: u64,
    /// Stream offset of the first byte of the line being assembled (the byte after the
    /// previous line break).
    #[serde(default)]
    raw_start: u64,
}

/// What the first bytes of a direction joined mid-stream must look like to be taken as the
/// start of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineStart {
    /// A command (client to server).
    Command,
    /// A reply (server to client).
    Reply,
}

impl LineStart {
    fn matches(self, bytes: &[u8]) -> bool {
        match self {
            LineStart::Command => super::starts_command(bytes),
            LineStart::Reply => super::starts_reply(bytes),
        }
    }
}

impl LineAssembler {
    /// An assembler for lines of at most `max` bytes (CRLF not counted).
    pub fn new(max: usize) -> Self {
        LineAssembler {
            line: Vec::new(),
            telnet: Telnet::Data,
            cr: false,
            max,
            resync: false,
            line_start: None,
            consumed: 0,
            raw_start: 0,
        }
    }

    /// An assembler that joined a stream at an unknown point: unless the first bytes it sees
    /// look like the start of a line (`line_start`), it skips to the next line break.
    pub fn resynchronizing(max: usize, line_start: LineStart) -> Self {
        LineAssembler {
            resync: true,
            line_start: Some(line_start),
            ..LineAssembler::new(max)
        }
    }

    /// An assembler for a stream whose first `offset` bytes were not lines (the TLS stream
    /// before a CCC): the next byte starts a line, at that stream offset.
    pub fn at_offset(max: usize, offset: u64) -> Self {
        LineAssembler {
            consumed: offset,
            raw_start: offset,
            ..LineAssembler::new(max)
        }
    }

    /// Stream bytes taken so far (the offset of the next byte).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Bytes of the line being assembled.
    pub fn partial(&self) -> &[u8] {
        &self.line
    }

    /// Stream offset (bytes since the assembler started, Telnet bytes included) of the first
    /// byte of the line being assembled; inside `on_line`, of the line handed over. The line's
    /// text starts there unless Telnet commands precede it.
    pub fn line_offset(&self) -> u64 {
        self.raw_start
    }

    /// Feeds stream bytes; calls `on_line` with each complete line. Stops at the first
    /// violation (or when `on_line` returns `false`) and reports the violation.
    pub fn push(
        &mut self,
        bytes: &[u8],
        mut on_line: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), Reason> {
        self.push_lines(bytes, |line, _| on_line(line))
    }

    /// As [`LineAssembler::push`], handing `on_line` each line's stream offset
    /// ([`LineAssembler::line_offset`]) too.
    pub fn push_lines(
        &mut self,
        bytes: &[u8],
        mut on_line: impl FnMut(&[u8], u64) -> bool,
    ) -> Result<(), Reason> {
        if let Some(line_start) = self.line_start.take() {
            self.resync = !line_start.matches(bytes);
        }
        for &b in bytes {
            self.consumed += 1;
            let data = match self.telnet {
                Telnet::Data if b == IAC => {
                    self.telnet = Telnet::Iac;
                    None
                }
                Telnet::Data => Some(b),
                Telnet::Iac => {
                    self.telnet = Telnet::Data;
                    match b {
                        IAC => Some(IAC),
                        251..=254 => {
                            self.telnet = Telnet::Option;
                            None
                        }
                        SB => {
                            self.telnet = Telnet::Sub(0);
                            None
                        }
                        240..=249 => None,
                        // Not a Telnet command: drop the IAC, keep the byte.
                        other => Some(other),
                    }
                }
                // A line break where a Telnet option code or subnegotiation goes: a server that
                // does not speak Telnet (most) would read a command line the inspector skipped.
                Telnet::Option | Telnet::Sub(_) | Telnet::SubIac(_) if b == b'\r' || b == b'\n' => {
                    return Err(Reason::FtpTelnetLineBreak);
                }
                Telnet::Option => {
                    self.telnet = Telnet::Data;
                    None
                }
                Telnet::Sub(n) | Telnet::SubIac(n) if n > MAX_SUBNEGOTIATION => {
                    return Err(Reason::FtpLineTooLong);
                }
                Telnet::Sub(n) => {
                    self.telnet = if b == IAC {
                        Telnet::SubIac(n + 1)
                    } else {
                        Telnet::Sub(n + 1)
                    };
                    None
                }
                Telnet::SubIac(n) => {
                    self.telnet = if b == SE {
                        Telnet::Data
                    } else {
                        Telnet::Sub(n + 1)
                    };
                    None
                }
            };
            if let Some(byte) = data
                && self.byte(byte, &mut on_line)?
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Adds one data byte; returns true when `on_line` asked to stop.
    fn byte(
        &mut self,
        b: u8,
        on_line: &mut impl FnMut(&[u8], u64) -> bool,
    ) -> Result<bool, Reason> {
        if self.resync {
            self.resync = b != b'\n';
            self.raw_start = self.consumed;
            return Ok(false);
        }
        if self.cr {
            self.cr = false;
            if b != b'\n' {
                return Err(Reason::FtpBareCr);
            }
            return Ok(self.finish(on_line));
        }
        match b {
            b'\r' => self.cr = true,
            b'\n' => return Ok(self.finish(on_line)),
            0 => return Err(Reason::FtpNulInLine),
            _ => {
                if self.line.len() >= self.max {
                    return Err(Reason::FtpLineTooLong);
                }
                self.line.push(b);
            }
        }
        Ok(false)
    }

    fn finish(&mut self, on_line: &mut impl FnMut(&[u8], u64) -> bool) -> bool {
        let stop = !on_line(&self.line, self.raw_start);
        self.line.clear();
        self.raw_start = self.consumed;
        stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_offsets_count_telnet_bytes_and_line_breaks() {
        let mut a = LineAssembler::new(32);
        let mut seen = Vec::new();
        let input = b"USER a\r\n\xff\xf1NOOP\r\nSTOR x\r\n";
        for chunk in [&input[..3], &input[3..12], &input[12..]] {
            a.push_lines(chunk, |l, offset| {
                seen.push((String::from_utf8_lossy(l).into_owned(), offset));
                true
            })
            .unwrap();
        }
        // "USER a\r\n" is 8 bytes; the IAC NOP before NOOP belongs to its line.
        assert_eq!(
            seen,
            vec![
                ("USER a".to_owned(), 0),
                ("NOOP".to_owned(), 8),
                ("STOR x".to_owned(), 16)
            ]
        );
        assert_eq!(a.line_offset(), 24);
    }

    fn lines(input: &[u8]) -> Result<Vec<Vec<u8>>, Reason> {
        let mut a = LineAssembler::new(32);
        let mut out = Vec::new();
        a.push(input, |l| {
            out.push(l.to_vec());
            true
        })?;
        Ok(out)
    }

    #[test]
    fn crlf_and_bare_lf() {
        assert_eq!(
            lines(b"USER a\r\nPASS b\nQUIT\r\n").unwrap(),
            vec![b"USER a".to_vec(), b"PASS b".to_vec(), b"QUIT".to_vec()]
        );
    }

    #[test]
    fn telnet_abort_sequence_reads_as_abor() {
        assert_eq!(
            lines(b"\xff\xf4\xff\xf2ABOR\r\n").unwrap(),
            vec![b"ABOR".to_vec()]
        );
    }

    #[test]
    fn telnet_negotiation_and_subnegotiation_are_removed() {
        assert_eq!(
            lines(b"NO\xff\xfb\x01OP\r\n").unwrap(),
            vec![b"NOOP".to_vec()]
        );
        assert_eq!(
            lines(b"NO\xff\xfa\x18\x01\xff\xff\xff\xf0OP\r\n").unwrap(),
            vec![b"NOOP".to_vec()]
        );
        assert_eq!(lines(b"A\xff\xffB\r\n").unwrap(), vec![b"A\xffB".to_vec()]);
        assert_eq!(lines(b"\xffABOR\r\n").unwrap(), vec![b"ABOR".to_vec()]);
    }

    #[test]
    fn split_anywhere_gives_the_same_lines() {
        let input = b"USER a\r\n\xff\xf4\xff\xf2ABOR\r\nPORT 1,2,3,4,5,6\r\n";
        let whole = lines(input).unwrap();
        for cut in 0..input.len() {
            let mut a = LineAssembler::new(32);
            let mut out = Vec::new();
            for part in [&input[..cut], &input[cut..]] {
                a.push(part, |l| {
                    out.push(l.to_vec());
                    true
                })
                .unwrap();
            }
            assert_eq!(out, whole, "cut at {cut}");
        }
    }

    #[test]
    fn violations() {
        assert_eq!(
            lines(b"USER a\rPORT 1,2,3,4,5,6\r\n"),
            Err(Reason::FtpBareCr)
        );
        assert_eq!(lines(b"USER a\0PORT\r\n"), Err(Reason::FtpNulInLine));
        assert_eq!(lines(&[b'A'; 33]), Err(Reason::FtpLineTooLong));
        assert!(lines(&[b'A'; 32]).unwrap().is_empty());
        let mut endless_sub = b"\xff\xfa".to_vec();
        endless_sub.extend_from_slice(&[b'x'; 300]);
        assert_eq!(lines(&endless_sub), Err(Reason::FtpLineTooLong));
    }

    #[test]
    fn resynchronizing_skips_the_partial_first_line() {
        let mut a = LineAssembler::resynchronizing(32, LineStart::Command);
        let mut out = Vec::new();
        a.push(b"1,2,3,4,5,6\r\nNOOP\r\n", |l| {
            out.push(l.to_vec());
            true
        })
        .unwrap();
        assert_eq!(out, vec![b"NOOP".to_vec()]);
        let mut a = LineAssembler::resynchronizing(32, LineStart::Command);
        let mut out = Vec::new();
        a.push(b"NOOP\r\n", |l| {
            out.push(l.to_vec());
            true
        })
        .unwrap();
        assert_eq!(
            out,
            vec![b"NOOP".to_vec()],
            "a first segment that starts a line is read whole"
        );
    }

    #[test]
    fn memory_is_bounded_by_the_limit() {
        let mut a = LineAssembler::new(32);
        let _ = a.push(&[b'A'; 10_000], |_| true);
        assert!(a.partial().len() <= 32);
    }
}
