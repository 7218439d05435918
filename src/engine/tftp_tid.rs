//! TFTP transfer IDs (RFC 1350 section 4) at the engine level: a new UDP flow aimed at the
//! client end of a running transfer, or a TFTP server's reply from outside its TID range, is
//! refused with a TFTP reason. The index of transfers by client end (`Engine::tftp_transfers`)
//! is kept by `adopt` and `flow_removed` in `lifecycle`.

use crate::alg::Alg;
use crate::conntrack::{FlowTuple, PinholeMatch};
use crate::decision::Reason;
use crate::wire::transport::proto;

use super::Engine;

impl Engine {
    /// A new flow that no pinhole admits may still be refused before the rules are read: a
    /// datagram to a TFTP client's transfer port from another port of that transfer's server
    /// (RFC 1350 section 4, "unknown transfer ID"), or a reply from the right TFTP server
    /// but outside the policy's TID range. Returns the reason and the violation's detail.
    pub(super) fn refused_before_rules(
        &self,
        tuple: &FlowTuple,
        miss: &PinholeMatch,
    ) -> Option<(Reason, String)> {
        if tuple.proto != proto::UDP {
            return None;
        }
        if let PinholeMatch::WrongPeer {
            alg: Alg::Tftp,
            address_matched: true,
        } = miss
        {
            let range = self
                .pinholes
                .pending_to(tuple.proto, tuple.dst, tuple.dport)
                .find(|p| p.spec.opening.src == tuple.src)
                .map_or_else(String::new, |p| format!(" {}", p.spec.opening.sport));
            let detail = format!(
                "the server {} answered from port {}, outside its transfer ID range{range} (server_ports)",
                tuple.src, tuple.sport
            );
            return Some((Reason::TftpTidOutOfRange, detail));
        }
        self.unknown_tid(tuple, true)
    }

    /// A UDP datagram aimed at the client end of a running TFTP transfer, but not from the
    /// transfer's server port: an unknown transfer ID (RFC 1350 section 4). With
    /// `server_only`, only when it comes from the transfer's server address.
    ///
    /// The server's other ports are refused before the rules read them; other hosts only where
    /// the rules refuse them anyway. A rule that admits them is the administrator's word, and
    /// refusing regardless would let anyone who spoofs a request from an address block that
    /// address's traffic to that port while the transfer runs.
    pub(super) fn unknown_tid(
        &self,
        tuple: &FlowTuple,
        server_only: bool,
    ) -> Option<(Reason, String)> {
        if tuple.proto != proto::UDP {
            return None;
        }
        let transfer = self.tftp_transfers.get(&(tuple.dst, tuple.dport))?;
        let server = self.flows.get(*transfer)?.tuple;
        if server_only && server.src != tuple.src {
            return None;
        }
        let detail = format!(
            "{}:{} is in a transfer with {}:{}; {}:{} is an unknown transfer ID (RFC 1350 section 4)",
            tuple.dst, tuple.dport, server.src, server.sport, tuple.src, tuple.sport
        );
        Some((Reason::TftpUnknownTid, detail))
    }
}
