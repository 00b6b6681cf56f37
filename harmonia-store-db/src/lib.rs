//! Read and write access to Nix's SQLite store database (`/nix/var/nix/db/db.sqlite`, schema 10).
//!
//! [`StoreDb`] is one connection: path info by store path or by hash part, references, referrers, valid
//! derivers, derivation outputs, all valid paths and realisations; and, opened read-write, registration of
//! valid paths, derivation outputs, signatures and realisations in single transactions the way Nix does, so
//! that the real `nix-store` and `nix path-info` read what we write. [`StoreDbPool`] lends read-only
//! connections to a server's blocking tasks.
//!
//! The API is synchronous (SQLite is blocking); async callers use `tokio::task::spawn_blocking`. Nix keeps
//! the database in WAL mode, so read-only connections see what a running nix-daemon commits.
//!
//! The table layout is Nix's `schema.sql` (store schema 10) and `ca-specific-schema.sql` (CA schema 3).
//!
//! ```no_run
//! use harmonia_store_db::StoreDbPool;
//! use harmonia_store_path::StoreDir;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = StoreDbPool::new("/nix/var/nix/db/db.sqlite", StoreDir::default(), 8)?;
//! let hash = "0xi9q7rbv8vks3hjpw7pg5j34m1dqw1m".parse()?;
//! // Blocking: from async code, call this inside tokio::task::spawn_blocking.
//! if let Some(info) = pool.with_conn(|db| db.query_path_info_by_hash_part(&hash))? {
//!     println!("{} {} {}", info.path, info.nar_hash, info.nar_size);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]

mod db;
mod drv;
mod error;
mod pool;
mod schema;
mod snapshot;
mod types;

pub use db::{DEFAULT_BUSY_TIMEOUT, StoreDb};
pub use drv::parse_derivation_outputs;
pub use error::DbError;
pub use pool::StoreDbPool;
pub use schema::{NIX_CA_SCHEMA_VERSION, NIX_SCHEMA_VERSION};
pub use snapshot::SnapshotReader;
pub use types::{DrvOutput, Realisation, ValidPathInfo};
