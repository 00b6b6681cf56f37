//! NAR hash and size of a path in one pass.

use std::path::{Path, PathBuf};

use harmonia_utils_hash::{Algorithm, Hasher, NarHash};

use crate::{NarEncoder, NarError};

/// The sha256 NAR hash and NAR size of `path`, computed synchronously (for callers already on a blocking
/// thread); what `nix path-info --json` reports as `narHash` and `narSize`.
pub fn hash_and_size_blocking(path: &Path) -> Result<(NarHash, u64), NarError> {
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut size = 0u64;
    for chunk in NarEncoder::new(path) {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    let hash = NarHash::try_from(hasher.finish())
        .map_err(|e| NarError::Task(format!("sha256 hasher gave a non-sha256 hash: {e}")))?;
    Ok((hash, size))
}

/// The sha256 NAR hash and NAR size of `path`, encoding and hashing on tokio's blocking pool.
pub async fn hash_and_size(path: PathBuf) -> Result<(NarHash, u64), NarError> {
    tokio::task::spawn_blocking(move || hash_and_size_blocking(&path))
        .await
        .map_err(|e| NarError::Task(e.to_string()))?
}
