//! Zero-copy NAR bodies on plain HTTP connections: NAR bytes go from the page cache through a pipe to the
//! socket with `splice`, never through user space.
//!
//! hyper owns the connection and writes body chunks itself, so a body cannot call `splice` on the socket.
//! Instead:
//! - the body ([`PipeNar`]) fills a pipe on tokio's blocking pool (framing with `write`, file contents
//!   with `splice` from the file: the only step that may wait for the disk) and, for each batch of `n`
//!   bytes it put in the pipe, queues a [`PipeJob`] on the connection's [`SpliceQueue`] and yields a
//!   *placeholder* chunk of length `n`: a slice of a static all-zero array that nobody reads;
//! - the connection's socket wrapper ([`SpliceIo`]) recognises placeholder slices among what hyper writes
//!   and moves that many bytes from the front job's pipe to the socket with `splice` instead.
//!
//! hyper writes body chunks in order and without copying them (its queued, vectored write strategy, which
//! `server.rs` asks for), so placeholders and jobs pair up one to one. The wrapper checks that every
//! placeholder slice is exactly the unsent rest of the front job and fails the connection otherwise, so a
//! mismatch can never put placeholder zeros on the wire.
//!
//! Flow control: each response's pipe has a fixed number of buffer slots (pages); a batch only takes
//! slots that no queued job holds, and a job gives its slots back when its last byte left the pipe. So
//! neither side ever waits on a full or empty pipe, and a slow client holds at most one pipe of pages.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use futures::Stream;
use harmonia_file_nar::{FileSegment, NarEncoder, NarError, NarPiece, NarSegments};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinHandle;

use crate::metrics::{NAR_BYTES_TOTAL, NARS_TOTAL};
use crate::nar::changed_on_disk;

/// Most piped bytes one placeholder chunk stands for, and the length of the placeholder array.
const PLACEHOLDER_LEN: usize = 1 << 20;
/// Never read or written: its addresses only mark body chunks that stand for bytes waiting in a pipe.
static PLACEHOLDER: [u8; PLACEHOLDER_LEN] = [0; PLACEHOLDER_LEN];

/// Pipe size asked for (the kernel may give less, e.g. to a user over its pipe quota): 128 pages.
const PIPE_SIZE: usize = 512 << 10;
/// Pipe buffer slots hold at most a page each.
const PAGE: usize = 4096;
/// A batch starts once this many slots are free (fewer only if the pipe is that small).
const MIN_FREE_SLOTS: usize = 16;
/// Files with at least this many bytes are spliced from the page cache; smaller ones are read into the
/// encoder's chunks, where one `read` costs less than a `splice` and a pipe slot of their own.
const SPLICE_MIN: u64 = 16 << 10;
/// Chunk size of the encoder for framing and small files.
const CHUNK: usize = 64 << 10;
/// A batch stops after about this many bytes in chunks, bounding memory per response (spliced bytes are
/// bounded by the pipe's free slots).
const BATCH_BYTES: usize = 128 << 10;

fn is_placeholder(slice: &[u8]) -> bool {
    let base = PLACEHOLDER.as_ptr() as usize;
    let p = slice.as_ptr() as usize;
    !slice.is_empty() && p >= base && p < base + PLACEHOLDER_LEN
}

/// The pipe of one response, and how many of its slots queued jobs hold.
struct Pipe {
    read: OwnedFd,
    slots: usize,
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    slots_in_flight: usize,
    /// The body, waiting for slots.
    waker: Option<Waker>,
}

impl Pipe {
    fn state(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, slots: usize) {
        let waker = {
            let mut st = self.state();
            st.slots_in_flight = st.slots_in_flight.saturating_sub(slots);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Bytes of one response waiting in its pipe: what one placeholder chunk stands for.
struct PipeJob {
    pipe: Arc<Pipe>,
    len: usize,
    sent: usize,
    slots: usize,
}

impl Drop for PipeJob {
    fn drop(&mut self) {
        self.pipe.release(self.slots);
    }
}

/// The zero-copy jobs of one connection, in the order hyper writes their placeholders. Handlers find it in
/// the request's extensions on connections that support it (plain TCP and unix sockets, not TLS).
#[derive(Clone, Default)]
pub struct SpliceQueue(Arc<Mutex<VecDeque<PipeJob>>>);

impl SpliceQueue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<PipeJob>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A socket that [`SpliceIo`] can splice into.
pub trait SpliceTarget: AsyncRead + AsyncWrite + AsFd + Unpin {
    /// Waits until the socket may be writable.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Runs a non-blocking write; a `WouldBlock` result clears the readiness.
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl SpliceTarget for TcpStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }
}

impl SpliceTarget for UnixStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_write_ready(self, cx)
    }
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }
}

/// A connection's socket that writes placeholder chunks by splicing from their pipes (see the module
/// documentation); everything else is written as usual.
pub struct SpliceIo<T> {
    inner: T,
    queue: SpliceQueue,
}

impl<T: SpliceTarget> SpliceIo<T> {
    /// Wraps `inner`; bodies made with [`PipeNar::new`] for this `queue` may be written to it.
    pub fn new(inner: T, queue: SpliceQueue) -> Self {
        SpliceIo { inner, queue }
    }

    fn poll_splice(&mut self, cx: &mut Context<'_>, slice: &[u8]) -> Poll<io::Result<usize>> {
        let mut queue = self.queue.lock();
        let Some(job) = queue.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "zero-copy body chunk without a queued pipe",
            )));
        };
        let at = slice.as_ptr() as usize - PLACEHOLDER.as_ptr() as usize;
        if at != job.sent || slice.len() != job.len - job.sent {
            return Poll::Ready(Err(io::Error::other(
                "zero-copy body chunk does not match its pipe",
            )));
        }
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let want = job.len - job.sent;
            let inner = &self.inner;
            let moved = inner.try_write_io(|| {
                nix::fcntl::splice(
                    &job.pipe.read,
                    None,
                    inner.as_fd(),
                    None,
                    want,
                    SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
                )
                .map_err(io::Error::from)
            });
            match moved {
                // The pipe holds every byte of the job before it is queued, so this cannot happen.
                Ok(0) => return Poll::Ready(Err(io::Error::other("pipe ended early"))),
                Ok(n) => {
                    job.sent += n;
                    if job.sent == job.len {
                        queue.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: SpliceTarget> AsyncRead for SpliceIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: SpliceTarget> AsyncWrite for SpliceIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match bufs.iter().position(|b| is_placeholder(b)) {
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            Some(0) => this.poll_splice(cx, &bufs[0]),
            Some(k) => Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..k]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Fills a response's pipe from the NAR encoder; runs on the blocking pool.
struct Filler {
    write: OwnedFd,
    pieces: Pieces,
    /// A file whose contents are only partly in the pipe.
    current: Option<FileSegment>,
    /// Bytes of the response still to produce.
    remaining: u64,
    /// Whether the NAR goes on after the response (a range that ends early).
    more_after: bool,
}

/// Where a body's bytes come from: the NAR encoder, or a file that already holds NAR bytes.
type Pieces = Box<dyn Iterator<Item = Result<NarPiece, NarError>> + Send>;

/// One part of a batch, in body order.
enum Out {
    /// Framing and small files: an ordinary body chunk.
    Bytes(Bytes),
    /// This many bytes were spliced into the pipe, holding at most `slots` of its slots.
    Piped { bytes: usize, slots: usize },
}

/// What one run of the filler produced.
struct Batch {
    out: VecDeque<Out>,
    finished: bool,
}

impl Filler {
    /// Produces up to [`BATCH_BYTES`] of the response, splicing file contents into at most `budget` free
    /// pipe slots.
    fn fill(&mut self, budget: usize) -> io::Result<Batch> {
        let mut batch = Batch {
            out: VecDeque::new(),
            finished: false,
        };
        // Bytes in memory (chunks) are bounded by BATCH_BYTES, bytes in the pipe by its free slots.
        let mut in_memory = 0usize;
        let mut piped = 0usize;
        let mut slots = 0usize;
        while in_memory < BATCH_BYTES {
            if self.remaining == 0 {
                if !self.more_after {
                    // The whole NAR went out: the encoder must have nothing more.
                    for piece in self.pieces.by_ref() {
                        match piece {
                            Err(e) => return Err(io::Error::other(e)),
                            Ok(NarPiece::Bytes(b)) if b.is_empty() => {}
                            Ok(_) => return Err(changed_on_disk()),
                        }
                    }
                }
                batch.finished = true;
                break;
            }
            let mut segment = match self.current.take() {
                Some(s) => s,
                None => match self.pieces.next() {
                    None => return Err(changed_on_disk()),
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    Some(Ok(NarPiece::Bytes(mut b))) => {
                        if b.len() as u64 > self.remaining {
                            if !self.more_after {
                                return Err(changed_on_disk());
                            }
                            b.truncate(self.remaining as usize);
                        }
                        self.remaining -= b.len() as u64;
                        in_memory += b.len();
                        batch.out.push_back(Out::Bytes(b));
                        continue;
                    }
                    Some(Ok(NarPiece::File(s))) => s,
                },
            };
            if segment.remaining() > self.remaining && !self.more_after {
                return Err(changed_on_disk());
            }
            let lead = (segment.offset() % PAGE as u64) as usize;
            let room = ((budget - slots) * PAGE).saturating_sub(lead) as u64;
            let want = segment
                .remaining()
                .min(self.remaining)
                .min((PLACEHOLDER_LEN - piped) as u64)
                .min(room) as usize;
            if want == 0 {
                self.current = Some(segment);
                break;
            }
            let mut offset = i64::try_from(segment.offset()).map_err(io::Error::other)?;
            let spliced = nix::fcntl::splice(
                segment.file(),
                Some(&mut offset),
                &self.write,
                None,
                want,
                SpliceFFlags::SPLICE_F_NONBLOCK,
            );
            match spliced {
                Ok(0) => return Err(io::Error::other(segment.changed())),
                Ok(n) => {
                    let used = (lead + n).div_ceil(PAGE);
                    piped += n;
                    slots += used;
                    self.remaining -= n as u64;
                    segment.advance(n as u64);
                    match batch.out.back_mut() {
                        // Consecutive splices make one job: the pipe keeps their order.
                        Some(Out::Piped { bytes, slots }) => {
                            *bytes += n;
                            *slots += used;
                        }
                        _ => batch.out.push_back(Out::Piped {
                            bytes: n,
                            slots: used,
                        }),
                    }
                    if segment.remaining() > 0 {
                        self.current = Some(segment);
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    self.current = Some(segment);
                    break;
                }
                Err(e) => {
                    return Err(io::Error::other(NarError::Io {
                        path: segment.path().to_owned(),
                        source: e.into(),
                    }));
                }
            }
            if slots >= budget {
                break;
            }
        }
        Ok(batch)
    }
}

type Filled = (Box<Filler>, io::Result<Batch>);

/// A NAR response body (all of it, or one range) whose file contents travel through a pipe; it must be
/// written to the [`SpliceIo`] of its [`SpliceQueue`].
pub struct PipeNar {
    queue: SpliceQueue,
    pipe: Arc<Pipe>,
    idle: Option<Box<Filler>>,
    pending: Option<JoinHandle<Filled>>,
    /// Slots reserved for the running batch.
    reserved: usize,
    /// Parts of finished batches not handed out yet.
    ready: VecDeque<Out>,
    /// The error that ended the filler, handed out after `ready`.
    failed: Option<io::Error>,
    /// Whether the filler produced the last batch.
    finished: bool,
    /// Counts the NAR as served once its last part is handed out.
    full: bool,
    /// Bytes of the response not handed out yet.
    left: u64,
    /// Set when a batch found the pipe full although the slot count said otherwise: the slots then in
    /// flight. The next batch waits until some of them drained.
    stalled_at: Option<usize>,
}

impl PipeNar {
    /// The body for `len` bytes of the NAR of `path` from byte `start`, where the whole NAR has
    /// `nar_size` bytes.
    pub fn new(
        queue: SpliceQueue,
        path: PathBuf,
        start: u64,
        len: u64,
        nar_size: u64,
    ) -> io::Result<PipeNar> {
        let pieces: NarSegments = NarEncoder::with_file_segments(path, start, CHUNK, SPLICE_MIN);
        PipeNar::with_pieces(queue, Box::new(pieces), start, len, nar_size)
    }

    /// The body for a NAR already on disk as a file (see [`crate::narcache`]): `segment` holds the
    /// response's bytes, from byte `start` of a NAR of `nar_size` bytes.
    pub fn from_file(
        queue: SpliceQueue,
        segment: FileSegment,
        start: u64,
        nar_size: u64,
    ) -> io::Result<PipeNar> {
        let len = segment.remaining();
        let pieces = std::iter::once(Ok(NarPiece::File(segment)));
        PipeNar::with_pieces(queue, Box::new(pieces), start, len, nar_size)
    }

    fn with_pieces(
        queue: SpliceQueue,
        pieces: Pieces,
        start: u64,
        len: u64,
        nar_size: u64,
    ) -> io::Result<PipeNar> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        // A pipe over the user's quota keeps the default size (or less); use what it has.
        let size = nix::fcntl::fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32))
            .or_else(|_| nix::fcntl::fcntl(write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ))?;
        let slots = (usize::try_from(size).unwrap_or(PAGE) / PAGE).max(1);
        let filler = Filler {
            write,
            pieces,
            current: None,
            remaining: len,
            more_after: start.saturating_add(len) < nar_size,
        };
        Ok(PipeNar {
            queue,
            pipe: Arc::new(Pipe {
                read,
                slots,
                state: Mutex::new(PipeState::default()),
            }),
            idle: Some(Box::new(filler)),
            pending: None,
            reserved: 0,
            ready: VecDeque::new(),
            failed: None,
            finished: len == 0,
            full: start == 0 && len == nar_size,
            left: len,
            stalled_at: None,
        })
    }

    /// Starts a batch unless one runs, the filler is done, or too few slots are free (then registers to
    /// be woken when some are). Returns whether a batch is running.
    fn start(&mut self, cx: &mut Context<'_>) -> bool {
        if self.pending.is_some() {
            return true;
        }
        if self.finished || self.failed.is_some() {
            return false;
        }
        let Some(mut filler) = self.idle.take() else {
            return false;
        };
        let budget = {
            let mut st = self.pipe.state();
            let free = self.pipe.slots.saturating_sub(st.slots_in_flight);
            let drained = self.stalled_at.is_none_or(|at| st.slots_in_flight < at);
            if !drained || free < MIN_FREE_SLOTS.min(self.pipe.slots) {
                st.waker = Some(cx.waker().clone());
                drop(st);
                self.idle = Some(filler);
                return false;
            }
            // Held until the batch reports how many it used.
            st.slots_in_flight += free;
            free
        };
        self.stalled_at = None;
        self.reserved = budget;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let batch = filler.fill(budget);
            (filler, batch)
        }));
        true
    }

    /// Collects a finished batch, if there is one.
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(handle) = self.pending.as_mut() else {
            return Poll::Ready(());
        };
        let result = ready!(Pin::new(handle).poll(cx));
        self.pending = None;
        self.pipe.release(std::mem::take(&mut self.reserved));
        match result {
            Err(e) => self.failed = Some(io::Error::other(e)),
            Ok((_, Err(e))) => {
                tracing::warn!("NAR stream failed: {e}");
                self.failed = Some(e);
            }
            Ok((filler, Ok(batch))) => {
                let piped: usize = batch
                    .out
                    .iter()
                    .map(|o| match o {
                        Out::Piped { slots, .. } => *slots,
                        Out::Bytes(_) => 0,
                    })
                    .sum();
                // The pipe holds these until their jobs drain.
                self.pipe.state().slots_in_flight += piped;
                if batch.out.is_empty() && !batch.finished {
                    // Nothing fitted although the slot count said it would: wait for queued jobs to
                    // drain, or give up rather than spin if none are queued.
                    let in_flight = self.pipe.state().slots_in_flight;
                    if in_flight == 0 {
                        self.failed = Some(io::Error::other("NAR pipe stalled"));
                    } else {
                        self.stalled_at = Some(in_flight);
                    }
                }
                self.ready.extend(batch.out);
                self.finished = batch.finished;
                self.idle = Some(filler);
            }
        }
        Poll::Ready(())
    }
}

impl Stream for PipeNar {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.pending.is_some() && this.poll_batch(cx).is_pending() && this.ready.is_empty() {
                return Poll::Pending;
            }
            if let Some(out) = this.ready.pop_front() {
                // Keep one batch in the making while this part goes out.
                this.start(cx);
                let n = match &out {
                    Out::Bytes(b) => b.len(),
                    Out::Piped { bytes, .. } => *bytes,
                };
                metrics::counter!(NAR_BYTES_TOTAL).increment(n as u64);
                this.left = this.left.saturating_sub(n as u64);
                // hyper stops polling once Content-Length bytes went out, so count here.
                if this.left == 0 && this.full {
                    metrics::counter!(NARS_TOTAL).increment(1);
                }
                return Poll::Ready(Some(Ok(match out {
                    Out::Bytes(b) => b,
                    Out::Piped { bytes, slots } => {
                        this.queue.lock().push_back(PipeJob {
                            pipe: Arc::clone(&this.pipe),
                            len: bytes,
                            sent: 0,
                            slots,
                        });
                        Bytes::from_static(&PLACEHOLDER[..bytes])
                    }
                })));
            }
            if let Some(e) = this.failed.take() {
                this.finished = true;
                this.idle = None;
                return Poll::Ready(Some(Err(e)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            if !this.start(cx) {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3_000_123u32).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("small"), b"small").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/mid"), vec![9u8; 40_000]).unwrap();
        std::fs::write(dir.path().join("sub/edge"), vec![5u8; SPLICE_MIN as usize]).unwrap();
        dir
    }

    fn reference(path: &std::path::Path) -> Vec<u8> {
        NarEncoder::new(path)
            .map(|c| c.unwrap().to_vec())
            .collect::<Vec<_>>()
            .concat()
    }

    /// Writes the body through a `SpliceIo` the way hyper does (chunk by chunk, in order) and returns
    /// what the peer received, or the body's error.
    async fn through_socket(
        path: &std::path::Path,
        start: u64,
        len: u64,
        size: u64,
    ) -> io::Result<Vec<u8>> {
        let (a, mut b) = UnixStream::pair().unwrap();
        let queue = SpliceQueue::default();
        let mut io = SpliceIo::new(a, queue.clone());
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.unwrap();
            out
        });
        let mut body = PipeNar::new(queue.clone(), path.to_owned(), start, len, size).unwrap();
        while let Some(chunk) = body.next().await {
            io.write_all(&chunk?).await.unwrap();
        }
        assert!(queue.lock().is_empty(), "every job was written");
        io.shutdown().await.unwrap();
        drop(io);
        Ok(reader.await.unwrap())
    }

    #[tokio::test]
    async fn the_socket_gets_the_nar_and_its_ranges() {
        let dir = tree();
        let nar = reference(dir.path());
        let size = nar.len() as u64;
        assert!(through_socket(dir.path(), 0, size, size).await.unwrap() == nar);
        for (start, end) in [(0, 99), (1000, 2_000_000), (size - 5000, size - 1), (7, 7)] {
            let got = through_socket(dir.path(), start, end - start + 1, size)
                .await
                .unwrap();
            assert!(
                got == nar[start as usize..=end as usize],
                "range {start}-{end}"
            );
        }
    }

    #[tokio::test]
    async fn a_nar_that_grew_or_shrank_is_an_error() {
        let dir = tree();
        let size = reference(dir.path()).len() as u64;
        for claimed in [size - 8, size + 8] {
            let got = through_socket(dir.path(), 0, claimed, claimed).await;
            assert!(got.is_err(), "claimed size {claimed} of {size}");
        }
    }

    #[tokio::test]
    async fn a_placeholder_without_its_job_fails_the_write() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut io = SpliceIo::new(a, SpliceQueue::default());
        let err = io.write_all(&PLACEHOLDER[..10]).await.unwrap_err();
        assert!(err.to_string().contains("without a queued pipe"), "{err}");
        // Ordinary bytes are written as usual.
        io.write_all(b"plain").await.unwrap();
    }
}
