use harmonia_utils_hash::{Algorithm, HashError};

/// Everything that can be wrong with a store directory, store path or content address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    /// The store directory is not a canonical absolute path.
    #[error("invalid store directory {dir:?}: {reason}")]
    InvalidStoreDir {
        /// The directory given.
        dir: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A full path that does not lie in the store directory.
    #[error("path {path:?} is not in the store directory {store_dir:?}")]
    NotInStoreDir {
        /// The path given (possibly shortened).
        path: String,
        /// The store directory it was checked against.
        store_dir: String,
    },
    /// A full path that points inside a store path where the store path itself was expected.
    #[error("path {0:?} points inside a store path, not at one")]
    HasSubpath(String),
    /// A base name too short to hold a 32-character hash, a dash and a name.
    #[error("store path base name {0:?} is too short (need '<32-char hash>-<name>')")]
    TooShort(String),
    /// The 33rd character of a base name is not the `-` between hash and name.
    #[error("store path base name {0:?} has no '-' after its 32-character hash")]
    MissingDash(String),
    /// A hash part with the wrong number of characters.
    #[error("store path hash must be 32 nix-base32 characters, got {0}")]
    HashLength(usize),
    /// A hash part with a character outside Nix's base32 alphabet.
    #[error(
        "invalid nix-base32 character {character:?} at position {position} of the store path hash"
    )]
    HashCharacter {
        /// Byte offset within the hash part.
        position: usize,
        /// The offending character.
        character: char,
    },
    /// An empty store path name.
    #[error("store path name is empty")]
    EmptyName,
    /// A name longer than Nix allows.
    #[error("store path name is {0} characters long, more than the 211 Nix allows")]
    NameTooLong(usize),
    /// A name character outside `[A-Za-z0-9+-._?=]`.
    #[error(
        "invalid character {character:?} at position {position} of store path name (allowed: A-Z a-z 0-9 + - . _ ? =)"
    )]
    NameCharacter {
        /// Byte offset within the name.
        position: usize,
        /// The offending character.
        character: char,
    },
    /// Fixed-output paths other than recursive sha256 cannot have references (Nix asserts this).
    #[error("a {0} content-addressed path cannot have references")]
    ReferencesNotAllowed(&'static str),
    /// Text paths cannot refer to themselves.
    #[error("a text path cannot refer to itself")]
    SelfReferenceNotAllowed,
    /// Text content addresses must be sha256.
    #[error("text content addresses must use sha256, not {0}")]
    TextHashNotSha256(Algorithm),
    /// A content address without a known method prefix (`text:`, `fixed:`, `fixed:r:`).
    #[error("content address {0:?} must start with 'text:', 'fixed:' or 'fixed:r:'")]
    ContentAddressMethod(String),
    /// A malformed hash inside a content address.
    #[error("invalid hash in content address: {0}")]
    ContentAddressHash(#[source] HashError),
}

/// A bounded copy of user input for error messages.
pub(crate) fn snippet(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
