//! The cache's hot path: path info for a narinfo request, by hash part, on a store of 20,000 paths.
//!
//! `cargo bench -p harmonia-store-db`. The database is synthetic (registered through our own write API) so
//! the numbers measure SQLite and our decoding, not Nix.
// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use harmonia_store_db::{StoreDb, ValidPathInfo};
use harmonia_store_path::{StoreDir, StorePath, StorePathHash, StorePathName};
use harmonia_utils_hash::NarHash;

const PATHS: usize = 20_000;
const REFS: usize = 8;

fn path(i: usize) -> StorePath {
    // Spread the hashes over the whole key space, as real store path hashes are.
    let mut bytes = [0u8; 20];
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    bytes[..8].copy_from_slice(&x.to_be_bytes());
    bytes[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    let name = StorePathName::new(&format!("package-{i}-1.0")).expect("name");
    StorePath::from_parts(StorePathHash::from_bytes(bytes), name)
}

fn build_db(dir: &std::path::Path) -> std::path::PathBuf {
    let db_path = dir.join("db.sqlite");
    let mut db = StoreDb::open_read_write(&db_path, StoreDir::default()).expect("create db");
    let infos: Vec<ValidPathInfo> = (0..PATHS)
        .map(|i| ValidPathInfo {
            path: path(i),
            nar_hash: NarHash::digest_of(&i.to_le_bytes()),
            nar_size: 1000 + i as u64,
            registration_time: 1_700_000_000,
            deriver: Some(StorePath::from_parts(
                *path(i + PATHS).hash(),
                StorePathName::new("package.drv").expect("name"),
            )),
            ultimate: true,
            signatures: vec![format!("cache.example.org-1:{}", "A".repeat(86) + "==")],
            ca: None,
            // Every path refers to up to REFS earlier ones.
            references: (1..=REFS)
                .filter(|k| *k <= i)
                .map(|k| path(i - k))
                .collect(),
        })
        .collect();
    for chunk in infos.chunks(2000) {
        db.register_valid_paths(chunk).expect("register");
    }
    db_path
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = build_db(dir.path());
    let db = StoreDb::open_read_only(&db_path, StoreDir::default()).expect("open");
    let mut i = 0usize;
    c.bench_function("query_path_info_by_hash_part (hit, 8 refs)", |b| {
        b.iter(|| {
            i = (i + 7919) % PATHS;
            let info = db
                .query_path_info_by_hash_part(path(i).hash())
                .expect("query");
            assert!(info.is_some());
            info
        })
    });
    c.bench_function("query_path_info_by_hash_part (miss)", |b| {
        b.iter(|| {
            i = (i + 7919) % PATHS;
            db.query_path_info_by_hash_part(path(i + 2 * PATHS).hash())
                .expect("query")
        })
    });
    c.bench_function("query_path_info (hit, 8 refs)", |b| {
        b.iter(|| {
            i = (i + 7919) % PATHS;
            db.query_path_info(&path(i)).expect("query")
        })
    });
    c.bench_function("is_valid_path (hit)", |b| {
        b.iter(|| {
            i = (i + 7919) % PATHS;
            db.is_valid_path(&path(i)).expect("query")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
