//! A read-only connection whose lookups share one read transaction for a few milliseconds.

use std::time::{Duration, Instant};

use crate::{DbError, StoreDb};

/// A read-only [`StoreDb`] whose queries share one read transaction for up to `max_age`.
///
/// In WAL mode every read transaction takes and drops a read lock on the `-shm` file (two `fcntl` calls)
/// and looks at the WAL's size; for a server making tens of thousands of point lookups a second that is
/// a large part of each lookup. Sharing a transaction has two costs, both bounded by `max_age`: a query
/// sees the database as it was when the transaction started, and a checkpoint cannot move past that
/// snapshot while it is held. Keep `max_age` to milliseconds and call [`SnapshotReader::release`] when
/// the caller goes idle.
#[derive(Debug)]
pub struct SnapshotReader {
    db: StoreDb,
    /// When the open transaction started, if one is open.
    since: Option<Instant>,
    max_age: Duration,
}

impl SnapshotReader {
    /// Wraps `db`; no transaction is open until the first query.
    pub fn new(db: StoreDb, max_age: Duration) -> SnapshotReader {
        SnapshotReader {
            db,
            since: None,
            max_age,
        }
    }

    /// Runs `f` inside the shared transaction, starting a new one if the open one is older than
    /// `max_age`. After an error the transaction is ended, so the next query starts afresh.
    pub fn with_db<T>(
        &mut self,
        f: impl FnOnce(&StoreDb) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let now = Instant::now();
        if self
            .since
            .is_some_and(|t| now.duration_since(t) > self.max_age)
        {
            self.release();
        }
        if self.since.is_none() {
            self.db.begin_read()?;
            self.since = Some(now);
        }
        let result = f(&self.db);
        if result.is_err() {
            self.release();
        }
        result
    }

    /// Ends the shared transaction, if one is open: later queries see the database as it is then.
    pub fn release(&mut self) {
        if self.since.take().is_some() {
            self.db.end_read();
        }
    }
}

impl Drop for SnapshotReader {
    fn drop(&mut self) {
        self.release();
    }
}
