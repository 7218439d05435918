//! The drop capture (`--dump-drops FILE`): dropped packets in a classic pcap file that
//! Wireshark and tcpdump open, bounded by size and rotated like `tcpdump -C -W`.
//!
//! When `FILE` would grow past `max_bytes`, it becomes `FILE.1` (`FILE.1` becomes `FILE.2`,
//! ...), the oldest beyond `files` is removed, and a new `FILE` starts with its own header. The
//! files together never hold much more than `files x max_bytes`. They are created mode 0600:
//! dropped packets may carry passwords.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::io::pcap::PcapWriter;
use crate::time::Instant;
use crate::wire::LinkType;

/// Bytes of the pcap file header.
const FILE_HEADER: u64 = 24;
/// Bytes of a pcap record header.
const RECORD_HEADER: u64 = 16;

/// Where and how much to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCaptureConfig {
    /// The current file; older ones get `.1`, `.2`, ... appended.
    pub path: PathBuf,
    /// Most bytes in one file (at least one packet is always written to a fresh file).
    pub max_bytes: u64,
    /// Files kept in all, the current one included (at least 1).
    pub files: u32,
}

/// The rotating pcap writer.
pub struct DropCapture {
    config: DropCaptureConfig,
    link: LinkType,
    writer: PcapWriter<BufWriter<File>>,
    written: u64,
    rotations: u64,
}

impl DropCapture {
    /// Creates (truncating) the current file, for frames of `link`.
    pub fn create(config: DropCaptureConfig, link: LinkType) -> io::Result<Self> {
        let writer = open(&config.path, link)?;
        Ok(DropCapture {
            config,
            link,
            writer,
            written: FILE_HEADER,
            rotations: 0,
        })
    }

    /// Appends a packet; rotates first when it would not fit. Returns the bytes written.
    pub fn write(&mut self, timestamp: Instant, data: &[u8]) -> io::Result<u64> {
        let caplen = data
            .len()
            .min(PcapWriter::<BufWriter<File>>::SNAPLEN as usize) as u64;
        let size = RECORD_HEADER + caplen;
        if self.written > FILE_HEADER && self.written + size > self.config.max_bytes {
            self.rotate()?;
        }
        self.writer.write(timestamp, data)?;
        self.written += size;
        Ok(size)
    }

    /// Makes what was written visible to readers.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Times the file was rotated.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        let keep = self.config.files.max(1);
        let numbered = |n: u32| {
            let mut name = self.config.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if keep == 1 {
            // Only one file: start it again.
        } else {
            let _ = std::fs::remove_file(numbered(keep - 1));
            for n in (1..keep - 1).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.config.path, numbered(1))?;
        }
        self.writer = open(&self.config.path, self.link)?;
        self.written = FILE_HEADER;
        self.rotations += 1;
        Ok(())
    }
}

fn open(path: &Path, link: LinkType) -> io::Result<PcapWriter<BufWriter<File>>> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let mut writer = PcapWriter::new(BufWriter::new(file), link)?;
    writer.flush()?;
    Ok(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::pcap::read_capture;

    fn count_packets(path: &Path) -> (u64, Vec<usize>) {
        let mut lens = Vec::new();
        let summary = read_capture(path, |p| -> Result<(), ()> {
            assert_eq!(p.link, LinkType::RawIp);
            lens.push(p.data.len());
            Ok(())
        })
        .unwrap()
        .unwrap();
        (summary.packets, lens)
    }

    #[test]
    fn rotates_at_the_size_and_keeps_the_newest_files() {
        let dir = std::env::temp_dir().join(format!("pinhole-dropcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("drops.pcap");
        let config = DropCaptureConfig {
            path: path.clone(),
            // The header and two 100-byte packets fit; the third rotates.
            max_bytes: FILE_HEADER + 2 * (RECORD_HEADER + 100),
            files: 3,
        };
        let mut cap = DropCapture::create(config, LinkType::RawIp).unwrap();
        for i in 0..7u8 {
            cap.write(Instant::from_secs(u64::from(i)), &[i; 100])
                .unwrap();
        }
        cap.flush().unwrap();
        // 7 packets, 2 per file: 4 files were started, the oldest is gone.
        assert_eq!(cap.rotations(), 3);
        assert_eq!(count_packets(&path), (1, vec![100]));
        assert_eq!(count_packets(&dir.join("drops.pcap.1")).0, 2);
        assert_eq!(count_packets(&dir.join("drops.pcap.2")).0, 2);
        assert!(!dir.join("drops.pcap.3").exists());
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_packet_bigger_than_the_file_limit_is_still_written() {
        let dir = std::env::temp_dir().join(format!("pinhole-dropcap-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.pcap");
        let config = DropCaptureConfig {
            path: path.clone(),
            max_bytes: 10,
            files: 1,
        };
        let mut cap = DropCapture::create(config, LinkType::RawIp).unwrap();
        cap.write(Instant::ZERO, &[0x45; 60]).unwrap();
        cap.write(Instant::ZERO, &[0x45; 70]).unwrap();
        cap.flush().unwrap();
        assert_eq!(count_packets(&path), (1, vec![70]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
