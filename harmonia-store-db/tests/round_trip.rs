//! Property: whatever we register reads back the same (after Nix's normalisations), and a batch that fails
//! leaves the database unchanged.

use std::collections::BTreeSet;

use harmonia_store_db::{StoreDb, ValidPathInfo};
use harmonia_store_path::{StoreDir, StorePath, StorePathHash, StorePathName};
use harmonia_utils_hash::NarHash;
use proptest::prelude::*;

fn store_path() -> impl Strategy<Value = StorePath> {
    (any::<[u8; 20]>(), "[a-zA-Z0-9+._?=-]{0,40}").prop_map(|(hash, name)| {
        // A name must not start with '.'; prefix one so the generated text is always a valid name.
        let name = StorePathName::new(&format!("p{name}")).expect("valid name");
        StorePath::from_parts(StorePathHash::from_bytes(hash), name)
    })
}

fn signature() -> impl Strategy<Value = String> {
    "[a-z0-9.-]{1,20}:[A-Za-z0-9+/=]{1,90}"
}

/// A batch of distinct paths; each may refer to itself and to any path of the batch listed before it.
fn batch() -> impl Strategy<Value = Vec<ValidPathInfo>> {
    prop::collection::btree_set(store_path(), 1..12).prop_flat_map(|paths| {
        let paths: Vec<StorePath> = paths.into_iter().collect();
        let n = paths.len();
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let earlier = paths[..=i].to_vec();
                (
                    Just(p.clone()),
                    any::<[u8; 32]>(),
                    0..=i64::MAX as u64,
                    0..=i64::MAX,
                    prop::option::of(store_path()),
                    any::<bool>(),
                    prop::collection::vec(signature(), 0..4),
                    prop::collection::vec(prop::sample::select(earlier), 0..=n.min(5)),
                )
                    .prop_map(
                        |(
                            path,
                            digest,
                            nar_size,
                            time,
                            deriver,
                            ultimate,
                            signatures,
                            references,
                        )| {
                            ValidPathInfo {
                                path,
                                nar_hash: NarHash::from_digest(digest),
                                nar_size,
                                registration_time: time,
                                deriver,
                                ultimate,
                                signatures,
                                ca: None,
                                references,
                            }
                        },
                    )
            })
            .collect::<Vec<_>>()
    })
}

/// What Nix reads back: signatures and references as sorted sets, registration time 0 meaning "now".
fn normalised(mut info: ValidPathInfo) -> ValidPathInfo {
    info.signatures = info
        .signatures
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    info.references = info
        .references
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    info
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn registered_infos_read_back(infos in batch()) {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("db.sqlite");
        let mut db = StoreDb::open_read_write(&db_path, StoreDir::default()).unwrap();
        db.register_valid_paths(&infos).unwrap();
        let ro = StoreDb::open_read_only(&db_path, StoreDir::default()).unwrap();
        for info in &infos {
            let mut got = ro.query_path_info(&info.path).unwrap().expect("registered");
            if info.registration_time == 0 {
                prop_assert!(got.registration_time > 0);
                got.registration_time = 0;
            }
            let by_hash = ro.query_path_info_by_hash_part(info.path.hash()).unwrap();
            prop_assert_eq!(by_hash.as_ref().map(|i| &i.path), Some(&info.path));
            prop_assert_eq!(got, normalised(info.clone()));
            // Referrers are the inverse of references.
            for r in &info.references {
                prop_assert!(ro.query_referrers(r).unwrap().contains(&info.path));
            }
        }
        let mut all: Vec<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
        all.sort();
        prop_assert_eq!(ro.query_all_valid_paths().unwrap(), all);
    }

    #[test]
    fn a_failing_batch_changes_nothing(infos in batch(), missing in store_path()) {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("db.sqlite");
        let mut db = StoreDb::open_read_write(&db_path, StoreDir::default()).unwrap();
        prop_assume!(!infos.iter().any(|i| i.path == missing));
        let mut broken = infos.clone();
        let last = broken.len() - 1;
        broken[last].references.push(missing);
        prop_assert!(db.register_valid_paths(&broken).is_err());
        prop_assert_eq!(db.query_all_valid_paths().unwrap(), vec![]);
        db.register_valid_paths(&infos).unwrap();
        prop_assert_eq!(db.query_all_valid_paths().unwrap().len(), infos.len());
    }
}

proptest! {
    #[test]
    fn derivation_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), prefix in any::<bool>()) {
        let mut input = if prefix { b"Derive([(\"out\",\"".to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        let _ = harmonia_store_db::parse_derivation_outputs(&StoreDir::default(), &input);
    }
}
