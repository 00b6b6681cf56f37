//! Per-path locks: an in-process async mutex per store path, plus Nix's `<path>.lock` files so that a Nix
//! process working on the same store directory serialises with us too.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

    /// Like [`PathLocks::lock`], but `None` instead of waiting when someone holds the lock: a caller that
    /// holds other paths' locks must release them before it waits, or two of them could wait on each other.
    pub fn try_lock(self: &Arc<Self>, real_path: &Path) -> Option<PathLock> {
        let key = real_path.to_path_buf();
        let guard = {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            let mutex = table.entry(key.clone()).or_default().clone();
            mutex.try_lock_owned().ok()
        };
        // On failure the entry stays: its holder's guard keeps it, and the holder's drop forgets it.
        guard.map(|guard| PathLock {
            _guard: guard,
            key,
            locks: self.clone(),
        })
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
        match Self::take(real_path, true)? {
            Some(lock) => Ok(lock),
            None => Err(std::io::Error::other(
                "a blocking lock returned without the lock",
            )),
        }
    }

    /// Like [`LockFile::acquire`], but `None` instead of waiting when another holder has the lock.
    pub fn try_acquire(real_path: &Path) -> std::io::Result<Option<LockFile>> {
        Self::take(real_path, false)
    }

    fn take(real_path: &Path, wait: bool) -> std::io::Result<Option<LockFile>> {
        let path = lock_name(real_path);
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let lock = match Flock::lock(file, arg) {
                Ok(lock) => lock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => return Ok(None),
                Err((_, errno)) => return Err(std::io::Error::from(errno)),
            };
            if lock.metadata()?.size() == 0 {
                return Ok(Some(LockFile {
                    path,
                    lock: Some(lock),
                }));
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

/// One lock-file inode that a batch of adds links under each of its paths' `<path>.lock` names, so that a
/// batch creates (and later frees) one inode instead of one per path. To Nix's protocol it is the same as
/// a lock file per path: every name is linked only after the inode is locked, an opener of any of the names
/// waits on the one `flock`, and on release all names are unlinked before the inode is marked stale, so a
/// waiter retries on a fresh file of its own. A name that already exists (someone else's lock, or one left
/// by a crash) is not linked: take that path's lock with [`LockFile`]. Blocking: call on a blocking or
/// connection thread.
pub struct BatchLockFile {
    /// The inode's own name (with the temporary prefix, so start-up cleanup removes it after a crash).
    temp: PathBuf,
    lock: Option<Flock<File>>,
    names: Vec<PathBuf>,
}

impl BatchLockFile {
    /// A fresh, locked inode in `real_store_dir`.
    pub fn new(real_store_dir: &Path) -> std::io::Result<BatchLockFile> {
        let temp = super::fsutil::temp_path(real_store_dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // No one else knows the file yet, so this cannot wait.
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, errno)) => {
                let _ = std::fs::remove_file(&temp);
                return Err(std::io::Error::from(errno));
            }
        };
        Ok(BatchLockFile {
            temp,
            lock: Some(lock),
            names: Vec::new(),
        })
    }

    /// Takes the lock of the store path at `real_path` by linking `<real_path>.lock` to this inode; `false`
    /// (and nothing done) when that name exists already, or when linking fails for any other reason (take
    /// the lock with [`LockFile`] then, which reports a real problem).
    pub fn link(&mut self, real_path: &Path) -> bool {
        let name = lock_name(real_path);
        match std::fs::hard_link(&self.temp, &name) {
            Ok(()) => {
                self.names.push(name);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives up the lock of `real_path` before the others (its name goes; an opener still waiting on the
    /// inode retries once the batch is released).
    pub fn release(&mut self, real_path: &Path) {
        let name = lock_name(real_path);
        if let Some(i) = self.names.iter().rposition(|n| *n == name) {
            let _ = std::fs::remove_file(self.names.swap_remove(i));
        }
    }
}

impl Drop for BatchLockFile {
    /// Unlinks every name, marks the inode stale for anyone who opened it meanwhile, then unlocks.
    fn drop(&mut self) {
        for name in self.names.drain(..) {
            let _ = std::fs::remove_file(name);
        }
        let _ = std::fs::remove_file(&self.temp);
        if let Some(lock) = self.lock.take() {
            let mut file: &File = &lock;
            let _ = file.write_all(b"d");
            drop(lock);
        }
    }
}

/// `<real_path>.lock`, the name Nix locks a store path with.
fn lock_name(real_path: &Path) -> PathBuf {
    let mut path = real_path.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
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

    #[test]
    fn try_acquire_does_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc-x");
        let held = LockFile::try_acquire(&p).unwrap().unwrap();
        // flock locks belong to the open file description, so a second open conflicts even in one process.
        assert!(LockFile::try_acquire(&p).unwrap().is_none());
        drop(held);
        assert!(LockFile::try_acquire(&p).unwrap().is_some());
    }

    #[test]
    fn batch_lock_file_follows_the_lock_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("aaa-x"),
            dir.path().join("bbb-y"),
            dir.path().join("ccc-z"),
        );
        let mut batch = BatchLockFile::new(dir.path()).unwrap();
        assert!(batch.link(&a));
        assert!(batch.link(&b));
        // Both names are held: another taker (as Nix would be) cannot lock either.
        assert!(LockFile::try_acquire(&a).unwrap().is_none());
        assert!(LockFile::try_acquire(&b).unwrap().is_none());
        // A name held by someone else is not linked over.
        let other = LockFile::try_acquire(&c).unwrap().unwrap();
        assert!(!batch.link(&c));
        drop(other);
        // One path given up early: its name is free for others at once.
        batch.release(&b);
        assert!(!dir.path().join("bbb-y.lock").exists());
        drop(LockFile::try_acquire(&b).unwrap().unwrap());
        // Someone who opened a name of the inode before the release finds it stale afterwards.
        let waiter = OpenOptions::new()
            .read(true)
            .open(dir.path().join("aaa-x.lock"))
            .unwrap();
        drop(batch);
        assert_ne!(waiter.metadata().unwrap().size(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        drop(LockFile::try_acquire(&a).unwrap().unwrap());
    }

    #[tokio::test]
    async fn try_lock_does_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let locks = Arc::new(PathLocks::default());
        let p = dir.path().join("abc-x");
        let held = locks.try_lock(&p).unwrap();
        assert!(locks.try_lock(&p).is_none());
        drop(held);
        assert!(locks.table.lock().unwrap().is_empty());
        let again = locks.try_lock(&p);
        assert!(again.is_some());
        drop(again);
        assert!(locks.table.lock().unwrap().is_empty());
    }
}
