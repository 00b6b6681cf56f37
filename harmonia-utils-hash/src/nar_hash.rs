use std::fmt;
use std::str::FromStr;

use crate::{Algorithm, Hash, HashError};

/// The sha256 hash of a NAR serialisation (`NarHash:` in narinfo, `hash` in Nix's `ValidPaths` table).
///
/// `Display` is `sha256:<nix-base32>`; `FromStr` accepts every form [`Hash::parse`] does, but only sha256.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarHash(Hash);

impl NarHash {
    /// A NAR hash from a raw sha256 digest.
    pub fn from_digest(digest: [u8; 32]) -> NarHash {
        NarHash(Hash::from_trusted_digest(Algorithm::Sha256, &digest))
    }

    /// The sha256 of `nar`, a complete NAR serialisation in memory.
    pub fn digest_of(nar: &[u8]) -> NarHash {
        NarHash(Hash::digest_of(Algorithm::Sha256, nar))
    }

    /// The underlying sha256 [`Hash`](struct@Hash).
    pub fn hash(&self) -> &Hash {
        &self.0
    }

    /// The raw 32-byte digest.
    pub fn digest(&self) -> &[u8] {
        self.0.digest()
    }

    /// The SRI form `sha256-<base64>` (what `nix path-info --json` prints as `narHash` in newer Nix).
    pub fn to_sri(&self) -> String {
        self.0.to_sri()
    }

    /// `sha256:<hex>`, the form Nix's SQLite db stores.
    pub fn to_typed_base16(&self) -> String {
        self.0.to_typed_base16()
    }

    /// `sha256:<nix-base32>`, the form narinfo files use (same as `Display`).
    pub fn to_typed_nix_base32(&self) -> String {
        self.0.to_typed_nix_base32()
    }
}

impl TryFrom<Hash> for NarHash {
    type Error = HashError;

    fn try_from(h: Hash) -> Result<Self, Self::Error> {
        if h.algorithm() == Algorithm::Sha256 {
            Ok(NarHash(h))
        } else {
            Err(HashError::WrongAlgorithm {
                expected: Algorithm::Sha256,
                actual: h.algorithm(),
            })
        }
    }
}

impl From<NarHash> for Hash {
    fn from(h: NarHash) -> Hash {
        h.0
    }
}

impl AsRef<Hash> for NarHash {
    fn as_ref(&self) -> &Hash {
        &self.0
    }
}

impl FromStr for NarHash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NarHash::try_from(Hash::parse(s)?)
    }
}

impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarHash({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256() {
        let h = Hash::digest_of(Algorithm::Sha256, b"nar");
        let n = NarHash::try_from(h).unwrap();
        assert_eq!(n.to_string(), h.to_string());
        assert_eq!(n.to_string().parse::<NarHash>().unwrap(), n);
        assert_eq!(h.to_typed_base16().parse::<NarHash>().unwrap(), n);
        assert_eq!(h.to_sri().parse::<NarHash>().unwrap(), n);
        assert_eq!(NarHash::digest_of(b"nar"), n);
        assert_eq!(Hash::from(n), h);
        let sha1 = Hash::digest_of(Algorithm::Sha1, b"nar");
        assert_eq!(
            NarHash::try_from(sha1),
            Err(HashError::WrongAlgorithm {
                expected: Algorithm::Sha256,
                actual: Algorithm::Sha1
            })
        );
        assert!(sha1.to_string().parse::<NarHash>().is_err());
    }

    #[test]
    fn from_digest() {
        let d = [7u8; 32];
        assert_eq!(NarHash::from_digest(d).digest(), &d);
    }
}
