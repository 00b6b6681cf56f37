//! `SnapshotReader`: queries share a snapshot for at most `max_age`, and `release` ends it at once.

mod common;

use std::time::Duration;

use common::*;
use harmonia_store_db::SnapshotReader;
use harmonia_test_support::standard_fixture;

#[test]
fn a_shared_snapshot_lasts_at_most_max_age_or_until_released() {
    let fx = standard_fixture();
    let top = sp(&fx.paths.top);
    let mut writer = open_rw(&fx.store);
    let sigs = |r: &mut SnapshotReader| {
        r.with_db(|db| db.query_path_info(&top))
            .unwrap()
            .unwrap()
            .signatures
    };

    // A long max age: a write made after the snapshot was taken stays invisible until release.
    let mut reader = SnapshotReader::new(open_ro(&fx.store), Duration::from_secs(3600));
    let before = sigs(&mut reader);
    writer.add_signatures(&top, &["k1:AAAA".into()]).unwrap();
    assert_eq!(sigs(&mut reader), before, "same snapshot within max_age");
    reader.release();
    let after_release = sigs(&mut reader);
    assert!(
        after_release.contains(&"k1:AAAA".to_string()),
        "{after_release:?}"
    );

    // A short max age: once it has passed, the next query takes a new snapshot by itself.
    let mut reader = SnapshotReader::new(open_ro(&fx.store), Duration::from_millis(20));
    let _ = sigs(&mut reader);
    writer.add_signatures(&top, &["k2:BBBB".into()]).unwrap();
    std::thread::sleep(Duration::from_millis(40));
    let later = sigs(&mut reader);
    assert!(later.contains(&"k2:BBBB".to_string()), "{later:?}");

    // While a reader holds a snapshot, the writer still commits (WAL), and a query error ends the
    // snapshot rather than leaving it open.
    let failed = reader.with_db(|db| db.query_realisation("not an id"));
    assert!(failed.is_err());
    writer.add_signatures(&top, &["k3:CCCC".into()]).unwrap();
    let fresh = sigs(&mut reader);
    assert!(fresh.contains(&"k3:CCCC".to_string()), "{fresh:?}");
}
