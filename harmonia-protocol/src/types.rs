//! Wire forms of store values: store paths, hashes, content addresses, path infos.
//!
//! From Nix's `common-protocol.cc` and `worker-protocol.cc`: a store path is its full
//! printed path (`/nix/store/<hash>-<name>`), an optional store path or content address
//! is the empty string when absent, a NAR hash is sent as bare base16 and read in any
//! encoding, and a path info ("unkeyed": without its path) is deriver, NAR hash,
//! references, registration time, NAR size, then (from 1.16) ultimate, signatures and
//! content address.

use std::collections::BTreeSet;

use harmonia_store_path::{ContentAddress, StorePath};
use harmonia_utils_hash::{Algorithm, Hash, NarHash};
use tokio::io::AsyncRead;

use crate::error::{ProtocolError, Result, truncate_lossy};
use crate::nix_struct;
use crate::wire::{Encoder, MAX_BLOB, MAX_SHORT_STRING, NixDeserialize, NixReader, NixSerialize};

/// Cap on a printed store path (store dir + 32 + 1 + 211 and then some).
pub const MAX_STORE_PATH: u64 = 4096;

async fn read_store_path_str<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<String> {
    r.read_string("store path", MAX_STORE_PATH).await
}

fn parse_full_path<R>(r: &NixReader<R>, s: &str) -> Result<StorePath> {
    r.store_dir()
        .parse_path(s)
        .map_err(|e| ProtocolError::InvalidStorePath {
            path: truncate_lossy(s.as_bytes()),
            reason: e.to_string(),
        })
}

impl NixSerialize for StorePath {
    fn serialize(&self, enc: &mut Encoder) {
        let s = enc.store_dir().display(self);
        enc.write_str(&s);
    }
}

impl NixDeserialize for StorePath {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let s = read_store_path_str(r).await?;
        parse_full_path(r, &s)
    }
}

/// An optional store path: the empty string means none.
impl NixSerialize for Option<StorePath> {
    fn serialize(&self, enc: &mut Encoder) {
        match self {
            Some(p) => p.serialize(enc),
            None => enc.write_str(""),
        }
    }
}

impl NixDeserialize for Option<StorePath> {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let s = read_store_path_str(r).await?;
        if s.is_empty() {
            Ok(None)
        } else {
            parse_full_path(r, &s).map(Some)
        }
    }
}

/// A store path sent as its base name `<hash>-<name>` (AddBuildLog, RegisterDrvOutput
/// before 1.31), not as a full path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePathBase(pub StorePath);

impl NixSerialize for StorePathBase {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_str(&self.0.to_string());
    }
}

impl NixDeserialize for StorePathBase {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let s = read_store_path_str(r).await?;
        s.parse::<StorePath>()
            .map(StorePathBase)
            .map_err(|e| ProtocolError::InvalidStorePath {
                path: truncate_lossy(s.as_bytes()),
                reason: e.to_string(),
            })
    }
}

/// NAR hashes are written as bare base16 (Nix: `to_string(Base16, false)`).
impl NixSerialize for NarHash {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_str(&self.hash().to_base16());
    }
}

/// NAR hashes are read in any encoding, prefixed or not (Nix: `Hash::parseAny(s, SHA256)`).
impl NixDeserialize for NarHash {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let s = r.read_string("NAR hash", 1024).await?;
        let hash = if s.contains(':') || s.contains('-') {
            Hash::parse(&s)
        } else {
            Hash::parse_digest(Algorithm::Sha256, &s)
        }
        .map_err(|_| ProtocolError::invalid("NAR hash", s.as_bytes()))?;
        NarHash::try_from(hash)
            .map_err(|_| ProtocolError::invalid("NAR hash (must be sha256)", s.as_bytes()))
    }
}

/// An optional content address: the empty string means none.
impl NixSerialize for Option<ContentAddress> {
    fn serialize(&self, enc: &mut Encoder) {
        match self {
            Some(ca) => enc.write_str(&ca.to_string()),
            None => enc.write_str(""),
        }
    }
}

impl NixDeserialize for Option<ContentAddress> {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let s = r.read_string("content address", 1024).await?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<ContentAddress>()
            .map(Some)
            .map_err(|_| ProtocolError::invalid("content address", s.as_bytes()))
    }
}

/// A byte string that may be big (the text of AddTextToStore): capped at [`MAX_BLOB`],
/// read in chunks as it arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl NixSerialize for Blob {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_bytes(&self.0);
    }
}

impl NixDeserialize for Blob {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        Ok(Blob(r.read_bytes("blob", MAX_BLOB).await?))
    }
}

/// A short text field (names, hash parts, settings): capped at [`MAX_SHORT_STRING`].
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShortString(pub String);

impl NixSerialize for ShortString {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_str(&self.0);
    }
}

impl NixDeserialize for ShortString {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        Ok(ShortString(
            r.read_string("short string", MAX_SHORT_STRING).await?,
        ))
    }
}

impl From<&str> for ShortString {
    fn from(s: &str) -> Self {
        ShortString(s.to_owned())
    }
}

nix_struct! {
    /// Nix's `UnkeyedValidPathInfo`: everything the store knows about a valid path, but
    /// the path itself (QueryPathInfo's reply).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct UnkeyedValidPathInfo {
        /// The derivation that built it, if known.
        pub deriver: Option<StorePath>,
        /// SHA-256 of its NAR serialisation.
        pub nar_hash: NarHash,
        /// Store paths it refers to (possibly itself).
        pub references: BTreeSet<StorePath>,
        /// Seconds since the epoch when it was registered.
        pub registration_time: u64,
        /// Size of its NAR serialisation.
        pub nar_size: u64,
        /// Whether it was built locally ("ultimately trusted").
        @since(1, 16) pub ultimate: bool,
        /// Signatures, each `keyname:base64`.
        @since(1, 16) pub signatures: BTreeSet<String>,
        /// Its content address, if content-addressed.
        @since(1, 16) pub ca: Option<ContentAddress>,
    }
}

nix_struct! {
    /// Nix's `ValidPathInfo`: a path and its [`UnkeyedValidPathInfo`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ValidPathInfo {
        /// The store path.
        pub path: StorePath,
        /// Its metadata.
        pub info: UnkeyedValidPathInfo,
    }
}

/// Which outputs of a derivation a [`DerivedPath::Built`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputsSpec {
    /// `*`: every output.
    All,
    /// The named outputs.
    Names(BTreeSet<String>),
}

/// A derived path as sent in BuildPaths and QueryMissing: a plain store path, or a
/// derivation with the outputs wanted, `<drv>!<out1>,<out2>` or `<drv>!*` (Nix's
/// `DerivedPath::parseLegacy` from 1.30; older clients send the same `!` form for
/// `StorePathWithOutputs`, where a bare `.drv` path means the file itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DerivedPath {
    /// A store path that must merely be valid.
    Opaque(StorePath),
    /// Outputs of a derivation.
    Built {
        /// The derivation.
        drv_path: StorePath,
        /// The outputs wanted.
        outputs: OutputsSpec,
    },
}

impl DerivedPath {
    /// Parses the wire form against `store_dir`.
    pub fn parse(store_dir: &harmonia_store_path::StoreDir, s: &str) -> Result<DerivedPath> {
        let bad_path =
            |p: &str, e: harmonia_store_path::StorePathError| ProtocolError::InvalidStorePath {
                path: truncate_lossy(p.as_bytes()),
                reason: e.to_string(),
            };
        match s.split_once('!') {
            None => store_dir
                .parse_path(s)
                .map(DerivedPath::Opaque)
                .map_err(|e| bad_path(s, e)),
            Some((drv, outs)) => {
                let drv_path = store_dir.parse_path(drv).map_err(|e| bad_path(drv, e))?;
                let outputs = if outs == "*" {
                    OutputsSpec::All
                } else {
                    let names: BTreeSet<String> = outs.split(',').map(str::to_owned).collect();
                    if names.iter().any(|n| n.is_empty()) {
                        return Err(ProtocolError::invalid("derived path outputs", s.as_bytes()));
                    }
                    OutputsSpec::Names(names)
                };
                Ok(DerivedPath::Built { drv_path, outputs })
            }
        }
    }

    /// Renders the wire form.
    pub fn render(&self, store_dir: &harmonia_store_path::StoreDir) -> String {
        match self {
            DerivedPath::Opaque(p) => store_dir.display(p),
            DerivedPath::Built { drv_path, outputs } => {
                let outs = match outputs {
                    OutputsSpec::All => "*".to_owned(),
                    OutputsSpec::Names(n) => n.iter().cloned().collect::<Vec<_>>().join(","),
                };
                format!("{}!{outs}", store_dir.display(drv_path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harmonia_store_path::StoreDir;

    #[test]
    fn derived_paths() {
        let dir = StoreDir::default();
        let drv = "/nix/store/7h7qgvs4kgzsn8a6rb274saxyqh4jxlz-hello.drv";
        for s in [
            drv.to_string(),
            format!("{drv}!*"),
            format!("{drv}!dev,out"),
        ] {
            let d = DerivedPath::parse(&dir, &s).unwrap();
            assert_eq!(d.render(&dir), s);
        }
        assert!(matches!(
            DerivedPath::parse(&dir, &format!("{drv}!out")).unwrap(),
            DerivedPath::Built { outputs: OutputsSpec::Names(n), .. } if n.len() == 1
        ));
        assert!(DerivedPath::parse(&dir, &format!("{drv}!")).is_err());
        assert!(DerivedPath::parse(&dir, "/tmp/x!out").is_err());
        assert!(DerivedPath::parse(&dir, "garbage").is_err());
    }
}
