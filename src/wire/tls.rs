//! TLS record headers: the five bytes in front of every TLS record (RFC 8446 section 5.1,
//! RFC 5246 section 6.2.1), which is all a firewall that decrypts nothing can check.
//!
//! ```text
//! struct {
//!     ContentType type;                 // 1 byte: 20-23
//!     ProtocolVersion legacy_version;   // 2 bytes: 3, then 0-3
//!     uint16 length;                    // at most 2^14 + 2048
//!     opaque fragment[length];
//! } TLSCiphertext;
//! ```

use std::fmt;

/// Bytes in a record header.
pub const HEADER_LEN: usize = 5;

/// The largest record body: 2^14 bytes of plaintext plus 2048 of expansion
/// (`TLSCiphertext.length`, RFC 5246 section 6.2.3). TLS 1.3 allows less (2^14 + 256, RFC 8446
/// section 5.2), so this holds for every version.
pub const MAX_RECORD_LEN: u16 = (1 << 14) + 2048;

/// `ContentType` values (RFC 8446 section 5.1): the four a record may carry.
pub mod content {
    /// `change_cipher_spec` (20).
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    /// `alert` (21).
    pub const ALERT: u8 = 21;
    /// `handshake` (22).
    pub const HANDSHAKE: u8 = 22;
    /// `application_data` (23): TLS 1.3 sends everything after the ServerHello so.
    pub const APPLICATION_DATA: u8 = 23;
}

/// `HandshakeType` values (RFC 8446 section 4) that open a handshake.
pub mod handshake {
    /// `client_hello` (1): the client's first message.
    pub const CLIENT_HELLO: u8 = 1;
    /// `server_hello` (2): the server's first message.
    pub const SERVER_HELLO: u8 = 2;
}

/// A record header that checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The content type (20-23).
    pub content_type: u8,
    /// The record-layer version's minor byte (0 for SSL 3.0 up to 3 for TLS 1.2 and 1.3).
    pub minor: u8,
    /// Body length.
    pub length: u16,
}

/// Why five bytes are not a record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The first byte is no content type TLS sends.
    ContentType(u8),
    /// The version is not 3.0-3.3.
    Version(u8, u8),
    /// The length is above [`MAX_RECORD_LEN`].
    Length(u16),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::ContentType(t) => write!(f, "content type {t} (TLS sends 20-23)"),
            HeaderError::Version(major, minor) => {
                write!(f, "record version {major}.{minor} (TLS sends 3.0-3.3)")
            }
            HeaderError::Length(len) => {
                write!(f, "record length {len} (at most {MAX_RECORD_LEN})")
            }
        }
    }
}

/// Checks a record header.
pub fn parse_header(bytes: [u8; HEADER_LEN]) -> Result<RecordHeader, HeaderError> {
    let [content_type, major, minor, hi, lo] = bytes;
    if !(content::CHANGE_CIPHER_SPEC..=content::APPLICATION_DATA).contains(&content_type) {
        return Err(HeaderError::ContentType(content_type));
    }
    if major != 3 || minor > 3 {
        return Err(HeaderError::Version(major, minor));
    }
    let length = u16::from_be_bytes([hi, lo]);
    if length > MAX_RECORD_LEN {
        return Err(HeaderError::Length(length));
    }
    Ok(RecordHeader {
        content_type,
        minor,
        length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_version_and_type_parse() {
        for content_type in 20..=23 {
            for minor in 0..=3 {
                let header = parse_header([content_type, 3, minor, 0x40, 0x00]).unwrap();
                assert_eq!(header.length, 0x4000);
                assert_eq!(header.content_type, content_type);
            }
        }
        assert_eq!(
            parse_header([23, 3, 3, 0x48, 0x00]).unwrap().length,
            MAX_RECORD_LEN
        );
    }

    #[test]
    fn what_is_not_a_header_says_why() {
        assert_eq!(parse_header(*b"USER "), Err(HeaderError::ContentType(b'U')));
        assert_eq!(
            parse_header([24, 3, 3, 0, 1]),
            Err(HeaderError::ContentType(24))
        );
        assert_eq!(
            parse_header([22, 2, 0, 0, 1]),
            Err(HeaderError::Version(2, 0))
        );
        assert_eq!(
            parse_header([22, 3, 4, 0, 1]),
            Err(HeaderError::Version(3, 4))
        );
        assert_eq!(
            parse_header([23, 3, 3, 0x48, 0x01]),
            Err(HeaderError::Length(MAX_RECORD_LEN + 1))
        );
        assert_eq!(
            HeaderError::Length(20000).to_string(),
            "record length 20000 (at most 18432)"
        );
    }
}
