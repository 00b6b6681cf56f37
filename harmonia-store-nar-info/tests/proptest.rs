//! Property tests: parse(render(x)) == x for arbitrary narinfo values, and no input panics.

use std::str::FromStr;

use harmonia_store_nar_info::NarInfo;
use harmonia_store_path::{ContentAddress, StoreDir, StorePath};
use harmonia_utils_hash::{Algorithm, Hash, NarHash, nix_base32};
use harmonia_utils_signature::Signature;
use proptest::prelude::*;

fn store_path() -> impl Strategy<Value = StorePath> {
    (
        proptest::array::uniform20(any::<u8>()),
        "[a-zA-Z0-9+_?=-][a-zA-Z0-9+._?=-]{0,40}",
    )
        .prop_map(|(hash, name)| {
            StorePath::from_str(&format!("{}-{name}", nix_base32::encode(&hash))).unwrap()
        })
}

fn sha256() -> impl Strategy<Value = Hash> {
    proptest::array::uniform32(any::<u8>()).prop_map(|d| Hash::new(Algorithm::Sha256, &d).unwrap())
}

fn signature() -> impl Strategy<Value = Signature> {
    (
        "[a-zA-Z0-9.+_-]{1,30}",
        proptest::array::uniform32(any::<u8>()),
    )
        .prop_map(|(name, half)| {
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&half);
            bytes[32..].copy_from_slice(&half);
            Signature::from_parts(&name, bytes).unwrap()
        })
}

fn content_address() -> impl Strategy<Value = ContentAddress> {
    (0u8..3, sha256()).prop_map(|(kind, h)| match kind {
        0 => ContentAddress::Text(h),
        1 => ContentAddress::Flat(h),
        _ => ContentAddress::Recursive(h),
    })
}

prop_compose! {
    fn nar_info()(
        store_path in store_path(),
        url in "[a-zA-Z0-9./_-]{1,60}",
        compression in "(none|xz|bzip2|zstd|br)",
        file_hash in proptest::option::of(sha256()),
        file_size in proptest::option::of(any::<u64>()),
        nar_hash in sha256(),
        nar_size in 1u64..,
        mut references in proptest::collection::vec(store_path(), 0..8),
        deriver in proptest::option::of(store_path()),
        system in proptest::option::of("[a-z0-9_-]{1,20}"),
        mut signatures in proptest::collection::vec(signature(), 0..4),
        ca in proptest::option::of(content_address()),
    ) -> NarInfo {
        // Parsed narinfo keeps references as a sorted set and signatures without repeats ...
        references.sort();
        references.dedup();
        let mut seen = Vec::new();
        signatures.retain(|s| if seen.contains(s) { false } else { seen.push(s.clone()); true });
        // ... in the order of Nix's set of signature strings.
        signatures.sort_by_key(|s| s.to_string());
        NarInfo {
            store_path, url, compression, file_hash, file_size,
            nar_hash: NarHash::try_from(nar_hash).unwrap(), nar_size,
            references, deriver, system, signatures, ca,
        }
    }
}

proptest! {
    #[test]
    fn render_parse_round_trip(ni in nar_info()) {
        let sd = StoreDir::default();
        let text = ni.render(&sd);
        let back = NarInfo::parse(&sd, &text).unwrap();
        prop_assert_eq!(&back, &ni);
        prop_assert_eq!(back.render(&sd), text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = NarInfo::parse(&StoreDir::default(), &text);
    }

    #[test]
    fn mutated_narinfo_never_panics(ni in nar_info(), pos in any::<usize>(), byte in any::<u8>()) {
        let sd = StoreDir::default();
        let mut bytes = ni.render(&sd).into_bytes();
        let i = pos % bytes.len();
        bytes[i] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = NarInfo::parse(&sd, &text);
        }
    }
}
