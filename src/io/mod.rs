//! I/O adapters: everything that touches files, sockets or clocks lives here.

pub mod ct_events;
pub mod ctnetlink;
pub mod fanout;
pub mod iptables;
pub mod netlink;
pub mod nfqueue;
pub mod packet;
pub mod packet_ring;
pub mod pcap;
