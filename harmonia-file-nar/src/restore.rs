//! Unpack a NAR into a directory, never writing outside it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::{NarDecoder, NarError, NarEvent};

/// Events queued between the decoder and the writing thread (each holds at most one contents chunk).
const QUEUE: usize = 16;

/// Unpack the NAR read from `reader` at `dest`, which must not exist yet (its parent must).
///
/// The root node becomes `dest` itself (a directory, a file or a symlink). Every path written is `dest`
/// joined with names the decoder validated (never empty, `.`, `..`, or containing `/`), and every file,
/// directory and symlink is created new (`O_EXCL`-style), so nothing is written through a symlink or
/// outside `dest`. Symlink targets are stored as-is and never followed. Executable files get mode 0777,
/// others 0666, both minus the umask. Decoding runs on the caller's task; filesystem writes run on one
/// blocking-pool thread. On error the partial tree is left in place for the caller to remove. If the future
/// is dropped instead, the writing thread still applies the events already queued (at most 16 of
/// them, each at most one contents chunk) before it stops, so a caller that removes the tree right after a
/// cancellation may race with it.
pub async fn restore<R: AsyncRead + Unpin>(reader: R, dest: &Path) -> Result<(), NarError> {
    let (tx, mut rx) = mpsc::channel::<NarEvent>(QUEUE);
    let root = dest.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        let mut w = Writer { root, file: None };
        while let Some(ev) = rx.blocking_recv() {
            w.apply(ev)?;
        }
        w.close_file()
    });
    let mut decoder = NarDecoder::new(reader);
    let mut decode_result = Ok(());
    while let Some(ev) = decoder.next().await {
        match ev {
            Ok(ev) => {
                if tx.send(ev).await.is_err() {
                    // The writer stopped: its error is the one to report.
                    break;
                }
            }
            Err(e) => {
                decode_result = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let write_result = writer.await.map_err(|e| NarError::Task(e.to_string()))?;
    write_result?;
    decode_result
}

struct Writer {
    root: PathBuf,
    file: Option<(File, PathBuf)>,
}

impl Writer {
    fn apply(&mut self, ev: NarEvent) -> Result<(), NarError> {
        if let NarEvent::Contents(data) = ev {
            return match &mut self.file {
                Some((file, path)) => file.write_all(&data).map_err(|e| write_err(path, e)),
                None => Err(NarError::Task("file contents without a file".into())),
            };
        }
        self.close_file()?;
        match ev {
            NarEvent::Directory { path } => {
                let full = path.under(&self.root);
                fs::create_dir(&full).map_err(|e| self.create_err(&full, e))
            }
            NarEvent::EndDirectory { .. } | NarEvent::Contents(_) => Ok(()),
            NarEvent::File {
                path, executable, ..
            } => {
                let full = path.under(&self.root);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o777 } else { 0o666 })
                    .open(&full)
                    .map_err(|e| self.create_err(&full, e))?;
                self.file = Some((file, full));
                Ok(())
            }
            NarEvent::Symlink { path, target } => {
                let full = path.under(&self.root);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &full)
                    .map_err(|e| self.create_err(&full, e))
            }
        }
    }

    fn close_file(&mut self) -> Result<(), NarError> {
        // Closing is dropping: like Nix, no fsync per file (callers that need durability sync the tree).
        self.file = None;
        Ok(())
    }

    fn create_err(&self, full: &Path, e: io::Error) -> NarError {
        if full == self.root && e.kind() == io::ErrorKind::AlreadyExists {
            NarError::DestinationExists {
                path: self.root.clone(),
            }
        } else {
            write_err(full, e)
        }
    }
}

fn write_err(path: &Path, source: io::Error) -> NarError {
    NarError::Write {
        path: path.to_path_buf(),
        source,
    }
}
