//! The data of AddMultipleToStore: one framed stream holding a u64 count and that many
//! (path info, NAR) pairs, the path info always at protocol 1.16 layout (Nix's
//! `Store::addMultipleToStore` reads it with a hard-coded version 16) and each NAR
//! unframed inside the stream.

use harmonia_store_path::StoreDir;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::error::Result;
use crate::framed::{FramedReader, FramedWriter};
use crate::nar::NarPassthrough;
use crate::types::ValidPathInfo;
use crate::version::ProtocolVersion;
use crate::wire::{Encoder, MAX_ITEMS, NixReader};

/// The version path infos inside AddMultipleToStore are encoded at.
pub const MULTIPLE_INFO_VERSION: ProtocolVersion = ProtocolVersion::new(1, 16);

/// Server side: iterates over the paths of an AddMultipleToStore stream.
///
/// ```ignore
/// let mut m = MultipleReader::new(conn_reader.inner_mut(), store_dir.clone());
/// while let Some(info) = m.next_info().await? {
///     let mut nar = m.nar();          // read it to EOF before the next info
///     restore(&mut nar, ...).await?;
/// }
/// m.finish().await?;                  // also call on errors to keep the connection usable
/// ```
#[derive(Debug)]
pub struct MultipleReader<R> {
    reader: NixReader<BufReader<FramedReader<R>>>,
    remaining: Option<u64>,
}

impl<R: AsyncRead + Unpin + Send> MultipleReader<R> {
    /// Reads the framed stream from `inner` (positioned right after the request).
    pub fn new(inner: R, store_dir: StoreDir) -> Self {
        Self {
            reader: NixReader::new(
                BufReader::new(FramedReader::new(inner)),
                MULTIPLE_INFO_VERSION,
                store_dir,
            ),
            remaining: None,
        }
    }

    /// The next path's info, or `None` after the last one. The previous path's NAR must
    /// have been read to its end first.
    pub async fn next_info(&mut self) -> Result<Option<ValidPathInfo>> {
        let remaining = match self.remaining {
            Some(n) => n,
            None => {
                let n = self.reader.read_u64().await?;
                if n > MAX_ITEMS {
                    return Err(crate::ProtocolError::TooLong {
                        what: "AddMultipleToStore count",
                        len: n,
                        max: MAX_ITEMS,
                    });
                }
                n
            }
        };
        if remaining == 0 {
            self.remaining = Some(0);
            return Ok(None);
        }
        self.remaining = Some(remaining - 1);
        Ok(Some(self.reader.read().await?))
    }

    /// The current path's NAR, exactly, as an `AsyncRead`.
    pub fn nar(&mut self) -> NarPassthrough<&mut BufReader<FramedReader<R>>> {
        NarPassthrough::new(self.reader.inner_mut())
    }

    /// Reads whatever is left of the stream up to its terminating frame (a no-op after a
    /// complete read), so the connection can carry the next request.
    pub async fn finish(mut self) -> Result<()> {
        tokio::io::copy(self.reader.inner_mut(), &mut tokio::io::sink()).await?;
        Ok(())
    }
}

/// Client side: writes an AddMultipleToStore stream.
#[derive(Debug)]
pub struct MultipleWriter<W> {
    framed: FramedWriter<W>,
    enc: Encoder,
}

impl<W: AsyncWrite + Unpin + Send> MultipleWriter<W> {
    /// Starts the stream on `inner` (right after the request was sent) for `count` paths.
    pub async fn begin(inner: W, store_dir: StoreDir, count: u64) -> Result<Self> {
        let mut this = Self {
            framed: FramedWriter::new(inner),
            enc: Encoder::new(MULTIPLE_INFO_VERSION, store_dir),
        };
        this.enc.write_u64(count);
        let buf = this.enc.take_buffer();
        this.framed.write_all(&buf).await?;
        Ok(this)
    }

    /// Adds one path: its info, then its NAR copied from `nar`.
    pub async fn add<N: AsyncRead + Unpin>(
        &mut self,
        info: &ValidPathInfo,
        nar: &mut N,
    ) -> Result<u64> {
        self.enc.write(info);
        let buf = self.enc.take_buffer();
        self.framed.write_all(&buf).await?;
        Ok(tokio::io::copy(nar, &mut self.framed).await?)
    }

    /// Ends the stream (the empty frame) and flushes; gives back the sink.
    pub async fn finish(mut self) -> Result<W> {
        self.framed.shutdown().await?;
        Ok(self.framed.into_inner())
    }
}
