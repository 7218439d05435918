//! A memory-mapped receive ring (`PACKET_RX_RING`, `TPACKET_V3`) for the monitor's capture
//! socket: the kernel writes frames straight into memory shared with pinhole and hands them
//! over a block at a time, so a busy link costs one `poll` per block instead of one
//! `recvmsg` per frame. See packet(7), the kernel's
//! `Documentation/networking/packet_mmap.rst` and `net/packet/af_packet.c`
//! (`tpacket_rcv`, `prb_*`).
//!
//! Layout: `blocks` blocks of `block_size` bytes. Each block starts with a
//! `tpacket_block_desc` whose `block_status` says who owns it: `TP_STATUS_KERNEL` (the kernel
//! fills it) or `TP_STATUS_USER` (handed over, full or retired by the block timeout). In a
//! handed-over block, `num_pkts` frames are chained from `offset_to_first_pkt` by
//! `tp_next_offset`; each is a `tpacket3_hdr`, the `sockaddr_ll` at the next 16-byte boundary
//! (its `sll_pkttype` tells outgoing copies), and the frame's bytes at `tp_mac`
//! (`tp_snaplen` of them; `tp_len` is the frame's real length). pinhole reads a block's
//! frames, then gives the block back by storing `TP_STATUS_KERNEL`, and moves to the next
//! block: the kernel fills them in order.
//!
//! The header walk is plain bounds-checked slice reading ([`walk_block`]): a block the kernel
//! wrote wrongly, or a misunderstanding of the layout, ends the walk of that block, never
//! reads outside it.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::libc;

/// The ring's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block (a multiple of the page size; a frame larger than a block is cut).
    pub block_size: usize,
    /// Blocks in the ring.
    pub blocks: usize,
    /// Milliseconds after which the kernel hands over a block that is not full, so that a
    /// quiet link still delivers (`tp_retire_blk_tov`).
    pub retire_ms: u32,
}

impl RingConfig {
    /// Block size: 1 MiB holds several of the largest GRO frames (64 KiB) and many hundreds
    /// of ordinary ones, and is what frames are cut to (less the block's header).
    pub const BLOCK_SIZE: usize = 1 << 20;
    /// The block timeout: 20 ms, so a quiet link delivers within a fraction of the engine's
    /// 100 ms tick, and a busy one fills blocks first.
    pub const RETIRE_MS: u32 = 20;

    /// A ring of `mib` MiB in 1 MiB blocks (at least 2 blocks).
    pub fn of_mib(mib: usize) -> RingConfig {
        RingConfig {
            block_size: Self::BLOCK_SIZE,
            blocks: mib.max(2),
            retire_ms: Self::RETIRE_MS,
        }
    }

    /// Bytes of memory the ring maps.
    pub fn bytes(&self) -> usize {
        self.block_size.saturating_mul(self.blocks)
    }
}

/// The smallest slot the kernel is told frames take (`tp_frame_size`): in `TPACKET_V3`
/// frames are packed back to back and this only has to satisfy the kernel's checks (a
/// multiple of `TPACKET_ALIGNMENT`, at least the header, dividing the block).
const FRAME_SLOT: usize = 2048;
/// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where the `sockaddr_ll` starts.
const SLL_OFFSET: usize = 48;
/// `offsetof(struct sockaddr_ll, sll_pkttype)`.
const SLL_PKTTYPE: usize = 10;
/// Byte offsets in `struct tpacket_block_desc` (version, offset_to_priv, then
/// `tpacket_hdr_v1`: block_status, num_pkts, offset_to_first_pkt, blk_len, ...).
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST: usize = 16;
/// Byte offsets in `struct tpacket3_hdr`.
const HDR_NEXT: usize = 0;
const HDR_SNAPLEN: usize = 12;
const HDR_LEN: usize = 16;
const HDR_STATUS: usize = 20;
const HDR_MAC: usize = 24;

/// One frame in a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingFrame<'a> {
    /// The bytes captured (`tp_snaplen` of them).
    pub data: &'a [u8],
    /// The frame's real length (`tp_len`): larger than `data` when it was cut.
    pub len: usize,
    /// `tp_status` (`TP_STATUS_CSUMNOTREADY`, `TP_STATUS_VLAN_VALID`, ...).
    pub status: u32,
    /// `sll_pkttype` (`PACKET_HOST`, `PACKET_OUTGOING`, ...).
    pub pkttype: u8,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

/// Calls `each` for every frame of a handed-over block (its bytes, header included), in
/// order; returns how many it found. Stops at the first header or frame that does not lie
/// inside the block.
pub fn walk_block(block: &[u8], mut each: impl FnMut(RingFrame<'_>)) -> usize {
    let (Some(count), Some(first)) = (u32_at(block, BLOCK_NUM_PKTS), u32_at(block, BLOCK_FIRST))
    else {
        return 0;
    };
    let mut at = first as usize;
    let mut seen = 0;
    for i in 0..count {
        let frame = (|| {
            let hdr = block.get(at..)?;
            let snaplen = u32_at(hdr, HDR_SNAPLEN)? as usize;
            let len = u32_at(hdr, HDR_LEN)? as usize;
            let status = u32_at(hdr, HDR_STATUS)?;
            let mac = usize::from(u16_at(hdr, HDR_MAC)?);
            let pkttype = *hdr.get(SLL_OFFSET + SLL_PKTTYPE)?;
            let data = hdr.get(mac..mac.checked_add(snaplen)?)?;
            Some(RingFrame {
                data,
                len: len.max(snaplen),
                status,
                pkttype,
            })
        })();
        let Some(frame) = frame else { break };
        each(frame);
        seen += 1;
        if i + 1 < count {
            let next = block
                .get(at..)
                .and_then(|hdr| u32_at(hdr, HDR_NEXT))
                .unwrap_or(0) as usize;
            if next == 0 {
                break;
            }
            at = match at.checked_add(next) {
                Some(n) => n,
                None => break,
            };
        }
    }
    seen
}

/// The mapped ring of one packet socket.
#[derive(Debug)]
pub struct RxRing {
    base: NonNull<u8>,
    config: RingConfig,
    /// The block read next (the kernel fills them in order).
    next: usize,
}

// SAFETY: the mapping belongs to this value alone (nothing else holds its address), and the
// kernel's side of it is synchronised through the block status words, which are read and
// written atomically. Moving the ring to another thread moves that ownership.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Switches `fd` (an `AF_PACKET` socket with no ring yet) to `TPACKET_V3`, asks for an RX
    /// ring of `config`'s geometry and maps it. Call before binding the socket to an
    /// interface (or before frames matter): frames queued before the ring existed are
    /// discarded by the kernel.
    pub fn new(fd: &OwnedFd, config: RingConfig) -> io::Result<RxRing> {
        let page = page_size();
        if config.block_size == 0 || !config.block_size.is_multiple_of(page) || config.blocks == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ring blocks of {} bytes: must be a non-zero multiple of the page size ({page})",
                    config.block_size
                ),
            ));
        }
        let too_big = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the ring's size does not fit the kernel's 32-bit fields",
            )
        };
        let block_size = u32::try_from(config.block_size).map_err(|_| too_big())?;
        let blocks = u32::try_from(config.blocks).map_err(|_| too_big())?;
        let frames_per_block =
            u32::try_from(config.block_size / FRAME_SLOT).map_err(|_| too_big())?;
        let version: libc::c_int = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        set_packet_option(fd, libc::PACKET_VERSION, &version)?;
        let request = libc::tpacket_req3 {
            tp_block_size: block_size,
            tp_block_nr: blocks,
            tp_frame_size: FRAME_SLOT as u32,
            tp_frame_nr: frames_per_block.checked_mul(blocks).ok_or_else(too_big)?,
            tp_retire_blk_tov: config.retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_packet_option(fd, libc::PACKET_RX_RING, &request)?;
        let len = config.bytes();
        // SAFETY: a fresh shared mapping of the socket's ring, whose size is exactly what
        // PACKET_RX_RING was just given (packet(7): the ring is mapped in one call, offset 0).
        // No Rust reference to it exists yet; `Drop` unmaps it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap gave a null address"))?;
        Ok(RxRing {
            base,
            config,
            next: 0,
        })
    }

    /// The ring's geometry.
    pub fn config(&self) -> RingConfig {
        self.config
    }

    #[allow(clippy::cast_ptr_alignment)] // the word is 4-byte aligned: see the SAFETY note
    fn status_word(&self, block: usize) -> &AtomicU32 {
        // SAFETY: `block < blocks`, so the word lies inside the mapping, which lives as long as
        // `self`; it is 4-byte aligned (blocks are page aligned, the word is at offset 8). The
        // kernel writes it too, which is why it is only ever accessed atomically here.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(block * self.config.block_size + BLOCK_STATUS)
                .cast::<AtomicU32>()
        }
    }

    /// True when the next block has been handed over.
    pub fn ready(&self) -> bool {
        self.status_word(self.next).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// The next handed-over block, if any; it goes back to the kernel when dropped.
    pub fn next_block(&mut self) -> Option<Block<'_>> {
        if !self.ready() {
            return None;
        }
        let index = self.next;
        self.next = (self.next + 1) % self.config.blocks;
        // SAFETY: the block lies inside the mapping; its status is TP_STATUS_USER (read with
        // Acquire above, pairing with the kernel's release when it handed the block over), and
        // until it is set back to TP_STATUS_KERNEL (by `Block`'s drop) the kernel does not
        // write to the block, so a shared slice of it is not written under it. The slice
        // borrows `self` mutably, so no second `Block` of it can exist.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(index * self.config.block_size),
                self.config.block_size,
            )
        };
        Some(Block {
            bytes,
            status: self.status_word(index),
        })
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: `base` and the length are those of the mapping made in `new`; no `Block`
        // borrows it any more (they borrow `self`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.config.bytes());
        }
    }
}

/// A block handed over by the kernel, given back when dropped.
pub struct Block<'a> {
    bytes: &'a [u8],
    status: &'a AtomicU32,
}

impl Block<'_> {
    /// Calls `each` for every frame of the block; returns how many.
    pub fn frames(&self, each: impl FnMut(RingFrame<'_>)) -> usize {
        walk_block(self.bytes, each)
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        // Release: the reads of the block happen before the kernel may write it again.
        self.status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}

/// `setsockopt(fd, SOL_PACKET, name, value)`.
pub(crate) fn set_packet_option<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid, initialised `T` that lives across the call, and the length
    // passed is its size; the SOL_PACKET options this is used with (PACKET_VERSION,
    // PACKET_RX_RING, PACKET_FANOUT, PACKET_FANOUT_DATA, PACKET_QDISC_BYPASS) read exactly such
    // a value (packet(7)). The descriptor is an open packet socket.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block as the kernel writes it: descriptor, then frames chained by tp_next_offset.
    fn block(frames: &[(&[u8], u32, u8)]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[BLOCK_NUM_PKTS..BLOCK_NUM_PKTS + 4].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
        let first = 48usize;
        b[BLOCK_FIRST..BLOCK_FIRST + 4].copy_from_slice(&(first as u32).to_ne_bytes());
        let mut at = first;
        for (i, (data, len, pkttype)) in frames.iter().enumerate() {
            let mac = 80usize; // 48 header + 20 sockaddr_ll, aligned up (tp_mac is relative)
            let size = (mac + data.len()).div_ceil(16) * 16;
            let next = if i + 1 < frames.len() { size as u32 } else { 0 };
            b[at..at + 4].copy_from_slice(&next.to_ne_bytes());
            b[at + HDR_SNAPLEN..at + HDR_SNAPLEN + 4]
                .copy_from_slice(&(data.len() as u32).to_ne_bytes());
            b[at + HDR_LEN..at + HDR_LEN + 4].copy_from_slice(&len.to_ne_bytes());
            b[at + HDR_STATUS..at + HDR_STATUS + 4]
                .copy_from_slice(&libc::TP_STATUS_USER.to_ne_bytes());
            b[at + HDR_MAC..at + HDR_MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
            b[at + SLL_OFFSET + SLL_PKTTYPE] = *pkttype;
            b[at + mac..at + mac + data.len()].copy_from_slice(data);
            at += size;
        }
        b
    }

    #[test]
    fn a_block_yields_its_frames_in_order_with_lengths_and_packet_types() {
        let b = block(&[
            (b"first frame", 11, 0),
            (b"cut", 1500, 0),
            (b"outgoing copy", 13, libc::PACKET_OUTGOING),
        ]);
        let mut got = Vec::new();
        let n = walk_block(&b, |f| got.push((f.data.to_vec(), f.len, f.pkttype)));
        assert_eq!(n, 3);
        assert_eq!(got[0], (b"first frame".to_vec(), 11, 0));
        assert_eq!(
            got[1],
            (b"cut".to_vec(), 1500, 0),
            "tp_len is the real length"
        );
        assert_eq!(got[2].2, libc::PACKET_OUTGOING);
    }

    #[test]
    fn a_damaged_block_is_read_up_to_the_damage_and_never_past_its_end() {
        let good = block(&[(b"one", 3, 0), (b"two", 3, 0)]);
        // num_pkts larger than the chain: stops at the last frame.
        let mut b = good.clone();
        b[BLOCK_NUM_PKTS..BLOCK_NUM_PKTS + 4].copy_from_slice(&100u32.to_ne_bytes());
        assert_eq!(walk_block(&b, |_| {}), 2);
        // A first frame past the end of the block.
        let mut b = good.clone();
        b[BLOCK_FIRST..BLOCK_FIRST + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(walk_block(&b, |_| {}), 0);
        // A snap length beyond the block.
        let mut b = good.clone();
        b[48 + HDR_SNAPLEN..48 + HDR_SNAPLEN + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(walk_block(&b, |_| {}), 0);
        // A next offset past the end.
        let mut b = good;
        b[48..52].copy_from_slice(&0xffff_fff0u32.to_ne_bytes());
        assert_eq!(walk_block(&b, |_| {}), 1);
        // Too short for a descriptor.
        assert_eq!(walk_block(&[0u8; 10], |_| {}), 0);
        // Any bytes at all: no panic.
        for seed in 0..200u32 {
            let bytes: Vec<u8> = (0..512u32)
                .map(|i| (i.wrapping_mul(seed).wrapping_add(seed) % 251) as u8)
                .collect();
            let _ = walk_block(&bytes, |f| assert!(f.data.len() <= 512));
        }
    }

    #[test]
    fn ring_geometry() {
        let c = RingConfig::of_mib(16);
        assert_eq!((c.block_size, c.blocks, c.bytes()), (1 << 20, 16, 16 << 20));
        assert_eq!(RingConfig::of_mib(0).blocks, 2);
        assert_eq!(RingConfig::BLOCK_SIZE % FRAME_SLOT, 0);
    }
}
