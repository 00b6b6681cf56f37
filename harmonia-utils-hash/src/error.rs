use std::fmt;

use crate::Algorithm;

/// The text encodings of a digest Nix understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lower-case hexadecimal (upper case is accepted on input, as in Nix).
    Base16,
    /// Nix's own base32 (alphabet `0123456789abcdfghijklmnpqrsvwxyz`, reversed bit order).
    NixBase32,
    /// Standard base64 with padding.
    Base64,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Base16 => "base16",
            Encoding::NixBase32 => "nix-base32",
            Encoding::Base64 => "base64",
        })
    }
}

/// Everything that can be wrong with a hash given to this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The algorithm name is not one of `md5`, `sha1`, `sha256`, `sha512`.
    #[error("unknown hash algorithm {0:?} (expected md5, sha1, sha256 or sha512)")]
    UnknownAlgorithm(String),
    /// The text has neither an `algo:` prefix nor an SRI `algo-` prefix.
    #[error("hash {0:?} does not start with an algorithm ('sha256:...' or SRI 'sha256-...')")]
    MissingAlgorithm(String),
    /// Raw digest bytes of the wrong length for the algorithm.
    #[error("{algorithm} digest must be {expected} bytes, got {actual}")]
    WrongDigestLength {
        /// The algorithm the digest was meant for.
        algorithm: Algorithm,
        /// Its digest length.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// An encoded digest whose length fits no encoding of the algorithm.
    #[error(
        "{algorithm} digest of {actual} characters fits no encoding \
         (base16: {}, nix-base32: {}, base64: {})",
        algorithm.base16_len(), algorithm.nix_base32_len(), algorithm.base64_len()
    )]
    WrongEncodedLength {
        /// The algorithm the digest was meant for.
        algorithm: Algorithm,
        /// The number of characters given.
        actual: usize,
    },
    /// An SRI hash whose base64 part has the wrong length for the algorithm.
    #[error("SRI {algorithm} digest must be {expected} base64 characters, got {actual}")]
    WrongSriLength {
        /// The algorithm of the SRI hash.
        algorithm: Algorithm,
        /// The padded base64 length of that digest.
        expected: usize,
        /// The number of characters given.
        actual: usize,
    },
    /// A character that is not part of the encoding.
    #[error("invalid {encoding} character {character:?} at position {position}")]
    InvalidCharacter {
        /// The encoding being decoded.
        encoding: Encoding,
        /// Byte offset of the character within the encoded digest.
        position: usize,
        /// The offending character.
        character: char,
    },
    /// Nix-base32 text whose length is no possible encoding of whole bytes.
    #[error("{0} nix-base32 characters do not encode a whole number of bytes")]
    InvalidNixBase32Length(usize),
    /// Nix-base32 text whose first character sets bits beyond the digest (a non-canonical encoding).
    #[error(
        "nix-base32 digest is not canonical: its first character sets bits beyond the last byte"
    )]
    NonCanonicalNixBase32,
    /// Base64 text with misplaced padding or trailing bits set.
    #[error("invalid base64 padding or trailing bits")]
    InvalidBase64Padding,
    /// A hash of the wrong algorithm where one algorithm is required (e.g. a NAR hash must be sha256).
    #[error("expected a {expected} hash, got {actual}")]
    WrongAlgorithm {
        /// The algorithm required.
        expected: Algorithm,
        /// The algorithm given.
        actual: Algorithm,
    },
}

/// A bounded copy of user input for error messages, so a huge input cannot make a huge error.
pub(crate) fn snippet(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_is_bounded_and_char_safe() {
        assert_eq!(snippet("abc"), "abc");
        let long = "é".repeat(100);
        let s = snippet(&long);
        assert!(s.len() <= 83);
        assert!(s.ends_with("..."));
    }
}
