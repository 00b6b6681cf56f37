//! Nix store directories and store paths: parsing, validation and computing them as Nix does.
//!
//! A [`StorePath`] is the base name `<hash>-<name>` of an entry directly in a [`StoreDir`]: a 32-character
//! nix-base32 [`StorePathHash`] (20 bytes) and a [`StorePathName`] checked by Nix's rules. [`StoreDir`]
//! renders and parses full paths and computes the paths Nix gives to sources, text files, fixed-output and
//! derivation outputs (`libstore/store-api.cc`, `makeStorePath` and friends).
#![deny(unsafe_code)]

mod content_address;
mod error;
mod path;
mod store_dir;

pub use content_address::ContentAddress;
pub use error::StorePathError;
pub use path::{StorePath, StorePathHash, StorePathName};
pub use store_dir::StoreDir;
