//! Streaming, validating NAR decoder.
//!
//! [`NarDecoder`] reads a NAR from an [`AsyncRead`] and yields [`NarEvent`]s. It reads exactly the bytes of
//! the NAR and nothing after it (so a NAR embedded in a longer stream, as in the daemon protocol, leaves the
//! reader right after its last byte); give it a buffered reader for speed.
//!
//! It refuses everything `nix-store --restore` would choke on or that could make a consumer unsafe: wrong
//! magic, tokens out of order, unsorted or duplicate entries, names that are empty, `.`, `..` or contain
//! `/` or NUL, non-zero padding, strings longer than their limit, nesting deeper than [`MAX_DEPTH`],
//! paths longer than [`MAX_PATH_LEN`].
//! File contents are streamed in chunks of at most [`CONTENTS_CHUNK`] bytes, whatever size the NAR claims.

use std::fmt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::NarError;
use crate::wire::{self, MAGIC};

/// Longest entry name accepted (Linux allows 255 bytes; other systems a little more).
pub const MAX_NAME_LEN: u64 = 1024;
/// Longest symlink target accepted (Linux's `PATH_MAX`).
pub const MAX_TARGET_LEN: u64 = 4096;
/// Deepest directory nesting accepted.
pub const MAX_DEPTH: usize = 1024;
/// Longest path inside the NAR accepted (`a/b/c`, Linux's `PATH_MAX`): no longer path can be restored or
/// have been dumped, and every event carries its path, so this bounds the work per event.
pub const MAX_PATH_LEN: usize = 4096;
/// Largest chunk of file contents in one [`NarEvent::Contents`].
pub const CONTENTS_CHUNK: usize = 256 << 10;
/// Longest grammar token ("nix-archive-1", "executable", ...), with room to spare.
const MAX_TOKEN_LEN: u64 = 16;

/// A path inside a NAR: `/`-separated validated entry names, empty for the root node.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NarPath(Vec<u8>);

impl NarPath {
    /// The raw bytes (`a/b/c`, or empty for the root).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is the root node of the NAR.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last entry name, or `None` for the root.
    pub fn file_name(&self) -> Option<&[u8]> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0.rsplit(|b| *b == b'/').next().unwrap_or(&self.0))
        }
    }

    /// Number of directory levels above this node (0 for the root).
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            self.0.iter().filter(|b| **b == b'/').count() + 1
        }
    }

    /// `base` joined with this path. Names were validated by the decoder, so the result is always `base`
    /// or below it.
    pub fn under(&self, base: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        if self.0.is_empty() {
            base.to_path_buf()
        } else {
            base.join(std::ffi::OsStr::from_bytes(&self.0))
        }
    }
}

impl fmt::Display for NarPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for NarPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarPath({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// One step of a NAR, in NAR order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarEvent {
    /// A directory starts; its entries follow, then [`NarEvent::EndDirectory`].
    Directory {
        /// Where it is in the NAR.
        path: NarPath,
    },
    /// The directory that started last (and is still open) ends.
    EndDirectory {
        /// Where it is in the NAR.
        path: NarPath,
    },
    /// A regular file; `size` bytes of [`NarEvent::Contents`] follow (none if it is empty).
    File {
        /// Where it is in the NAR.
        path: NarPath,
        /// Whether Nix marks it executable.
        executable: bool,
        /// Its size in bytes.
        size: u64,
        /// Offset of its first byte in the NAR (the `narOffset` of `.ls` listings).
        nar_offset: u64,
    },
    /// A chunk of the contents of the last [`NarEvent::File`].
    Contents(Bytes),
    /// A symbolic link (its target is not interpreted).
    Symlink {
        /// Where it is in the NAR.
        path: NarPath,
        /// The link target, as stored.
        target: Vec<u8>,
    },
}

struct Frame {
    /// Length of `NarDecoder::path` for this directory.
    path_len: usize,
    /// The previous entry name, to check order.
    last: Option<Vec<u8>>,
}

enum State {
    Magic,
    Node,
    Contents {
        remaining: u64,
        size: u64,
    },
    AfterNode,
    InDirectory,
    Done,
    Failed,
    /// Placeholder while a step runs: seen at the start of a step only if a previous `next()` future was
    /// dropped mid-way.
    Interrupted,
}

/// A validating streaming NAR decoder over an [`AsyncRead`]; call [`NarDecoder::next`] until `None`.
pub struct NarDecoder<R> {
    reader: R,
    offset: u64,
    state: State,
    stack: Vec<Frame>,
    path: Vec<u8>,
    /// Buffer that contents chunks are split from; reclaimed once the consumer dropped earlier chunks.
    contents: BytesMut,
}

type Token = ([u8; MAX_TOKEN_LEN as usize], usize);

impl<R: AsyncRead + Unpin> NarDecoder<R> {
    /// A decoder reading a NAR from `reader`.
    pub fn new(reader: R) -> NarDecoder<R> {
        NarDecoder {
            reader,
            offset: 0,
            state: State::Magic,
            stack: Vec::new(),
            path: Vec::new(),
            contents: BytesMut::new(),
        }
    }

    /// Number of NAR bytes consumed so far (the NAR size once [`NarDecoder::next`] returned `None`).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The reader, positioned right after the bytes consumed so far.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// The next event, `None` after the NAR's closing token, or the first error (after which it returns
    /// `None`). Not cancel-safe: after a `next()` future is dropped mid-way, the following call returns
    /// [`NarError::Interrupted`].
    pub async fn next(&mut self) -> Option<Result<NarEvent, NarError>> {
        match self.step().await {
            Ok(Some(ev)) => Some(Ok(ev)),
            Ok(None) => None,
            Err(e) => {
                self.state = State::Failed;
                Some(Err(e))
            }
        }
    }

    /// Read and validate the whole NAR, discarding the events; returns its size.
    pub async fn skip_to_end(&mut self) -> Result<u64, NarError> {
        while let Some(ev) = self.next().await {
            ev?;
        }
        Ok(self.offset)
    }

    async fn step(&mut self) -> Result<Option<NarEvent>, NarError> {
        loop {
            match std::mem::replace(&mut self.state, State::Interrupted) {
                State::Magic => {
                    match self.read_token("\"nix-archive-1\"").await {
                        Ok(t) if token(&t) == MAGIC => {}
                        Ok(_) | Err(NarError::UnexpectedToken { .. }) => {
                            return Err(NarError::BadMagic);
                        }
                        Err(e) => return Err(e),
                    }
                    self.expect(b"(").await?;
                    self.state = State::Node;
                }
                State::Node => return self.node().await.map(Some),
                State::Contents { remaining, size } => {
                    if remaining == 0 {
                        self.read_padding(size).await?;
                        self.expect(b")").await?;
                        self.state = State::AfterNode;
                        continue;
                    }
                    let chunk = self.read_contents(remaining).await?;
                    self.state = State::Contents {
                        remaining: remaining - chunk.len() as u64,
                        size,
                    };
                    return Ok(Some(NarEvent::Contents(chunk)));
                }
                State::AfterNode => {
                    if self.stack.is_empty() {
                        self.state = State::Done;
                        return Ok(None);
                    }
                    // Close the `entry (` around the node.
                    self.expect(b")").await?;
                    self.state = State::InDirectory;
                }
                State::InDirectory => return self.directory_step().await,
                State::Done => {
                    self.state = State::Done;
                    return Ok(None);
                }
                State::Failed => {
                    self.state = State::Failed;
                    return Ok(None);
                }
                State::Interrupted => {
                    return Err(NarError::Interrupted {
                        offset: self.offset,
                    });
                }
            }
        }
    }

    /// After `(`: read a node's type and what follows up to its contents or entries.
    async fn node(&mut self) -> Result<NarEvent, NarError> {
        self.expect(b"type").await?;
        let start = self.offset;
        let t = self
            .read_token(r#""regular", "symlink" or "directory""#)
            .await?;
        let path = NarPath(self.path.clone());
        match token(&t) {
            b"regular" => {
                let start = self.offset;
                let t = self.read_token(r#""executable" or "contents""#).await?;
                let executable = match token(&t) {
                    b"executable" => {
                        self.expect(b"").await?;
                        self.expect(b"contents").await?;
                        true
                    }
                    b"contents" => false,
                    other => return Err(unexpected(start, r#""executable" or "contents""#, other)),
                };
                let size = self.read_u64().await?;
                self.state = State::Contents {
                    remaining: size,
                    size,
                };
                Ok(NarEvent::File {
                    path,
                    executable,
                    size,
                    nar_offset: self.offset,
                })
            }
            b"symlink" => {
                self.expect(b"target").await?;
                let start = self.offset;
                let target = self.read_string(MAX_TARGET_LEN, "symlink target").await?;
                if target.is_empty() {
                    return Err(NarError::BadSymlinkTarget {
                        offset: start,
                        reason: "empty target",
                    });
                }
                if target.contains(&0) {
                    return Err(NarError::BadSymlinkTarget {
                        offset: start,
                        reason: "target contains NUL",
                    });
                }
                self.expect(b")").await?;
                self.state = State::AfterNode;
                Ok(NarEvent::Symlink { path, target })
            }
            b"directory" => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(NarError::TooDeep {
                        offset: start,
                        max: MAX_DEPTH,
                    });
                }
                self.stack.push(Frame {
                    path_len: self.path.len(),
                    last: None,
                });
                self.state = State::InDirectory;
                Ok(NarEvent::Directory { path })
            }
            other => Err(unexpected(
                start,
                r#""regular", "symlink" or "directory""#,
                other,
            )),
        }
    }

    /// Inside a directory: the next entry's header, or the directory's end.
    async fn directory_step(&mut self) -> Result<Option<NarEvent>, NarError> {
        let start = self.offset;
        let t = self.read_token(r#""entry" or ")""#).await?;
        match token(&t) {
            b")" => {
                let Some(frame) = self.stack.pop() else {
                    return Err(unexpected(start, "end of NAR", b")"));
                };
                self.path.truncate(frame.path_len);
                let path = NarPath(self.path.clone());
                self.state = State::AfterNode;
                Ok(Some(NarEvent::EndDirectory { path }))
            }
            b"entry" => {
                self.expect(b"(").await?;
                self.expect(b"name").await?;
                let name_offset = self.offset;
                let name = self.read_string(MAX_NAME_LEN, "entry name").await?;
                if let Err(reason) = wire::check_name(&name) {
                    return Err(NarError::BadName {
                        offset: name_offset,
                        name: String::from_utf8_lossy(&name).into_owned(),
                        reason,
                    });
                }
                let Some(frame) = self.stack.last_mut() else {
                    return Err(unexpected(start, "end of NAR", b"entry"));
                };
                if let Some(prev) = &frame.last {
                    if name <= *prev {
                        return Err(NarError::UnsortedEntry {
                            offset: name_offset,
                            name: String::from_utf8_lossy(&name).into_owned(),
                            previous: String::from_utf8_lossy(prev).into_owned(),
                        });
                    }
                }
                let sep = usize::from(frame.path_len > 0);
                let path_len = frame.path_len + sep + name.len();
                if path_len > MAX_PATH_LEN {
                    return Err(NarError::TooLong {
                        offset: name_offset,
                        what: "path inside the NAR",
                        len: path_len as u64,
                        max: MAX_PATH_LEN as u64,
                    });
                }
                self.path.truncate(frame.path_len);
                if !self.path.is_empty() {
                    self.path.push(b'/');
                }
                self.path.extend_from_slice(&name);
                frame.last = Some(name);
                self.expect(b"node").await?;
                self.expect(b"(").await?;
                self.node().await.map(Some)
            }
            other => Err(unexpected(start, r#""entry" or ")""#, other)),
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        match self.reader.read_exact(buf).await {
            Ok(_) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(NarError::Truncated {
                offset: self.offset,
            }),
            Err(source) => Err(NarError::Read {
                offset: self.offset,
                source,
            }),
        }
    }

    async fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b).await?;
        Ok(u64::from_le_bytes(b))
    }

    async fn read_padding(&mut self, len: u64) -> Result<(), NarError> {
        let pad = wire::padding(len);
        if pad > 0 {
            let start = self.offset;
            let mut b = [0u8; 8];
            self.read_exact(&mut b[..pad]).await?;
            if b.iter().any(|x| *x != 0) {
                return Err(NarError::BadPadding { offset: start });
            }
        }
        Ok(())
    }

    /// A string of at most `max` bytes (checked before anything is allocated).
    async fn read_string(&mut self, max: u64, what: &'static str) -> Result<Vec<u8>, NarError> {
        let start = self.offset;
        let len = self.read_u64().await?;
        if len > max {
            return Err(NarError::TooLong {
                offset: start,
                what,
                len,
                max,
            });
        }
        let mut s = vec![0u8; len as usize];
        self.read_exact(&mut s).await?;
        self.read_padding(len).await?;
        Ok(s)
    }

    async fn read_token(&mut self, expected: &'static str) -> Result<Token, NarError> {
        let start = self.offset;
        let len = self.read_u64().await?;
        if len > MAX_TOKEN_LEN {
            return Err(NarError::UnexpectedToken {
                offset: start,
                expected,
                found: format!("a string of {len} bytes"),
            });
        }
        let mut t = [0u8; MAX_TOKEN_LEN as usize];
        self.read_exact(&mut t[..len as usize]).await?;
        self.read_padding(len).await?;
        Ok((t, len as usize))
    }

    async fn expect(&mut self, tok: &'static [u8]) -> Result<(), NarError> {
        let start = self.offset;
        let expected = match tok {
            b"(" => "\"(\"",
            b")" => "\")\"",
            b"" => "\"\"",
            b"type" => "\"type\"",
            b"contents" => "\"contents\"",
            b"target" => "\"target\"",
            b"name" => "\"name\"",
            b"node" => "\"node\"",
            _ => "a NAR token",
        };
        let t = self.read_token(expected).await?;
        if token(&t) == tok {
            Ok(())
        } else {
            Err(unexpected(start, expected, token(&t)))
        }
    }

    async fn read_contents(&mut self, remaining: u64) -> Result<Bytes, NarError> {
        let want = remaining.min(CONTENTS_CHUNK as u64) as usize;
        if self.contents.capacity() < want {
            // Reuses the previous region when every chunk split from it was dropped; small files share one.
            self.contents.reserve(CONTENTS_CHUNK);
        }
        while self.contents.len() < want {
            let limit = (want - self.contents.len()) as u64;
            let n = match (&mut self.reader)
                .take(limit)
                .read_buf(&mut self.contents)
                .await
            {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(NarError::Read {
                        offset: self.offset,
                        source,
                    });
                }
            };
            if n == 0 {
                return Err(NarError::Truncated {
                    offset: self.offset,
                });
            }
            self.offset += n as u64;
        }
        Ok(self.contents.split().freeze())
    }
}

fn token(t: &Token) -> &[u8] {
    &t.0[..t.1]
}

fn unexpected(offset: u64, expected: &'static str, found: &[u8]) -> NarError {
    NarError::UnexpectedToken {
        offset,
        expected,
        found: String::from_utf8_lossy(found).into_owned(),
    }
}
