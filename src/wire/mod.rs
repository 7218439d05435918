//! Wire formats: one decode per packet, from link layer to transport, with `etherparse`.
//!
//! Decoding is split where IP fragmentation forces a split:
//!
//! 1. [`link::ip_bytes`] strips the link layer (Ethernet/VLAN, Linux cooked v1/v2, raw IP,
//!    BSD loopback) and returns the IP datagram.
//! 2. [`ip::decode`] validates the IPv4 header or the IPv6 header and its extension chain and
//!    returns an [`IpPacket`]: addresses, protocol, fragment information and the payload.
//! 3. [`transport::decode`] decodes TCP, UDP or ICMP from a complete IP payload: straight from
//!    step 2, or from the reassembled datagram when the packet was a fragment.
//!
//! Every failure is a specific [`Reason`](crate::Reason); nothing here panics on any input
//! (see the truncated-prefix tests and the fuzz targets).

pub mod ftp;
pub mod icmp;
pub mod ip;
pub mod link;
pub mod tftp;
pub mod tls;
pub mod transport;

pub use ip::{FragmentInfo, IpPacket};
pub use link::LinkType;
pub use transport::{IcmpKind, IcmpMessage, TcpFlags, TcpSegment, Transport, UdpDatagram};
