//! NarFromPath's body: a NAR written to the client's socket with file contents copied by `sendfile`.
//!
//! `nix-store --dump` reads every byte into user space once; a daemon that read the NAR and then wrote it
//! to the socket would copy it twice. Here the framing and small files are read into chunks, and the
//! contents of bigger files go from the page cache to the socket in the kernel.
//!
//! The walk and the reads run on the connection's own thread (see `server.rs`): a slow disk can only delay
//! this connection.

use std::io;
use std::path::PathBuf;

use harmonia_file_nar::{FileSegment, NarEncoder, NarError, NarSegments};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Files with at least this many bytes go out with `sendfile`; smaller ones are batched into chunks,
/// where one `read` per file is cheaper than a `sendfile` and its wake-ups.
const SENDFILE_MIN: u64 = 32 << 10;

/// Size of the chunks that carry framing and small files.
const CHUNK: usize = 256 << 10;

/// Most bytes asked of one `sendfile` call (the socket takes what fits in its buffer anyway).
const SENDFILE_MAX: usize = 1 << 30;

/// Send buffer asked for while a NAR goes out (the kernel caps it at `net.core.wmem_max`): with the default
/// ~200 KiB, daemon and client take turns every 200 KiB instead of streaming.
const NAR_SEND_BUFFER: usize = 4 << 20;

/// Widens the socket's send buffer for a NAR; a refusal only costs speed.
pub fn widen_send_buffer(socket: &UnixStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    if let Err(e) = setsockopt(socket, sockopt::SndBuf, &NAR_SEND_BUFFER) {
        tracing::debug!("cannot widen the send buffer: {e}");
    }
}

/// The pieces of the NAR of `path` (in the real store directory).
pub fn pieces(path: PathBuf) -> NarSegments {
    NarEncoder::with_file_segments(path, 0, CHUNK, SENDFILE_MIN)
}

/// Copies the segment's bytes from its file to `socket`; a file that ends early is [`NarError::FileChanged`].
pub async fn send_segment(socket: &UnixStream, mut segment: FileSegment) -> io::Result<()> {
    while segment.remaining() > 0 {
        socket.writable().await?;
        let want =
            usize::try_from(segment.remaining()).map_or(SENDFILE_MAX, |n| n.min(SENDFILE_MAX));
        let mut offset = i64::try_from(segment.offset()).map_err(io::Error::other)?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(socket, segment.file(), Some(&mut offset), want)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => return Err(io::Error::other(segment.changed())),
            Ok(n) => segment.advance(n as u64),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    NarError::Io {
                        path: segment.path().to_owned(),
                        source: e,
                    },
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use harmonia_file_nar::NarPiece;
    use tokio::io::AsyncReadExt;

    /// Sends every piece of `path` through a socket pair and returns what arrived.
    async fn through_socket(path: PathBuf) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = UnixStream::pair()?;
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.map(|_| out)
        });
        for piece in pieces(path) {
            match piece.map_err(io::Error::other)? {
                NarPiece::Bytes(bytes) => a.write_all(&bytes).await?,
                NarPiece::File(segment) => send_segment(&a, segment).await?,
            }
        }
        a.shutdown().await?;
        drop(a);
        reader.await.map_err(io::Error::other)?
    }

    #[tokio::test(flavor = "current_thread")]
    async fn socket_gets_the_same_nar_as_the_encoder() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("small"), b"small").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/mid"), vec![9u8; 40_000]).unwrap();
        let expected: Vec<u8> = NarEncoder::new(dir.path())
            .map(|c| c.unwrap().to_vec())
            .collect::<Vec<_>>()
            .concat();
        let got = through_socket(dir.path().to_owned()).await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_file_that_shrinks_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, vec![1u8; 100_000]).unwrap();
        let mut segment = None;
        for piece in pieces(dir.path().to_owned()) {
            if let NarPiece::File(s) = piece.unwrap() {
                segment = Some(s);
                break;
            }
        }
        let segment = segment.expect("f is big enough for a segment");
        std::fs::write(&f, vec![1u8; 10]).unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = b.read_to_end(&mut sink).await;
        });
        let err = send_segment(&a, segment).await.unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
        drop(a);
        drain.await.unwrap();
    }
}
