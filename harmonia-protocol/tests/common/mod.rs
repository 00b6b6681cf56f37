//! Helpers shared by the integration tests: hand-written wire bytes and sample values.
#![allow(dead_code)]

use harmonia_protocol::{NixReader, NixWriter, ProtocolVersion};
use harmonia_store_path::{StoreDir, StorePath};

/// A u64 as Nix writes it.
pub fn u(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// A string as Nix writes it: length, bytes, zero padding to 8.
pub fn s(x: impl AsRef<[u8]>) -> Vec<u8> {
    let x = x.as_ref();
    let mut out = u(x.len() as u64);
    out.extend_from_slice(x);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    out
}

/// Concatenates wire pieces.
pub fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

pub fn v(minor: u8) -> ProtocolVersion {
    ProtocolVersion::new(1, minor)
}

pub fn store_dir() -> StoreDir {
    StoreDir::default()
}

pub fn path(base: &str) -> StorePath {
    base.parse().expect("valid test store path")
}

pub const P1: &str = "00bgd045z0d4icpbc2yyz4gx48ak44la-net-tools-1.60";
pub const P2: &str = "1b9p07z77phvv2hf6gm9f28syp39f1ag-bash-5.2";
pub const P3: &str = "7h7qgvs4kgzsn8a6rb274saxyqh4jxlz-hello.drv";

pub fn reader(bytes: &[u8], minor: u8) -> NixReader<&[u8]> {
    NixReader::new(bytes, v(minor), store_dir())
}

pub fn writer(minor: u8) -> NixWriter<Vec<u8>> {
    NixWriter::new(Vec::new(), v(minor), store_dir())
}
