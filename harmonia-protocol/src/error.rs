//! The crate's error type.

use crate::stderr::NixError;
use crate::version::ProtocolVersion;

/// Everything that can go wrong while speaking the worker protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The underlying stream failed (including a truncated message: `UnexpectedEof`).
    #[error("I/O error on the worker protocol stream: {0}")]
    Io(#[from] std::io::Error),
    /// A length field announced more than this field may hold.
    #[error("{what} announces {len} bytes/items, more than the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The announced length.
        len: u64,
        /// The limit for this field.
        max: u64,
    },
    /// Padding after a string was not zero.
    #[error("non-zero padding after a string")]
    NonZeroPadding,
    /// A string that must be text was not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which field.
        what: &'static str,
    },
    /// A store path on the wire did not parse.
    #[error("invalid store path {path:?}: {reason}")]
    InvalidStorePath {
        /// What was sent (truncated to a sane length).
        path: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Some other value on the wire did not parse (hash, content address, enum tag...).
    #[error("invalid {what}: {value:?}")]
    InvalidValue {
        /// Which field.
        what: &'static str,
        /// What was sent (truncated to a sane length).
        value: String,
    },
    /// The peer did not start with the expected magic number.
    #[error("protocol mismatch: expected magic 0x{expected:x}, got 0x{got:x}")]
    BadMagic {
        /// The magic we wanted.
        expected: u64,
        /// The magic we got.
        got: u64,
    },
    /// The peer speaks a version outside 1.21..=1.38.
    #[error("unsupported worker protocol version {0} (this side speaks 1.21 to 1.38)")]
    UnsupportedVersion(ProtocolVersion),
    /// An operation code this crate does not know.
    #[error("unknown worker operation {0}")]
    UnknownOp(u64),
    /// A stderr-channel message code this crate does not know.
    #[error("unknown stderr message type 0x{0:x}")]
    UnknownStderr(u64),
    /// The other side sent STDERR_READ/WRITE where no data exchange was expected.
    #[error("unexpected {0} message from the daemon")]
    UnexpectedStderr(&'static str),
    /// The NAR being passed through is malformed.
    #[error("malformed NAR: {0}")]
    Nar(#[from] harmonia_file_nar::NarError),
    /// A tunnelled NAR chunk carried bytes past the NAR's end.
    #[error("{extra} bytes of data after the end of the tunnelled NAR")]
    TrailingNarData {
        /// How many bytes followed the NAR.
        extra: u64,
    },
    /// The daemon answered with an error.
    #[error("daemon error: {0}")]
    Remote(NixError),
}

impl ProtocolError {
    /// Whether the stream simply ended (a truncated message or a closed connection).
    pub fn is_eof(&self) -> bool {
        matches!(self, ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
    }

    pub(crate) fn invalid(what: &'static str, value: &[u8]) -> Self {
        ProtocolError::InvalidValue {
            what,
            value: truncate_lossy(value),
        }
    }
}

/// A printable, bounded rendering of bytes that came from the peer.
pub(crate) fn truncate_lossy(value: &[u8]) -> String {
    const MAX: usize = 200;
    let cut = &value[..value.len().min(MAX)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if value.len() > MAX {
        s.push_str("...");
    }
    s
}

/// Shorthand for results of this crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
