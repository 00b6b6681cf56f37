//! [`StoreDbPool`]: a bounded set of read-only connections shared by a server's blocking tasks.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use harmonia_store_path::StoreDir;

use crate::{DbError, StoreDb};

/// A small pool of read-only [`StoreDb`] connections for servers.
///
/// At most `max_connections` connections are open at once; a caller that finds them all busy waits for one
/// to come back. Connections are opened lazily and reused, so each keeps its prepared statements. Every
/// method blocks: async code calls them inside `tokio::task::spawn_blocking`.
#[derive(Debug)]
pub struct StoreDbPool {
    db_path: PathBuf,
    store_dir: StoreDir,
    max_connections: usize,
    /// Busy timeout of every connection, when not [`crate::DEFAULT_BUSY_TIMEOUT`].
    busy_timeout: Option<Duration>,
    state: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Debug)]
struct PoolState {
    idle: Vec<StoreDb>,
    /// Connections open, idle or lent out.
    open: usize,
    /// Callers waiting for a connection: a returned connection wakes one only if there is one
    /// (a condition variable's notify is a system call even when nobody waits).
    waiting: usize,
}

impl StoreDbPool {
    /// Open the first connection right away (so a missing or foreign database fails at start-up) and allow up
    /// to `max_connections` (at least 1).
    pub fn new(
        db_path: impl AsRef<Path>,
        store_dir: StoreDir,
        max_connections: usize,
    ) -> Result<StoreDbPool, DbError> {
        let db_path = db_path.as_ref().to_path_buf();
        let first = StoreDb::open_read_only(&db_path, store_dir.clone())?;
        Ok(StoreDbPool {
            db_path,
            store_dir,
            max_connections: max_connections.max(1),
            busy_timeout: None,
            state: Mutex::new(PoolState {
                idle: vec![first],
                open: 1,
                waiting: 0,
            }),
            returned: Condvar::new(),
        })
    }

    /// Gives every connection of the pool this busy timeout instead of [`crate::DEFAULT_BUSY_TIMEOUT`]
    /// (zero: a statement that would wait for another process's lock fails at once with a busy error).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Result<StoreDbPool, DbError> {
        for db in &self.lock().idle {
            db.set_busy_timeout(timeout)?;
        }
        self.busy_timeout = Some(timeout);
        Ok(self)
    }

    /// The logical store directory of the database.
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The most connections this pool opens.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Run `f` with a connection, waiting for one if all are in use. The connection goes back to the pool
    /// afterwards, also when `f` fails or panics.
    pub fn with_conn<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&StoreDb) -> Result<T, E>,
    ) -> Result<T, E> {
        let lease = self.acquire()?;
        f(lease.db())
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Nothing panics while holding the lock, but never turn a poisoned lock into a second panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn acquire(&self) -> Result<Lease<'_>, DbError> {
        let mut state = self.lock();
        loop {
            if let Some(db) = state.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    db: Some(db),
                });
            }
            if state.open < self.max_connections {
                state.open += 1;
                drop(state);
                let opened = StoreDb::open_read_only(&self.db_path, self.store_dir.clone())
                    .and_then(|db| match self.busy_timeout {
                        Some(timeout) => db.set_busy_timeout(timeout).map(|()| db),
                        None => Ok(db),
                    });
                return match opened {
                    Ok(db) => Ok(Lease {
                        pool: self,
                        db: Some(db),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            state.waiting += 1;
            state = self
                .returned
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.waiting -= 1;
        }
    }
}

/// A connection lent out by the pool; given back on drop.
struct Lease<'a> {
    pool: &'a StoreDbPool,
    db: Option<StoreDb>,
}

impl Lease<'_> {
    fn db(&self) -> &StoreDb {
        // `db` is only taken in `drop`.
        self.db
            .as_ref()
            .unwrap_or_else(|| unreachable!("lease used after drop"))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            let wake = {
                let mut state = self.pool.lock();
                state.idle.push(db);
                state.waiting > 0
            };
            if wake {
                self.pool.returned.notify_one();
            }
        }
    }
}
