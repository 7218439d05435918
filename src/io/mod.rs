//! I/O adapters: everything that touches files, sockets or clocks lives here.

pub mod pcap;
