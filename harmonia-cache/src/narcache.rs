//! The on-disk cache of the NARs of directories made of many small files, served like any file.
//!
//! Producing a NAR costs an open, a stat, a read and a close per file: for a tree of thousands of small
//! files that is most of the work, and a static server sending a ready-made NAR pays none of it. The
//! first full download of a directory's NAR starts a background job that writes the NAR into the cache
//! directory while hashing it, and keeps it (named `<nar hash>.nar`) only if hash and size are the ones
//! the database records and the tree has at least one regular file per [`BYTES_PER_FILE_WORTH_CACHING`]
//! (a tree of a few big files streams as fast from the store, so caching it would only cost disk).
//! Later downloads and ranges of that NAR are spliced from the file.
//!
//! An entry is never stale: it is named by the NAR's hash and was checked against it, a path that left
//! the database is answered 404 before the cache is asked, and a tree that changed on disk no longer
//! hashes to its database hash, so it is never cached. When the cache grows past its size limit, the
//! least recently served entries go. The directory belongs to the server; anything else writing there
//! is outside this design.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result};
use harmonia_file_nar::{NarEncoder, NarPiece};
use harmonia_utils_hash::{Algorithm, Hasher, NarHash};

/// Prefix of entries being written; removed at start-up if a crash left them.
const TEMP_PREFIX: &str = ".tmp-";

/// Entries written at once. A download that finds this many being written does not start another: the
/// writers use blocking-pool threads that NAR responses need too.
const MAX_WRITERS: usize = 2;

/// Files of at least this many bytes are read in big blocks while an entry is written (and are spliced,
/// not read, when a NAR is generated on the fly).
const LARGE_FILE: u64 = 256 << 10;

/// A NAR is kept only if its tree has at least one regular file per this many bytes of NAR: below
/// that, per-file system calls no longer dominate generating it, so serving it from the store is
/// about as fast as from the cache.
pub const BYTES_PER_FILE_WORTH_CACHING: u64 = 512 << 10;

/// NAR hashes remembered as not to be written again (mismatched or not worth caching); the memo is
/// emptied when it reaches this many.
const MAX_DECLINED: usize = 16 << 10;

/// Most free space an entry must leave on the cache's filesystem (see [`leaves_enough_free`]).
const KEEP_FREE_MAX: u64 = 4 << 30;

/// Whether writing `nar_size` more bytes leaves a filesystem of `total` bytes, `available` of them
/// free, with 15% of its size (at most 4 GiB) available: the cache is on by default and often shares a
/// disk with the store. journald's default `SystemKeepFree=` is the same rule.
fn leaves_enough_free(available: u64, total: u64, nar_size: u64) -> bool {
    let keep = (total / 100 * 15).min(KEEP_FREE_MAX);
    available.saturating_sub(nar_size) >= keep
}

/// What writing an entry came to.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// The entry is in place.
    Cached,
    /// The tree on disk does not hash to what the database says (it changed on disk).
    Mismatch,
    /// The NAR matches, but its tree has too few files per byte to gain from the cache.
    NotWorthIt,
    /// Not written: the disk would be too full afterwards (tried again on a later download).
    NoRoom,
}

/// The NAR cache (see the module documentation).
pub struct NarCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes of entries, as last counted plus what was added since: the directory is only listed
    /// again when this passes `max_bytes`.
    used: AtomicU64,
    /// NAR hashes being written right now.
    busy: Mutex<HashSet<String>>,
    /// NAR hashes that were written once and not kept.
    declined: Mutex<HashSet<String>>,
    /// Whether the last entry was skipped for want of disk space: said once, not per download.
    disk_full: AtomicBool,
}

impl NarCache {
    /// Opens (creating if needed) the cache in `dir`, holding at most `max_bytes` of NARs.
    pub fn open(dir: PathBuf, max_bytes: u64) -> Result<NarCache> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the NAR cache directory {}", dir.display()))?;
        // Entries are written next to where they go: find out now if that is not possible.
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .with_context(|| {
                format!("cannot write in the NAR cache directory {}", dir.display())
            })?;
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read the NAR cache directory {}", dir.display()))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(TEMP_PREFIX.as_bytes())
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let cache = NarCache {
            dir,
            max_bytes,
            used: AtomicU64::new(0),
            busy: Mutex::new(HashSet::new()),
            declined: Mutex::new(HashSet::new()),
            disk_full: AtomicBool::new(false),
        };
        cache.evict();
        Ok(cache)
    }

    fn entry(&self, nar_hash: &str) -> PathBuf {
        self.dir.join(format!("{nar_hash}.nar"))
    }

    /// The cached NAR with this hash (nix-base32) and size, marked as just used; `None` if there is
    /// none. Blocking: call it from the blocking pool.
    pub fn open_entry(&self, nar_hash: &str, nar_size: u64) -> Option<(File, PathBuf)> {
        let path = self.entry(nar_hash);
        let file = File::open(&path).ok()?;
        if file.metadata().ok()?.len() != nar_size {
            return None;
        }
        // The modification time orders entries for eviction.
        let _ = file.set_modified(SystemTime::now());
        Some((file, path))
    }

    /// Starts writing the NAR of the directory `real_path` into the cache in the background, unless it
    /// is being written already, was declined before, or could never fit.
    pub fn fill(self: &Arc<Self>, real_path: PathBuf, nar_hash: NarHash, nar_size: u64) {
        if nar_size > self.max_bytes / 2 {
            return;
        }
        let key = nar_hash.hash().to_nix_base32();
        if lock(&self.declined).contains(&key) {
            return;
        }
        {
            let mut busy = lock(&self.busy);
            if busy.len() >= MAX_WRITERS || !busy.insert(key.clone()) {
                return;
            }
        }
        let cache = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let written = cache.write_entry(&real_path, &key, &nar_hash, nar_size);
            match &written {
                Ok(Written::Cached) => {
                    cache.disk_full.store(false, Ordering::Relaxed);
                    tracing::debug!(path = %real_path.display(), "NAR cached")
                }
                Ok(Written::NotWorthIt) => {
                    tracing::debug!(path = %real_path.display(), "NAR of few, big files not cached")
                }
                Ok(Written::NoRoom) => {
                    if !cache.disk_full.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "NARs are not being cached: the cache's disk would be too full (15% or 4 GiB must stay free)"
                        );
                    }
                }
                Ok(Written::Mismatch) => tracing::warn!(
                    path = %real_path.display(),
                    "not caching a NAR that does not match the database (changed on disk?)"
                ),
                Err(e) => tracing::warn!("cannot cache the NAR of {}: {e:#}", real_path.display()),
            }
            if matches!(written, Ok(Written::Mismatch | Written::NotWorthIt)) {
                let mut declined = lock(&cache.declined);
                if declined.len() >= MAX_DECLINED {
                    declined.clear();
                }
                declined.insert(key.clone());
            }
            lock(&cache.busy).remove(&key);
        });
    }

    /// Writes and checks one entry, keeping it only if it is the NAR the database knows and worth
    /// caching.
    fn write_entry(
        &self,
        real_path: &Path,
        key: &str,
        nar_hash: &NarHash,
        nar_size: u64,
    ) -> Result<Written> {
        let fs = nix::sys::statvfs::statvfs(&self.dir).context("checking the free disk space")?;
        let unit = fs.fragment_size();
        let available = fs.blocks_available().saturating_mul(unit);
        let total = fs.blocks().saturating_mul(unit);
        if !leaves_enough_free(available, total, nar_size) {
            return Ok(Written::NoRoom);
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .context("creating a temporary file")?;
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut written = 0u64;
        let mut block = Vec::new();
        let mut pieces =
            NarEncoder::with_file_segments(real_path.to_owned(), 0, 128 << 10, LARGE_FILE);
        for piece in pieces.by_ref() {
            match piece? {
                NarPiece::Bytes(bytes) => {
                    written += bytes.len() as u64;
                    if written > nar_size {
                        return Ok(Written::Mismatch);
                    }
                    hasher.update(&bytes);
                    tmp.write_all(&bytes).context("writing the NAR")?;
                }
                NarPiece::File(mut segment) => {
                    block.resize(LARGE_FILE as usize, 0);
                    while segment.remaining() > 0 {
                        let want = segment.remaining().min(LARGE_FILE) as usize;
                        let n = segment
                            .file()
                            .read_at(&mut block[..want], segment.offset())
                            .with_context(|| format!("reading {}", segment.path().display()))?;
                        if n == 0 {
                            // The file shrank since its header was written.
                            return Ok(Written::Mismatch);
                        }
                        segment.advance(n as u64);
                        written += n as u64;
                        if written > nar_size {
                            return Ok(Written::Mismatch);
                        }
                        hasher.update(&block[..n]);
                        tmp.write_all(&block[..n]).context("writing the NAR")?;
                    }
                }
            }
        }
        if written != nar_size || hasher.finish() != *nar_hash.hash() {
            return Ok(Written::Mismatch);
        }
        if pieces
            .regular_files()
            .saturating_mul(BYTES_PER_FILE_WORTH_CACHING)
            < nar_size
        {
            return Ok(Written::NotWorthIt);
        }
        tmp.persist(self.entry(key))
            .context("moving the NAR into place")?;
        if self.used.fetch_add(nar_size, Ordering::Relaxed) + nar_size > self.max_bytes {
            self.evict();
        }
        Ok(Written::Cached)
    }

    /// Counts the entries and removes the least recently used until the cache fits its limit.
    fn evict(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .flatten()
            .filter(|e| e.file_name().as_encoded_bytes().ends_with(b".nar"))
            .filter_map(|e| {
                let md = e.metadata().ok()?;
                Some((md.modified().ok()?, md.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total > self.max_bytes {
            entries.sort();
            for (_, size, path) in entries {
                if total <= self.max_bytes {
                    break;
                }
                if std::fs::remove_file(&path).is_ok() {
                    total -= size;
                }
            }
        }
        self.used.store(total, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nar_of(path: &Path) -> Vec<u8> {
        NarEncoder::new(path)
            .map(|c| c.unwrap().to_vec())
            .collect::<Vec<_>>()
            .concat()
    }

    fn hash_of(nar: &[u8]) -> NarHash {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(nar);
        NarHash::try_from(h.finish()).unwrap()
    }

    fn tree(dir: &Path, name: &str, fill: u8) -> PathBuf {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a"), vec![fill; 1000]).unwrap();
        std::fs::write(root.join("sub/b"), vec![fill; 5000]).unwrap();
        root
    }

    #[test]
    fn keeps_only_nars_that_match_and_evicts_the_oldest() {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let one = tree(src.path(), "one", 1);
        let nar = nar_of(&one);
        let hash = hash_of(&nar);
        let key = hash.hash().to_nix_base32();
        let cache = NarCache::open(dir.path().join("c"), 3 * nar.len() as u64).unwrap();

        // A claim that does not match what is on disk is not cached.
        let wrong = hash_of(b"something else");
        assert_eq!(
            cache
                .write_entry(&one, &key, &wrong, nar.len() as u64)
                .unwrap(),
            Written::Mismatch
        );
        assert_eq!(
            cache
                .write_entry(&one, &key, &hash, nar.len() as u64 - 1)
                .unwrap(),
            Written::Mismatch
        );
        assert!(cache.open_entry(&key, nar.len() as u64).is_none());

        assert_eq!(
            cache
                .write_entry(&one, &key, &hash, nar.len() as u64)
                .unwrap(),
            Written::Cached
        );
        let (file, _) = cache.open_entry(&key, nar.len() as u64).unwrap();
        let mut cached = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut cached).unwrap();
        assert_eq!(cached, nar);
        assert!(cache.open_entry(&key, nar.len() as u64 + 1).is_none());

        // Two more entries of the same size: the cache holds three at most, so the least recently
        // used goes when a fourth arrives.
        let mut keys = vec![key.clone()];
        for (i, fill) in [2u8, 3, 4].iter().enumerate() {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let t = tree(src.path(), &format!("t{i}"), *fill);
            let n = nar_of(&t);
            let h = hash_of(&n);
            let k = h.hash().to_nix_base32();
            assert_eq!(
                cache.write_entry(&t, &k, &h, n.len() as u64).unwrap(),
                Written::Cached
            );
            keys.push(k);
            if i == 0 {
                // Serving the first entry again makes it the most recently used.
                std::thread::sleep(std::time::Duration::from_millis(20));
                assert!(cache.open_entry(&key, nar.len() as u64).is_some());
            }
        }
        let present: Vec<bool> = keys
            .iter()
            .map(|k| cache.open_entry(k, nar.len() as u64).is_some())
            .collect();
        assert_eq!(present, [true, false, true, true], "{keys:?}");
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| n.to_string_lossy().ends_with(".nar")),
            "{names:?}"
        );
    }

    #[test]
    fn keeps_some_of_the_disk_free() {
        // 15% of a small disk...
        assert!(leaves_enough_free(500, 1000, 350));
        assert!(!leaves_enough_free(500, 1000, 351));
        assert!(!leaves_enough_free(100, 1000, 0));
        // ...and at most 4 GiB of a big one.
        let tib = 1 << 40;
        assert!(leaves_enough_free(5 << 30, tib, 1 << 30));
        assert!(!leaves_enough_free(5 << 30, tib, (1 << 30) + 1));
    }

    #[test]
    fn keeps_trees_of_many_files_per_byte_only() {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = NarCache::open(dir.path().join("c"), 1 << 30).unwrap();
        let write = |root: &Path| {
            let nar = nar_of(root);
            let hash = hash_of(&nar);
            let key = hash.hash().to_nix_base32();
            let written = cache
                .write_entry(root, &key, &hash, nar.len() as u64)
                .unwrap();
            let entry = cache.open_entry(&key, nar.len() as u64).map(|(file, _)| {
                let mut cached = Vec::new();
                std::io::Read::read_to_end(&mut &file, &mut cached).unwrap();
                cached
            });
            (written, entry, nar)
        };

        // One big file: a NAR that streams from the store as fast as from the cache.
        let big = src.path().join("big");
        std::fs::create_dir(&big).unwrap();
        let data: Vec<u8> = (0..3 * LARGE_FILE as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(big.join("f"), &data).unwrap();
        let (written, entry, _) = write(&big);
        assert_eq!(written, Written::NotWorthIt);
        assert!(entry.is_none());

        // A big file among enough small ones is cached, and its large-file blocks come out right.
        let mixed = src.path().join("mixed");
        std::fs::create_dir(&mixed).unwrap();
        std::fs::write(mixed.join("f"), &data[..LARGE_FILE as usize + 12345]).unwrap();
        std::fs::write(mixed.join("small"), b"x").unwrap();
        let (written, entry, nar) = write(&mixed);
        assert_eq!(written, Written::Cached);
        assert_eq!(entry.as_deref(), Some(&nar[..]));
    }
}
