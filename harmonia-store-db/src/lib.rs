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
#![deny(unsafe_code)]

mod db;
mod error;
mod pool;
mod schema;
mod types;

pub use db::{DEFAULT_BUSY_TIMEOUT, StoreDb};
pub use error::DbError;
pub use pool::StoreDbPool;
pub use schema::{NIX_CA_SCHEMA_VERSION, NIX_SCHEMA_VERSION};
pub use types::{DrvOutput, Realisation, ValidPathInfo};
