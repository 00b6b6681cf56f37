//! Nix hashes (md5, sha1, sha256, sha512) and their encodings: nix-base32, base16, base64 and SRI.
//!
//! A [`Hash`] can only be built valid (right length for its [`Algorithm`]); parsing accepts every form Nix
//! accepts (`algo:<base16|nix-base32|base64>` chosen by length, and SRI `algo-<base64>`) and reports what is
//! wrong with a typed [`HashError`]. [`Hasher`] hashes streams; [`compress_hash`] is Nix's XOR fold used for
//! store path hashes; [`NarHash`] is the sha256 of a NAR.
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
