//! Nix store directories and store paths: parsing, validation and computing them as Nix does.
//!
//! A [`StorePath`] is the base name `<hash>-<name>` of an entry directly in a [`StoreDir`]: a 32-character
//! nix-base32 [`StorePathHash`] (20 bytes) and a [`StorePathName`] checked by Nix's rules. [`StoreDir`]
//! renders and parses full paths and computes the paths Nix gives to sources, text files, fixed-output and
//! derivation outputs (`libstore/store-api.cc`, `makeStorePath` and friends).
//!
//! ```
//! use harmonia_store_path::{ContentAddress, StoreDir, StorePath};
//! use harmonia_utils_hash::{Algorithm, Hash};
//!
//! let store_dir = StoreDir::default();
//! // What `builtins.toFile "n" "abc"` gives in Nix 2.8.
//! let text = Hash::digest_of(Algorithm::Sha256, b"abc");
//! let p = store_dir.make_text_path(&text, &[], "n").unwrap();
//! assert_eq!(store_dir.display(&p), "/nix/store/5d7y9mjs7f4d49lsymag3dpfk4zjc0cq-n");
//! assert_eq!(store_dir.parse_path("/nix/store/5d7y9mjs7f4d49lsymag3dpfk4zjc0cq-n").unwrap(), p);
//! assert_eq!(ContentAddress::Text(text).to_string(), "text:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s");
//! assert!("not-a-store-path".parse::<StorePath>().is_err());
//! ```
#![deny(unsafe_code)]

mod content_address;
mod error;
mod path;
mod store_dir;

pub use content_address::{ContentAddress, ContentAddressMethod};
pub use error::StorePathError;
pub use path::{StorePath, StorePathHash, StorePathName};
pub use store_dir::StoreDir;
