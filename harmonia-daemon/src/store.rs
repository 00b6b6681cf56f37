//! The local store: reads from Nix's database, writes by restore-verify-rename-register.

use anyhow::Result;

use crate::config::Config;

/// A Nix store on the local filesystem.
pub struct LocalStore {}

impl LocalStore {
    /// Opens the store described by `config`.
    pub async fn open(_config: &Config) -> Result<LocalStore> {
        Ok(LocalStore {})
    }
}
