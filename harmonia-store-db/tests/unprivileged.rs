//! A binary cache usually runs as its own user and reads a database owned by root. SQLite then needs the
//! WAL index (`db.sqlite-shm`) that a running Nix process keeps: without it we must say so clearly, with it
//! we must read, and see what root writes meanwhile.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use harmonia_store_db::{DbError, StoreDb};
use harmonia_store_path::StoreDir;
use harmonia_test_support::standard_fixture;

const CHILD_DB: &str = "HARMONIA_STORE_DB_CHILD_DB";
const CHILD_EXPECT: &str = "HARMONIA_STORE_DB_CHILD_EXPECT";

/// Runs this very test again as `nobody`, with the environment telling it what to check.
fn run_as_nobody(db: &Path, expect: &str) {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(exe)
        .args([
            "--exact",
            "unprivileged_reader",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DB, db)
        .env(CHILD_EXPECT, expect)
        .output()
        .expect("run runuser");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child ({expect}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn child(db: &str, expect: &str) {
    let opened = StoreDb::open_read_only(db, StoreDir::default());
    match expect.split_once('=') {
        None if expect == "no-wal-index" => match opened {
            Err(DbError::WalIndexUnavailable { .. }) => {}
            other => panic!("expected WalIndexUnavailable, got {other:?}"),
        },
        Some(("paths", n)) => {
            let db = opened.unwrap_or_else(|e| panic!("open as nobody: {e}"));
            let n: usize = n.parse().unwrap();
            assert_eq!(db.query_all_valid_paths().unwrap().len(), n);
        }
        _ => panic!("unknown expectation {expect:?}"),
    }
}

#[test]
fn unprivileged_reader() {
    if let (Ok(db), Ok(expect)) = (std::env::var(CHILD_DB), std::env::var(CHILD_EXPECT)) {
        return child(&db, &expect);
    }
    // Only root can switch to nobody.
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(1);
    let has_nobody = Command::new("id")
        .arg("nobody")
        .output()
        .is_ok_and(|o| o.status.success());
    if uid != 0 || !has_nobody || Command::new("runuser").arg("--help").output().is_err() {
        println!(
            "skipped: needs root, runuser and a 'nobody' user to read the database as another user"
        );
        return;
    }

    let fx = standard_fixture();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db_path = dir.path().join("db.sqlite");
    std::fs::copy(fx.store.db_path(), &db_path).unwrap();
    std::fs::set_permissions(&db_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The ancestors of the temp dir must be searchable by nobody.
    let mut ancestor = dir.path().parent();
    while let Some(a) = ancestor {
        let mode = std::fs::metadata(a).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by other users",
            a.display()
        );
        ancestor = a.parent();
    }
    let n = fx.paths.all.len();

    // The resting state: nobody has the database open, no -wal/-shm.
    assert!(!dir.path().join("db.sqlite-shm").exists());
    run_as_nobody(&db_path, "no-wal-index");

    // A writer (as the daemon would be) holds the database open: readers work and see its writes.
    let mut writer = StoreDb::open_read_write(&db_path, StoreDir::default()).unwrap();
    run_as_nobody(&db_path, &format!("paths={n}"));
    let src = open_ro(&fx.store);
    let mut info = src
        .query_path_info(&sp(&fx.paths.text_file))
        .unwrap()
        .unwrap();
    // Register one more path (a renamed copy of a fixture path's metadata) and read it back as nobody.
    info.path = sp(&format!("/nix/store/{}-renamed", "1".repeat(32)));
    info.ca = None;
    writer.register_valid_paths(&[info]).unwrap();
    run_as_nobody(&db_path, &format!("paths={}", n + 1));
}
