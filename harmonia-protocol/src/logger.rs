//! A server-side logger for the stderr channel that work running elsewhere (blocking
//! tasks, other async tasks) can use: it queues [`StderrMsg`]s that the connection task
//! writes out while the operation runs and before its LAST or ERROR.
//!
//! Nix's daemon does the same with `TunnelLogger`: messages logged while no operation is
//! running are held back, and activities, results and log lines are filtered by the
//! verbosity the client chose in SetOptions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::stderr::{Field, StderrMsg};
use crate::wire::Encoder;

/// How many messages may wait before new ones are dropped (a log flood must not grow
/// memory without bound).
const QUEUE: usize = 4096;

/// A cheap, cloneable handle that queues stderr messages for one connection.
#[derive(Debug, Clone)]
pub struct Logger {
    tx: mpsc::Sender<StderrMsg>,
    verbosity: Arc<AtomicU64>,
    next_id: Arc<AtomicU64>,
}

/// The connection's end of a [`Logger`]: drains queued messages into the writer.
#[derive(Debug)]
pub struct LogQueue {
    rx: mpsc::Receiver<StderrMsg>,
}

impl Logger {
    /// A logger and its queue. Activity ids start at `(pid << 32) + 1` as in Nix, so they
    /// do not collide with the client's own.
    pub fn new(verbosity: u64) -> (Logger, LogQueue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let base = u64::from(std::process::id()) << 32;
        (
            Logger {
                tx,
                verbosity: Arc::new(AtomicU64::new(verbosity)),
                next_id: Arc::new(AtomicU64::new(base + 1)),
            },
            LogQueue { rx },
        )
    }

    /// Sets the verbosity (from SetOptions); messages above it are not sent.
    pub fn set_verbosity(&self, level: u64) {
        self.verbosity.store(level, Ordering::Relaxed);
    }

    fn wants(&self, level: u64) -> bool {
        level <= self.verbosity.load(Ordering::Relaxed)
    }

    fn send(&self, msg: StderrMsg) {
        // A full queue or a gone connection only loses log output.
        let _ = self.tx.try_send(msg);
    }

    /// Logs a line at `level` (a newline is appended, as Nix's logger does).
    pub fn log(&self, level: u64, line: &str) {
        if self.wants(level) {
            self.send(StderrMsg::Next(format!("{line}\n")));
        }
    }

    /// Starts an activity; it stops when the returned guard is dropped.
    pub fn start_activity(
        &self,
        level: u64,
        activity_type: u64,
        text: &str,
        fields: Vec<Field>,
        parent: u64,
    ) -> Activity {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sent = self.wants(level);
        if sent {
            self.send(StderrMsg::StartActivity {
                id,
                level,
                activity_type,
                text: text.to_owned(),
                fields,
                parent,
            });
        }
        Activity {
            id,
            sent,
            logger: self.clone(),
        }
    }
}

/// A running activity; sends STOP_ACTIVITY when dropped.
#[derive(Debug)]
pub struct Activity {
    id: u64,
    sent: bool,
    logger: Logger,
}

impl Activity {
    /// The activity id (parent of nested activities).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Reports a result (progress, a build log line...) of [`crate::stderr::result_type`].
    pub fn result(&self, result_type: u64, fields: Vec<Field>) {
        if self.sent {
            self.logger.send(StderrMsg::Result {
                id: self.id,
                result_type,
                fields,
            });
        }
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        if self.sent {
            self.logger.send(StderrMsg::StopActivity(self.id));
        }
    }
}

impl LogQueue {
    /// Appends every queued message to `enc` (call before writing LAST/ERROR and
    /// periodically during long operations); returns how many were written.
    pub fn drain_into(&mut self, enc: &mut Encoder) -> usize {
        let mut n = 0;
        while let Ok(msg) = self.rx.try_recv() {
            enc.write(&msg);
            n += 1;
        }
        n
    }

    /// Waits for the next message (for a connection task that `select!`s between the
    /// operation's future and its log output).
    pub async fn recv(&mut self) -> Option<StderrMsg> {
        self.rx.recv().await
    }

    /// Drops queued messages (e.g. those logged between operations, which Nix would only
    /// send at the next operation's start; the caller decides).
    pub fn clear(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stderr::{activity_type, result_type, verbosity};
    use crate::version::PROTOCOL_VERSION;

    #[test]
    fn queues_filters_and_stops_activities() {
        let (log, mut q) = Logger::new(verbosity::INFO);
        log.log(verbosity::ERROR, "shown");
        log.log(verbosity::DEBUG, "hidden");
        {
            let act = log.start_activity(
                verbosity::INFO,
                activity_type::COPY_PATH,
                "copying",
                vec![],
                0,
            );
            act.result(result_type::PROGRESS, vec![Field::Int(1)]);
            let quiet = log.start_activity(
                verbosity::VOMIT,
                activity_type::UNKNOWN,
                "",
                vec![],
                act.id(),
            );
            quiet.result(result_type::PROGRESS, vec![]);
        }
        let from_thread = log.clone();
        std::thread::spawn(move || from_thread.log(verbosity::ERROR, "from a thread"))
            .join()
            .unwrap();
        let mut enc = Encoder::new(PROTOCOL_VERSION, Default::default());
        assert_eq!(q.drain_into(&mut enc), 5);
        let mut msgs = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = enc.take_buffer();
        let mut r = crate::wire::NixReader::new(&bytes[..], PROTOCOL_VERSION, Default::default());
        for _ in 0..5 {
            msgs.push(rt.block_on(r.read::<StderrMsg>()).unwrap());
        }
        assert_eq!(msgs[0], StderrMsg::Next("shown\n".into()));
        assert!(matches!(&msgs[1], StderrMsg::StartActivity { text, .. } if text == "copying"));
        assert!(matches!(&msgs[2], StderrMsg::Result { fields, .. } if fields == &[Field::Int(1)]));
        assert!(matches!(msgs[3], StderrMsg::StopActivity(_)));
        assert_eq!(msgs[4], StderrMsg::Next("from a thread\n".into()));
    }
}
