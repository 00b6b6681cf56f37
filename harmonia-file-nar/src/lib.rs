//! The Nix ARchive (NAR) format: streaming encoder, validating decoder, restorer and `.ls` listing.
//!
//! A NAR is Nix's canonical serialisation of a file system object (a regular file with its executable bit, a
//! symlink, or a directory of such), with entries sorted by name bytes so that equal trees give equal bytes.
//! The grammar is in [`wire`]'s documentation. Everything here streams with bounded memory:
//!
//! - [`NarEncoder`] (synchronous iterator of chunks, also [`NarReader`] as `std::io::Read`) and [`encode`] /
//!   [`encode_from_offset`] (async [`NarStream`] on tokio's blocking pool): the bytes of `nix-store --dump`.
//! - [`NarDecoder`]: validating decoder over `AsyncRead`, yielding [`NarEvent`]s.
//! - [`restore`]: unpack a NAR into a new directory, never writing outside it.
//! - [`list`]: the `.ls` JSON listing with `narOffset`s, from metadata only.
//! - [`hash_and_size`]: NAR hash and size in one pass.
//! - [`NarScanner`] / [`NarPassthrough`]: find where a NAR ends in a stream that goes on after it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), harmonia_file_nar::NarError> {
//! use harmonia_file_nar::{NarDecoder, NarEncoder, NarEvent};
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("hello"), b"hi\n").unwrap();
//!
//! let mut nar = Vec::new();
//! for chunk in NarEncoder::new(dir.path()) {
//!     nar.extend_from_slice(&chunk?);
//! }
//! let mut decoder = NarDecoder::new(&nar[..]);
//! let mut files = Vec::new();
//! while let Some(event) = decoder.next().await {
//!     if let NarEvent::File { path, size, .. } = event? {
//!         files.push((path.to_string(), size));
//!     }
//! }
//! assert_eq!(files, [("/hello".to_string(), 3)]);
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

mod decode;
mod encode;
mod error;
mod hash;
mod listing;
mod restore;
mod scan;
pub mod wire;

pub use decode::{
    CONTENTS_CHUNK, MAX_DEPTH, MAX_NAME_LEN, MAX_PATH_LEN, MAX_TARGET_LEN, NarDecoder, NarEvent,
    NarPath,
};
pub use encode::{
    CHUNK_SIZE, FileSegment, NarEncoder, NarPiece, NarReader, NarSegments, NarStream, encode,
    encode_from_offset,
};
pub use error::NarError;
pub use hash::{hash_and_size, hash_and_size_blocking};
pub use listing::{ListingEntry, NarListing, list, list_with_nar_size};
pub use restore::restore;
pub use scan::{NarPassthrough, NarScanner};

#[cfg(test)]
mod tests {
    fn assert_send<T: Send + 'static>(_: &T) {}

    #[test]
    fn streams_and_futures_are_send() {
        assert_send(&crate::encode("/".into()));
        assert_send(&crate::hash_and_size("/".into()));
        let mut decoder = crate::NarDecoder::new(tokio::io::empty());
        assert_send(&async move { decoder.next().await.is_some() });
        assert_send(&async {
            crate::restore(tokio::io::empty(), std::path::Path::new("/x")).await
        });
    }
}
