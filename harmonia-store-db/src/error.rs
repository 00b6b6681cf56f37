//! The one error type of this crate.

use std::path::PathBuf;

/// What went wrong while reading or writing Nix's store database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database file could not be opened, or is not a SQLite database at all.
    #[error("cannot open the Nix database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A read-only connection cannot use the WAL index: `<db>-shm` does not exist (no Nix process has the
    /// database open) and this user may not create it in the database directory.
    #[error(
        "cannot read the Nix database {path} read-only: SQLite needs its WAL index {path}-shm, which does not \
         exist while no Nix process has the database open, and this user cannot create it; give this user \
         write access to the database directory or keep the database open in a nix-daemon"
    )]
    WalIndexUnavailable {
        /// The database file.
        path: PathBuf,
    },
    /// The file is a SQLite database, but not one with Nix's tables.
    #[error("{path} is not a Nix store database: {reason}")]
    NotNixDb {
        /// The database file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The store schema (`<db dir>/schema`) or CA schema (`ca-schema`) is one we do not read or write.
    #[error(
        "{file} says schema version {found:?}, but only version {supported} is supported (run Nix 2.8+ on it)"
    )]
    UnsupportedSchema {
        /// The schema file.
        file: PathBuf,
        /// Its content.
        found: String,
        /// The version we support.
        supported: u32,
    },
    /// Reading or writing a file next to the database (schema version files, the db directory) failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A SQLite statement failed (busy past the timeout, disk full, corrupt pages, ...).
    #[error("SQLite error while {context}: {source}")]
    Sqlite {
        /// What we were doing.
        context: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A row in the database holds a value Nix would not have written.
    #[error("corrupt Nix database: {table}.{column} of {row} is {value:?}: {reason}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// Which row (usually its store path).
        row: String,
        /// The value found, truncated.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// A write was attempted on a connection opened read-only.
    #[error("the Nix database was opened read-only")]
    ReadOnly,
    /// The operation needs a valid (registered) path and this one is not.
    #[error("path '{0}' is not valid")]
    InvalidPath(String),
    /// A path cannot be invalidated because a valid path outside the batch still refers to it.
    #[error("cannot invalidate '{path}': '{referrer}' still refers to it")]
    PathInUse {
        /// The path to invalidate.
        path: String,
        /// A valid path referring to it.
        referrer: String,
    },
    /// A path being registered refers to a path that is neither valid nor part of the same batch.
    #[error("cannot register '{path}': its reference '{reference}' is not valid")]
    ReferenceNotValid {
        /// The path being registered.
        path: String,
        /// The missing reference.
        reference: String,
    },
    /// The paths being registered refer to each other in a cycle (self-references excepted).
    #[error("cycle detected in the references of '{0}'")]
    ReferenceCycle(String),
    /// A value handed to a write call cannot be stored faithfully.
    #[error("cannot register '{path}': bad {field}: {reason}")]
    InvalidInput {
        /// The path concerned.
        path: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A path claims a content address that does not produce its store path.
    #[error(
        "path '{path}' claims to be content-addressed by '{ca}' but isn't (that gives '{expected}')"
    )]
    CaMismatch {
        /// The path being registered.
        path: String,
        /// The claimed content address.
        ca: String,
        /// The store path the content address gives.
        expected: String,
    },
    /// A derivation file (`.drv`, ATerm) could not be read.
    #[error("invalid derivation at byte {offset}: {reason}")]
    InvalidDerivation {
        /// Where in the file.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A derivation output id (`sha256:<hex>!<output>`) is malformed.
    #[error("invalid derivation output id {id:?}: {reason}")]
    InvalidDrvOutput {
        /// The id as given.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A different realisation of the same derivation output is already registered.
    #[error("cannot register realisation '{id}' of '{new}': '{existing}' is already registered")]
    RealisationConflict {
        /// The derivation output.
        id: String,
        /// The output path already registered.
        existing: String,
        /// The output path we were asked to register.
        new: String,
    },
    /// A realisation depends on a realisation that is missing or registered with another output path.
    #[error(
        "cannot register realisation '{id}': its dependency '{dependency}' is missing or differs locally"
    )]
    RealisationDependency {
        /// The realisation being registered.
        id: String,
        /// The dependency.
        dependency: String,
    },
    /// The database has no Realisations table and was opened read-only (so it cannot be created).
    #[error(
        "the Nix database has no Realisations table (enable the ca-derivations feature in Nix)"
    )]
    NoRealisations,
}

impl DbError {
    /// True when SQLite gave up because another process held a lock past the busy timeout.
    pub fn is_busy(&self) -> bool {
        let source = match self {
            DbError::Open { source, .. } | DbError::Sqlite { source, .. } => source,
            _ => return false,
        };
        matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

/// Shorthand for wrapping a rusqlite error with what we were doing.
pub(crate) trait SqlContext<T> {
    /// Attach `context` to a SQLite failure.
    fn ctx(self, context: &'static str) -> Result<T, DbError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Sqlite { context, source })
    }
}
