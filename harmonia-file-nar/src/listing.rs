//! The `.ls` listing of a NAR (version 1), computed from filesystem metadata only.
//!
//! This is the JSON Nix writes next to NARs in binary caches (`write-nar-listing=true`) and prints with
//! `nix store ls -R --json`: `{"version":1,"root":{"type":"directory","entries":{...}}}`, each regular file
//! with `size`, `executable` (only when true) and `narOffset`, the position of its first byte in the NAR.

use std::collections::BTreeMap;
use std::fs::{self, FileType, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::NarError;
use crate::wire::{MAGIC, padding, str_size};

/// A `.ls` listing, version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NarListing {
    /// Always 1.
    pub version: u32,
    /// The root node of the NAR.
    pub root: ListingEntry,
}

/// One node of a [`NarListing`]. Names that are not UTF-8 are converted lossily (JSON needs text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ListingEntry {
    /// A regular file.
    Regular {
        /// Size in bytes.
        size: u64,
        /// Whether it is executable (omitted from JSON when false, like Nix).
        #[serde(default, skip_serializing_if = "is_false")]
        executable: bool,
        /// Offset of its contents in the NAR (Nix omits it where it does not know it).
        #[serde(rename = "narOffset", default, skip_serializing_if = "Option::is_none")]
        nar_offset: Option<u64>,
    },
    /// A symbolic link.
    Symlink {
        /// The link target, as stored.
        target: String,
    },
    /// A directory; entries sort by name bytes, as in the NAR.
    Directory {
        /// The entries by name.
        #[serde(default)]
        entries: BTreeMap<String, ListingEntry>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl NarListing {
    /// The listing as compact JSON, as Nix writes `.ls` files.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, integers and maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `.ls` listing of the NAR of `path`, without reading file contents (blocking: call it from a
/// blocking thread in async code).
pub fn list(path: &Path) -> Result<NarListing, NarError> {
    list_with_nar_size(path).map(|(listing, _)| listing)
}

/// Like [`list`], also returning the size of the NAR.
pub fn list_with_nar_size(path: &Path) -> Result<(NarListing, u64), NarError> {
    let meta = fs::symlink_metadata(path).map_err(|e| NarError::io(path, e))?;
    let mut lister = Lister {
        path: path.to_path_buf(),
        offset: str_size(MAGIC.len() as u64),
    };
    let root = lister.node(meta.file_type(), &|| Ok(meta.clone()))?;
    Ok((NarListing { version: 1, root }, lister.offset))
}

struct Lister {
    path: PathBuf,
    offset: u64,
}

impl Lister {
    /// Move the NAR offset on by `n` bytes. Sparse files (tmpfs and XFS allow 2^63 - 1 bytes each) can
    /// claim sizes whose sum does not fit in a u64; that is an error, not a wrapped or panicking offset.
    fn advance(&mut self, n: u64) -> Result<(), NarError> {
        self.offset = self
            .offset
            .checked_add(n)
            .ok_or_else(|| NarError::TooLarge {
                path: self.path.clone(),
            })?;
        Ok(())
    }

    fn node(
        &mut self,
        ft: FileType,
        meta: &dyn Fn() -> std::io::Result<Metadata>,
    ) -> Result<ListingEntry, NarError> {
        // "(" "type"
        self.advance(str_size(1) + str_size(4))?;
        let entry = if ft.is_dir() {
            self.advance(str_size(9))?;
            let mut children = Vec::new();
            for entry in fs::read_dir(&self.path).map_err(|e| NarError::io(&self.path, e))? {
                let entry = entry.map_err(|e| NarError::io(&self.path, e))?;
                children.push((entry.file_name(), entry));
            }
            children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut entries = BTreeMap::new();
            for (name, entry) in children {
                let name_bytes = name.as_bytes();
                // "entry" "(" "name" NAME "node"
                self.advance(
                    str_size(5)
                        + str_size(1)
                        + str_size(4)
                        + str_size(name_bytes.len() as u64)
                        + str_size(4),
                )?;
                self.path.push(&name);
                let ft = entry.file_type().map_err(|e| NarError::io(&self.path, e));
                let child = ft.and_then(|ft| self.node(ft, &|| entry.metadata()));
                self.path.pop();
                entries.insert(String::from_utf8_lossy(name_bytes).into_owned(), child?);
                // ")" closing the entry
                self.advance(str_size(1))?;
            }
            ListingEntry::Directory { entries }
        } else if ft.is_symlink() {
            let target = fs::read_link(&self.path).map_err(|e| NarError::io(&self.path, e))?;
            let target = target.as_os_str().as_bytes();
            self.advance(str_size(7) + str_size(6) + str_size(target.len() as u64))?;
            ListingEntry::Symlink {
                target: String::from_utf8_lossy(target).into_owned(),
            }
        } else if ft.is_file() {
            let meta = meta().map_err(|e| NarError::io(&self.path, e))?;
            let size = meta.len();
            let executable = meta.permissions().mode() & 0o100 != 0;
            self.advance(str_size(7))?;
            if executable {
                self.advance(str_size(10) + str_size(0))?;
            }
            self.advance(str_size(8) + 8)?;
            let nar_offset = self.offset;
            self.advance(size)?;
            self.advance(padding(size) as u64)?;
            ListingEntry::Regular {
                size,
                executable,
                nar_offset: Some(nar_offset),
            }
        } else {
            return Err(NarError::UnsupportedFileType {
                path: self.path.clone(),
            });
        };
        // ")" closing the node
        self.advance(str_size(1))?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three sparse files of 2^63 - 1 bytes: their NAR is longer than 2^64 bytes. The listing used to
    /// overflow its offset (a panic with overflow checks, wrapped `narOffset`s without).
    #[test]
    fn nar_offsets_past_u64_are_an_error() {
        // tmpfs allows sparse files of 2^63 - 1 bytes; ext4 (a usual /tmp) stops at 16 TiB.
        let shm = Path::new("/dev/shm");
        let Ok(dir) = tempfile::tempdir_in(shm) else {
            eprintln!("skipping: no writable tmpfs at /dev/shm for huge sparse files");
            return;
        };
        for name in ["a", "b", "c"] {
            let f = fs::File::create(dir.path().join(name)).unwrap();
            if let Err(e) = f.set_len(i64::MAX as u64) {
                eprintln!("skipping: /dev/shm refuses a sparse file of 2^63 - 1 bytes: {e}");
                return;
            }
        }
        match list_with_nar_size(dir.path()) {
            Err(NarError::TooLarge { path }) => assert!(path.starts_with(dir.path()), "{path:?}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }

        // One such file still fits, with exact offsets.
        let one = dir.path().join("a");
        let (listing, size) = list_with_nar_size(&one).unwrap();
        let ListingEntry::Regular { nar_offset, .. } = listing.root else {
            panic!("not a file: {listing:?}");
        };
        let header = str_size(13) + str_size(1) + str_size(4) + str_size(7) + str_size(8) + 8;
        assert_eq!(nar_offset, Some(header));
        assert_eq!(size, header + i64::MAX as u64 + 1 + str_size(1));
    }
}
