//! Nix hashes (md5, sha1, sha256, sha512) and their encodings: nix-base32, base16, base64 and SRI.
//!
//! A [`Hash`](struct@Hash) can only be built valid (right length for its [`Algorithm`]); parsing accepts every form Nix
//! accepts (`algo:<base16|nix-base32|base64>` chosen by length, and SRI `algo-<base64>`) and reports what is
//! wrong with a typed [`HashError`]. [`Hasher`] hashes streams; [`compress_hash`] is Nix's XOR fold used for
//! store path hashes; [`NarHash`] is the sha256 of a NAR.
//!
//! Parsing is as permissive as Nix 2.8 about encodings (upper-case hex is fine) but only accepts canonical
//! digests: nix-base32 whose first character sets bits beyond the digest is rejected (as Nix does), and so is
//! base64 with non-zero trailing bits, without its padding, or with anything after the padding (SRI forms
//! that Nix 2.8 silently accepts, e.g. `sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU`), so every
//! accepted text renders back identically.
//!
//! ```
//! use harmonia_utils_hash::{Algorithm, Hash, NarHash};
//!
//! let h = Hash::digest_of(Algorithm::Sha256, b"");
//! assert_eq!(h.to_string(), "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
//! assert_eq!(h.to_sri(), "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
//! assert_eq!(Hash::parse(&h.to_sri()), Ok(h));
//! assert_eq!(
//!     "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse::<Hash>(),
//!     Ok(h)
//! );
//! assert!(NarHash::try_from(h).is_ok());
//! assert!("sha256:tooshort".parse::<Hash>().is_err());
//! ```
#![deny(unsafe_code)]

mod algorithm;
mod base16;
mod error;
mod hash;
mod hasher;
mod nar_hash;
pub mod nix_base32;

pub use algorithm::Algorithm;
pub use error::{Encoding, HashError};
pub use hash::{Hash, MAX_DIGEST_LEN};
pub use hasher::Hasher;
pub use nar_hash::NarHash;

/// Nix's `compressHash`: XOR-fold `digest` into `out_len` bytes (byte `i` goes to `i % out_len`).
///
/// Store path hashes are the sha256 of a fingerprint folded to 20 bytes. An `out_len` of 0 gives an empty
/// vector.
pub fn compress_hash(digest: &[u8], out_len: usize) -> Vec<u8> {
    let mut out = vec![0u8; out_len];
    if out_len == 0 {
        return out;
    }
    for (i, b) in digest.iter().enumerate() {
        out[i % out_len] ^= b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_hash_folds_with_xor() {
        let digest: Vec<u8> = (0u8..32).collect();
        let folded = compress_hash(&digest, 20);
        assert_eq!(folded.len(), 20);
        for (i, b) in folded.iter().enumerate() {
            let expected = if i < 12 {
                (i as u8) ^ (i as u8 + 20)
            } else {
                i as u8
            };
            assert_eq!(*b, expected, "byte {i}");
        }
        assert_eq!(compress_hash(&digest, 32), digest);
        assert_eq!(compress_hash(&[1, 2, 3], 0), Vec::<u8>::new());
        assert_eq!(compress_hash(&[1, 2, 3], 1), vec![1 ^ 2 ^ 3]);
    }
}
