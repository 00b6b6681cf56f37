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

/// Holds a path's lock until dropped.
pub struct PathLock {
    // Field order matters: the file lock is released (and its file deleted) before the in-process lock.
    file: Option<LockFile>,
    _guard: OwnedMutexGuard<()>,
    key: PathBuf,
    locks: Arc<PathLocks>,
}

impl PathLocks {
    /// Locks the store path whose real location is `real_path`; waits for other holders.
    pub async fn lock(self: &Arc<Self>, real_path: &Path) -> std::io::Result<PathLock> {
        let key = real_path.to_path_buf();
        let mutex = {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            table.entry(key.clone()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        let mut lock_path = key.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let file = tokio::task::spawn_blocking(move || LockFile::acquire(&lock_path))
            .await
            .map_err(std::io::Error::other)??;
        Ok(PathLock {
            file: Some(file),
            _guard: guard,
            key,
            locks: self.clone(),
        })
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            f.release();
        }
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
/// deleted by its last holder ("stale"), so the lock is retaken on a fresh file.
struct LockFile {
    path: PathBuf,
    lock: Flock<File>,
}

impl LockFile {
    fn acquire(path: &Path) -> std::io::Result<LockFile> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| std::io::Error::from(errno))?;
            if lock.metadata()?.size() == 0 {
                return Ok(LockFile {
                    path: path.to_path_buf(),
                    lock,
                });
            }
        }
    }

    /// Deletes the lock file and marks it stale for anyone who opened it meanwhile, then unlocks.
    fn release(self) {
        // Blocking but tiny (an unlink and a one-byte write); done inline because it runs from Drop.
        let _ = std::fs::remove_file(&self.path);
        let mut file: &File = &self.lock;
        let _ = file.write_all(b"d");
        drop(self.lock);
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
        let l1 = locks.lock(&p).await.unwrap();
        assert!(dir.path().join("abc-x.lock").exists());
        let locks2 = locks.clone();
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { locks2.lock(&p2).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(l1);
        waiter.await.unwrap().unwrap();
        assert!(!dir.path().join("abc-x.lock").exists());
        assert!(locks.table.lock().unwrap().is_empty());
    }
}
