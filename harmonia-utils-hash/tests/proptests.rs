//! Property tests: every encoding round-trips, nix-base32 is canonical, parsing never panics.

use harmonia_utils_hash::{Algorithm, Hash, Hasher, NarHash, compress_hash, nix_base32};
use proptest::prelude::*;

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

fn hash() -> impl Strategy<Value = Hash> {
    algorithm().prop_flat_map(|algo| {
        prop::collection::vec(any::<u8>(), algo.digest_len())
            .prop_map(move |d| Hash::new(algo, &d).expect("digest of the right length"))
    })
}

proptest! {
    #[test]
    fn every_encoding_round_trips(h in hash()) {
        let algo = h.algorithm();
        for text in [
            h.to_string(),
            h.to_typed_nix_base32(),
            h.to_typed_base16(),
            format!("{algo}:{}", h.to_base16().to_uppercase()),
            format!("{algo}:{}", h.to_base64()),
            h.to_sri(),
        ] {
            prop_assert_eq!(Hash::parse(&text), Ok(h), "{}", text);
            prop_assert_eq!(text.parse::<Hash>(), Ok(h));
        }
        for bare in [h.to_base16(), h.to_nix_base32(), h.to_base64()] {
            prop_assert_eq!(Hash::parse_digest(algo, &bare), Ok(h));
        }
        prop_assert_eq!(h.to_nix_base32().len(), algo.nix_base32_len());
        prop_assert_eq!(h.to_base64().len(), algo.base64_len());
        prop_assert_eq!(Hash::new(algo, h.digest()), Ok(h));
    }

    #[test]
    fn nar_hash_round_trips(d in prop::array::uniform32(any::<u8>())) {
        let n = NarHash::from_digest(d);
        prop_assert_eq!(n.to_string().parse::<NarHash>(), Ok(n));
        prop_assert_eq!(n.to_sri().parse::<NarHash>(), Ok(n));
        prop_assert_eq!(n.to_typed_base16().parse::<NarHash>(), Ok(n));
    }

    #[test]
    fn nix_base32_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let text = nix_base32::encode(&bytes);
        prop_assert_eq!(text.len(), nix_base32::encoded_len(bytes.len()));
        prop_assert_eq!(nix_base32::decode(&text), Ok(bytes));
    }

    /// Whatever decodes re-encodes to the same text: one encoding per byte string.
    #[test]
    fn nix_base32_is_canonical(s in "[0-9a-z]{0,110}") {
        if let Ok(bytes) = nix_base32::decode(&s) {
            prop_assert_eq!(nix_base32::encode(&bytes), s);
        }
    }

    /// Strings of exactly the right length for an encoding: whatever parses renders back to the same text
    /// (hex modulo case).
    #[test]
    fn parse_is_faithful(
        algo in algorithm(),
        enc in 0usize..3,
        sep in prop::sample::select(vec![':', '-']),
        seed in prop::collection::vec(any::<u8>(), 128),
    ) {
        let (alphabet, len): (&[u8], usize) = match enc {
            0 => (b"0123456789abcdefABCDEF", algo.base16_len()),
            1 => (b"0123456789abcdfghijklmnpqrsvwxyz", algo.nix_base32_len()),
            _ => (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", algo.base64_len()),
        };
        let digest: String = seed[..len].iter().map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()])).collect();
        let s = format!("{algo}{sep}{digest}");
        if let Ok(h) = Hash::parse(&s) {
            prop_assert_eq!(h.algorithm(), algo);
            let rendered = [
                h.to_typed_nix_base32(),
                h.to_typed_base16(),
                format!("{algo}:{}", h.to_base64()),
                h.to_sri(),
            ];
            prop_assert!(rendered.iter().any(|r| r.eq_ignore_ascii_case(&s)), "{} parsed as {}", s, h);
        }
    }

    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let _ = Hash::parse(&s);
        let _ = nix_base32::decode(&s);
        for algo in Algorithm::ALL {
            let _ = Hash::parse_digest(algo, &s);
        }
    }

    #[test]
    fn hasher_is_chunking_invariant(
        data in prop::collection::vec(any::<u8>(), 0..4096),
        cut in any::<prop::sample::Index>(),
        algo in algorithm(),
    ) {
        let cut = cut.index(data.len() + 1);
        let mut h = Hasher::new(algo);
        h.update(&data[..cut]);
        h.update(&data[cut..]);
        prop_assert_eq!(h.bytes_hashed(), data.len() as u64);
        prop_assert_eq!(h.finish(), Hash::digest_of(algo, &data));
    }

    #[test]
    fn compress_hash_preserves_xor(digest in prop::collection::vec(any::<u8>(), 0..100), n in 1usize..40) {
        let out = compress_hash(&digest, n);
        prop_assert_eq!(out.len(), n);
        let x_in = digest.iter().fold(0u8, |a, b| a ^ b);
        let x_out = out.iter().fold(0u8, |a, b| a ^ b);
        prop_assert_eq!(x_in, x_out);
        if digest.len() <= n {
            prop_assert_eq!(&out[..digest.len()], &digest[..]);
        }
    }
}
