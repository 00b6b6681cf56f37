use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Encoding, HashError, snippet};
use crate::{Algorithm, Hasher, base16, nix_base32};

/// The longest digest of any [`Algorithm`] (sha512), in bytes.
pub const MAX_DIGEST_LEN: usize = 64;

/// A digest together with its algorithm (Nix's `Hash`); only constructible with the right length.
///
/// `Display` and `FromStr` use the typed nix-base32 form `sha256:<nix-base32>` that narinfo files use;
/// parsing also accepts base16, base64 and SRI (`sha256-<base64>`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash {
    algorithm: Algorithm,
    // Bytes past `algorithm.digest_len()` are always zero, so the derived traits are correct.
    bytes: [u8; MAX_DIGEST_LEN],
}

impl Hash {
    /// A hash from raw digest bytes, which must be exactly `algo.digest_len()` long.
    pub fn new(algo: Algorithm, digest: &[u8]) -> Result<Hash, HashError> {
        if digest.len() != algo.digest_len() {
            return Err(HashError::WrongDigestLength {
                algorithm: algo,
                expected: algo.digest_len(),
                actual: digest.len(),
            });
        }
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        bytes[..digest.len()].copy_from_slice(digest);
        Ok(Hash {
            algorithm: algo,
            bytes,
        })
    }

    /// A hash from the output of a digest implementation that is known to be `algo.digest_len()` long.
    pub(crate) fn from_trusted_digest(algo: Algorithm, digest: &[u8]) -> Hash {
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        for (dst, src) in bytes.iter_mut().zip(digest.iter().take(algo.digest_len())) {
            *dst = *src;
        }
        Hash {
            algorithm: algo,
            bytes,
        }
    }

    /// Hashes `data` in one go.
    pub fn digest_of(algo: Algorithm, data: &[u8]) -> Hash {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }

    /// The algorithm of this hash.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw digest, `algorithm().digest_len()` bytes.
    pub fn digest(&self) -> &[u8] {
        &self.bytes[..self.algorithm.digest_len()]
    }

    /// The digest in nix-base32, without the algorithm.
    pub fn to_nix_base32(&self) -> String {
        nix_base32::encode(self.digest())
    }

    /// The digest in lower-case base16 (hex), without the algorithm.
    pub fn to_base16(&self) -> String {
        base16::encode(self.digest())
    }

    /// The digest in padded standard base64, without the algorithm.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.digest())
    }

    /// The SRI form `sha256-<base64>` (what `nix hash to-sri` prints).
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algorithm, self.to_base64())
    }

    /// The typed nix-base32 form `sha256:<nix-base32>` that narinfo files use.
    pub fn to_typed_nix_base32(&self) -> String {
        format!("{}:{}", self.algorithm, self.to_nix_base32())
    }

    /// The typed base16 form `sha256:<hex>` (what Nix's SQLite db stores and store path fingerprints use).
    pub fn to_typed_base16(&self) -> String {
        format!("{}:{}", self.algorithm, self.to_base16())
    }

    /// Parses a hash with its algorithm: `algo:<digest>` (digest in base16, nix-base32 or base64, told apart
    /// by length, as Nix does) or SRI `algo-<base64>`.
    pub fn parse(s: &str) -> Result<Hash, HashError> {
        if let Some((algo, digest)) = s.split_once(':') {
            Hash::parse_digest(algo.parse()?, digest)
        } else if let Some((algo, digest)) = s.split_once('-') {
            let algo: Algorithm = algo.parse()?;
            if digest.len() != algo.base64_len() {
                return Err(HashError::WrongSriLength {
                    algorithm: algo,
                    expected: algo.base64_len(),
                    actual: digest.len(),
                });
            }
            decode_base64(algo, digest)
        } else {
            Err(HashError::MissingAlgorithm(snippet(s)))
        }
    }

    /// Parses a bare digest of a known algorithm; the encoding (base16, nix-base32, base64) is chosen by length.
    pub fn parse_digest(algo: Algorithm, s: &str) -> Result<Hash, HashError> {
        let len = s.len();
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        let out = &mut bytes[..algo.digest_len()];
        if len == algo.base16_len() {
            base16::decode_into(s, out)?;
        } else if len == algo.nix_base32_len() {
            nix_base32::decode_into(s, out)?;
        } else if len == algo.base64_len() {
            return decode_base64(algo, s);
        } else {
            return Err(HashError::WrongEncodedLength {
                algorithm: algo,
                actual: len,
            });
        }
        Ok(Hash {
            algorithm: algo,
            bytes,
        })
    }
}

/// Decodes padded standard base64 of exactly one digest of `algo`; the caller checked the length.
fn decode_base64(algo: Algorithm, s: &str) -> Result<Hash, HashError> {
    // Room for the decoder's worst-case estimate of a `base64_len` input (a multiple of 3 bytes).
    let mut buf = [0u8; MAX_DIGEST_LEN + 3];
    let n = STANDARD.decode_slice(s, &mut buf).map_err(|e| match e {
        base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidByte(position, _)) => {
            HashError::InvalidCharacter {
                encoding: Encoding::Base64,
                position,
                character: s
                    .get(position..)
                    .and_then(|r| r.chars().next())
                    .unwrap_or(char::REPLACEMENT_CHARACTER),
            }
        }
        _ => HashError::InvalidBase64Padding,
    })?;
    if n != algo.digest_len() {
        return Err(HashError::InvalidBase64Padding);
    }
    Hash::new(algo, &buf[..n])
}

impl fmt::Display for Hash {
    /// `sha256:<nix-base32>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.to_nix_base32())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl FromStr for Hash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed with Nix 2.8 (`nix hash to-base32/to-base64/to-sri --type ALGO HEX`) for the hash of
    // the empty string and of "hello\n".
    const EMPTY_SHA256_HEX: &str =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_SHA256_NIX32: &str = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    const EMPTY_SHA256_B64: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn empty_sha256_encodings() {
        let h = Hash::digest_of(Algorithm::Sha256, b"");
        assert_eq!(h.to_base16(), EMPTY_SHA256_HEX);
        assert_eq!(h.to_nix_base32(), EMPTY_SHA256_NIX32);
        assert_eq!(h.to_base64(), EMPTY_SHA256_B64);
        assert_eq!(h.to_sri(), format!("sha256-{EMPTY_SHA256_B64}"));
        assert_eq!(h.to_string(), format!("sha256:{EMPTY_SHA256_NIX32}"));
        for s in [
            format!("sha256:{EMPTY_SHA256_HEX}"),
            format!("sha256:{}", EMPTY_SHA256_HEX.to_uppercase()),
            format!("sha256:{EMPTY_SHA256_NIX32}"),
            format!("sha256:{EMPTY_SHA256_B64}"),
            format!("sha256-{EMPTY_SHA256_B64}"),
        ] {
            assert_eq!(s.parse::<Hash>().unwrap(), h, "{s}");
        }
    }

    #[test]
    fn all_algorithms_round_trip() {
        for algo in Algorithm::ALL {
            let h = Hash::digest_of(algo, b"hello\n");
            assert_eq!(h.digest().len(), algo.digest_len());
            for s in [
                h.to_string(),
                h.to_sri(),
                h.to_typed_base16(),
                format!("{algo}:{}", h.to_base64()),
            ] {
                assert_eq!(Hash::parse(&s).unwrap(), h, "{s}");
            }
            for s in [h.to_base16(), h.to_nix_base32(), h.to_base64()] {
                assert_eq!(Hash::parse_digest(algo, &s).unwrap(), h, "{s}");
            }
        }
    }

    #[test]
    fn new_checks_length() {
        assert_eq!(
            Hash::new(Algorithm::Sha1, &[0; 32]),
            Err(HashError::WrongDigestLength {
                algorithm: Algorithm::Sha1,
                expected: 20,
                actual: 32
            })
        );
        assert!(Hash::new(Algorithm::Sha1, &[0; 20]).is_ok());
    }

    #[test]
    fn bad_inputs_give_typed_errors() {
        let cases: Vec<(String, HashError)> = vec![
            ("".into(), HashError::MissingAlgorithm("".into())),
            ("abc".into(), HashError::MissingAlgorithm("abc".into())),
            ("sha3:00".into(), HashError::UnknownAlgorithm("sha3".into())),
            (
                "SHA256:00".into(),
                HashError::UnknownAlgorithm("SHA256".into()),
            ),
            (
                "blake-abc".into(),
                HashError::UnknownAlgorithm("blake".into()),
            ),
            (
                "sha256:".into(),
                HashError::WrongEncodedLength {
                    algorithm: Algorithm::Sha256,
                    actual: 0,
                },
            ),
            (
                "sha256:abc".into(),
                HashError::WrongEncodedLength {
                    algorithm: Algorithm::Sha256,
                    actual: 3,
                },
            ),
            (
                format!("sha256:{}", "g".repeat(64)),
                HashError::InvalidCharacter {
                    encoding: Encoding::Base16,
                    position: 0,
                    character: 'g',
                },
            ),
            (
                format!("sha256:{}e", &EMPTY_SHA256_NIX32[..51]),
                HashError::InvalidCharacter {
                    encoding: Encoding::NixBase32,
                    position: 51,
                    character: 'e',
                },
            ),
            (
                format!("sha256:z{}", &EMPTY_SHA256_NIX32[1..]),
                HashError::NonCanonicalNixBase32,
            ),
            (
                format!("sha256:{}!", &EMPTY_SHA256_B64[..43]),
                HashError::InvalidCharacter {
                    encoding: Encoding::Base64,
                    position: 43,
                    character: '!',
                },
            ),
            (
                format!("sha256-{}", &EMPTY_SHA256_B64[..43]),
                HashError::WrongSriLength {
                    algorithm: Algorithm::Sha256,
                    expected: 44,
                    actual: 43,
                },
            ),
            // Trailing bits set in the last base64 character ('U' -> 'V').
            (
                "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=".into(),
                HashError::InvalidBase64Padding,
            ),
            // Nix 2.8 accepts SRI without padding and stops at the first '=', ignoring what follows; only
            // the canonical padded text is accepted here.
            (
                "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU".into(),
                HashError::WrongSriLength {
                    algorithm: Algorithm::Sha256,
                    expected: 44,
                    actual: 43,
                },
            ),
            (
                "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=garbage".into(),
                HashError::WrongSriLength {
                    algorithm: Algorithm::Sha256,
                    expected: 44,
                    actual: 51,
                },
            ),
            (
                "md5-kAFQmDzST7DWlj99KOF/cg=A".into(),
                HashError::InvalidCharacter {
                    encoding: Encoding::Base64,
                    position: 22,
                    character: '=',
                },
            ),
            // 44 characters without padding decode to 33 bytes.
            (
                "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFUA".into(),
                HashError::InvalidBase64Padding,
            ),
            (
                "sha256-=7DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into(),
                HashError::InvalidCharacter {
                    encoding: Encoding::Base64,
                    position: 0,
                    character: '=',
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(Hash::parse(&input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn long_garbage_gives_short_error() {
        let s = "x".repeat(1 << 20);
        let err = Hash::parse(&s).unwrap_err();
        assert!(err.to_string().len() < 200);
    }
}
