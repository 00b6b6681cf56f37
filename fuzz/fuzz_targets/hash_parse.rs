//! Fuzzes `Hash::parse` (`algo:<base16|nix32|base64>` and SRI) and `nix_base32::decode`.
//!
//! Beyond "never panics": whatever parses must render and parse back to the same value, in every
//! encoding, and nix-base32 decoding must be canonical (one text per byte string).
#![no_main]

use harmonia_utils_hash::{Hash, nix_base32};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(hash) = Hash::parse(s) {
        let algo = hash.algorithm();
        assert_eq!(hash.digest().len(), algo.digest_len());
        for rendered in [
            hash.to_string(),
            hash.to_typed_nix_base32(),
            hash.to_sri(),
            format!("{algo}:{}", hash.to_base16()),
            format!("{algo}:{}", hash.to_base64()),
        ] {
            assert_eq!(Hash::parse(&rendered).ok(), Some(hash), "{s:?} -> {rendered:?}");
        }
        assert_eq!(s.parse::<Hash>().ok(), Some(hash));
        for digest in [hash.to_nix_base32(), hash.to_base16(), hash.to_base64()] {
            assert_eq!(Hash::parse_digest(algo, &digest).ok(), Some(hash));
        }
    }

    if let Ok(bytes) = nix_base32::decode(s) {
        assert_eq!(nix_base32::encode(&bytes), s, "non-canonical nix-base32 accepted");
    }
    // Any byte string encodes to text that decodes back to it.
    let encoded = nix_base32::encode(data);
    assert_eq!(nix_base32::decode(&encoded).ok().as_deref(), Some(data));
});
