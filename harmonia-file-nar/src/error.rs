//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while encoding, decoding, restoring or listing a NAR.
///
/// Decoding errors carry the byte offset in the NAR where the problem starts, so a person can look at the
/// bytes; filesystem errors carry the path that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NarError {
    /// A filesystem operation failed while reading the tree to encode or list.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The tree contains something a NAR cannot hold (a socket, a device, a FIFO).
    #[error("{path} is not a regular file, directory or symlink")]
    UnsupportedFileType {
        /// The offending path.
        path: PathBuf,
    },
    /// A regular file was shorter or longer than its metadata said while it was being read.
    #[error("{path} changed while it was encoded (expected {expected} bytes)")]
    FileChanged {
        /// The file that changed.
        path: PathBuf,
        /// The size its metadata announced (and the NAR header already carries).
        expected: u64,
    },
    /// `encode_from_offset` was asked for an offset past the end of the NAR.
    #[error("offset {offset} is past the end of the NAR ({nar_size} bytes)")]
    OffsetPastEnd {
        /// The requested offset.
        offset: u64,
        /// The size of the whole NAR.
        nar_size: u64,
    },
    /// The tree's NAR would be longer than 2^64 bytes (sparse files can claim such sizes), so its offsets
    /// cannot be represented.
    #[error("the NAR of the tree containing {path} would be larger than 2^64 bytes")]
    TooLarge {
        /// The node at which the NAR size overflowed.
        path: PathBuf,
    },
    /// The NAR reader failed.
    #[error("reading the NAR failed at offset {offset}: {source}")]
    Read {
        /// Offset in the NAR where reading failed.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// The NAR ended before its closing token.
    #[error("the NAR is truncated at offset {offset}")]
    Truncated {
        /// Offset at which more bytes were needed.
        offset: u64,
    },
    /// The NAR does not start with the string `nix-archive-1`.
    #[error("not a NAR: it does not start with \"nix-archive-1\"")]
    BadMagic,
    /// A token other than the one the NAR grammar allows here.
    #[error("unexpected token at offset {offset}: expected {expected}, found {found:?}")]
    UnexpectedToken {
        /// Offset of the token's length field.
        offset: u64,
        /// What the grammar allows here.
        expected: &'static str,
        /// What was found (lossily decoded, possibly shortened).
        found: String,
    },
    /// A string length field over the limit for that kind of string.
    #[error("{what} at offset {offset} claims {len} bytes, over the limit of {max}")]
    TooLong {
        /// Offset of the length field.
        offset: u64,
        /// Which string (token, entry name, symlink target).
        what: &'static str,
        /// The claimed length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Padding after a string or file contents was not all zero bytes.
    #[error("non-zero padding at offset {offset}")]
    BadPadding {
        /// Offset of the padding.
        offset: u64,
    },
    /// A directory entry name that could escape or confuse the tree.
    #[error("invalid entry name {name:?} at offset {offset}: {reason}")]
    BadName {
        /// Offset of the name's length field.
        offset: u64,
        /// The name (lossily decoded).
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Directory entries not in strictly increasing byte order (unsorted or duplicate).
    #[error(
        "entry {name:?} at offset {offset} does not sort after the previous entry {previous:?}"
    )]
    UnsortedEntry {
        /// Offset of the name's length field.
        offset: u64,
        /// The out-of-order name.
        name: String,
        /// The entry before it.
        previous: String,
    },
    /// A symlink target that cannot be a path (empty or containing NUL).
    #[error("invalid symlink target at offset {offset}: {reason}")]
    BadSymlinkTarget {
        /// Offset of the target's length field.
        offset: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Directories nested deeper than the decoder allows.
    #[error("directories nested deeper than {max} levels at offset {offset}")]
    TooDeep {
        /// Offset of the entry that went too deep.
        offset: u64,
        /// The limit.
        max: usize,
    },
    /// A previous [`NarDecoder::next`](crate::NarDecoder::next) future was dropped mid-read, so the
    /// decoder lost its place.
    #[error("decoding was interrupted at offset {offset} (a next() future was dropped)")]
    Interrupted {
        /// Offset the decoder had reached.
        offset: u64,
    },
    /// The restore destination already exists.
    #[error("restore destination {path} already exists")]
    DestinationExists {
        /// The destination.
        path: PathBuf,
    },
    /// Writing the restored tree failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path that could not be written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A worker thread could not finish (it panicked or the runtime is shutting down).
    #[error("background task failed: {0}")]
    Task(String),
}

impl NarError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> NarError {
        NarError::Io {
            path: path.into(),
            source,
        }
    }
}
