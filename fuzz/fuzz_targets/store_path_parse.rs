//! Fuzzes store path parsing: `StorePath::from_str` (base names), `StoreDir::parse_path` and
//! `StoreDir::parse_path_with_subpath` (full paths), and `StoreDir::new`.
//!
//! Input: a path, or `STORE_DIR\nPATH` to parse under another store dir.
//! Whatever parses must display back to the input and re-parse to the same value.
#![no_main]

use harmonia_store_path::{StoreDir, StorePath, StorePathHash, StorePathName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (dir, input) = match s.split_once('\n') {
        Some((dir, rest)) => match StoreDir::new(dir) {
            Ok(d) => {
                assert_eq!(d.to_string().parse::<StoreDir>().ok().as_ref(), Some(&d));
                (d, rest)
            }
            Err(_) => return,
        },
        None => (StoreDir::default(), s),
    };

    if let Ok(p) = input.parse::<StorePath>() {
        let shown = p.to_string();
        assert_eq!(shown, input, "base name does not display back");
        assert_eq!(shown.parse::<StorePath>().ok().as_ref(), Some(&p));
        assert_eq!(p.hash().to_string().parse::<StorePathHash>().ok().as_ref(), Some(p.hash()));
        assert_eq!(p.name().as_str().parse::<StorePathName>().ok().as_ref(), Some(p.name()));
        assert_eq!(shown, format!("{}-{}", p.hash(), p.name()));
        // The same base name under the store dir is a valid full path.
        let full = dir.display(&p);
        assert_eq!(dir.parse_path(&full).ok().as_ref(), Some(&p), "{full:?}");
    }

    if let Ok(p) = dir.parse_path(input) {
        let full = dir.display(&p);
        assert_eq!(dir.parse_path(&full).ok().as_ref(), Some(&p), "{full:?}");
        assert_eq!(p.to_string().parse::<StorePath>().ok().as_ref(), Some(&p));
    }

    if let Ok((p, sub)) = dir.parse_path_with_subpath(input) {
        let full = format!("{}{sub}", dir.display(&p));
        let again = dir.parse_path_with_subpath(&full).ok();
        assert_eq!(again, Some((p.clone(), sub)), "{full:?}");
    }
});
