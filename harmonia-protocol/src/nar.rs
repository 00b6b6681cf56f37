//! Finding where a NAR ends in a stream that goes on after it.
//!
//! Some data flows send a NAR with no length in front: AddToStore before 1.25, each
//! path inside AddMultipleToStore, the reply of NarFromPath, and the STDERR_READ tunnel
//! of AddToStoreNar at 1.21/1.22. Nix copies such a NAR by parsing it. [`NarScanner`]
//! does the minimum of that (a sans-I/O tokenizer that knows which strings are values)
//! and [`NarPassthrough`] turns it into an `AsyncRead` that yields exactly one NAR's
//! bytes, unchanged, and then EOF, leaving the stream right after the NAR. Full
//! validation (names, ordering, types) stays with `harmonia-file-nar`'s decoder, which
//! can read from the passthrough.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::error::{ProtocolError, Result};
use crate::stderr::StderrMsg;
use crate::wire::{NixReader, NixWriter, padding_len};

const NAR_MAGIC: &[u8] = b"nix-archive-1";
/// Keywords are short; anything longer where a keyword is due is malformed.
const MAX_KEYWORD: usize = 16;

#[derive(Debug, Clone)]
enum ScanState {
    Len {
        buf: [u8; 8],
        got: usize,
    },
    Data {
        remaining: u64,
        padding: usize,
        keyword: Option<Vec<u8>>,
    },
    Pad {
        remaining: usize,
    },
    Done,
}

/// A sans-I/O scanner that finds the end of one NAR: feed it bytes, it says how many of
/// them belong to the NAR.
#[derive(Debug, Clone)]
pub struct NarScanner {
    state: ScanState,
    depth: u64,
    tokens: u64,
    next_is_value: bool,
    total: u64,
}

impl Default for NarScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl NarScanner {
    /// A scanner at the start of a NAR.
    pub fn new() -> Self {
        Self {
            state: ScanState::Len {
                buf: [0; 8],
                got: 0,
            },
            depth: 0,
            tokens: 0,
            next_is_value: false,
            total: 0,
        }
    }

    /// Whether the NAR's final `)` has been consumed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, ScanState::Done)
    }

    /// Bytes of NAR consumed so far.
    pub fn consumed(&self) -> u64 {
        self.total
    }

    /// Consumes bytes from the front of `data` that belong to the NAR and returns how
    /// many; less than `data.len()` only when the NAR ended.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize> {
        let mut pos = 0;
        while pos < data.len() {
            match &mut self.state {
                ScanState::Done => break,
                ScanState::Len { buf, got } => {
                    let n = (8 - *got).min(data.len() - pos);
                    buf[*got..*got + n].copy_from_slice(&data[pos..pos + n]);
                    *got += n;
                    pos += n;
                    if *got == 8 {
                        let len = u64::from_le_bytes(*buf);
                        let is_value = self.next_is_value;
                        if !is_value && len as usize > MAX_KEYWORD {
                            return Err(ProtocolError::Nar(format!(
                                "expected a keyword, got a string of {len} bytes"
                            )));
                        }
                        let keyword = (!is_value).then(|| Vec::with_capacity(len as usize));
                        self.state = ScanState::Data {
                            remaining: len,
                            padding: padding_len(len),
                            keyword,
                        };
                        self.after_data_if_empty()?;
                    }
                }
                ScanState::Data {
                    remaining, keyword, ..
                } => {
                    let n = (*remaining).min((data.len() - pos) as u64) as usize;
                    if let Some(k) = keyword {
                        k.extend_from_slice(&data[pos..pos + n]);
                    }
                    *remaining -= n as u64;
                    pos += n;
                    self.after_data_if_empty()?;
                }
                ScanState::Pad { remaining } => {
                    let n = (*remaining).min(data.len() - pos);
                    if data[pos..pos + n].iter().any(|b| *b != 0) {
                        return Err(ProtocolError::Nar("non-zero padding".into()));
                    }
                    *remaining -= n;
                    pos += n;
                    if *remaining == 0 {
                        self.end_token();
                    }
                }
            }
        }
        self.total += pos as u64;
        Ok(pos)
    }

    /// When the string data is complete: interpret it and move on to padding.
    fn after_data_if_empty(&mut self) -> Result<()> {
        let ScanState::Data {
            remaining: 0,
            padding,
            keyword,
        } = &mut self.state
        else {
            return Ok(());
        };
        let padding = *padding;
        let keyword = keyword.take();
        self.tokens += 1;
        if let Some(k) = keyword {
            self.interpret(&k)?;
        } else {
            self.next_is_value = false;
        }
        if padding == 0 {
            self.end_token();
        } else {
            self.state = ScanState::Pad { remaining: padding };
        }
        Ok(())
    }

    fn interpret(&mut self, k: &[u8]) -> Result<()> {
        if self.tokens == 1 {
            if k != NAR_MAGIC {
                return Err(ProtocolError::Nar("missing nix-archive-1 magic".into()));
            }
            return Ok(());
        }
        match k {
            b"(" => self.depth += 1,
            b")" => {
                self.depth = self
                    .depth
                    .checked_sub(1)
                    .ok_or_else(|| ProtocolError::Nar("unbalanced ')'".into()))?;
            }
            b"type" | b"contents" | b"target" | b"name" | b"executable" => {
                self.next_is_value = true
            }
            b"entry" | b"node" => {}
            other => {
                return Err(ProtocolError::Nar(format!(
                    "unexpected token {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        }
        if self.tokens == 2 && k != b"(" {
            return Err(ProtocolError::Nar("NAR does not start with '('".into()));
        }
        Ok(())
    }

    fn end_token(&mut self) {
        self.state = if self.tokens >= 2 && self.depth == 0 {
            ScanState::Done
        } else {
            ScanState::Len {
                buf: [0; 8],
                got: 0,
            }
        };
    }
}

/// An `AsyncRead` yielding exactly one NAR from a buffered stream, then EOF.
#[derive(Debug)]
pub struct NarPassthrough<R> {
    inner: R,
    scanner: NarScanner,
}

impl<R> NarPassthrough<R> {
    /// Reads one NAR from `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            scanner: NarScanner::new(),
        }
    }

    /// Bytes of NAR passed through so far.
    pub fn consumed(&self) -> u64 {
        self.scanner.consumed()
    }

    /// Gives back the stream, positioned right after the NAR once EOF was seen.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncBufRead + Unpin> AsyncRead for NarPassthrough<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.scanner.is_done() || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let avail = ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?;
        if avail.is_empty() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a NAR",
            )));
        }
        let take = avail.len().min(buf.remaining());
        let n = this
            .scanner
            .feed(&avail[..take])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        buf.put_slice(&avail[..n]);
        Pin::new(&mut this.inner).consume(n);
        Poll::Ready(Ok(()))
    }
}

/// Size of each STDERR_READ request when tunnelling a NAR.
pub const TUNNEL_CHUNK: u64 = 64 << 10;

/// Server side of AddToStoreNar at 1.21/1.22: pulls one NAR from the client through
/// STDERR_READ requests (Nix's `TunnelSource`) and writes it to `sink`. Call it after
/// the request was read and before the operation's LAST/ERROR.
pub async fn read_tunneled_nar<R, W, S>(
    reader: &mut NixReader<R>,
    writer: &mut NixWriter<W>,
    sink: &mut S,
) -> Result<u64>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    S: AsyncWrite + Unpin,
{
    let mut scanner = NarScanner::new();
    while !scanner.is_done() {
        writer.write(&StderrMsg::Read(TUNNEL_CHUNK));
        writer.flush().await?;
        let chunk = reader
            .read_bytes("tunnelled NAR data", TUNNEL_CHUNK)
            .await?;
        if chunk.is_empty() {
            return Err(
                io::Error::new(io::ErrorKind::UnexpectedEof, "client sent no NAR data").into(),
            );
        }
        let n = scanner.feed(&chunk)?;
        if n < chunk.len() {
            return Err(ProtocolError::Nar("data after the end of the NAR".into()));
        }
        sink.write_all(&chunk).await?;
    }
    sink.flush().await?;
    Ok(scanner.consumed())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn s(out: &mut Vec<u8>, data: &[u8]) {
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&[0u8; 8][..padding_len(data.len() as u64)]);
    }

    /// A NAR with a directory, an executable file whose contents look like tokens, a
    /// file named "(" and a symlink.
    pub(crate) fn sample_nar() -> Vec<u8> {
        let mut o = Vec::new();
        for t in [
            "nix-archive-1",
            "(",
            "type",
            "directory",
            "entry",
            "(",
            "name",
            "(",
        ] {
            s(&mut o, t.as_bytes());
        }
        for t in ["node", "(", "type", "regular", "executable", "", "contents"] {
            s(&mut o, t.as_bytes());
        }
        s(&mut o, b")");
        for t in [
            ")", ")", "entry", "(", "name", "link", "node", "(", "type", "symlink",
        ] {
            s(&mut o, t.as_bytes());
        }
        for t in ["target", ")", ")", ")", ")"] {
            s(&mut o, t.as_bytes());
        }
        o
    }

    #[test]
    fn finds_the_end_byte_by_byte() {
        let nar = sample_nar();
        let mut wire = nar.clone();
        wire.extend_from_slice(b"NEXTREQUEST");
        let mut sc = NarScanner::new();
        let mut used = 0;
        for b in &wire {
            used += sc.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(sc.is_done());
        assert_eq!(used, nar.len());

        let mut sc = NarScanner::new();
        assert_eq!(sc.feed(&wire).unwrap(), nar.len());
    }

    #[tokio::test]
    async fn passthrough_stops_at_the_end() {
        let nar = sample_nar();
        let mut wire = nar.clone();
        wire.extend_from_slice(b"rest");
        let mut p = NarPassthrough::new(tokio::io::BufReader::with_capacity(7, &wire[..]));
        let mut out = Vec::new();
        p.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, nar);
        let mut rest = Vec::new();
        p.into_inner().read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"rest");
    }

    #[test]
    fn garbage_is_rejected() {
        let mut o = Vec::new();
        s(&mut o, b"not-a-nar");
        assert!(NarScanner::new().feed(&o).is_err());
        let mut o = Vec::new();
        o.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(NarScanner::new().feed(&o).is_err());
        let mut o = Vec::new();
        s(&mut o, b"nix-archive-1");
        s(&mut o, b"(");
        s(&mut o, b"bogus");
        assert!(NarScanner::new().feed(&o).is_err());
    }
}
