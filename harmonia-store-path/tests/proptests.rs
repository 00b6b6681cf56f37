//! Property tests: store paths, hash parts and content addresses round-trip through text; ordering is Nix's
//! (by base name); parsing never panics.

use harmonia_store_path::{ContentAddress, StoreDir, StorePath, StorePathHash, StorePathName};
use harmonia_utils_hash::{Algorithm, Hash};
use proptest::prelude::*;

const NAME: &str = "[A-Za-z0-9+\\-._?=]{1,211}";

fn store_path() -> impl Strategy<Value = StorePath> {
    (prop::array::uniform20(any::<u8>()), NAME).prop_map(|(h, n)| {
        StorePath::from_parts(
            StorePathHash::from_bytes(h),
            StorePathName::new(&n).expect("valid name"),
        )
    })
}

fn store_dir() -> impl Strategy<Value = StoreDir> {
    prop_oneof![
        Just(StoreDir::default()),
        "(/[a-z0-9_.-]{1,8}){1,4}".prop_filter_map("canonical", |s| StoreDir::new(&s).ok()),
    ]
}

proptest! {
    #[test]
    fn base_names_round_trip(p in store_path()) {
        let s = p.to_string();
        prop_assert_eq!(s.parse::<StorePath>(), Ok(p.clone()));
        prop_assert_eq!(p.hash().to_string().parse::<StorePathHash>(), Ok(*p.hash()));
        prop_assert_eq!(p.name().as_str().parse::<StorePathName>(), Ok(p.name().clone()));
    }

    #[test]
    fn full_paths_round_trip(sd in store_dir(), p in store_path(), sub in "(/[a-z.]{1,5}){0,3}") {
        let full = sd.display(&p);
        prop_assert_eq!(sd.parse_path(&full), Ok(p.clone()));
        let with_sub = format!("{full}{sub}");
        prop_assert_eq!(sd.parse_path_with_subpath(&with_sub), Ok((p, sub.as_str())));
    }

    #[test]
    fn hash_text_round_trips(s in "[0-9a-df-np-sv-z]{32}") {
        let h: StorePathHash = s.parse().expect("alphabet characters");
        prop_assert_eq!(h.to_string(), s);
    }

    /// Nix orders store paths (and `StorePathSet`s, hence references in fingerprints) by base name.
    #[test]
    fn ordering_is_base_name_order(a in store_path(), b in store_path(), same_hash in any::<bool>()) {
        let b = if same_hash { StorePath::from_parts(*a.hash(), b.name().clone()) } else { b };
        prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        prop_assert_eq!(a.hash().cmp(b.hash()), a.hash().to_string().cmp(&b.hash().to_string()));
    }

    #[test]
    fn content_addresses_round_trip(
        algo in prop::sample::select(Algorithm::ALL.to_vec()),
        data in prop::collection::vec(any::<u8>(), 0..64),
        method in 0u8..3,
    ) {
        let h = Hash::digest_of(algo, &data);
        let ca = match method {
            0 => ContentAddress::Text(Hash::digest_of(Algorithm::Sha256, &data)),
            1 => ContentAddress::Flat(h),
            _ => ContentAddress::Recursive(h),
        };
        prop_assert_eq!(ca.to_string().parse::<ContentAddress>(), Ok(ca));
    }

    #[test]
    fn parsing_never_panics(s in any::<String>()) {
        let sd = StoreDir::default();
        let _ = s.parse::<StorePath>();
        let _ = s.parse::<StorePathHash>();
        let _ = s.parse::<StorePathName>();
        let _ = s.parse::<ContentAddress>();
        let _ = s.parse::<StoreDir>();
        let _ = sd.parse_path(&s);
        let _ = sd.parse_path_with_subpath(&s);
        let full = format!("/nix/store/{s}");
        let _ = sd.parse_path(&full);
    }

    /// Near-misses of valid base names (one byte changed) give an error or a path that renders identically.
    #[test]
    fn mutated_base_names_are_rejected_or_faithful(
        p in store_path(),
        pos in any::<prop::sample::Index>(),
        c in any::<char>(),
    ) {
        let mut s = p.to_string();
        let i = pos.index(s.len());
        s.replace_range(i..i + 1, &c.to_string());
        if let Ok(q) = s.parse::<StorePath>() {
            prop_assert_eq!(q.to_string(), s);
        }
    }

    /// Computed paths are valid store paths whose name is the one asked for.
    #[test]
    fn computed_paths_are_valid(
        sd in store_dir(),
        data in prop::collection::vec(any::<u8>(), 0..64),
        name in NAME,
        refs in prop::collection::vec(store_path(), 0..4),
        self_ref in any::<bool>(),
    ) {
        let h = Hash::digest_of(Algorithm::Sha256, &data);
        let p = sd.make_source_path(&h, &refs, self_ref, &name).expect("valid name");
        prop_assert_eq!(p.name().as_str(), name.as_str());
        prop_assert_eq!(sd.parse_path(&sd.display(&p)), Ok(p.clone()));
        let q = sd.make_text_path(&h, &refs, &name).expect("valid name");
        prop_assert_ne!(p, q);
    }
}
