//! Broken databases and bad arguments give typed errors, never a panic.

mod common;

use std::fs;

use common::*;
use harmonia_store_db::{DbError, DrvOutput, StoreDb};
use harmonia_store_path::StoreDir;
use harmonia_test_support::{FixtureStore, hash_part, pseudo_random_bytes, standard_fixture};
use rusqlite::Connection;

fn open_ro_err(path: &std::path::Path) -> DbError {
    match StoreDb::open_read_only(path, StoreDir::default()) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_random_and_empty_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sqlite");
    assert!(matches!(open_ro_err(&missing), DbError::Open { .. }));

    let random = dir.path().join("random.sqlite");
    fs::write(&random, pseudo_random_bytes(7, 64 * 1024)).unwrap();
    let e = open_ro_err(&random);
    assert!(matches!(e, DbError::Open { .. }), "{e}");
    assert!(e.to_string().contains("random.sqlite"), "{e}");

    // A valid SQLite file without Nix's tables.
    let empty = dir.path().join("empty.sqlite");
    Connection::open(&empty)
        .unwrap()
        .execute_batch("create table Unrelated (x integer);")
        .unwrap();
    assert!(matches!(open_ro_err(&empty), DbError::NotNixDb { .. }));

    // An old layout: ValidPaths without the schema-10 columns.
    let old = dir.path().join("old.sqlite");
    Connection::open(&old)
        .unwrap()
        .execute_batch(
            "create table ValidPaths (id integer primary key, path text unique not null, hash text not null,
                 registrationTime integer not null, deriver text, narSize integer);
             create table Refs (referrer integer, reference integer);
             create table DerivationOutputs (drv integer, id text, path text);",
        )
        .unwrap();
    let e = open_ro_err(&old);
    assert!(
        matches!(&e, DbError::NotNixDb { reason, .. } if reason.contains("ultimate")),
        "{e}"
    );
}

#[test]
fn truncated_database_gives_sqlite_errors() {
    let fx = standard_fixture();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("db.sqlite");
    // Nix has checkpointed and removed its WAL when its last process exited: the main file is complete.
    let bytes = fs::read(fx.store.db_path()).unwrap();
    assert!(bytes.len() > 4096 * 3, "db unexpectedly small");
    fs::write(&copy, &bytes[..bytes.len() / 2]).unwrap();
    // Opening may succeed (the header is intact); some query must then fail with a typed error.
    match StoreDb::open_read_only(&copy, StoreDir::default()) {
        Err(e) => assert!(
            matches!(e, DbError::Open { .. } | DbError::Sqlite { .. }),
            "{e}"
        ),
        Ok(db) => {
            let results: Vec<Result<(), DbError>> = vec![
                db.query_all_valid_paths().map(drop),
                db.query_path_info(&sp(&fx.paths.top)).map(drop),
                db.query_referrers(&sp(&fx.paths.dep)).map(drop),
            ];
            assert!(
                results.iter().any(Result::is_err),
                "a truncated database answered every query"
            );
            for r in results {
                if let Err(e) = r {
                    assert!(
                        matches!(e, DbError::Sqlite { .. } | DbError::CorruptRow { .. }),
                        "{e}"
                    );
                }
            }
        }
    }
}

/// A copy of a real Nix database we can vandalise.
fn vandalised_copy(
    fx: &harmonia_test_support::StandardFixture,
    sql: &str,
) -> (tempfile::TempDir, StoreDb) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("db.sqlite");
    fs::copy(fx.store.db_path(), &copy).unwrap();
    Connection::open(&copy).unwrap().execute_batch(sql).unwrap();
    let db = StoreDb::open_read_only(&copy, StoreDir::default()).expect("open vandalised copy");
    (dir, db)
}

fn expect_corrupt<T: std::fmt::Debug>(r: Result<T, DbError>, column: &str) {
    match r {
        Err(DbError::CorruptRow { column: c, .. }) if c == column => {}
        other => panic!("expected a corrupt {column} error, got {other:?}"),
    }
}

#[test]
fn malformed_rows_give_corrupt_row_errors() {
    let fx = standard_fixture();
    let text = fx.paths.text_file.clone();
    let top = fx.paths.top.clone();

    // A path whose hash part is not nix-base32 ('e' is not in Nix's alphabet).
    let (_d, db) = vandalised_copy(
        &fx,
        "insert into ValidPaths (path, hash, registrationTime) values
         ('/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-bad', 'sha256:00', 1);",
    );
    expect_corrupt(db.query_all_valid_paths(), "path");

    // A malformed nar hash, a negative size, a non-text hash, a broken deriver.
    let (_d, db) = vandalised_copy(
        &fx,
        &format!("update ValidPaths set hash = 'sha256:zzz' where path = '{text}';"),
    );
    expect_corrupt(db.query_path_info(&sp(&text)), "hash");
    let (_d, db) = vandalised_copy(
        &fx,
        &format!(
            "update ValidPaths set hash = 'md5:{}' where path = '{text}';",
            "0".repeat(32)
        ),
    );
    expect_corrupt(db.query_path_info(&sp(&text)), "hash");
    let (_d, db) = vandalised_copy(
        &fx,
        &format!("update ValidPaths set narSize = -5 where path = '{text}';"),
    );
    expect_corrupt(db.query_path_info(&sp(&text)), "narSize");
    let (_d, db) = vandalised_copy(
        &fx,
        &format!("update ValidPaths set hash = x'00ff' where path = '{text}';"),
    );
    expect_corrupt(db.query_path_info(&sp(&text)), "hash");
    let (_d, db) = vandalised_copy(
        &fx,
        &format!("update ValidPaths set deriver = '/elsewhere/x.drv' where path = '{top}';"),
    );
    expect_corrupt(db.query_path_info(&sp(&top)), "deriver");
    // A reference to a row whose path is malformed.
    let (_d, db) = vandalised_copy(
        &fx,
        &format!(
            "insert into ValidPaths (id, path, hash, registrationTime) values (999, '/nix/store/short', 'sha256:00', 1);
             insert into Refs (referrer, reference) values ((select id from ValidPaths where path = '{top}'), 999);"
        ),
    );
    expect_corrupt(db.query_path_info(&sp(&top)), "reference");
    expect_corrupt(db.query_references(&sp(&top)), "path");
    // A row under the right hash part but with an invalid name is corrupt, not "absent".
    let h = hash_part(&text).to_string();
    let (_d, db) = vandalised_copy(
        &fx,
        &format!(
            "delete from ValidPaths where path = '{text}';
             insert into ValidPaths (path, hash, registrationTime) values ('/nix/store/{h}-bad name!', 'sha256:00', 1);"
        ),
    );
    expect_corrupt(db.query_path_from_hash_part(&h.parse().unwrap()), "path");
    expect_corrupt(db.query_path_info_by_hash_part(&h.parse().unwrap()), "path");
}

#[test]
fn bad_arguments_and_read_only_writes_are_refused() {
    let fx = standard_fixture();
    let mut db = open_ro(&fx.store);
    for bad in [
        "",
        "sha256:abc!out",
        "nohash!out",
        "sha256:{}",
        "md5:00000000000000000000000000000000!out",
    ] {
        let bad = bad.replace("{}", &"0".repeat(64));
        assert!(
            matches!(
                db.query_realisation(&bad),
                Err(DbError::InvalidDrvOutput { .. })
            ),
            "{bad:?}"
        );
    }
    let empty_output = format!("sha256:{}!", "0".repeat(64));
    assert!(matches!(
        db.query_realisation(&empty_output),
        Err(DbError::InvalidDrvOutput { .. })
    ));
    assert!(
        format!("sha256:{}!out", "0".repeat(64))
            .parse::<DrvOutput>()
            .is_ok()
    );

    let info = db
        .query_path_info(&sp(&fx.paths.text_file))
        .unwrap()
        .unwrap();
    assert!(matches!(
        db.register_valid_paths(&[info]),
        Err(DbError::ReadOnly)
    ));
    assert!(matches!(
        db.add_signatures(&sp(&fx.paths.top), &["k:AAAA".into()]),
        Err(DbError::ReadOnly)
    ));
}

#[test]
fn unsupported_schema_versions_are_refused() {
    let store = FixtureStore::new();
    let schema = store.db_path().with_file_name("schema");
    assert_eq!(
        fs::read_to_string(&schema).unwrap().trim(),
        "10",
        "Nix wrote another schema version"
    );
    for bad in ["11", "7", "garbage"] {
        fs::write(&schema, bad).unwrap();
        match StoreDb::open_read_write(store.db_path(), StoreDir::default()) {
            Err(DbError::UnsupportedSchema { found, .. }) => assert_eq!(found, bad),
            other => panic!("schema {bad}: {other:?}"),
        }
    }
}
