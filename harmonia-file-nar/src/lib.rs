//! The Nix ARchive (NAR) format: streaming encoder, validating decoder, restorer and `.ls` listing.
//!
//! A NAR is Nix's canonical serialisation of a file system object (a regular file with its executable bit, a
//! symlink, or a directory of such), with entries sorted by name so that equal trees give equal bytes. The
//! grammar is in [`wire`]'s documentation. Everything here streams with bounded memory.
#![deny(unsafe_code)]

mod decode;
mod encode;
mod error;
mod hash;
mod listing;
mod restore;
pub mod wire;

pub use decode::{
    CONTENTS_CHUNK, MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN, NarDecoder, NarEvent, NarPath,
};
pub use encode::{CHUNK_SIZE, NarEncoder, NarReader, NarStream, encode, encode_from_offset};
pub use error::NarError;
pub use hash::{hash_and_size, hash_and_size_blocking};
pub use listing::{ListingEntry, NarListing, list, list_with_nar_size};
pub use restore::restore;
