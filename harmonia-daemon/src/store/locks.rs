//! Per-path locks: an in-process async mutex per store path, plus Nix's `<path>.lock` files so that a Nix
//! process working on the same store directory serialises with us too.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The lock table of one store.
#[derive(Default)]
pub struct PathLocks {
    table: Mutex<HashMap<PathBuf, Arc<AsyncMutex<()>>>>,
}

/// Holds a path's in-process lock until dropped.
pub struct PathLock {
    _guard: OwnedMutexGuard<()>,
    key: PathBuf,
    locks: Arc<PathLocks>,
}

impl PathLocks {
    /// Locks the store path whose real location is `real_path` within this process; waits for other holders.
    /// Take the `.lock` file ([`LockFile::acquire`]) too, on a blocking thread, before touching the path.
    pub async fn lock(self: &Arc<Self>, real_path: &Path) -> PathLock {
        let key = real_path.to_path_buf();
        let mutex = {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            table.entry(key.clone()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        PathLock {
            _guard: guard,
            key,
            locks: self.clone(),
        }
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        let mut table = self.locks.table.lock().unwrap_or_else(|e| e.into_inner());
        // Two strong references left: the table's and the guard's. No one else waits, so forget the entry.
        if table
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            table.remove(&self.key);
        }
    }
}

/// An exclusive `flock` on `<path>.lock`, following Nix's protocol: a lock file that has been written to was
/// deleted by its last holder ("stale"), so the lock is retaken on a fresh file. Released (and the file
/// deleted) on drop. Blocking: use on a blocking thread.
pub struct LockFile {
    path: PathBuf,
    lock: Option<Flock<File>>,
}

impl LockFile {
    /// Takes the lock of the store path at `real_path` (the file `<real_path>.lock`), waiting for its holder.
    pub fn acquire(real_path: &Path) -> std::io::Result<LockFile> {
        let mut path = real_path.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| std::io::Error::from(errno))?;
            if lock.metadata()?.size() == 0 {
                return Ok(LockFile {
                    path,
                    lock: Some(lock),
                });
            }
        }
    }
}

impl Drop for LockFile {
    /// Deletes the lock file and marks it stale for anyone who opened it meanwhile, then unlocks.
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            let _ = std::fs::remove_file(&self.path);
            let mut file: &File = &lock;
            let _ = file.write_all(b"d");
            drop(lock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serialises_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let locks = Arc::new(PathLocks::default());
        let p = dir.path().join("abc-x");
        let l1 = locks.lock(&p).await;
        let locks2 = locks.clone();
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { drop(locks2.lock(&p2).await) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(l1);
        waiter.await.unwrap();
        assert!(locks.table.lock().unwrap().is_empty());
    }

    #[test]
    fn lock_file_is_taken_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc-x");
        let f = LockFile::acquire(&p).unwrap();
        assert!(dir.path().join("abc-x.lock").exists());
        drop(f);
        assert!(!dir.path().join("abc-x.lock").exists());
        // Taken again after release.
        drop(LockFile::acquire(&p).unwrap());
    }
}
