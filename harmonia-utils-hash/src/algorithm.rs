use std::fmt;
use std::str::FromStr;

use crate::error::HashError;

/// A hash algorithm Nix knows, named as Nix names it (`md5`, `sha1`, `sha256`, `sha512`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// MD5, 16-byte digests.
    Md5,
    /// SHA-1, 20-byte digests.
    Sha1,
    /// SHA-256, 32-byte digests (NAR hashes, store paths).
    Sha256,
    /// SHA-512, 64-byte digests.
    Sha512,
}

impl Algorithm {
    /// Every algorithm, weakest first.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Sha512,
    ];

    /// Length of a digest in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    /// The name Nix uses (`"sha256"` ...).
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of a digest in base16 (hex) characters.
    pub const fn base16_len(self) -> usize {
        self.digest_len() * 2
    }

    /// Length of a digest in nix-base32 characters.
    pub const fn nix_base32_len(self) -> usize {
        crate::nix_base32::encoded_len(self.digest_len())
    }

    /// Length of a digest in padded base64 characters.
    pub const fn base64_len(self) -> usize {
        self.digest_len().div_ceil(3) * 4
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = HashError;

    /// Parses the lower-case names Nix accepts; anything else is [`HashError::UnknownAlgorithm`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "md5" => Ok(Algorithm::Md5),
            "sha1" => Ok(Algorithm::Sha1),
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(HashError::UnknownAlgorithm(crate::error::snippet(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.to_string().parse::<Algorithm>().unwrap(), a);
        }
    }

    #[test]
    fn encoded_lengths_match_nix() {
        // Lengths Nix prints for each algorithm (`nix hash to-base32`, `to-base64`).
        assert_eq!(Algorithm::Md5.nix_base32_len(), 26);
        assert_eq!(Algorithm::Sha1.nix_base32_len(), 32);
        assert_eq!(Algorithm::Sha256.nix_base32_len(), 52);
        assert_eq!(Algorithm::Sha512.nix_base32_len(), 103);
        assert_eq!(Algorithm::Md5.base64_len(), 24);
        assert_eq!(Algorithm::Sha1.base64_len(), 28);
        assert_eq!(Algorithm::Sha256.base64_len(), 44);
        assert_eq!(Algorithm::Sha512.base64_len(), 88);
    }

    #[test]
    fn unknown_names_are_rejected() {
        for bad in ["", "SHA256", "sha3", "sha256 ", "blake3"] {
            assert!(
                matches!(
                    bad.parse::<Algorithm>(),
                    Err(HashError::UnknownAlgorithm(_))
                ),
                "{bad:?}"
            );
        }
    }
}
