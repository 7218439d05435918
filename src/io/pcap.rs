//! Reading pcap and pcapng captures (with `pcap-parser`), and writing pcap files.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};

use crate::policy::IfaceName;
use crate::time::Instant;
use crate::wire::LinkType;

/// A capture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not pcap or pcapng, or is corrupt.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One packet from a capture.
#[derive(Clone, Copy, Debug)]
pub struct CapturedPacket<'a> {
    /// 0-based index of the packet in its file.
    pub index: u64,
    /// Capture timestamp.
    pub timestamp: Instant,
    /// The link type.
    pub link: LinkType,
    /// The capturing interface's name (pcapng `if_name`), if given and valid.
    pub interface: Option<IfaceName>,
    /// The captured bytes.
    pub data: &'a [u8],
    /// Length on the wire (more than `data.len()` when the snap length cut the packet).
    pub original_len: u32,
}

/// What reading a capture found besides its packets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    /// Packets delivered.
    pub packets: u64,
    /// The file ended inside a record (a capture cut short); packets before it were delivered.
    pub truncated: bool,
}

/// Largest record buffer the reader grows to (a corrupt length beyond it is an error).
const MAX_BUFFER: usize = 256 << 20;

struct Interface {
    link: LinkType,
    name: Option<IfaceName>,
    /// Timestamp units per second.
    units_per_second: u128,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset: i64,
}

/// Units per second of a pcapng `if_tsresol` byte: 10^n, or 2^n with the top bit set. An
/// impossible value falls back to microseconds (the default).
fn units_per_second(tsresol: u8) -> u128 {
    let exponent = u32::from(tsresol & 0x7f);
    let units = if tsresol & 0x80 == 0 {
        10u128.checked_pow(exponent)
    } else {
        1u128.checked_shl(exponent)
    };
    units.filter(|u| *u > 0).unwrap_or(1_000_000)
}

/// The instant of a pcapng timestamp: 64-bit count of units, plus an offset in seconds. All in
/// 128-bit arithmetic, clamped to the representable range (a hostile file cannot overflow it).
fn pcapng_instant(ts_high: u32, ts_low: u32, units_per_second: u128, offset: i64) -> Instant {
    let ticks = (u128::from(ts_high) << 32) | u128::from(ts_low);
    let nanos = ticks.saturating_mul(1_000_000_000) / units_per_second;
    let nanos = i128::try_from(nanos)
        .unwrap_or(i128::MAX)
        .saturating_add(i128::from(offset) * 1_000_000_000);
    Instant::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

/// Turns blocks into packets, remembering the file header (pcap) or the interfaces of the
/// current section (pcapng).
#[derive(Default)]
struct BlockDecoder {
    /// Legacy pcap: the link type and whether timestamps are in nanoseconds.
    legacy: Option<(LinkType, bool)>,
    interfaces: Vec<Interface>,
}

impl BlockDecoder {
    fn packet<'a>(
        &mut self,
        block: &PcapBlockOwned<'a>,
        index: u64,
    ) -> Result<Option<CapturedPacket<'a>>, String> {
        let packet = match block {
            PcapBlockOwned::LegacyHeader(header) => {
                let link = LinkType::from_linktype(header.network.0.cast_unsigned());
                self.legacy = Some((link, header.is_nanosecond_precision()));
                return Ok(None);
            }
            PcapBlockOwned::Legacy(record) => {
                let Some((link, nanos)) = self.legacy else {
                    return Err("packet record before the file header".to_owned());
                };
                let fraction = if nanos {
                    record.ts_usec
                } else {
                    record.ts_usec.saturating_mul(1000)
                };
                let len = (record.caplen as usize).min(record.data.len());
                CapturedPacket {
                    index,
                    timestamp: Instant::from_secs_nanos(u64::from(record.ts_sec), fraction),
                    link,
                    interface: None,
                    data: &record.data[..len],
                    original_len: record.origlen,
                }
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                self.interfaces.clear();
                return Ok(None);
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                self.interfaces.push(Interface {
                    link: LinkType::from_linktype(idb.linktype.0.cast_unsigned()),
                    name: idb.if_name().and_then(Result::ok).and_then(IfaceName::new),
                    units_per_second: units_per_second(idb.if_tsresol),
                    offset: idb.if_tsoffset,
                });
                return Ok(None);
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let Some(iface) = self.interfaces.get(epb.if_id as usize) else {
                    return Err(format!(
                        "packet {index} names interface {} that was never described",
                        epb.if_id
                    ));
                };
                let len = (epb.caplen as usize).min(epb.data.len());
                CapturedPacket {
                    index,
                    timestamp: pcapng_instant(
                        epb.ts_high,
                        epb.ts_low,
                        iface.units_per_second,
                        iface.offset,
                    ),
                    link: iface.link,
                    interface: iface.name,
                    data: &epb.data[..len],
                    original_len: epb.origlen,
                }
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                let Some(iface) = self.interfaces.first() else {
                    return Err("simple packet block before any interface description".to_owned());
                };
                let len = (spb.origlen as usize).min(spb.data.len());
                CapturedPacket {
                    index,
                    timestamp: Instant::ZERO,
                    link: iface.link,
                    interface: iface.name,
                    data: &spb.data[..len],
                    original_len: spb.origlen,
                }
            }
            PcapBlockOwned::NG(_) => return Ok(None),
        };
        Ok(Some(packet))
    }
}

/// Reads every packet of the pcap or pcapng file at `path`, in file order, calling `each`.
/// Stops at the first error `each` returns.
pub fn read_capture<E>(
    path: &Path,
    mut each: impl FnMut(CapturedPacket<'_>) -> Result<(), E>,
) -> Result<Result<CaptureSummary, E>, CaptureError> {
    let file = File::open(path).map_err(|source| CaptureError::Io {
        path: path.to_owned(),
        source,
    })?;
    read_from(path, file, &mut each)
}

fn format_error(path: &Path, message: impl Into<String>) -> CaptureError {
    CaptureError::Format {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn read_from<E, R: Read + Send>(
    path: &Path,
    input: R,
    each: &mut impl FnMut(CapturedPacket<'_>) -> Result<(), E>,
) -> Result<Result<CaptureSummary, E>, CaptureError> {
    let mut reader = match create_reader(65536, input) {
        Ok(reader) => reader,
        Err(PcapError::Eof) => return Err(format_error(path, "empty file, not a capture")),
        Err(_) => return Err(format_error(path, "not a pcap or pcapng capture")),
    };
    let mut summary = CaptureSummary::default();
    let mut decoder = BlockDecoder::default();
    let mut buffer = 65536;
    loop {
        match reader.next() {
            Ok((consumed, block)) => {
                let packet = decoder
                    .packet(&block, summary.packets)
                    .map_err(|message| format_error(path, message))?;
                if let Some(packet) = packet {
                    summary.packets += 1;
                    if let Err(err) = each(packet) {
                        return Ok(Err(err));
                    }
                }
                reader.consume(consumed);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    summary.truncated = true;
                    break;
                }
                reader
                    .refill()
                    .map_err(|_| format_error(path, "read error"))?;
            }
            Err(PcapError::UnexpectedEof) => {
                summary.truncated = true;
                break;
            }
            Err(PcapError::BufferTooSmall) => {
                buffer *= 2;
                if buffer > MAX_BUFFER || !reader.grow(buffer) {
                    return Err(format_error(
                        path,
                        format!(
                            "a record after packet {} is larger than {} MiB; the file is corrupt",
                            summary.packets,
                            MAX_BUFFER >> 20
                        ),
                    ));
                }
                reader
                    .refill()
                    .map_err(|_| format_error(path, "read error"))?;
            }
            Err(err) => {
                return Err(format_error(
                    path,
                    format!("corrupt record after packet {}: {err:?}", summary.packets),
                ));
            }
        }
    }
    Ok(Ok(summary))
}

/// Writes a classic pcap file with nanosecond timestamps.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (or truncates) a pcap file at `path`.
    pub fn create(path: &Path, link: LinkType) -> io::Result<Self> {
        PcapWriter::new(BufWriter::new(File::create(path)?), link)
    }
}

impl<W: Write> PcapWriter<W> {
    /// Largest packet recorded whole.
    pub const SNAPLEN: u32 = 262_144;

    /// Writes the file header to `out`.
    pub fn new(mut out: W, link: LinkType) -> io::Result<Self> {
        out.write_all(&0xa1b2_3c4d_u32.to_le_bytes())?; // nanosecond-resolution magic
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&Self::SNAPLEN.to_le_bytes())?;
        out.write_all(&link.linktype().to_le_bytes())?;
        Ok(PcapWriter { out })
    }

    /// Appends one packet captured at `timestamp`.
    pub fn write(&mut self, timestamp: Instant, data: &[u8]) -> io::Result<()> {
        let nanos = timestamp.as_nanos();
        let secs = u32::try_from(nanos / 1_000_000_000).unwrap_or(u32::MAX);
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let caplen = len.min(Self::SNAPLEN);
        self.out.write_all(&secs.to_le_bytes())?;
        self.out
            .write_all(&((nanos % 1_000_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&caplen.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&data[..caplen as usize])
    }

    /// Flushes what was written to the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Packets = Vec<(u64, Instant, Vec<u8>)>;

    fn read_all(bytes: Vec<u8>) -> Result<(Packets, CaptureSummary), CaptureError> {
        let mut packets = Vec::new();
        let summary = read_from(
            Path::new("mem"),
            io::Cursor::new(bytes),
            &mut |p: CapturedPacket<'_>| {
                assert_eq!(p.link, LinkType::RawIp);
                packets.push((p.index, p.timestamp, p.data.to_vec()));
                Ok::<(), ()>(())
            },
        )?
        .unwrap();
        Ok((packets, summary))
    }

    #[test]
    fn writes_and_reads_back_with_nanoseconds() {
        let mut writer = PcapWriter::new(Vec::new(), LinkType::RawIp).unwrap();
        writer
            .write(Instant::from_secs_nanos(10, 123_456_789), b"first")
            .unwrap();
        writer
            .write(Instant::from_secs_nanos(11, 1), b"second")
            .unwrap();
        let bytes = writer.finish().unwrap();
        let (packets, summary) = read_all(bytes).unwrap();
        assert_eq!(
            summary,
            CaptureSummary {
                packets: 2,
                truncated: false
            }
        );
        assert_eq!(
            packets[0],
            (
                0,
                Instant::from_secs_nanos(10, 123_456_789),
                b"first".to_vec()
            )
        );
        assert_eq!(
            packets[1],
            (1, Instant::from_secs_nanos(11, 1), b"second".to_vec())
        );
    }

    #[test]
    fn a_cut_off_last_record_is_reported_as_truncated() {
        let mut writer = PcapWriter::new(Vec::new(), LinkType::RawIp).unwrap();
        writer.write(Instant::from_secs(1), b"whole").unwrap();
        writer
            .write(Instant::from_secs(2), b"cut off here")
            .unwrap();
        let mut bytes = writer.finish().unwrap();
        bytes.truncate(bytes.len() - 4);
        let (packets, summary) = read_all(bytes).unwrap();
        assert_eq!(packets.len(), 1);
        assert!(summary.truncated);
    }

    #[test]
    fn pcapng_timestamps_in_any_resolution_never_overflow() {
        assert_eq!(units_per_second(6), 1_000_000);
        assert_eq!(units_per_second(9), 1_000_000_000);
        assert_eq!(units_per_second(0x8a), 1024);
        assert_eq!(units_per_second(0x7f), 1_000_000, "10^127 does not fit");
        assert_eq!(
            pcapng_instant(0, 1_500_000, 1_000_000, 0),
            Instant::from_secs_nanos(1, 500_000_000)
        );
        assert_eq!(pcapng_instant(0, 1024, 1024, 10), Instant::from_secs(11));
        assert_eq!(
            pcapng_instant(u32::MAX, u32::MAX, 1, i64::MAX),
            Instant::MAX
        );
        assert_eq!(pcapng_instant(0, 5, 1, i64::MIN), Instant::ZERO);
    }

    #[test]
    fn garbage_is_not_a_capture() {
        assert!(matches!(
            read_all(b"hello, this is not a capture file".to_vec()),
            Err(CaptureError::Format { .. })
        ));
        assert!(matches!(
            read_all(Vec::new()),
            Err(CaptureError::Format { .. })
        ));
    }
}
