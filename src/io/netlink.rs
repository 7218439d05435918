//! Netlink framing shared by the NFQUEUE client (`io::nfqueue`) and the conntrack reader
//! (`io::ctnetlink`): header sizes and flags of `linux/netlink.h` and
//! `linux/netfilter/nfnetlink.h`, and a bounds-checked attribute iterator.

/// `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg`, after the header of every nfnetlink message.
pub const NFGEN_HDRLEN: usize = 4;
/// `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;
/// The attribute type bit saying its value is nested attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// Attribute type bits that are flags, not the type.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

/// `NLMSG_NOOP`.
pub const NLMSG_NOOP: u16 = 1;
/// `NLMSG_ERROR`: an error, or with code 0 an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;
/// `NLMSG_OVERRUN`.
pub const NLMSG_OVERRUN: u16 = 4;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 4;

/// `n` rounded up to the 4-byte alignment of netlink messages and attributes.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A host-order `u16` at the start of `b` (which has at least 2 bytes).
pub fn u16_ne(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

/// A big-endian `u16` at the start of `b`, if it has 2 bytes.
pub fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

/// A big-endian `u64` at the start of `b`, if it has 8 bytes.
pub fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// A big-endian `u32` at the start of `b`, if it has 4 bytes.
pub fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// The attributes in `rest`, type flags masked off; stops at the first malformed one.
/// `tail_kind`: an attribute of that type whose length field is too small to be right is the
/// rest of the buffer (NFQUEUE writes the packet last, with a 16-bit length that wraps for
/// packets of 65532 bytes and more).
pub fn attributes(mut rest: &[u8], tail_kind: Option<u16>) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = usize::from(u16_ne(&rest[0..2]));
        let kind = u16_ne(&rest[2..4]) & NLA_TYPE_MASK;
        if Some(kind) == tail_kind && len < NLA_HDRLEN {
            let value = &rest[NLA_HDRLEN..];
            rest = &[];
            return Some((kind, value));
        }
        if len < NLA_HDRLEN || len > rest.len() {
            return None;
        }
        let value = &rest[NLA_HDRLEN..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}
