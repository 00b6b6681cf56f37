//! Fuzzes `harmonia_file_nar::restore` on arbitrary bytes, in a throwaway directory.
//!
//! Checks the restorer's promise: whatever the NAR says, nothing is created outside the destination;
//! and when it accepts a NAR, encoding the restored tree gives back exactly the bytes it consumed.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use harmonia_file_nar::{NarEncoder, restore};
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
});

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("temp dir");
    let jail = tmp.path().join("jail");
    std::fs::create_dir(&jail).expect("mkdir");
    let dest = jail.join("dest");

    let mut reader = data;
    let result = RUNTIME.block_on(restore(&mut reader, &dest));
    let consumed = data.len() - reader.len();

    // Nothing but `jail/dest` may exist, whatever happened.
    assert_eq!(names(tmp.path()), ["jail"], "restore wrote outside its destination");
    let inside = names(&jail);
    assert!(inside.is_empty() || inside == ["dest"], "restore wrote beside dest: {inside:?}");

    if result.is_ok() {
        let mut again = Vec::new();
        NarEncoder::new(&dest).write_to(&mut again).expect("encode restored tree");
        assert_eq!(again.len(), consumed, "re-encoded length differs");
        assert_eq!(&again[..], &data[..consumed], "restored tree encodes differently");
    }
});
