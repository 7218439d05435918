//! Reassembly of one direction of a TCP byte stream, for the inspectors that parse it.
//!
//! Bytes are delivered in sequence order exactly once. A retransmission is compared with what
//! was delivered and not yet acknowledged by the receiver; out-of-order segments wait in a
//! bounded buffer and are compared with each other where they overlap. Any overlap that
//! disagrees is a conflict: the receiver may keep either version, so a firewall that parsed one
//! and let the other through would be blind (the insertion/evasion attacks of Ptacek and
//! Newsham, and NAT Slipstreaming's segment steering). Memory is bounded: what is delivered is
//! kept only until the receiver acknowledges it, up to a cap; beyond either cap a segment is
//! refused and TCP retransmits it later.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Caps of one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Delivered bytes kept until acknowledged (to check retransmissions against).
    pub max_unacked: usize,
    /// Bytes held out of order.
    pub max_out_of_order: usize,
    /// Segments held out of order.
    pub max_out_of_order_segments: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_unacked: 64 * 1024,
            max_out_of_order: 16 * 1024,
            max_out_of_order_segments: 16,
        }
    }
}

/// Why a segment could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// It overlaps bytes already seen with different content.
    Conflict,
    /// Taking it would exceed a cap.
    Full,
}

/// Capacity of the unacknowledged-bytes buffer grows by doubling up to this, exactly beyond.
const GROWTH_CAP: usize = 64 * 1024;
/// Capacity kept after acknowledgements empty the buffer (control connections send little).
const KEEP_CAPACITY: usize = 4 * 1024;

/// One direction of a TCP stream.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HalfStream {
    /// Stream offset of the next byte to deliver (bytes delivered so far).
    next: u64,
    /// Sequence number of that byte.
    next_seq: u32,
    /// Delivered bytes the receiver has not acknowledged: offsets `next - len .. next`.
    unacked: VecDeque<u8>,
    /// Out-of-order segments by stream offset.
    held: BTreeMap<u64, Vec<u8>>,
    held_bytes: usize,
    started: bool,
}

impl HalfStream {
    /// A stream whose first data byte has sequence number `first_seq`.
    pub fn new(first_seq: u32) -> Self {
        HalfStream {
            next_seq: first_seq,
            started: true,
            ..HalfStream::default()
        }
    }

    /// True once [`HalfStream::new`] gave it a starting sequence number.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Bytes delivered so far.
    pub fn delivered(&self) -> u64 {
        self.next
    }

    /// Bytes currently buffered (unacknowledged plus out of order).
    pub fn buffered(&self) -> usize {
        self.unacked.len() + self.held_bytes
    }

    /// The stream offset of sequence number `seq` (negative before the stream began).
    pub fn offset_of(&self, seq: u32) -> i128 {
        self.offset(seq)
    }

    /// Stream offset up to which the receiver acknowledged the bytes.
    pub fn acknowledged_offset(&self) -> u64 {
        self.next - self.unacked.len() as u64
    }

    fn offset(&self, seq: u32) -> i128 {
        i128::from(self.next) + i128::from(seq.wrapping_sub(self.next_seq).cast_signed())
    }

    /// The receiver acknowledged everything before `ack`: forget it.
    pub fn acknowledge(&mut self, ack: u32) {
        let acked = self.offset(ack).clamp(0, i128::from(self.next));
        let start = i128::from(self.next) - self.unacked.len() as i128;
        if acked > start {
            let n = usize::try_from(acked - start)
                .unwrap_or(usize::MAX)
                .min(self.unacked.len());
            self.unacked.drain(..n);
            // Give the memory back once most of it is acknowledged: a connection that once
            // buffered 64 KiB must not keep it for its lifetime.
            if self.unacked.capacity() > KEEP_CAPACITY
                && self.unacked.len() < self.unacked.capacity() / 4
            {
                self.unacked
                    .shrink_to(self.unacked.len().max(KEEP_CAPACITY));
            }
        }
    }

    /// Takes a segment starting at `seq`, calling `deliver` with each run of new in-order
    /// bytes. On error nothing is delivered or kept from this segment.
    pub fn push(
        &mut self,
        seq: u32,
        data: &[u8],
        limits: StreamLimits,
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<(), StreamError> {
        if data.is_empty() {
            return Ok(());
        }
        let start = self.offset(seq);
        let end = start + data.len() as i128;
        let next = i128::from(self.next);
        if end <= 0 {
            return Ok(()); // entirely before the stream began
        }
        // Part already delivered: must match what we kept.
        self.check_delivered(start, data)?;
        if end <= next {
            return Ok(());
        }
        if start > next {
            return self.hold(u64::try_from(start).unwrap_or(0), data, limits);
        }
        let fresh = &data[usize::try_from(next - start).unwrap_or(0)..];
        // What is held and overlaps the fresh bytes must agree with them.
        self.check_held(self.next, fresh)?;
        if self.unacked.len() + fresh.len() > limits.max_unacked {
            return Err(StreamError::Full);
        }
        self.deliver(fresh, &mut deliver);
        self.drain_held(&mut deliver);
        Ok(())
    }

    fn deliver(&mut self, bytes: &[u8], deliver: &mut impl FnMut(&[u8])) {
        deliver(bytes);
        // Grow by doubling up to the usual cap, exactly past it: doubling alone would take a
        // buffer of 65,000 bytes to 128 KiB of capacity.
        let want = self.unacked.len() + bytes.len();
        if want > self.unacked.capacity() {
            let target = want.next_power_of_two().min(want.max(GROWTH_CAP));
            self.unacked.reserve_exact(target - self.unacked.len());
        }
        self.unacked.extend(bytes.iter().copied());
        self.next += bytes.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(bytes.len() as u32);
    }

    /// Compares the part of `data` (starting at offset `start`) that lies before `next` with
    /// the kept unacknowledged bytes. Bytes before those were acknowledged: the receiver ignores
    /// them, so they need no check.
    fn check_delivered(&self, start: i128, data: &[u8]) -> Result<(), StreamError> {
        let next = i128::from(self.next);
        let kept_start = next - self.unacked.len() as i128;
        let from = start.max(kept_start);
        let to = (start + data.len() as i128).min(next);
        if from >= to {
            return Ok(());
        }
        let seg = &data
            [usize::try_from(from - start).unwrap_or(0)..usize::try_from(to - start).unwrap_or(0)];
        let kept = self.unacked.range(
            usize::try_from(from - kept_start).unwrap_or(0)
                ..usize::try_from(to - kept_start).unwrap_or(0),
        );
        if kept.eq(seg.iter()) {
            Ok(())
        } else {
            Err(StreamError::Conflict)
        }
    }

    /// Compares `data` at offset `start` with every held segment it overlaps.
    fn check_held(&self, start: u64, data: &[u8]) -> Result<(), StreamError> {
        let end = start + data.len() as u64;
        for (&held_start, held) in self.held.range(..end) {
            let held_end = held_start + held.len() as u64;
            if held_end <= start {
                continue;
            }
            let from = start.max(held_start);
            let to = end.min(held_end);
            let a = &data[(from - start) as usize..(to - start) as usize];
            let b = &held[(from - held_start) as usize..(to - held_start) as usize];
            if a != b {
                return Err(StreamError::Conflict);
            }
        }
        Ok(())
    }

    fn hold(&mut self, start: u64, data: &[u8], limits: StreamLimits) -> Result<(), StreamError> {
        self.check_held(start, data)?;
        if let Some(existing) = self.held.get(&start)
            && existing.len() >= data.len()
        {
            return Ok(()); // a retransmission of a held segment
        }
        let replaced = self.held.get(&start).map_or(0, Vec::len);
        if self.held_bytes - replaced + data.len() > limits.max_out_of_order
            || (replaced == 0 && self.held.len() >= limits.max_out_of_order_segments)
        {
            return Err(StreamError::Full);
        }
        self.held_bytes = self.held_bytes - replaced + data.len();
        self.held.insert(start, data.to_vec());
        Ok(())
    }

    /// Delivers held segments that now continue the stream.
    fn drain_held(&mut self, deliver: &mut impl FnMut(&[u8])) {
        while let Some((&start, _)) = self.held.first_key_value() {
            if start > self.next {
                break;
            }
            let Some((_, bytes)) = self.held.pop_first() else {
                break;
            };
            self.held_bytes -= bytes.len();
            let end = start + bytes.len() as u64;
            if end <= self.next {
                continue; // overlapping bytes were compared when the gap was filled
            }
            let fresh = &bytes[(self.next - start) as usize..];
            self.deliver(fresh, deliver);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISN: u32 = 1000;

    fn collect(stream: &mut HalfStream, seq: u32, data: &[u8]) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        stream.push(seq, data, StreamLimits::default(), |b| {
            out.extend_from_slice(b);
        })?;
        Ok(out)
    }

    #[test]
    fn in_order_and_one_byte_segments() {
        let mut s = HalfStream::new(ISN);
        let mut all = Vec::new();
        for (i, b) in b"PORT 1,2,3,4,5,6\r\n".iter().enumerate() {
            all.extend(collect(&mut s, ISN + i as u32, &[*b]).unwrap());
        }
        assert_eq!(all, b"PORT 1,2,3,4,5,6\r\n");
        assert_eq!(s.delivered(), 18);
    }

    #[test]
    fn out_of_order_is_held_then_delivered_once() {
        let mut s = HalfStream::new(ISN);
        assert_eq!(collect(&mut s, ISN + 5, b"1,2,3\r\n").unwrap(), b"");
        assert_eq!(collect(&mut s, ISN, b"PORT ").unwrap(), b"PORT 1,2,3\r\n");
        assert_eq!(s.buffered(), 12);
    }

    #[test]
    fn identical_retransmissions_and_partial_overlaps_are_fine() {
        let mut s = HalfStream::new(ISN);
        collect(&mut s, ISN, b"USER anon").unwrap();
        assert_eq!(collect(&mut s, ISN, b"USER anon").unwrap(), b"");
        assert_eq!(
            collect(&mut s, ISN + 5, b"anonymous\r\n").unwrap(),
            b"ymous\r\n"
        );
    }

    #[test]
    fn conflicting_retransmission_is_refused() {
        let mut s = HalfStream::new(ISN);
        collect(&mut s, ISN, b"NOOP\r\n").unwrap();
        assert_eq!(
            collect(&mut s, ISN, b"PORT 1,2,3,4,0,25\r\n"),
            Err(StreamError::Conflict)
        );
        assert_eq!(s.delivered(), 6, "nothing of the refused segment was taken");
    }

    #[test]
    fn conflicting_out_of_order_overlap_is_refused() {
        let mut s = HalfStream::new(ISN);
        collect(&mut s, ISN + 4, b" 1,2,3,4,0,80\r\n").unwrap();
        assert_eq!(
            collect(&mut s, ISN + 4, b" 9,9,9,9,0,80\r\n"),
            Err(StreamError::Conflict)
        );
        assert_eq!(collect(&mut s, ISN, b"PORT 9"), Err(StreamError::Conflict));
        assert_eq!(
            collect(&mut s, ISN, b"PORT").unwrap(),
            b"PORT 1,2,3,4,0,80\r\n"
        );
    }

    #[test]
    fn acknowledged_bytes_are_forgotten() {
        let mut s = HalfStream::new(ISN);
        collect(&mut s, ISN, b"NOOP\r\n").unwrap();
        s.acknowledge(ISN + 6);
        assert_eq!(s.buffered(), 0);
        // The receiver ignores an old segment, whatever it says.
        assert_eq!(collect(&mut s, ISN, b"XXXX\r\n").unwrap(), b"");
    }

    #[test]
    fn caps_refuse_instead_of_growing() {
        let limits = StreamLimits {
            max_unacked: 8,
            max_out_of_order: 4,
            max_out_of_order_segments: 1,
        };
        let mut s = HalfStream::new(ISN);
        assert_eq!(
            s.push(ISN, b"123456789", limits, |_| {}),
            Err(StreamError::Full)
        );
        assert_eq!(
            s.push(ISN + 20, b"12345", limits, |_| {}),
            Err(StreamError::Full)
        );
        assert_eq!(s.push(ISN + 20, b"1234", limits, |_| {}), Ok(()));
        assert_eq!(
            s.push(ISN + 30, b"1", limits, |_| {}),
            Err(StreamError::Full)
        );
        assert_eq!(s.delivered(), 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut s = HalfStream::new(u32::MAX - 2);
        assert_eq!(collect(&mut s, u32::MAX - 2, b"abc").unwrap(), b"abc");
        assert_eq!(collect(&mut s, 0, b"def").unwrap(), b"def");
        s.acknowledge(3);
        assert_eq!(s.buffered(), 0);
    }
}
