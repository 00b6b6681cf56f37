//! Filesystem helpers for the write path: temporary directories inside the store, Nix's canonical metadata,
//! and removal of read-only trees. All of it is blocking: call from `spawn_blocking`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

/// Prefix of our temporary directories in the real store dir; anything with it is ours to delete at start-up.
pub const TEMP_PREFIX: &str = ".harmonia-tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name for a temporary path inside `real_store_dir` (nothing is created), on the same filesystem as
/// the store so the final rename is atomic.
pub fn temp_path(real_store_dir: &Path) -> PathBuf {
    static PID: OnceLock<u32> = OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    real_store_dir.join(format!("{TEMP_PREFIX}{pid}-{n}"))
}

/// Removes temporary paths left by a daemon that was killed mid-add.
pub fn remove_stale_temp_dirs(real_store_dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(real_store_dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            remove_tree(&entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// Deletes `path` whatever it is, making read-only directories (as the store's are) writable first.
/// A missing path is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if meta.permissions().mode() & 0o700 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    }
    for entry in fs::read_dir(path)? {
        remove_tree(&entry?.path())?;
    }
    fs::remove_dir(path)
}

/// Gives a restored tree the metadata Nix gives store paths: mtime 1, no write bits, 0444/0555 files and
/// 0555 directories. Children first, so directories stay writable while we work inside them.
pub fn canonicalise(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        for entry in fs::read_dir(path)? {
            canonicalise(&entry?.path())?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o555))?;
    } else if ft.is_file() {
        let exec = meta.permissions().mode() & 0o100 != 0;
        fs::set_permissions(
            path,
            fs::Permissions::from_mode(if exec { 0o555 } else { 0o444 }),
        )?;
    }
    let one = TimeSpec::new(1, 0);
    utimensat(None, path, &one, &one, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn canonicalise_then_remove() {
        let dir = tempfile::tempdir().unwrap();
        let out = temp_path(dir.path());
        fs::create_dir_all(out.join("sub")).unwrap();
        fs::write(out.join("sub/f"), b"x").unwrap();
        fs::write(out.join("exe"), b"#!").unwrap();
        fs::set_permissions(out.join("exe"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("sub/f", out.join("link")).unwrap();
        canonicalise(&out).unwrap();
        let m = fs::metadata(out.join("sub/f")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o444);
        assert_eq!(m.mtime(), 1);
        assert_eq!(
            fs::metadata(out.join("exe")).unwrap().permissions().mode() & 0o777,
            0o555
        );
        assert_eq!(fs::symlink_metadata(out.join("link")).unwrap().mtime(), 1);
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o555
        );
        assert_eq!(remove_stale_temp_dirs(dir.path()).unwrap(), 1);
        assert!(!out.exists());
    }
}
