//! Restoring a NAR for an add, inline on the calling connection's thread, with Nix's canonical metadata
//! (mtime 1, modes 0444/0555) applied as each node is finished.
//!
//! `harmonia_file_nar::restore` writes on a blocking-pool thread fed by a channel, which suits a shared
//! multi-threaded runtime. Each daemon connection has a thread of its own (see `server`), the way nix-daemon
//! forks a process per connection, so the add path writes here directly: for the many small paths of an
//! AddMultipleToStore the hand-offs cost more than the writes themselves, and a separate canonicalisation walk
//! would stat, chmod and utime every node a second time.

use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use harmonia_file_nar::{NarDecoder, NarEvent};
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use tokio::io::AsyncRead;

use super::StoreError;

/// The modification time Nix gives every store file (one second past the epoch).
fn canonical_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1)
}

/// Unpacks the NAR read from `reader` at `dest` (which must not exist; its parent must) with canonical
/// metadata. Every path written is `dest` joined with names the decoder validated, and every node is created
/// new, so nothing is written through a symlink or outside `dest`. On error the partial tree is left for the
/// caller to remove (`fsutil::remove_tree` copes with its read-only directories).
pub(super) async fn restore_canonical<R: AsyncRead + Unpin>(
    reader: R,
    dest: &Path,
) -> Result<(), StoreError> {
    let mut decoder = NarDecoder::new(reader);
    let mut w = Writer {
        root: dest,
        file: None,
    };
    while let Some(ev) = decoder.next().await {
        w.apply(ev?)?;
    }
    w.close_file()
}

struct Writer<'a> {
    root: &'a Path,
    /// The file being written, its path and whether it is executable.
    file: Option<(File, PathBuf, bool)>,
}

impl Writer<'_> {
    fn apply(&mut self, ev: NarEvent) -> Result<(), StoreError> {
        if let NarEvent::Contents(data) = ev {
            return match &mut self.file {
                Some((file, path, _)) => file.write_all(&data).map_err(write_err(path)),
                None => Err(StoreError::Internal("file contents without a file".into())),
            };
        }
        self.close_file()?;
        match ev {
            NarEvent::Directory { path } => {
                let full = path.under(self.root);
                fs::create_dir(&full).map_err(write_err(&full))
            }
            NarEvent::EndDirectory { path } => {
                // Every entry exists now, so nothing changes the directory's mtime after this.
                let full = path.under(self.root);
                fs::set_permissions(&full, Permissions::from_mode(0o555))
                    .map_err(write_err(&full))?;
                set_canonical_time(&full)
            }
            NarEvent::File {
                path, executable, ..
            } => {
                let full = path.under(self.root);
                // A new file may be created read-only and still be written through this descriptor.
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o555 } else { 0o444 })
                    .open(&full)
                    .map_err(write_err(&full))?;
                self.file = Some((file, full, executable));
                Ok(())
            }
            NarEvent::Contents(_) => Ok(()),
            NarEvent::Symlink { path, target } => {
                let full = path.under(self.root);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &full)
                    .map_err(write_err(&full))?;
                set_canonical_time(&full)
            }
        }
    }

    /// Finishes the open file: its mode (again, since the umask may have taken bits off) and mtime, set
    /// through the descriptor after the last write. Like Nix, no fsync per file.
    fn close_file(&mut self) -> Result<(), StoreError> {
        if let Some((file, path, executable)) = self.file.take() {
            let mode = if executable { 0o555 } else { 0o444 };
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(write_err(&path))?;
            let t = canonical_time();
            file.set_times(FileTimes::new().set_accessed(t).set_modified(t))
                .map_err(write_err(&path))?;
        }
        Ok(())
    }
}

/// mtime (and atime) 1 on `path` itself, not following a symlink.
fn set_canonical_time(path: &Path) -> Result<(), StoreError> {
    let one = TimeSpec::new(1, 0);
    utimensat(None, path, &one, &one, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| write_err(path)(io::Error::from(e)))
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        what: format!("cannot restore {}", path.display()),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn restores_with_canonical_metadata() {
        let src = tempfile::tempdir().unwrap();
        let tree = src.path().join("tree");
        fs::create_dir_all(tree.join("sub/deeper")).unwrap();
        fs::write(tree.join("sub/f"), b"hello").unwrap();
        fs::write(tree.join("sub/deeper/empty"), b"").unwrap();
        fs::write(tree.join("exe"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(tree.join("exe"), Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("sub/f", tree.join("link")).unwrap();
        let mut nar = Vec::new();
        harmonia_file_nar::NarEncoder::new(&tree)
            .write_to(&mut nar)
            .unwrap();

        let dst = tempfile::tempdir().unwrap();
        let out = dst.path().join("out");
        restore_canonical(&nar[..], &out).await.unwrap();

        let mut again = Vec::new();
        harmonia_file_nar::NarEncoder::new(&out)
            .write_to(&mut again)
            .unwrap();
        assert_eq!(again, nar);
        for (p, mode) in [
            ("", 0o555),
            ("sub", 0o555),
            ("sub/deeper", 0o555),
            ("sub/f", 0o444),
            ("sub/deeper/empty", 0o444),
            ("exe", 0o555),
        ] {
            let m = fs::symlink_metadata(out.join(p)).unwrap();
            assert_eq!(m.mode() & 0o7777, mode, "{p}");
            assert_eq!(m.mtime(), 1, "{p}");
        }
        assert_eq!(fs::symlink_metadata(out.join("link")).unwrap().mtime(), 1);
        super::super::fsutil::remove_tree(&out).unwrap();
    }

    #[tokio::test]
    async fn refuses_an_existing_destination_and_bad_nars() {
        let src = tempfile::tempdir().unwrap();
        let f = src.path().join("f");
        fs::write(&f, b"x").unwrap();
        let mut nar = Vec::new();
        harmonia_file_nar::NarEncoder::new(&f)
            .write_to(&mut nar)
            .unwrap();
        assert!(restore_canonical(&nar[..], &f).await.is_err());
        let dst = tempfile::tempdir().unwrap();
        let out = dst.path().join("out");
        let truncated = &nar[..nar.len() - 8];
        assert!(restore_canonical(truncated, &out).await.is_err());
    }
}
