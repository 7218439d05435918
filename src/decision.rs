//! What the engine decides about a packet, and why.
//!
//! Every drop carries a [`Reason`]: one variant per specific misbehaviour (the rustls
//! `PeerMisbehaved` habit), with a stable snake_case name that appears in the JSON output, the
//! counters and the logs. Names are part of the public contract: add new ones, never rename.

use std::fmt;

use serde::Serialize;

use crate::conntrack::FlowTuple;
use crate::event::Event;

/// Defines [`Reason`] with its stable names and one-line explanations in one place.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $help:literal; )*) => {
        /// Why a packet was dropped. The names are the public contract (see the README).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            /// Every reason, in declaration order (used for counters and documentation).
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )* ];

            /// The stable snake_case name of this reason.
            pub const fn as_str(self) -> &'static str {
                match self { $( Reason::$variant => $name, )* }
            }

            /// A one-line explanation for people reading a report.
            pub const fn help(self) -> &'static str {
                match self { $( Reason::$variant => $help, )* }
            }

            /// The length of the longest name: the width of a column of reasons.
            pub const NAME_WIDTH: usize = {
                let mut widest = 0;
                let mut i = 0;
                while i < Reason::ALL.len() {
                    let len = Reason::ALL[i].as_str().len();
                    if len > widest {
                        widest = len;
                    }
                    i += 1;
                }
                widest
            };
        }
    };
}

reasons! {
    // ---- link and IP decoding -----------------------------------------------------------
    /// The frame is shorter than its link-layer header.
    TruncatedLink = "truncated_link", "frame shorter than its link-layer header";
    /// The capture's link type is not one pinhole decodes.
    UnsupportedLink = "unsupported_link", "link type not supported";
    /// The frame carries something other than IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp = "not_ip", "not an IPv4 or IPv6 packet";
    /// The IP header or the datagram its length field announces is cut off.
    TruncatedIp = "truncated_ip", "IP header or datagram cut off";
    /// The IP version nibble is neither 4 nor 6 (or does not match the link layer).
    BadIpVersion = "bad_ip_version", "IP version is not 4 or 6";
    /// IPv4 IHL below 5 or options that do not fit.
    BadIpHeaderLength = "bad_ip_header_length", "IPv4 header length field is invalid";
    /// IPv4 total length smaller than the header, or an IPv6 jumbogram (unsupported).
    BadIpTotalLength = "bad_ip_total_length", "IP total/payload length field is invalid";
    /// An IPv6 extension header is cut off.
    TruncatedIpExtension = "truncated_ip_extension", "IPv6 extension header cut off";
    /// IPv6 extension headers out of order, repeated fragment headers or too many of them.
    BadIpExtension = "bad_ip_extension", "invalid IPv6 extension header chain";
    /// Source address that no host may use (unspecified, multicast, limited broadcast).
    MartianSource = "martian_source", "source address is unspecified, multicast or broadcast";
    // ---- fragments -----------------------------------------------------------------------
    /// A fragment overlaps another one of the same datagram (RFC 5722; teardrop-style evasion).
    FragmentOverlap = "fragment_overlap", "overlapping IP fragments";
    /// An exact copy of a fragment already held (the original is forwarded with its datagram).
    FragmentDuplicate = "fragment_duplicate", "duplicate IP fragment";
    /// A non-final fragment whose length is not a multiple of 8, or an empty fragment.
    FragmentMalformed = "fragment_malformed", "malformed IP fragment";
    /// Fragments that would reassemble into more than 65535 bytes.
    FragmentTooBig = "fragment_too_big", "reassembled datagram would exceed 65535 bytes";
    /// More fragments for one datagram than the configured limit.
    FragmentLimit = "fragment_limit", "too many fragments for one datagram";
    /// A datagram was not complete before the reassembly timeout.
    FragmentTimeout = "fragment_timeout", "datagram not reassembled before the timeout";
    /// A partly reassembled datagram was evicted because the reassembly memory cap was reached.
    FragmentEvicted = "fragment_evicted", "reassembly memory cap reached; datagram evicted";
    // ---- transport decoding ------------------------------------------------------------
    /// TCP header cut off.
    TruncatedTcp = "truncated_tcp", "TCP header cut off";
    /// TCP data offset below 5 or beyond the segment.
    BadTcpHeader = "bad_tcp_header", "invalid TCP header length";
    /// UDP header cut off.
    TruncatedUdp = "truncated_udp", "UDP header cut off";
    /// UDP length field below 8 or beyond the IP payload.
    BadUdpLength = "bad_udp_length", "invalid UDP length field";
    /// ICMP/ICMPv6 message shorter than its fixed header.
    TruncatedIcmp = "truncated_icmp", "ICMP message cut off";
    /// A TCP or UDP checksum that does not match: the receiver discards the packet, so it must
    /// not change the firewall's state either (an insertion attack otherwise).
    BadChecksum = "bad_checksum", "TCP/UDP checksum wrong";
    // ---- TCP state -----------------------------------------------------------------------
    /// Flag combination no conforming stack sends (SYN+FIN, SYN+RST, no flags, FIN without ACK...).
    TcpInvalidFlags = "tcp_invalid_flags", "invalid TCP flag combination";
    /// A segment other than a SYN for a connection that was never set up ("permit established" gap).
    TcpNoHandshake = "tcp_no_handshake", "TCP segment without a handshake";
    /// Sequence or acknowledgement number outside the window the peers negotiated.
    TcpOutOfWindow = "tcp_out_of_window", "TCP segment outside the window";
    /// A RST whose sequence number is not in the receiver's window (RFC 5961 section 3).
    TcpRstOutOfWindow = "tcp_rst_out_of_window", "TCP RST outside the window";
    /// A SYN on a connection that is already established (RFC 5961 section 4).
    TcpSynInEstablished = "tcp_syn_in_established", "TCP SYN on an established connection";
    /// A SYN-ACK that does not acknowledge the initiator's SYN.
    TcpBadSynAck = "tcp_bad_synack", "TCP SYN-ACK does not acknowledge the SYN";
    /// A handshake segment in the wrong place (SYN from the responder, ACK before SYN-ACK).
    TcpHandshakeViolation = "tcp_handshake_violation", "TCP handshake out of order";
    /// New data after the sender's FIN.
    TcpDataAfterFin = "tcp_data_after_fin", "TCP data after FIN";
    /// A segment for a connection that was reset.
    TcpAfterReset = "tcp_after_reset", "TCP segment after the connection was reset";
    // ---- ICMP ----------------------------------------------------------------------------
    /// An ICMP error whose quoted packet cannot be read (too short, a non-first fragment).
    IcmpErrorMalformed = "icmp_error_malformed", "ICMP error quotes an unreadable packet";
    /// An ICMP error that quotes no tracked flow.
    IcmpErrorUntracked = "icmp_error_untracked", "ICMP error quotes no tracked flow";
    /// An ICMP error whose quoted packet does not fit the flow it names (wrong direction,
    /// sequence number outside the window).
    IcmpErrorMismatch = "icmp_error_mismatch", "ICMP error does not fit the flow it quotes";
    /// An ICMP echo reply with no matching request.
    IcmpNoRequest = "icmp_no_request", "ICMP echo reply without a request";
    /// An ICMP echo request from the responder side of an echo flow (it would ride the
    /// initiator's permission).
    IcmpEchoWrongDirection = "icmp_echo_wrong_direction", "ICMP echo request against its flow's direction";
    // ---- FTP inspection (RFC 959, 2428, 1639, 2228) ---------------------------------------
    /// PORT/EPRT/LPRT names an address other than the client's own (FTP bounce, RFC 2577).
    FtpBounce = "ftp_bounce", "FTP PORT/EPRT/LPRT names an address other than the client's";
    /// 227/228/229 names an address other than the server's own.
    FtpPassiveAddressMismatch = "ftp_passive_address_mismatch", "FTP passive reply names an address other than the server's";
    /// A data port below the configured minimum (1024 by default).
    FtpPrivilegedPort = "ftp_privileged_port", "FTP data port below the allowed minimum";
    /// A data address that does not parse or is out of range (octet > 255, port 0 or > 65535,
    /// unknown family).
    FtpBadAddress = "ftp_bad_address", "FTP data address malformed or out of range";
    /// Reply text from the client, or a data command from the server.
    FtpWrongDirection = "ftp_wrong_direction", "FTP command or reply sent by the wrong side";
    /// A 227/228/229 reply that answers no pending PASV/LPSV/EPSV.
    FtpUnexpectedReply = "ftp_unexpected_reply", "FTP passive reply without a matching command";
    /// Active or passive mode, disabled by policy.
    FtpModeNotAllowed = "ftp_mode_not_allowed", "FTP data mode not allowed by policy";
    /// The pinhole table is full; the negotiated connection cannot be opened.
    FtpPinholeLimit = "ftp_pinhole_limit", "FTP pinhole refused: pinhole table or client quota full";
    /// A control line longer than the configured limit.
    FtpLineTooLong = "ftp_line_too_long", "FTP control line too long";
    /// A NUL byte in a control line.
    FtpNulInLine = "ftp_nul_in_line", "NUL byte in an FTP control line";
    /// A CR not followed by LF in a control line.
    FtpBareCr = "ftp_bare_cr", "bare CR in an FTP control line";
    /// A retransmission or out-of-order segment that disagrees with bytes already seen.
    FtpStreamConflict = "ftp_stream_conflict", "FTP control stream bytes rewritten by an overlapping segment";
    /// More commands pipelined without replies than tracked.
    FtpPipelineLimit = "ftp_pipeline_limit", "too many FTP commands without replies";
    /// AUTH TLS/SSL on a rule with `ftps = "deny"`.
    FtpTlsDenied = "ftp_tls_denied", "FTP AUTH TLS/SSL refused by policy";
    /// Bytes on an FTPS control connection that are not TLS records where TLS records must
    /// be (after the 234 to AUTH TLS, or from the first byte with `implicit_tls`), nor the
    /// cleartext FTP that follows a CCC: cleartext commands smuggled behind a fake AUTH TLS.
    FtpTlsInvalid = "ftp_tls_invalid", "FTPS control connection carries bytes that are not TLS records";
    /// A connection to an FTPS session's passive range while the session already holds
    /// `ftps_max_connections` through it.
    FtpsRangeLimit = "ftps_range_limit", "FTPS passive range: the session holds its maximum of connections";
    /// The control connection was blocked after a violation (`on_violation = "drop"`).
    FtpBlocked = "ftp_blocked", "FTP control connection blocked after a violation";
    /// The control stream's reassembly buffer is full; TCP will retransmit.
    FtpReassemblyLimit = "ftp_reassembly_limit", "FTP control stream reassembly buffer full";
    /// A SYN carrying data (TCP Fast Open) opened an FTP control connection.
    FtpSynData = "ftp_syn_data", "data in the SYN of an FTP control connection (TCP Fast Open)";
    /// A CR or LF inside a Telnet command (option code or subnegotiation): the inspector skips
    /// those bytes, a server without Telnet handling would read a line from them.
    FtpTelnetLineBreak = "ftp_telnet_line_break", "line break inside a Telnet command sequence";
    /// A command refused by the rule's `allow_commands`/`deny_commands`: it reaches the server
    /// defanged (its verb overwritten), so the client gets the server's error and keeps its
    /// session.
    FtpCommandDenied = "ftp_command_denied", "FTP command refused by policy";
    /// A user name refused by the rule's `allow_users`/`deny_users` (USER defanged).
    FtpUserDenied = "ftp_user_denied", "FTP user name refused by policy";
    /// A file path refused by the rule's `allow_paths`/`deny_paths` (the command defanged).
    FtpPathDenied = "ftp_path_denied", "FTP file path refused by policy";
    // ---- TFTP inspection (RFC 1350, 2347-2349, 7440) --------------------------------------
    /// A TFTP packet shorter than its fixed fields.
    TftpTruncated = "tftp_truncated", "TFTP packet cut short";
    /// Opcode 0 or above 6.
    TftpBadOpcode = "tftp_bad_opcode", "TFTP opcode out of range";
    /// A filename, mode, option or message without its terminating NUL.
    TftpMissingNul = "tftp_missing_nul", "TFTP string field without NUL terminator";
    /// A request with an empty filename.
    TftpEmptyFilename = "tftp_empty_filename", "TFTP request with an empty filename";
    /// A mode other than netascii, octet or mail.
    TftpBadMode = "tftp_bad_mode", "TFTP request with an unknown mode";
    /// An option malformed, duplicated, out of range, one too many, or acknowledged without
    /// being requested.
    TftpBadOption = "tftp_bad_option", "TFTP option malformed or out of range";
    /// An ACK or ERROR followed by bytes other than zero padding.
    TftpTrailingBytes = "tftp_trailing_bytes", "TFTP ACK or ERROR with bytes after its end";
    /// A packet that has no place where it arrived (DATA to port 69, a request on a transfer,
    /// DATA from the receiving side, a reply from port 69).
    TftpUnexpectedOpcode = "tftp_unexpected_opcode", "TFTP packet out of place";
    /// A read request on a rule with `read = false`.
    TftpReadDenied = "tftp_read_denied", "TFTP read refused by policy";
    /// A write request on a rule with `write = false`.
    TftpWriteDenied = "tftp_write_denied", "TFTP write refused by policy";
    /// A filename refused by the rule's allow/deny patterns.
    TftpFileDenied = "tftp_file_denied", "TFTP filename refused by policy";
    /// A DATA or ACK block number far outside the transfer's window.
    TftpBlockOutOfSequence = "tftp_block_out_of_sequence", "TFTP block far out of sequence";
    /// A DATA block longer than the negotiated block size.
    TftpOversizedBlock = "tftp_oversized_block", "TFTP DATA longer than the block size";
    /// Too many requests pending for one client, or the pinhole table is full.
    TftpRequestLimit = "tftp_request_limit", "TFTP request refused: too many pending";
    /// A packet to a client's transfer port from an address or port other than the server's
    /// transfer ID (RFC 1350 section 4).
    TftpUnknownTid = "tftp_unknown_tid", "TFTP packet from an unknown transfer ID";
    /// A packet on a transfer an ERROR already ended (tftp-hpa's client, for one, acknowledges
    /// the error); no violation, just nothing left to carry.
    TftpTransferEnded = "tftp_transfer_ended", "TFTP packet after the transfer ended with an error";
    /// The server answered from a port outside the policy's TID range.
    TftpTidOutOfRange = "tftp_tid_out_of_range", "TFTP reply from a port outside the TID range";
    // ---- policy and tables ---------------------------------------------------------------
    /// A new flow aimed at an open pinhole, from a peer the pinhole does not admit.
    PinholeWrongPeer = "pinhole_wrong_peer", "connection to a pinhole from the wrong peer";
    /// A new flow matched a rule whose action is deny.
    PolicyDeny = "policy_deny", "new flow denied by a rule";
    /// A new flow matched no rule and the default action is deny.
    DefaultDeny = "default_deny", "new flow matched no rule (default deny)";
    /// The flow table is full and nothing could be evicted.
    FlowLimit = "flow_limit", "flow table full";
    /// The initiator already holds `limits.max_flows_per_source` flows admitted by the rules.
    FlowSourceLimit = "flow_source_limit", "too many flows from one source address";
}

impl Reason {
    /// True for the drops that mean a cap was reached (a table, a quota, a buffer): what a
    /// flood produces. The daemon logs them, rate-limited, besides counting them.
    pub const fn is_overflow(self) -> bool {
        matches!(
            self,
            Reason::FlowLimit
                | Reason::FlowSourceLimit
                | Reason::FtpPinholeLimit
                | Reason::TftpRequestLimit
                | Reason::FtpReassemblyLimit
                | Reason::FtpLineTooLong
                | Reason::FtpPipelineLimit
                | Reason::FragmentLimit
                | Reason::FragmentEvicted
                | Reason::FragmentTooBig
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The verdict on one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let the packet through.
    Accept,
    /// Discard the packet.
    Drop,
    /// Discard the packet and answer its sender with a TCP reset (the inline dataplane has the
    /// kernel send it); replay writes it as `"verdict":"drop"` with `"reset":true`.
    Reject,
    /// Keep the packet until its datagram is reassembled; its verdict arrives later in
    /// [`Decision::released`] or [`Expired::released`] under the same handle.
    Held,
}

/// The verdict on a packet that was [`Verdict::Held`] earlier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// The handle the caller passed with the held packet.
    pub handle: u64,
    /// [`Verdict::Accept`] or [`Verdict::Drop`], never [`Verdict::Held`].
    pub verdict: Verdict,
    /// Why it was dropped; `None` when accepted.
    pub reason: Option<Reason>,
    /// The flow the reassembled datagram belongs to, if any.
    pub flow: Option<FlowTuple>,
}

/// Everything the engine decided about one packet.
///
/// `reason` is `Some` exactly when `verdict` is [`Verdict::Drop`] or [`Verdict::Reject`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do with the packet.
    pub verdict: Verdict,
    /// Why it was dropped.
    pub reason: Option<Reason>,
    /// The flow the packet belongs to (initiator first), if it belongs to one.
    pub flow: Option<FlowTuple>,
    /// What happened because of this packet (pinholes opened or used, violations, flows).
    pub events: Vec<Event>,
    /// Verdicts for packets held earlier, resolved by this one (IP fragments).
    pub released: Vec<Released>,
    /// The flow needs no more inspection: in offload mode the adapter may let the kernel
    /// carry the rest of it (set once, on the packet that made it eligible).
    pub offload: bool,
    /// Bytes of the TCP payload to overwrite before the packet goes on (an FTP command the
    /// rules refused, defanged): the length never changes, so no sequence number moves. An
    /// inline adapter sends the rewritten packet with a recomputed checksum; replay and the
    /// monitor only report it.
    pub rewrites: Vec<PayloadRewrite>,
}

/// An overwrite of part of a packet's TCP payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadRewrite {
    /// Where it starts, from the first byte of the TCP payload.
    pub offset: usize,
    /// The bytes written there.
    pub bytes: Vec<u8>,
}

impl Decision {
    /// An accept verdict for a packet of `flow`.
    pub fn accept(flow: Option<FlowTuple>) -> Self {
        Decision {
            verdict: Verdict::Accept,
            reason: None,
            flow,
            events: Vec::new(),
            released: Vec::new(),
            offload: false,
            rewrites: Vec::new(),
        }
    }

    /// A drop verdict.
    pub fn drop(reason: Reason, flow: Option<FlowTuple>) -> Self {
        Decision {
            verdict: Verdict::Drop,
            reason: Some(reason),
            flow,
            events: Vec::new(),
            released: Vec::new(),
            offload: false,
            rewrites: Vec::new(),
        }
    }

    /// The packet is held for reassembly.
    pub fn held() -> Self {
        Decision {
            verdict: Verdict::Held,
            reason: None,
            flow: None,
            events: Vec::new(),
            released: Vec::new(),
            offload: false,
            rewrites: Vec::new(),
        }
    }

    /// A drop that resets the sender.
    pub fn reject(reason: Reason, flow: Option<FlowTuple>) -> Self {
        Decision {
            verdict: Verdict::Reject,
            ..Decision::drop(reason, flow)
        }
    }

    /// True when the packet may pass.
    pub fn is_accept(&self) -> bool {
        self.verdict == Verdict::Accept
    }
}

/// What [`crate::Engine::expire`] found: timers that fired, and held packets that now have a
/// verdict (fragments whose datagram timed out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Flows closed, pinholes expired.
    pub events: Vec<Event>,
    /// Held packets that are now dropped.
    pub released: Vec<Released>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn reason_names_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for reason in Reason::ALL {
            let name = reason.as_str();
            assert!(seen.insert(name), "duplicate reason name {name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name} is not snake_case"
            );
            assert!(!reason.help().is_empty());
        }
    }

    #[test]
    fn reason_serializes_as_its_name() {
        let json = serde_json::to_string(&Reason::TcpOutOfWindow).unwrap();
        assert_eq!(json, "\"tcp_out_of_window\"");
    }
}
