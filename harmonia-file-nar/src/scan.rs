//! Finding where a NAR ends in a stream that goes on after it.
//!
//! The worker protocol sends some NARs with no length in front (AddToStore before 1.25, each path inside
//! AddMultipleToStore, the reply of NarFromPath), so a reader has to parse the NAR to know where it ends.
//! [`NarScanner`] does the minimum of that without I/O: it knows which strings are keywords and which are
//! values, checks the magic, the keywords and the padding, and counts parentheses. [`NarPassthrough`] turns
//! it into an `AsyncRead` that yields exactly one NAR's bytes, unchanged, then EOF, leaving the stream right
//! after the NAR. Full validation (names, ordering, types) is [`NarDecoder`](crate::NarDecoder)'s job, which
//! can read from the passthrough.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use crate::NarError;
use crate::wire::{MAGIC, padding};

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
    /// An error was returned; its state was left mid-token, so every later feed repeats it.
    Failed(std::sync::Arc<NarError>),
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
    token_offset: u64,
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
            token_offset: 0,
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
    /// many; less than `data.len()` only when the NAR ended. After an error, every later
    /// call returns the same error (the scanner lost its place in the stream).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, NarError> {
        if let ScanState::Failed(e) = &self.state {
            return Err(same_error(e));
        }
        let result = self.feed_inner(data);
        if let Err(e) = &result {
            self.state = ScanState::Failed(std::sync::Arc::new(same_error(e)));
        }
        result
    }

    fn feed_inner(&mut self, data: &[u8]) -> Result<usize, NarError> {
        let mut pos = 0;
        while pos < data.len() {
            match &mut self.state {
                ScanState::Done | ScanState::Failed(_) => break,
                ScanState::Len { buf, got } => {
                    if *got == 0 {
                        self.token_offset = self.total + pos as u64;
                    }
                    let n = (8 - *got).min(data.len() - pos);
                    buf[*got..*got + n].copy_from_slice(&data[pos..pos + n]);
                    *got += n;
                    pos += n;
                    if *got == 8 {
                        let len = u64::from_le_bytes(*buf);
                        let is_value = self.next_is_value;
                        if !is_value && len > MAX_KEYWORD as u64 {
                            return Err(NarError::TooLong {
                                offset: self.token_offset,
                                what: "token",
                                len,
                                max: MAX_KEYWORD as u64,
                            });
                        }
                        let keyword = (!is_value).then(|| Vec::with_capacity(len as usize));
                        self.state = ScanState::Data {
                            remaining: len,
                            padding: padding(len),
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
                        return Err(NarError::BadPadding {
                            offset: self.total + pos as u64,
                        });
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
    fn after_data_if_empty(&mut self) -> Result<(), NarError> {
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

    fn interpret(&mut self, k: &[u8]) -> Result<(), NarError> {
        if self.tokens == 1 {
            if k != MAGIC {
                return Err(NarError::BadMagic);
            }
            return Ok(());
        }
        match k {
            b"(" => self.depth += 1,
            b")" => {
                self.depth = self
                    .depth
                    .checked_sub(1)
                    .ok_or_else(|| self.unexpected("a token inside the NAR", k))?;
            }
            b"type" | b"contents" | b"target" | b"name" | b"executable" => {
                self.next_is_value = true
            }
            b"entry" | b"node" => {}
            other => return Err(self.unexpected("a NAR keyword", other)),
        }
        if self.tokens == 2 && k != b"(" {
            return Err(self.unexpected("\"(\"", k));
        }
        Ok(())
    }

    fn unexpected(&self, expected: &'static str, found: &[u8]) -> NarError {
        NarError::UnexpectedToken {
            offset: self.token_offset,
            expected,
            found: String::from_utf8_lossy(&found[..found.len().min(64)]).into_owned(),
        }
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

/// A copy of one of the errors [`NarScanner::feed`] returns (`NarError` is not `Clone`: it can
/// hold an `io::Error`, which the scanner never produces).
fn same_error(e: &NarError) -> NarError {
    match e {
        NarError::BadMagic => NarError::BadMagic,
        NarError::BadPadding { offset } => NarError::BadPadding { offset: *offset },
        NarError::TooLong {
            offset,
            what,
            len,
            max,
        } => NarError::TooLong {
            offset: *offset,
            what,
            len: *len,
            max: *max,
        },
        NarError::UnexpectedToken {
            offset,
            expected,
            found,
        } => NarError::UnexpectedToken {
            offset: *offset,
            expected,
            found: found.clone(),
        },
        other => NarError::Task(other.to_string()),
    }
}

/// An `AsyncRead` yielding exactly one NAR from a buffered stream, then EOF.
///
/// It is also an `AsyncBufRead` that hands out the inner stream's buffer directly, so
/// `tokio::io::copy_buf` moves a NAR without an extra copy.
#[derive(Debug)]
pub struct NarPassthrough<R> {
    inner: R,
    scanner: NarScanner,
    /// Bytes at the front of `inner`'s buffer already fed to the scanner but not consumed yet.
    fed: usize,
}

impl<R> NarPassthrough<R> {
    /// Reads one NAR from `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            scanner: NarScanner::new(),
            fed: 0,
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
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let avail = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = avail.len().min(buf.remaining());
        buf.put_slice(&avail[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for NarPassthrough<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.fed == 0 && this.scanner.is_done() {
            return Poll::Ready(Ok(&[]));
        }
        let avail = ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?;
        if this.fed == 0 {
            if avail.is_empty() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a NAR",
                )));
            }
            this.fed = this
                .scanner
                .feed(avail)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        let n = this.fed.min(avail.len());
        Poll::Ready(Ok(&avail[..n]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        let amt = amt.min(this.fed);
        this.fed -= amt;
        Pin::new(&mut this.inner).consume(amt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn s(out: &mut Vec<u8>, data: &[u8]) {
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&[0u8; 8][..padding(data.len() as u64)]);
    }

    /// A NAR with a directory, an executable file whose contents look like tokens, a
    /// file named "(" and a symlink.
    fn sample_nar() -> Vec<u8> {
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

    #[tokio::test]
    async fn buffered_passthrough_stops_at_the_end_too() {
        use tokio::io::AsyncBufReadExt;
        let nar = sample_nar();
        let mut wire = nar.clone();
        wire.extend_from_slice(b"rest");
        for cap in [1, 7, 64, 100_000] {
            let mut p = NarPassthrough::new(tokio::io::BufReader::with_capacity(cap, &wire[..]));
            let mut out = Vec::new();
            tokio::io::copy_buf(&mut p, &mut out).await.unwrap();
            assert_eq!(out, nar, "capacity {cap}");
            // Mixing the two interfaces keeps the scanner and the buffer in step.
            let mut p = NarPassthrough::new(tokio::io::BufReader::with_capacity(cap, &wire[..]));
            let mut out = Vec::new();
            let first = p.fill_buf().await.unwrap().len().min(3);
            out.extend_from_slice(&p.fill_buf().await.unwrap()[..first]);
            std::pin::Pin::new(&mut p).consume(first);
            p.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, nar, "capacity {cap}, mixed");
            let mut rest = Vec::new();
            p.into_inner().read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"rest");
        }
        let mut cut = NarPassthrough::new(tokio::io::BufReader::new(&nar[..nar.len() - 8]));
        let err = tokio::io::copy_buf(&mut cut, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
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

    /// A scanner that returned an error stopped mid-token; feeding it again (a caller that
    /// retries a read of the passthrough) used to go on from that broken state, reporting
    /// unrelated errors at wrong offsets. Now it repeats the first error.
    #[tokio::test]
    async fn errors_are_sticky() {
        let mut bad_keyword = Vec::new();
        s(&mut bad_keyword, b"nix-archive-1");
        s(&mut bad_keyword, b"(");
        s(&mut bad_keyword, b"bogus");
        let mut bad_magic = sample_nar();
        bad_magic[8] = b'X';
        let mut bad_padding = sample_nar();
        bad_padding[21] = 1;
        for wire in [bad_keyword, bad_magic, bad_padding] {
            let mut sc = NarScanner::new();
            let first = sc.feed(&wire).unwrap_err().to_string();
            for piece in [&wire[..], &wire[3..], &[0u8; 8][..]] {
                let again = sc.feed(piece).unwrap_err().to_string();
                assert_eq!(again, first);
            }
            assert!(!sc.is_done());

            let mut p = NarPassthrough::new(&wire[..]);
            let mut out = Vec::new();
            let first = p.read_to_end(&mut out).await.unwrap_err();
            let again = p.read_to_end(&mut out).await.unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::InvalidData);
            assert_eq!(again.to_string(), first.to_string());
        }
    }
}
