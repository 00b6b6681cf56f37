//! NARs sent with no length in front.
//!
//! Some data flows send a NAR with no length in front: AddToStore before 1.25, each
//! path inside AddMultipleToStore, the reply of NarFromPath, and the STDERR_READ tunnel
//! of AddToStoreNar at 1.21/1.22. Finding where such a NAR ends is a matter of the NAR
//! format, so it lives in `harmonia-file-nar` ([`NarScanner`], [`NarPassthrough`]); this
//! module adds the protocol's own part, the STDERR_READ tunnel.

use std::io;

pub use harmonia_file_nar::{NarPassthrough, NarScanner};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::error::{ProtocolError, Result};
use crate::stderr::StderrMsg;
use crate::wire::{NixReader, NixWriter};

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
            return Err(ProtocolError::TrailingNarData {
                extra: (chunk.len() - n) as u64,
            });
        }
        sink.write_all(&chunk).await?;
    }
    sink.flush().await?;
    Ok(scanner.consumed())
}
