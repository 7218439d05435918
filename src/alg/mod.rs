//! Application-layer gateways: the protocol inspectors that open pinholes.
//!
//! A rule with `inspect = "ftp"` or `inspect = "tftp"` marks the flows it admits with an
//! [`Alg`]; the engine hands their payloads to the matching inspector.

use std::fmt;

use serde::Serialize;

/// The protocols pinhole inspects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Alg {
    /// FTP (RFC 959, 2428, 1639): control connections on TCP, data connections negotiated in them.
    Ftp,
    /// TFTP (RFC 1350, 2347-2349, 7440): requests on UDP, transfers from a fresh server port.
    Tftp,
}

impl Alg {
    /// Lower-case name, as in rules files and JSON output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Alg::Ftp => "ftp",
            Alg::Tftp => "tftp",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
