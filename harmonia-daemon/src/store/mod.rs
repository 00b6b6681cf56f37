//! The local store the daemon serves: metadata from Nix's SQLite database, files from the real store directory.
//!
//! Database reads run inline on the connection's own thread from a pool of read-only connections. Adds of
//! NARs whose metadata the client states (AddToStoreNar, AddMultipleToStore, see `write::AddBatch`) also run
//! inline there, the way nix-daemon works in its per-connection process: they restore each NAR at a
//! temporary path inside the store, check it, and rename and register the checked paths in batches (one
//! SQLite transaction each). Other filesystem work and the other writes run on `spawn_blocking`.

mod fsutil;
mod locks;
mod maint;
mod restore;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use harmonia_store_db::{DbError, StoreDb, StoreDbPool, ValidPathInfo};
use harmonia_store_path::{StoreDir, StorePath, StorePathHash};
use harmonia_utils_signature::PublicKey;

use crate::config::Config;

pub use write::{AddOptions, CaMethod, CaSource};

/// Why a store operation failed; the worker turns it into a protocol error for the client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Db(#[from] DbError),
    /// A filesystem operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The NAR the client sent was malformed or could not be restored.
    #[error("NAR: {0}")]
    Nar(#[from] harmonia_file_nar::NarError),
    /// The path is not valid in this store.
    #[error("path '{0}' is not valid")]
    NotValid(String),
    /// The content does not match what the client claimed.
    #[error("{0}")]
    Mismatch(String),
    /// The client is not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request cannot be served (bad argument, unsupported case).
    #[error("{0}")]
    Invalid(String),
    /// A blocking task panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }
}

/// A Nix store on the local filesystem; cheap to clone.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    store_dir: StoreDir,
    real_dir: PathBuf,
    state_dir: PathBuf,
    log_dir: PathBuf,
    readers: StoreDbPool,
    writer: Mutex<StoreDb>,
    locks: Arc<locks::PathLocks>,
    trusted_keys: Vec<PublicKey>,
}

/// Read-only connections kept open; a connection thread waits for one when all are in use.
const MAX_READERS: usize = 32;

impl LocalStore {
    /// Opens the store described by `config`, and removes temporary directories a killed daemon left behind.
    pub async fn open(config: &Config) -> Result<LocalStore> {
        let store_dir = StoreDir::new(&config.store_dir)
            .with_context(|| format!("invalid `store_dir` {:?}", config.store_dir))?;
        let real_dir = config.real_store_dir.clone();
        if !real_dir.is_dir() {
            anyhow::bail!(
                "store directory {} does not exist: set `real_store_dir` (or `store_dir`)",
                real_dir.display()
            );
        }
        if !config.db_path.is_file() {
            anyhow::bail!(
                "no Nix database at {}: set `db_path`, or initialise the store with Nix first",
                config.db_path.display()
            );
        }
        let trusted_keys = config
            .trusted_public_keys
            .iter()
            .map(|k| {
                PublicKey::parse(k)
                    .with_context(|| format!("invalid `trusted_public_keys` entry {k:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let state_dir = real_dir
            .parent()
            .map(|p| p.join("var/nix"))
            .unwrap_or_else(|| PathBuf::from("/nix/var/nix"));
        let (db_path, sd) = (config.db_path.clone(), store_dir.clone());
        let rd = real_dir.clone();
        let (writer, readers) =
            tokio::task::spawn_blocking(move || -> Result<(StoreDb, StoreDbPool)> {
                let removed = fsutil::remove_stale_temp_dirs(&rd).with_context(|| {
                    format!("cannot clean temporary directories in {}", rd.display())
                })?;
                if removed > 0 {
                    tracing::info!(
                        "removed {removed} temporary director(ies) left by an interrupted add"
                    );
                }
                let writer = StoreDb::open_read_write(&db_path, sd.clone()).with_context(|| {
                    format!(
                        "cannot open the Nix database {} for writing",
                        db_path.display()
                    )
                })?;
                let readers = StoreDbPool::new(&db_path, sd, MAX_READERS).with_context(|| {
                    format!("cannot open the Nix database {}", db_path.display())
                })?;
                Ok((writer, readers))
            })
            .await??;
        Ok(LocalStore {
            inner: Arc::new(Inner {
                store_dir,
                real_dir,
                state_dir,
                log_dir: config.log_dir.clone(),
                readers,
                writer: Mutex::new(writer),
                locks: Arc::new(locks::PathLocks::default()),
                trusted_keys,
            }),
        })
    }

    /// The logical store directory.
    pub fn store_dir(&self) -> &StoreDir {
        &self.inner.store_dir
    }

    /// Where `path`'s files really are.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        self.inner.real_dir.join(path.to_string())
    }

    /// Nix's state directory for this store (`.../var/nix`), home of `gcroots`.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The build log directory (`.../var/log/nix/drvs`).
    pub fn log_dir(&self) -> &Path {
        &self.inner.log_dir
    }

    /// Runs `f` with a read-only connection, inline. Call it only from a connection's own thread (see
    /// `server::serve_on_own_thread`) or a blocking task: these are short SQLite reads that would cost more
    /// in thread hand-offs than they take.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&StoreDb) -> Result<T, DbError> + Send + 'static,
    {
        self.inner
            .readers
            .with_conn(|db| f(db).map_err(StoreError::from))
    }

    /// Runs `f` with the read-write connection on a blocking thread; writers are serialised.
    pub async fn write_db<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut StoreDb) -> Result<T, DbError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = inner.writer.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut db).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Metadata of `path`, if valid.
    pub async fn query_path_info(
        &self,
        path: StorePath,
    ) -> Result<Option<ValidPathInfo>, StoreError> {
        self.read(move |db| db.query_path_info(&path)).await
    }

    /// Whether `path` is valid.
    pub async fn is_valid_path(&self, path: StorePath) -> Result<bool, StoreError> {
        self.read(move |db| db.is_valid_path(&path)).await
    }

    /// The subset of `paths` that is valid, in the order given.
    pub async fn query_valid_paths(
        &self,
        paths: Vec<StorePath>,
    ) -> Result<Vec<StorePath>, StoreError> {
        self.read(move |db| db.query_valid_paths(&paths)).await
    }

    /// The valid path whose hash part is `hash`, if any.
    pub async fn query_path_from_hash_part(
        &self,
        hash: StorePathHash,
    ) -> Result<Option<StorePath>, StoreError> {
        self.read(move |db| db.query_path_from_hash_part(&hash))
            .await
    }

    /// Every valid path.
    pub async fn query_all_valid_paths(&self) -> Result<Vec<StorePath>, StoreError> {
        self.read(|db| db.query_all_valid_paths()).await
    }

    /// Valid paths that refer to `path`.
    pub async fn query_referrers(&self, path: StorePath) -> Result<Vec<StorePath>, StoreError> {
        self.read(move |db| db.query_referrers(&path)).await
    }

    /// Valid derivations that claim to produce `path`.
    pub async fn query_valid_derivers(
        &self,
        path: StorePath,
    ) -> Result<Vec<StorePath>, StoreError> {
        self.read(move |db| db.query_valid_derivers(&path)).await
    }

    /// Outputs of the derivation `drv` as recorded in the database.
    pub async fn query_derivation_outputs(
        &self,
        drv: StorePath,
    ) -> Result<Vec<(String, StorePath)>, StoreError> {
        self.read(move |db| db.query_derivation_outputs(&drv)).await
    }

    /// The trusted public keys from the config.
    pub fn trusted_keys(&self) -> &[PublicKey] {
        &self.inner.trusted_keys
    }
}
