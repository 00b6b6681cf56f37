//! A database locked by another process gives a typed busy error once the busy timeout has passed: no
//! panic, no hang, and nothing half written.

mod common;

use std::time::Duration;

use common::*;
use harmonia_store_db::{DbError, StoreDb};
use harmonia_store_path::StoreDir;
use harmonia_test_support::standard_fixture;
use rusqlite::Connection;

/// Short enough to keep the test quick; the value itself is not asserted on.
const TIMEOUT: Duration = Duration::from_millis(50);

fn assert_busy<T: std::fmt::Debug>(r: Result<T, DbError>, what: &str) {
    match r {
        Err(e) => assert!(e.is_busy(), "{what}: expected a busy error, got {e}"),
        Ok(v) => panic!("{what}: succeeded while the database was locked: {v:?}"),
    }
}

#[test]
fn writes_fail_with_busy_while_another_writer_holds_the_lock() {
    let fx = standard_fixture();
    let db_path = fx.store.db_path();
    let mut db = StoreDb::open_read_write(&db_path, StoreDir::default()).unwrap();
    db.set_busy_timeout(TIMEOUT).unwrap();
    let top = sp(&fx.paths.top);
    let before = db.query_path_info(&top).unwrap().unwrap();

    // Another writer (as nix-daemon would) holds the write lock.
    let holder = Connection::open(&db_path).unwrap();
    holder.execute_batch("begin immediate").unwrap();

    assert_busy(
        db.add_signatures(&top, &["k:AAAA".into()]),
        "add_signatures",
    );
    let mut changed = before.clone();
    changed.ultimate = !changed.ultimate;
    assert_busy(
        db.register_valid_paths(std::slice::from_ref(&changed)),
        "register_valid_paths",
    );
    assert_busy(
        db.invalidate_paths(std::slice::from_ref(&top)),
        "invalidate_paths",
    );
    // WAL readers are not blocked by a writer, on this connection or a read-only one.
    assert_eq!(db.query_path_info(&top).unwrap().as_ref(), Some(&before));
    let ro = StoreDb::open_read_only(&db_path, StoreDir::default()).unwrap();
    assert_eq!(ro.query_path_info(&top).unwrap().as_ref(), Some(&before));

    // Once the lock is gone the same connection works again and nothing of the failed calls was kept.
    holder.execute_batch("rollback").unwrap();
    assert_eq!(db.query_path_info(&top).unwrap().as_ref(), Some(&before));
    db.add_signatures(&top, &["k:AAAA".into()]).unwrap();
    assert!(
        db.query_path_info(&top)
            .unwrap()
            .unwrap()
            .signatures
            .contains(&"k:AAAA".to_string())
    );
}

/// A connection that switched the database to a rollback journal (as Nix with `use-sqlite-wal = false`).
fn rollback_journal_connection(db_path: &std::path::Path) -> Connection {
    let conn = Connection::open(db_path).unwrap();
    let mode: String = conn
        .query_row("pragma journal_mode = delete", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    conn
}

#[test]
fn reads_fail_with_busy_while_a_rollback_journal_writer_holds_an_exclusive_lock() {
    let fx = standard_fixture();
    let db_path = fx.store.db_path();
    // Nix with `use-sqlite-wal = false` keeps a rollback journal; there a committing writer's exclusive lock
    // keeps readers out (in WAL mode nothing does while a reader has the database open).
    let holder = rollback_journal_connection(&db_path);
    let ro = StoreDb::open_read_only(&db_path, StoreDir::default()).unwrap();
    ro.set_busy_timeout(TIMEOUT).unwrap();
    let top = sp(&fx.paths.top);
    assert!(ro.query_path_info(&top).unwrap().is_some());

    holder.execute_batch("begin exclusive").unwrap();
    assert_busy(ro.query_path_info(&top), "query_path_info");
    assert_busy(
        ro.query_path_info_by_hash_part(top.hash()),
        "query_path_info_by_hash_part",
    );
    assert_busy(
        ro.query_path_from_hash_part(top.hash()),
        "query_path_from_hash_part",
    );
    assert_busy(ro.query_references(&top), "query_references");
    assert_busy(ro.query_all_valid_paths(), "query_all_valid_paths");
    assert_busy(
        ro.query_valid_paths(std::slice::from_ref(&top)),
        "query_valid_paths",
    );

    holder.execute_batch("commit").unwrap();
    assert!(ro.query_path_info(&top).unwrap().is_some());
    assert_eq!(
        ro.query_valid_paths(std::slice::from_ref(&top)).unwrap(),
        vec![top]
    );
}

#[test]
fn a_pool_with_a_zero_busy_timeout_reports_busy_at_once_on_every_connection() {
    let fx = standard_fixture();
    let db_path = fx.store.db_path();
    let holder = rollback_journal_connection(&db_path);
    let pool = harmonia_store_db::StoreDbPool::new(&db_path, StoreDir::default(), 2)
        .unwrap()
        .with_busy_timeout(Duration::ZERO)
        .unwrap();
    let top = sp(&fx.paths.top);
    // Both connections (the first one opened up front, the second lazily) answer while unlocked.
    pool.with_conn(|a| {
        pool.with_conn(|b| {
            assert!(a.query_path_info(&top)?.is_some());
            assert!(b.query_path_info(&top)?.is_some());
            Ok::<_, DbError>(())
        })
    })
    .unwrap();

    // The lock is released after a while: a connection that waited (any busy timeout but zero)
    // would succeed instead of reporting busy.
    holder.execute_batch("begin exclusive").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        holder.execute_batch("commit").unwrap();
    });
    let results = pool.with_conn(|a| {
        pool.with_conn(|b| {
            Ok::<_, DbError>((
                a.query_path_info_by_hash_part(top.hash()),
                b.query_path_info_by_hash_part(top.hash()),
            ))
        })
    });
    let (a, b) = results.unwrap();
    assert_busy(a, "first connection");
    assert_busy(b, "second connection");
    release.join().unwrap();
    assert!(
        pool.with_conn(|db| db.query_path_info(&top))
            .unwrap()
            .is_some()
    );
}
