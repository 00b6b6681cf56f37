use std::fmt;

use harmonia_store_path::StorePathError;
use harmonia_utils_hash::HashError;
use harmonia_utils_signature::SignatureError;

/// The narinfo keys this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `StorePath:`
    StorePath,
    /// `URL:`
    Url,
    /// `Compression:`
    Compression,
    /// `FileHash:`
    FileHash,
    /// `FileSize:`
    FileSize,
    /// `NarHash:`
    NarHash,
    /// `NarSize:`
    NarSize,
    /// `References:`
    References,
    /// `Deriver:`
    Deriver,
    /// `System:`
    System,
    /// `Sig:`
    Sig,
    /// `CA:`
    Ca,
}

impl Field {
    /// The key as written in narinfo text.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::StorePath => "StorePath",
            Field::Url => "URL",
            Field::Compression => "Compression",
            Field::FileHash => "FileHash",
            Field::FileSize => "FileSize",
            Field::NarHash => "NarHash",
            Field::NarSize => "NarSize",
            Field::References => "References",
            Field::Deriver => "Deriver",
            Field::System => "System",
            Field::Sig => "Sig",
            Field::Ca => "CA",
        }
    }

    /// The field for a key, if it is one this crate knows.
    pub fn from_key(key: &str) -> Option<Field> {
        Some(match key {
            "StorePath" => Field::StorePath,
            "URL" => Field::Url,
            "Compression" => Field::Compression,
            "FileHash" => Field::FileHash,
            "FileSize" => Field::FileSize,
            "NarHash" => Field::NarHash,
            "NarSize" => Field::NarSize,
            "References" => Field::References,
            "Deriver" => Field::Deriver,
            "System" => Field::System,
            "Sig" => Field::Sig,
            "CA" => Field::Ca,
            _ => return None,
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why narinfo text could not be parsed. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarInfoError {
    /// The text is longer than [`crate::MAX_NARINFO_LEN`].
    #[error("narinfo is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// Length of the text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A line is not of the form `Key: value`.
    #[error("line {line}: expected 'Key: value', got {text:?}")]
    MalformedLine {
        /// Line number.
        line: usize,
        /// The start of the offending line.
        text: String,
    },
    /// A key other than `Sig` appears twice.
    #[error("line {line}: duplicate {field} (first on line {first_line})")]
    DuplicateField {
        /// The repeated field.
        field: Field,
        /// Line of the repetition.
        line: usize,
        /// Line where it first appeared.
        first_line: usize,
    },
    /// A required field is missing or empty.
    #[error("{field} missing")]
    MissingField {
        /// The missing field.
        field: Field,
    },
    /// A store path (StorePath, References, Deriver) is not valid.
    #[error("line {line}: invalid store path in {field} {value:?}: {source}")]
    InvalidStorePath {
        /// The field holding the path.
        field: Field,
        /// Line number.
        line: usize,
        /// The offending value (shortened if long).
        value: String,
        /// What is wrong with it.
        source: StorePathError,
    },
    /// A hash (FileHash, NarHash) is not valid.
    #[error("line {line}: invalid hash in {field}: {source}")]
    InvalidHash {
        /// The field holding the hash.
        field: Field,
        /// Line number.
        line: usize,
        /// What is wrong with it.
        source: HashError,
    },
    /// A size (FileSize, NarSize) is not a decimal number that fits in 64 bits.
    #[error("line {line}: invalid {field} {value:?}: expected a decimal number of bytes")]
    InvalidSize {
        /// The field holding the size.
        field: Field,
        /// Line number.
        line: usize,
        /// The offending value (shortened if long).
        value: String,
    },
    /// `NarSize: 0`, which Nix rejects.
    #[error("line {line}: NarSize is 0")]
    ZeroNarSize {
        /// Line number.
        line: usize,
    },
    /// A `Sig:` value is not `name:base64(64 bytes)`.
    #[error("line {line}: invalid Sig: {source}")]
    InvalidSignature {
        /// Line number.
        line: usize,
        /// What is wrong with it.
        source: SignatureError,
    },
    /// A `CA:` value is not a content address Nix understands.
    #[error("line {line}: invalid CA {value:?}: {reason}")]
    InvalidContentAddress {
        /// Line number.
        line: usize,
        /// The offending value (shortened if long).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// At most this many characters of an offending value are quoted in an error.
const SNIPPET_CHARS: usize = 120;

/// A bounded copy of `s` for error messages.
pub(crate) fn snippet(s: &str) -> String {
    match s.char_indices().nth(SNIPPET_CHARS) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}
