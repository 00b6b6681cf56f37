//! Streaming NAR encoder: a filesystem path in, `nix-store --dump` bytes out.
//!
//! [`NarEncoder`] is the synchronous core: an iterator of chunks of about [`CHUNK_SIZE`] bytes. Directory
//! entries and small files are batched into one chunk; big files are read straight into the chunk buffer in
//! large reads (no extra copy). Chunk buffers are recycled once the consumer drops them. [`encode`] and
//! [`encode_from_offset`] wrap it in an async [`Stream`] whose filesystem work runs on tokio's blocking
//! pool, one batch of chunks ahead of the consumer.
//!
//! No `posix_fadvise`: every read asks for up to a whole chunk, which already makes the kernel's readahead
//! window grow on cold files, and warm files come from the page cache.

use std::cmp::min;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::task::JoinHandle;

use crate::NarError;
use crate::wire::{self, MAGIC, ZEROS};

/// Size of the chunks the encoder yields (the last one may be shorter). 256 KiB measured fastest on this
/// project's machines: the buffer stays in L2 cache while the kernel copies into it and the consumer reads it.
pub const CHUNK_SIZE: usize = 256 << 10;

/// Bytes before a file segment up to this many are copied out of the chunk buffer (see
/// `NarEncoder::take_framing`).
const FRAMING_COPY_MAX: usize = 4 << 10;

/// The async stream asks the blocking pool for this many chunks at a time, to amortise the hand-off.
const CHUNKS_PER_TASK: usize = 4;

/// Room kept above the chunk size so that the headers of one more entry (names up to 255 bytes, symlink
/// targets up to 4 KiB on Linux) and the one-byte growth probe of the last read of a file fit without
/// growing the buffer.
const SLACK: usize = 16 << 10;

/// Idle buffers kept per encoder for reuse: enough for the two batches [`NarStream`] has in flight. An
/// encoder only ever allocates as many buffers as its consumer holds chunks at once, so a consumer that
/// takes one chunk at a time keeps two.
const POOL_MAX: usize = 2 * CHUNKS_PER_TASK;

/// Recycles chunk buffers. A buffer is zero-filled once when allocated and then reused whenever every
/// [`Bytes`] made from it has been dropped: no fresh pages (and page faults) per chunk, no re-zeroing, and
/// file data is read straight into the buffer the consumer gets.
struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    size: usize,
}

impl BufferPool {
    fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        reused.unwrap_or_else(|| vec![0; self.size])
    }
}

/// The owner behind a chunk's [`Bytes`]: gives its buffer back to the pool when the last reference drops.
struct PooledChunk {
    data: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if let Ok(mut free) = self.pool.free.lock() {
            if free.len() < POOL_MAX {
                free.push(data);
            }
        }
    }
}

/// What a directory entry (or the root) is, as far as the encoder cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Directory,
    Symlink,
    Regular,
    /// Anything else (sockets, devices, FIFOs): refused.
    Other,
}

impl Kind {
    fn of(ft: rustix::fs::FileType) -> Option<Kind> {
        use rustix::fs::FileType as T;
        match ft {
            T::Directory => Some(Kind::Directory),
            T::Symlink => Some(Kind::Symlink),
            T::RegularFile => Some(Kind::Regular),
            T::Unknown => None,
            _ => Some(Kind::Other),
        }
    }
}

/// One directory being walked: its open descriptor (entries are opened relative to it, so the kernel
/// looks up one name instead of the whole path) and its entries sorted in *descending* byte order, so
/// `pop` gives the next one.
struct DirFrame {
    dir: Arc<rustix::fs::Dir>,
    entries: Vec<(OsString, Kind)>,
}

/// Where the node being entered is: the root path, or a name in an open directory.
enum Location {
    Root,
    Entry {
        dir: Arc<rustix::fs::Dir>,
        name: OsString,
    },
}

/// Flags for opening regular files: never follow a symlink swapped in, never block on a FIFO swapped in.
fn file_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC
}

fn dir_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

enum State {
    Start,
    Walk,
    Contents {
        file: File,
        remaining: u64,
        size: u64,
    },
    /// A file's contents went out as a [`FileSegment`]; its padding and closing come next.
    AfterSegment {
        size: u64,
    },
    Done,
    Failed,
}

/// A piece of a NAR from [`NarSegments`]: bytes in memory, or a range of a file that the consumer copies
/// itself (with `sendfile` or `splice`, so file contents never pass through user space).
#[derive(Debug)]
pub enum NarPiece {
    /// Framing, names, symlink targets and the contents of small files.
    Bytes(Bytes),
    /// The contents (or, for a range, the part in range) of one regular file.
    File(FileSegment),
}

/// `remaining` bytes of an open regular file starting at `offset`: the next bytes of the NAR.
///
/// The consumer copies them and calls [`FileSegment::advance`]; a copy that ends early (the file shrank)
/// is reported with [`FileSegment::changed`].
#[derive(Debug)]
pub struct FileSegment {
    file: File,
    offset: u64,
    remaining: u64,
    size: u64,
    path: PathBuf,
}

impl FileSegment {
    /// `len` bytes of the open `file` (found at `path`) from `offset`: for serving a file that already
    /// holds NAR bytes. Fails if the file is shorter than `offset + len`.
    pub fn new(file: File, path: PathBuf, offset: u64, len: u64) -> Result<FileSegment, NarError> {
        let size = file.metadata().map_err(|e| NarError::io(&path, e))?.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(NarError::FileChanged {
                path,
                expected: offset.saturating_add(len),
            });
        }
        Ok(FileSegment {
            file,
            offset,
            remaining: len,
            size,
            path,
        })
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where in the file the next byte to copy is.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many bytes are still to be copied.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that `n` more bytes were copied (at most [`FileSegment::remaining`]).
    pub fn advance(&mut self, n: u64) {
        let n = n.min(self.remaining);
        self.offset += n;
        self.remaining -= n;
    }

    /// The error for a file that ended before the segment did: it changed since its header was written.
    pub fn changed(&self) -> NarError {
        NarError::FileChanged {
            path: self.path.clone(),
            expected: self.size,
        }
    }
}

/// Synchronous NAR encoder: an [`Iterator`] over chunks of the NAR of a path, byte-identical to
/// `nix-store --dump`.
///
/// Memory stays bounded by about two chunks plus one sorted directory listing per directory level. A file
/// that changes size or disappears while it is encoded gives [`NarError::FileChanged`] or
/// [`NarError::Io`]; after an error the iterator ends.
pub struct NarEncoder {
    /// Path of the node being visited (the current directory while walking it).
    path: PathBuf,
    stack: Vec<DirFrame>,
    state: State,
    /// The chunk being filled: `buf[..filled]` is NAR data; `buf` is always fully initialised.
    buf: Vec<u8>,
    filled: usize,
    pool: Arc<BufferPool>,
    chunk_size: usize,
    /// Bytes still to drop from the front of the NAR (see [`NarEncoder::from_offset`]).
    skip: u64,
    offset: u64,
    /// Files with at least this many bytes to send become [`FileSegment`]s (see [`NarSegments`]).
    segment_min: Option<u64>,
    /// A segment waiting for the bytes before it to be handed out.
    segment: Option<FileSegment>,
    /// Regular files whose header has been encoded.
    regular_files: u64,
}

impl NarEncoder {
    /// An encoder for the NAR of `path` (which is not followed if it is a symlink, like Nix).
    pub fn new(path: impl Into<PathBuf>) -> NarEncoder {
        NarEncoder::from_offset(path, 0)
    }

    /// An encoder that yields the NAR of `path` starting at byte `offset` (for HTTP range requests).
    ///
    /// Header sizes come from metadata and files wholly before `offset` are never opened; the file that
    /// contains `offset` is opened and seeked. An offset past the end gives [`NarError::OffsetPastEnd`].
    pub fn from_offset(path: impl Into<PathBuf>, offset: u64) -> NarEncoder {
        NarEncoder::with_chunk_size(path.into(), offset, CHUNK_SIZE)
    }

    /// Like [`NarEncoder::from_offset`], with chunks of about `chunk_size` bytes instead of
    /// [`CHUNK_SIZE`] (servers with many concurrent downloads trade a little speed for memory).
    pub fn with_chunk_size(path: PathBuf, offset: u64, chunk_size: usize) -> NarEncoder {
        let chunk_size = chunk_size.max(1);
        NarEncoder {
            path,
            stack: Vec::new(),
            state: State::Start,
            buf: Vec::new(),
            filled: 0,
            pool: Arc::new(BufferPool {
                free: Mutex::new(Vec::new()),
                size: chunk_size.saturating_add(SLACK),
            }),
            chunk_size,
            skip: offset,
            offset,
            segment_min: None,
            segment: None,
            regular_files: 0,
        }
    }

    /// Like [`NarEncoder::with_chunk_size`], but the contents of files with at least `min_segment` bytes to
    /// send are handed out as [`FileSegment`]s for the consumer to copy in the kernel, instead of being read.
    pub fn with_file_segments(
        path: PathBuf,
        offset: u64,
        chunk_size: usize,
        min_segment: u64,
    ) -> NarSegments {
        let mut encoder = NarEncoder::with_chunk_size(path, offset, chunk_size);
        encoder.segment_min = Some(min_segment.max(1));
        NarSegments(encoder)
    }

    /// How many regular files the NAR handed out so far has (a file counts once its header is encoded).
    pub fn regular_files(&self) -> u64 {
        self.regular_files
    }

    /// Write the whole NAR into `out`; returns the number of bytes written.
    pub fn write_to(self, out: &mut impl Write) -> Result<u64, NarError> {
        let mut n = 0;
        for chunk in self {
            let chunk = chunk?;
            out.write_all(&chunk)
                .map_err(|e| NarError::io("<NAR output>", e))?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    #[inline]
    fn put(&mut self, data: &[u8]) {
        let data = if self.skip == 0 {
            data
        } else {
            let n = min(self.skip, data.len() as u64) as usize;
            self.skip -= n as u64;
            &data[n..]
        };
        let end = self.filled + data.len();
        if end > self.buf.len() {
            self.buf.resize(end, 0);
        }
        self.buf[self.filled..end].copy_from_slice(data);
        self.filled = end;
    }

    #[inline]
    fn put_str(&mut self, s: &[u8]) {
        self.put(&(s.len() as u64).to_le_bytes());
        self.put(s);
        self.put(&ZEROS[..wire::padding(s.len() as u64)]);
    }

    fn ensure_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = self.pool.take();
        }
    }

    fn take_chunk(&mut self) -> Bytes {
        let chunk = PooledChunk {
            data: std::mem::take(&mut self.buf),
            len: self.filled,
            pool: Arc::clone(&self.pool),
        };
        self.filled = 0;
        Bytes::from_owner(chunk)
    }

    /// The bytes before a file segment: often just the framing since the last one. A few bytes are copied
    /// out, so that the buffer (chunk-sized) stays for the next bytes instead of travelling with them: a
    /// consumer holding many such pieces would otherwise hold as many buffers, and the pool would have to
    /// allocate (and zero) new ones.
    fn take_framing(&mut self) -> Bytes {
        if self.filled > FRAMING_COPY_MAX {
            return self.take_chunk();
        }
        let bytes = Bytes::copy_from_slice(&self.buf[..self.filled]);
        self.filled = 0;
        bytes
    }

    /// Close the current node, and the directory entry around it if it has one.
    fn close_node(&mut self) {
        self.put_str(b")");
        if self.stack.is_empty() {
            self.state = State::Done;
        } else {
            self.put_str(b")");
            self.path.pop();
        }
    }

    fn open_at(
        &self,
        at: &Location,
        flags: rustix::fs::OFlags,
    ) -> Result<std::os::fd::OwnedFd, NarError> {
        let opened = match at {
            Location::Root => rustix::fs::open(&self.path, flags, rustix::fs::Mode::empty()),
            Location::Entry { dir, name } => {
                let fd = dir.fd().map_err(|e| NarError::io(&self.path, e.into()))?;
                rustix::fs::openat(fd, name.as_os_str(), flags, rustix::fs::Mode::empty())
            }
        };
        opened.map_err(|e| NarError::io(&self.path, e.into()))
    }

    /// Emit the node at `self.path` (found at `at`), whose kind is `kind`.
    fn enter_node(&mut self, kind: Kind, at: Location) -> Result<(), NarError> {
        match kind {
            Kind::Directory => {
                let fd = self.open_at(&at, dir_flags())?;
                let mut dir =
                    rustix::fs::Dir::new(fd).map_err(|e| NarError::io(&self.path, e.into()))?;
                let mut entries = Vec::new();
                while let Some(entry) = dir.read() {
                    let entry = entry.map_err(|e| NarError::io(&self.path, e.into()))?;
                    let name = entry.file_name().to_bytes();
                    if name == b"." || name == b".." {
                        continue;
                    }
                    let name = OsString::from(std::ffi::OsStr::from_bytes(name));
                    let kind = match Kind::of(entry.file_type()) {
                        Some(k) => k,
                        // File systems without d_type: ask.
                        None => {
                            let fd = dir.fd().map_err(|e| NarError::io(&self.path, e.into()))?;
                            let st = rustix::fs::statat(
                                fd,
                                name.as_os_str(),
                                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                            )
                            .map_err(|e| NarError::io(self.path.join(&name), e.into()))?;
                            Kind::of(rustix::fs::FileType::from_raw_mode(st.st_mode))
                                .unwrap_or(Kind::Other)
                        }
                    };
                    entries.push((name, kind));
                }
                // Nix sorts by raw bytes; OsStr's Ord on Unix is byte order. Descending, for pop().
                entries.sort_unstable_by(|a, b| b.0.cmp(&a.0));
                self.put_str(b"type");
                self.put_str(b"directory");
                self.stack.push(DirFrame {
                    dir: Arc::new(dir),
                    entries,
                });
            }
            Kind::Symlink => {
                let target = match &at {
                    Location::Root => fs::read_link(&self.path)
                        .map_err(|e| NarError::io(&self.path, e))?
                        .into_os_string()
                        .into_vec(),
                    Location::Entry { dir, name } => {
                        let fd = dir.fd().map_err(|e| NarError::io(&self.path, e.into()))?;
                        rustix::fs::readlinkat(fd, name.as_os_str(), Vec::new())
                            .map_err(|e| NarError::io(&self.path, e.into()))?
                            .into_bytes()
                    }
                };
                self.put_str(b"type");
                self.put_str(b"symlink");
                self.put_str(b"target");
                self.put_str(&target);
                self.close_node();
            }
            Kind::Regular => self.enter_file(at)?,
            Kind::Other => {
                return Err(NarError::UnsupportedFileType {
                    path: self.path.clone(),
                });
            }
        }
        Ok(())
    }

    fn stat_at(&self, at: &Location) -> Result<rustix::fs::Stat, NarError> {
        let st = match at {
            Location::Root => rustix::fs::statat(
                rustix::fs::CWD,
                &self.path,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ),
            Location::Entry { dir, name } => {
                let fd = dir.fd().map_err(|e| NarError::io(&self.path, e.into()))?;
                rustix::fs::statat(fd, name.as_os_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            }
        };
        st.map_err(|e| NarError::io(&self.path, e.into()))
    }

    fn open_file(&self, at: &Location) -> Result<(File, rustix::fs::Stat), NarError> {
        let file = File::from(self.open_at(at, file_flags())?);
        let st = rustix::fs::fstat(&file).map_err(|e| NarError::io(&self.path, e.into()))?;
        Ok((file, st))
    }

    /// Emit a regular file and then its contents. Without an offset to skip, the file is opened first and
    /// its size and mode come from the open file (one name lookup); while skipping, it is stat'ed by name so
    /// that files wholly before the offset are never opened.
    fn enter_file(&mut self, at: Location) -> Result<(), NarError> {
        let (file, st) = if self.skip == 0 {
            let (file, st) = self.open_file(&at)?;
            (Some(file), st)
        } else {
            (None, self.stat_at(&at)?)
        };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(NarError::UnsupportedFileType {
                path: self.path.clone(),
            });
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        self.regular_files += 1;
        self.put_str(b"type");
        self.put_str(b"regular");
        if st.st_mode & 0o100 != 0 {
            self.put_str(b"executable");
            self.put_str(b"");
        }
        self.put_str(b"contents");
        self.put(&size.to_le_bytes());
        if self.skip >= size {
            // Empty, or wholly before the requested offset.
            self.skip -= size;
            self.finish_file(size);
            return Ok(());
        }
        let file = match file {
            Some(file) => file,
            None => {
                let (file, now) = self.open_file(&at)?;
                if now.st_size != st.st_size {
                    return Err(self.changed(size));
                }
                file
            }
        };
        if self.segment_min.is_some_and(|min| size - self.skip >= min) {
            // The consumer copies exactly `size - skip` bytes and notices a file that shrank.
            self.segment = Some(FileSegment {
                file,
                offset: self.skip,
                remaining: size - self.skip,
                size,
                path: self.path.clone(),
            });
            self.skip = 0;
            self.state = State::AfterSegment { size };
        } else {
            let mut file = file;
            if self.skip > 0 {
                file.seek(SeekFrom::Start(self.skip))
                    .map_err(|e| NarError::io(&self.path, e))?;
            }
            self.state = State::Contents {
                file,
                remaining: size - self.skip,
                size,
            };
            self.skip = 0;
        }
        Ok(())
    }

    fn finish_file(&mut self, size: u64) {
        self.put(&ZEROS[..wire::padding(size)]);
        self.close_node();
    }

    /// Visit the next entry of the innermost directory, or close it.
    fn walk_step(&mut self) -> Result<(), NarError> {
        let Some(frame) = self.stack.last_mut() else {
            self.state = State::Done;
            return Ok(());
        };
        let Some((name, kind)) = frame.entries.pop() else {
            self.stack.pop();
            self.close_node();
            return Ok(());
        };
        let dir = Arc::clone(&frame.dir);
        self.put_str(b"entry");
        self.put_str(b"(");
        self.put_str(b"name");
        self.put_str(name.as_bytes());
        self.put_str(b"node");
        self.put_str(b"(");
        self.path.push(&name);
        self.enter_node(kind, Location::Entry { dir, name })
    }

    /// Read more of the current file into the chunk buffer.
    fn contents_step(&mut self, mut file: File, remaining: u64, size: u64) -> Result<(), NarError> {
        let room = self.chunk_size.saturating_sub(self.filled).max(1) as u64;
        if remaining > room {
            let want = room as usize;
            let got = self.read_into(&mut file, want, want)?;
            if got < want {
                return Err(self.changed(size));
            }
            self.filled += want;
            self.state = State::Contents {
                file,
                remaining: remaining - want as u64,
                size,
            };
            return Ok(());
        }
        // The last read of this file asks for one byte more than the header promised, so a file that grew
        // is noticed without a separate end-of-file read (one `read` per small file, like Nix).
        let want = remaining as usize;
        let got = self.read_into(&mut file, want, want + 1)?;
        if got != want {
            return Err(self.changed(size));
        }
        self.filled += want;
        self.state = State::Walk;
        self.finish_file(size);
        Ok(())
    }

    /// Read from `file` into the buffer after `filled`, asking for up to `ask` bytes, until at least `want`
    /// bytes arrived or the file ends; returns how many arrived.
    fn read_into(&mut self, file: &mut File, want: usize, ask: usize) -> Result<usize, NarError> {
        let end = self.filled + ask;
        if end > self.buf.len() {
            self.buf.resize(end, 0);
        }
        let buf = &mut self.buf[self.filled..end];
        let mut got = 0;
        while got < want {
            match file.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NarError::io(&self.path, e)),
            }
        }
        Ok(got)
    }

    fn changed(&self, size: u64) -> NarError {
        NarError::FileChanged {
            path: self.path.clone(),
            expected: size,
        }
    }

    fn step(&mut self) -> Result<(), NarError> {
        match std::mem::replace(&mut self.state, State::Walk) {
            State::Start => {
                self.put_str(MAGIC);
                self.put_str(b"(");
                let meta =
                    fs::symlink_metadata(&self.path).map_err(|e| NarError::io(&self.path, e))?;
                let ft = meta.file_type();
                let kind = if ft.is_dir() {
                    Kind::Directory
                } else if ft.is_symlink() {
                    Kind::Symlink
                } else if ft.is_file() {
                    Kind::Regular
                } else {
                    Kind::Other
                };
                self.enter_node(kind, Location::Root)
            }
            State::Walk => self.walk_step(),
            State::Contents {
                file,
                remaining,
                size,
            } => self.contents_step(file, remaining, size),
            State::AfterSegment { size } => {
                self.finish_file(size);
                Ok(())
            }
            s @ (State::Done | State::Failed) => {
                self.state = s;
                Ok(())
            }
        }
    }
}

impl NarEncoder {
    /// The next piece: in-memory bytes, or (only when segments are enabled) a file segment.
    fn next_piece(&mut self) -> Option<Result<NarPiece, NarError>> {
        loop {
            if self.segment.is_some() {
                if self.filled > 0 {
                    return Some(Ok(NarPiece::Bytes(self.take_framing())));
                }
                return self.segment.take().map(|s| Ok(NarPiece::File(s)));
            }
            self.ensure_buffer();
            match self.state {
                State::Failed => return None,
                State::Done => {
                    if self.skip > 0 {
                        self.state = State::Failed;
                        return Some(Err(NarError::OffsetPastEnd {
                            offset: self.offset,
                            nar_size: self.offset - self.skip,
                        }));
                    }
                    if self.filled == 0 {
                        return None;
                    }
                    return Some(Ok(NarPiece::Bytes(self.take_chunk())));
                }
                _ if self.filled >= self.chunk_size => {
                    return Some(Ok(NarPiece::Bytes(self.take_chunk())));
                }
                _ => {}
            }
            if let Err(e) = self.step() {
                self.state = State::Failed;
                self.buf = Vec::new();
                self.filled = 0;
                return Some(Err(e));
            }
        }
    }
}

impl Iterator for NarEncoder {
    type Item = Result<Bytes, NarError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_piece()? {
            Ok(NarPiece::Bytes(bytes)) => Some(Ok(bytes)),
            // Only `NarSegments` turns segments on; a plain encoder reads every file itself.
            Ok(NarPiece::File(segment)) => {
                self.state = State::Failed;
                Some(Err(NarError::io(
                    segment.path(),
                    io::Error::other("file segment from an encoder without segments"),
                )))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// A NAR as [`NarPiece`]s: framing and small files in memory, bigger files as [`FileSegment`]s that the
/// consumer copies from the file to its output in the kernel. Made by [`NarEncoder::with_file_segments`].
pub struct NarSegments(NarEncoder);

impl NarSegments {
    /// How many regular files the NAR handed out so far has (see [`NarEncoder::regular_files`]).
    pub fn regular_files(&self) -> u64 {
        self.0.regular_files()
    }
}

impl Iterator for NarSegments {
    type Item = Result<NarPiece, NarError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_piece()
    }
}

/// Encode the NAR of `path` as an async stream of chunks, byte-identical to `nix-store --dump`.
///
/// The filesystem work runs on tokio's blocking pool (so this must be polled inside a tokio runtime), a few
/// chunks ahead of the consumer; nothing starts before the first poll, and dropping the stream stops it.
/// No blocking thread is held while the consumer is slow: each batch of chunks is one short blocking task.
pub fn encode(path: PathBuf) -> NarStream {
    encode_from_offset(path, 0)
}

/// Like [`encode`], but the stream starts at byte `offset` of the NAR (for HTTP range requests); see
/// [`NarEncoder::from_offset`].
pub fn encode_from_offset(path: PathBuf, offset: u64) -> NarStream {
    NarStream {
        idle: Some(NarEncoder::from_offset(path, offset)),
        pending: None,
        ready: VecDeque::new(),
        failed: None,
    }
}

/// What one blocking task hands back: the encoder (unless it is finished), chunks, and the error that ended
/// the NAR, if one did.
struct Batch {
    encoder: Option<NarEncoder>,
    chunks: VecDeque<Bytes>,
    error: Option<NarError>,
}

/// The async stream returned by [`encode`] and [`encode_from_offset`].
pub struct NarStream {
    idle: Option<NarEncoder>,
    pending: Option<JoinHandle<Batch>>,
    ready: VecDeque<Bytes>,
    failed: Option<NarError>,
}

fn produce(mut encoder: NarEncoder) -> JoinHandle<Batch> {
    tokio::task::spawn_blocking(move || {
        let mut chunks = VecDeque::with_capacity(CHUNKS_PER_TASK);
        while chunks.len() < CHUNKS_PER_TASK {
            match encoder.next() {
                Some(Ok(chunk)) => chunks.push_back(chunk),
                Some(Err(error)) => {
                    return Batch {
                        encoder: None,
                        chunks,
                        error: Some(error),
                    };
                }
                None => {
                    return Batch {
                        encoder: None,
                        chunks,
                        error: None,
                    };
                }
            }
        }
        Batch {
            encoder: Some(encoder),
            chunks,
            error: None,
        }
    })
}

impl Stream for NarStream {
    type Item = Result<Bytes, NarError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.ready.pop_front() {
                // Keep the blocking pool one batch ahead of the consumer.
                if this.pending.is_none() {
                    if let Some(encoder) = this.idle.take() {
                        this.pending = Some(produce(encoder));
                    }
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            if let Some(error) = this.failed.take() {
                return Poll::Ready(Some(Err(error)));
            }
            if this.pending.is_none() {
                match this.idle.take() {
                    Some(encoder) => this.pending = Some(produce(encoder)),
                    None => return Poll::Ready(None),
                }
            }
            let Some(handle) = this.pending.as_mut() else {
                return Poll::Ready(None);
            };
            let result = match Pin::new(handle).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            this.pending = None;
            match result {
                Err(e) => return Poll::Ready(Some(Err(NarError::Task(e.to_string())))),
                Ok(batch) => {
                    this.idle = batch.encoder;
                    this.ready = batch.chunks;
                    this.failed = batch.error;
                }
            }
        }
    }
}

/// Adapter that exposes a [`NarEncoder`] as a [`std::io::Read`].
pub struct NarReader {
    encoder: NarEncoder,
    current: Bytes,
}

impl NarReader {
    /// A reader over the NAR of `path`.
    pub fn new(path: impl AsRef<Path>) -> NarReader {
        NarReader {
            encoder: NarEncoder::new(path.as_ref()),
            current: Bytes::new(),
        }
    }
}

impl Read for NarReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.encoder.next() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = min(out.len(), self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nar_of(path: &Path, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in NarEncoder::with_chunk_size(path.to_owned(), 0, chunk) {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[test]
    fn small_file_layout() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"hello").unwrap();
        let nar = nar_of(&f, CHUNK_SIZE);
        let mut expected = Vec::new();
        for s in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"hello",
            b")",
        ] {
            wire::put_str(&mut expected, s);
        }
        assert_eq!(nar, expected);
    }

    /// A directory `d` holding file `x` (`x_len` bytes), an empty file `b` and a symlink `l` to `d/x`.
    fn small_tree(x_len: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/x"), vec![7u8; x_len]).unwrap();
        fs::write(dir.path().join("b"), b"").unwrap();
        std::os::unix::fs::symlink("d/x", dir.path().join("l")).unwrap();
        dir
    }

    #[test]
    fn counts_regular_files_but_not_symlinks_or_directories() {
        let dir = small_tree(100_000);
        let mut plain = NarEncoder::new(dir.path());
        assert_eq!(plain.regular_files(), 0);
        for chunk in plain.by_ref() {
            chunk.unwrap();
        }
        assert_eq!(plain.regular_files(), 2);
        let mut pieces = NarEncoder::with_file_segments(dir.path().to_owned(), 0, 1024, 4096);
        for piece in pieces.by_ref() {
            piece.unwrap();
        }
        assert_eq!(pieces.regular_files(), 2);
    }

    #[test]
    fn chunk_size_does_not_change_output() {
        let dir = small_tree(1000);
        let reference = nar_of(dir.path(), CHUNK_SIZE);
        for chunk in [1, 7, 8, 100, 999] {
            assert_eq!(nar_of(dir.path(), chunk), reference, "chunk {chunk}");
        }
        for offset in 0..=reference.len() as u64 {
            let mut out = Vec::new();
            for c in NarEncoder::with_chunk_size(dir.path().to_owned(), offset, 64) {
                out.extend_from_slice(&c.unwrap());
            }
            assert_eq!(out, &reference[offset as usize..], "offset {offset}");
        }
        let past = NarEncoder::from_offset(dir.path(), reference.len() as u64 + 1)
            .collect::<Result<Vec<_>, _>>();
        assert!(matches!(past, Err(NarError::OffsetPastEnd { .. })));
    }

    /// An encoder over `dir` (holding file `f`) that has emitted `f`'s header but not its contents yet.
    fn encoder_before_contents(dir: &Path) -> NarEncoder {
        let mut enc = NarEncoder::with_chunk_size(dir.to_owned(), 0, 16);
        // Chunk 1: magic and the root directory's header. Chunk 2: f's headers, after its stat.
        for _ in 0..2 {
            assert!(enc.next().unwrap().is_ok());
        }
        assert!(matches!(enc.state, State::Contents { .. }));
        enc
    }

    #[test]
    fn a_file_that_shrinks_or_grows_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, vec![1u8; 100]).unwrap();
        let mut enc = encoder_before_contents(dir.path());
        fs::write(&f, vec![1u8; 50]).unwrap();
        let rest: Vec<_> = enc.by_ref().collect();
        assert!(
            matches!(
                rest.last(),
                Some(Err(NarError::FileChanged { expected: 100, .. }))
            ),
            "{rest:?}"
        );
        assert!(enc.next().is_none());

        fs::write(&f, vec![1u8; 100]).unwrap();
        let enc = encoder_before_contents(dir.path());
        fs::write(&f, vec![1u8; 101]).unwrap();
        let rest: Vec<_> = enc.collect();
        assert!(
            matches!(
                rest.last(),
                Some(Err(NarError::FileChanged { expected: 100, .. }))
            ),
            "{rest:?}"
        );
    }

    #[test]
    fn a_file_that_vanishes_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"a").unwrap();
        fs::write(dir.path().join("f"), b"f").unwrap();
        let mut enc = NarEncoder::with_chunk_size(dir.path().to_owned(), 0, 16);
        assert!(enc.next().unwrap().is_ok()); // the root directory was listed
        fs::remove_file(dir.path().join("f")).unwrap();
        let rest: Vec<_> = enc.collect();
        assert!(
            matches!(rest.last(), Some(Err(NarError::Io { .. }))),
            "{rest:?}"
        );
    }

    #[test]
    fn sockets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        let r: Result<Vec<_>, _> = NarEncoder::new(dir.path()).collect();
        assert!(matches!(r, Err(NarError::UnsupportedFileType { .. })));
    }

    #[test]
    fn reader_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), vec![3u8; 300_000]).unwrap();
        fs::write(dir.path().join("g"), b"g").unwrap();
        let mut via_reader = Vec::new();
        let mut reader = NarReader::new(dir.path());
        let mut small = [0u8; 1000];
        loop {
            let n = reader.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            via_reader.extend_from_slice(&small[..n]);
        }
        assert_eq!(via_reader, nar_of(dir.path(), CHUNK_SIZE));
    }

    /// Reassembles the NAR from pieces the way a `sendfile` consumer would (reading each segment's range).
    fn nar_from_segments(path: &Path, offset: u64, min: u64) -> Result<Vec<u8>, NarError> {
        use std::os::unix::fs::FileExt;
        let mut out = Vec::new();
        for piece in NarEncoder::with_file_segments(path.to_owned(), offset, 64, min) {
            match piece? {
                NarPiece::Bytes(b) => out.extend_from_slice(&b),
                NarPiece::File(mut seg) => {
                    let mut buf = vec![0; seg.remaining() as usize];
                    let n = seg.file().read_at(&mut buf, seg.offset()).unwrap();
                    if n < buf.len() {
                        return Err(seg.changed());
                    }
                    seg.advance(n as u64);
                    assert_eq!(seg.remaining(), 0);
                    out.extend_from_slice(&buf);
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn segments_give_the_same_bytes_at_every_offset() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(
            dir.path().join("d/x"),
            (0..1000u32).map(|i| i as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        fs::write(dir.path().join("b"), b"").unwrap();
        fs::write(dir.path().join("c"), b"tiny").unwrap();
        std::os::unix::fs::symlink("d/x", dir.path().join("l")).unwrap();
        let reference = nar_of(dir.path(), CHUNK_SIZE);
        for min in [1, 4, 5, 100, 10_000] {
            for offset in 0..=reference.len() as u64 {
                let got = nar_from_segments(dir.path(), offset, min).unwrap();
                assert_eq!(
                    got,
                    &reference[offset as usize..],
                    "min {min} offset {offset}"
                );
            }
        }
        // A lone big file (the root is the file).
        let f = dir.path().join("d/x");
        assert_eq!(nar_from_segments(&f, 0, 1).unwrap(), nar_of(&f, CHUNK_SIZE));
    }

    #[test]
    fn a_segment_of_a_file_that_shrank_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, vec![1u8; 100]).unwrap();
        let mut pieces = NarEncoder::with_file_segments(dir.path().to_owned(), 0, 64, 10);
        let mut segment = None;
        for piece in pieces.by_ref() {
            if let NarPiece::File(s) = piece.unwrap() {
                segment = Some(s);
                break;
            }
        }
        let seg = segment.expect("a segment for f");
        fs::write(&f, vec![1u8; 50]).unwrap();
        let mut buf = vec![0; 100];
        use std::os::unix::fs::FileExt;
        let n = seg.file().read_at(&mut buf, seg.offset()).unwrap();
        assert_eq!(n, 50);
        assert!(matches!(
            seg.changed(),
            NarError::FileChanged { expected: 100, .. }
        ));
    }

    #[test]
    fn missing_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut enc = NarEncoder::new(dir.path().join("nope"));
        assert!(matches!(enc.next(), Some(Err(NarError::Io { .. }))));
        assert!(enc.next().is_none());
    }
}
