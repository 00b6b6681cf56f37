//! Framed streams: data sent as frames `u64 length + bytes` (no padding), ended by an
//! empty frame. Used by AddToStoreNar (from 1.23), AddToStore (from 1.25),
//! AddMultipleToStore and AddBuildLog (Nix's `FramedSource`/`FramedSink`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame a [`FramedReader`] accepts by default (Nix's sink sends 32 KiB).
pub const DEFAULT_MAX_FRAME: u64 = 8 << 20;
/// The frame size [`FramedWriter`] uses.
pub const WRITE_FRAME: usize = 64 << 10;

#[derive(Debug)]
enum ReadState {
    /// Reading the 8-byte length of the next frame; `got` bytes are in `len_buf`.
    Header { len_buf: [u8; 8], got: usize },
    /// Inside a frame with `remaining` bytes to go.
    Data { remaining: u64 },
    /// The empty frame was seen.
    Done,
    /// A frame header announced `len` bytes, over the limit: the stream cannot be followed
    /// any more, and every later read says so again (not a misleading "ended early").
    TooLong { len: u64 },
}

fn too_long(len: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("frame of {len} bytes exceeds the limit of {max}"),
    )
}

/// Reads the payload of a framed stream as a plain `AsyncRead`, returning EOF after the
/// terminating empty frame (and leaving the underlying stream right after it).
///
/// Frames are never buffered whole: payload bytes are copied straight into the caller's
/// buffer, so a frame length of 2^60 costs nothing until data really arrives (and is
/// rejected anyway when above `max_frame`).
#[derive(Debug)]
pub struct FramedReader<R> {
    inner: R,
    state: ReadState,
    max_frame: u64,
}

impl<R> FramedReader<R> {
    /// Reads frames from `inner` with the default frame size limit.
    pub fn new(inner: R) -> Self {
        Self::with_max_frame(inner, DEFAULT_MAX_FRAME)
    }

    /// Reads frames from `inner`, rejecting any frame longer than `max_frame`.
    pub fn with_max_frame(inner: R, max_frame: u64) -> Self {
        Self {
            inner,
            state: ReadState::Header {
                len_buf: [0; 8],
                got: 0,
            },
            max_frame,
        }
    }

    /// Whether the terminating empty frame has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, ReadState::Done)
    }

    /// Gives back the underlying stream.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> FramedReader<R> {
    /// Reads and discards the rest of the framed stream, so the connection stays usable
    /// after an operation failed half-way.
    pub async fn drain(&mut self) -> io::Result<u64> {
        tokio::io::copy(self, &mut tokio::io::sink()).await
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FramedReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                ReadState::Done => return Poll::Ready(Ok(())),
                ReadState::TooLong { len } => {
                    return Poll::Ready(Err(too_long(*len, this.max_frame)));
                }
                ReadState::Header { len_buf, got } => {
                    let mut rb = ReadBuf::new(&mut len_buf[*got..]);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "framed stream ended before its terminating empty frame",
                        )));
                    }
                    *got += n;
                    if *got == 8 {
                        let len = u64::from_le_bytes(*len_buf);
                        if len == 0 {
                            this.state = ReadState::Done;
                        } else if len > this.max_frame {
                            this.state = ReadState::TooLong { len };
                        } else {
                            this.state = ReadState::Data { remaining: len };
                        }
                    }
                }
                ReadState::Data { remaining } => {
                    if buf.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let want = (*remaining).min(buf.remaining() as u64) as usize;
                    let dst = buf.initialize_unfilled_to(want);
                    let mut rb = ReadBuf::new(dst);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "framed stream ended inside a frame",
                        )));
                    }
                    buf.advance(n);
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        this.state = ReadState::Header {
                            len_buf: [0; 8],
                            got: 0,
                        };
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// Writes data as frames of at most [`WRITE_FRAME`] bytes; `shutdown` writes the
/// terminating empty frame and flushes (it does not shut the underlying stream down).
#[derive(Debug)]
pub struct FramedWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    sent: usize,
    finished: bool,
}

impl<W> FramedWriter<W> {
    /// Frames data written to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(WRITE_FRAME + 8),
            sent: 0,
            finished: false,
        }
    }

    /// Gives back the underlying stream.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: AsyncWrite + Unpin> FramedWriter<W> {
    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for FramedWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Err(io::Error::other("write after the framed stream ended")));
        }
        ready!(this.poll_send_buf(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(WRITE_FRAME);
        this.buf.extend_from_slice(&(n as u64).to_le_bytes());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buf(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buf(cx))?;
        if !this.finished {
            this.finished = true;
            this.buf.extend_from_slice(&0u64.to_le_bytes());
            ready!(this.poll_send_buf(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn round_trip_and_exact_end() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = FramedWriter::new(Vec::new());
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
        let mut wire = w.into_inner();
        wire.extend_from_slice(b"trailing");
        let mut r = FramedReader::new(&wire[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, payload);
        assert!(r.is_done());
        let rest = r.into_inner();
        assert_eq!(rest, b"trailing");
    }

    #[tokio::test]
    async fn exact_bytes() {
        let mut w = FramedWriter::new(Vec::new());
        w.write_all(b"abc").await.unwrap();
        w.shutdown().await.unwrap();
        let wire = w.into_inner();
        assert_eq!(
            wire,
            [&3u64.to_le_bytes()[..], b"abc", &0u64.to_le_bytes()].concat()
        );
    }

    #[tokio::test]
    async fn absurd_and_truncated_frames_are_errors() {
        let wire = (1u64 << 60).to_le_bytes();
        let mut out = Vec::new();
        let err = FramedReader::new(&wire[..])
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // The error sticks: draining after it (what the daemon does after a failed upload)
        // reports the oversized frame again, not a misleading early end of stream.
        let mut r = FramedReader::new(&wire[..]);
        assert!(r.read_to_end(&mut out).await.is_err());
        let err = r.drain().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("exceeds the limit"), "{err}");

        let wire = [&10u64.to_le_bytes()[..], b"abc"].concat();
        let err = FramedReader::new(&wire[..])
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let wire = [&3u64.to_le_bytes()[..], b"abc", &[0, 0]].concat();
        let err = FramedReader::new(&wire[..])
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
