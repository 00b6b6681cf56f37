//! A few dedicated threads for the short SQLite lookups (and the narinfo rendering that follows
//! them), fed by one queue.
//!
//! Why not `spawn_blocking`: tokio's blocking pool wakes a parked thread for every task whenever
//! one is idle, and it is shared with the NAR readers, so it keeps several idle threads around. A
//! narinfo request then costs two thread wake-ups (there and back) and two context switches, which
//! dominated a profile of the narinfo path. A couple of threads that stay busy draining a shared
//! queue under load pay the wake-up only when the queue was empty.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::error::{ServerError, ServerResult};

type Job = Box<dyn FnOnce() + Send>;

/// Handle to the database threads; cloning shares them. The threads end when every handle is gone.
///
/// Each thread has its own queue and jobs are dealt round-robin: one shared queue would need a lock
/// around `recv`, and handing that lock on costs another wake-up per job.
#[derive(Clone)]
pub struct DbThreads {
    queues: Arc<[mpsc::Sender<Job>]>,
    next: Arc<AtomicUsize>,
}

impl DbThreads {
    /// Starts `threads` (at least one) database threads.
    pub fn start(threads: usize) -> std::io::Result<DbThreads> {
        let mut queues = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name(format!("harmonia-db-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        // A panicking job drops its reply sender (the caller sees an error); the
                        // thread lives on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
            queues.push(tx);
        }
        Ok(DbThreads {
            queues: queues.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Runs `f` on a database thread and waits for its result without blocking the async worker.
    pub async fn run<T, F>(&self, f: F) -> ServerResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> ServerResult<T> + Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        self.queues[i]
            .send(job)
            .map_err(|_| ServerError::DbThreadFailed)?;
        result.await.map_err(|_| ServerError::DbThreadFailed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panic() {
        let db = DbThreads::start(2).expect("threads start");
        let v = db.run(|| Ok(41 + 1)).await.expect("job runs");
        assert_eq!(v, 42);
        let failed = db.run::<(), _>(|| panic!("job panics")).await;
        assert!(matches!(failed, Err(ServerError::DbThreadFailed)));
        let again = db.run(|| Ok("still alive")).await.expect("thread survived");
        assert_eq!(again, "still alive");
        let not_found = db.run::<(), _>(|| Err(ServerError::NotFound)).await;
        assert!(matches!(not_found, Err(ServerError::NotFound)));
    }
}
