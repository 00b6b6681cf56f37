//! [`StoreDb`]: one connection to Nix's `db.sqlite`.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harmonia_store_path::{ContentAddress, StoreDir, StorePath, StorePathHash, StorePathName};
use harmonia_utils_hash::{Hash, NarHash};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

use crate::error::SqlContext;
use crate::schema::{
    CA_SCHEMA, MIN_CA_SCHEMA_VERSION, NIX_CA_SCHEMA_VERSION, NIX_SCHEMA_VERSION, STORE_SCHEMA,
};
use crate::types::check_output_name;
use crate::{DbError, DrvOutput, Realisation, ValidPathInfo};

/// How long a statement waits for a lock held by another process (nix-daemon, nix-store) before it fails
/// with a busy error. Nix itself waits up to an hour; servers should rather answer an error than hang.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of the database file each connection may memory-map (`PRAGMA mmap_size`).
const MMAP_SIZE: i64 = 1 << 30;

// The statements, prepared once per connection (`prepare_cached`). The column lists match Nix's so that the
// same indexes serve us: `path` is unique (indexed), Refs has IndexReferrer/IndexReference,
// DerivationOutputs has IndexDerivationOutputs on path, Realisations has IndexRealisations.
// Path info and its references come from one statement (a left join yields one row per reference, or one row
// with a NULL reference): one read transaction instead of two halves the cost of the cache's hot path, and
// the row and its references come from the same snapshot.
const Q_PATH_INFO: &str = "select v.hash, v.registrationTime, v.deriver, v.narSize, v.ultimate, v.sigs, \
     v.ca, v.path, r.path from ValidPaths v left join Refs on Refs.referrer = v.id \
     left join ValidPaths r on r.id = Refs.reference where v.path = ?1";
/// Nix's trick for hash-part lookups: a range scan on the unique path index instead of `like`.
// The first path at or after the prefix, found by a scalar subquery on the path index (covering: only the id
// is read there) and then fetched by rowid; a `from (select * ...)` subquery ran as a co-routine that copied
// every column of the row through registers.
const Q_PATH_INFO_BY_PREFIX: &str = "select v.hash, v.registrationTime, v.deriver, v.narSize, v.ultimate, \
     v.sigs, v.ca, v.path, r.path from ValidPaths v \
     left join Refs on Refs.referrer = v.id left join ValidPaths r on r.id = Refs.reference \
     where v.id = (select id from ValidPaths where path >= ?1 order by path limit 1)";
const Q_PATH_BY_PREFIX: &str = "select path from ValidPaths where path >= ?1 order by path limit 1";
const Q_IS_VALID: &str = "select id from ValidPaths where path = ?1";
const Q_REFERENCES: &str = "select v.path from Refs r join ValidPaths v on r.reference = v.id \
     where r.referrer = (select id from ValidPaths where path = ?1)";
const Q_REFERRERS: &str = "select v.path from Refs r join ValidPaths v on r.referrer = v.id \
     where r.reference = (select id from ValidPaths where path = ?1)";
const Q_VALID_DERIVERS: &str =
    "select v.path from DerivationOutputs d join ValidPaths v on d.drv = v.id where d.path = ?1";
const Q_DRV_OUTPUTS: &str = "select d.id, d.path from DerivationOutputs d where d.drv = (select id from ValidPaths where path = ?1)";
const Q_ALL_PATHS: &str = "select path from ValidPaths";
const Q_HAS_TABLE: &str = "select 1 from sqlite_master where type = 'table' and name = ?1";
const Q_REALISATION: &str = "select r.id, v.path, r.signatures from Realisations r \
     join ValidPaths v on v.id = r.outputPath where r.drvPath = ?1 and r.outputName = ?2";
const Q_REALISATION_REFS: &str = "select r.drvPath, r.outputName, v.path from RealisationsRefs rr \
     join Realisations r on r.id = rr.realisationReference join ValidPaths v on v.id = r.outputPath \
     where rr.referrer = ?1";

// Writes, as Nix does them: insert new rows, update existing ones in place (never `insert or replace` on
// ValidPaths, which would delete the row and with it, by cascade, its Refs and DerivationOutputs).
const S_INSERT_PATH: &str = "insert into ValidPaths \
     (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const S_UPDATE_PATH: &str = "update ValidPaths set narSize = ?1, hash = ?2, ultimate = ?3, sigs = ?4, ca = ?5 where path = ?6";
const S_ADD_REFERENCE: &str = "insert or replace into Refs (referrer, reference) values (?1, ?2)";
const S_ADD_DRV_OUTPUT: &str =
    "insert or replace into DerivationOutputs (drv, id, path) values (?1, ?2, ?3)";
const S_INVALIDATE_PATH: &str = "delete from ValidPaths where path = ?1";
const Q_SIGS: &str = "select sigs from ValidPaths where path = ?1";
const S_UPDATE_SIGS: &str = "update ValidPaths set sigs = ?1 where path = ?2";
const S_INSERT_REALISATION: &str = "insert into Realisations (drvPath, outputName, outputPath, signatures) \
     values (?1, ?2, ?3, ?4)";
const S_UPDATE_REALISATION: &str =
    "update Realisations set signatures = ?1 where drvPath = ?2 and outputName = ?3";
// RealisationsRefs has no unique key; skip pairs that are already there so re-registration does not pile up
// duplicate rows.
const S_ADD_REALISATION_REF: &str = "insert into RealisationsRefs (referrer, realisationReference) \
     select ?1, ?2 where not exists \
     (select 1 from RealisationsRefs where referrer = ?1 and realisationReference = ?2)";

/// One SQLite connection to Nix's store database (`<state dir>/db/db.sqlite`, schema 10).
///
/// Synchronous: async callers run it inside `tokio::task::spawn_blocking`. Queries take `&self` and use
/// statements prepared once per connection; writes take `&mut self` and run in one transaction each.
#[derive(Debug)]
pub struct StoreDb {
    conn: Connection,
    store_dir: StoreDir,
    path: PathBuf,
    read_only: bool,
    /// Set once the CA tables were seen (they are never dropped), to skip the `sqlite_master` lookups.
    ca_tables: Cell<bool>,
}

impl StoreDb {
    /// Open an existing database read-only (`SQLITE_OPEN_READ_ONLY`), as a binary cache does.
    ///
    /// Nix keeps the database in WAL mode, so this connection sees every transaction a running nix-daemon or
    /// `nix-store` commits, as of the start of each query. The file must exist and hold Nix's tables.
    pub fn open_read_only(
        db_path: impl AsRef<Path>,
        store_dir: StoreDir,
    ) -> Result<StoreDb, DbError> {
        let path = db_path.as_ref().to_path_buf();
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|source| DbError::Open {
            path: path.clone(),
            source,
        })?;
        let db = StoreDb {
            conn,
            store_dir,
            path,
            read_only: true,
            ca_tables: Cell::new(false),
        };
        db.configure_connection()?;
        match db.check_tables() {
            Ok(()) => Ok(db),
            Err(DbError::Open { path, source }) if needs_wal_index(&path, &source) => {
                Err(DbError::WalIndexUnavailable { path })
            }
            Err(e) => Err(e),
        }
    }

    /// Open the database read-write, as the daemon does, creating it with Nix's schema when the store is new.
    ///
    /// Like Nix, a store counts as new when `<db dir>/schema` is missing: the directory, the tables (with
    /// `if not exists`, so a database Nix made is left as it is) and the `schema` file are then created. A
    /// store of another schema version is refused rather than migrated. The connection uses Nix's settings:
    /// foreign keys on, WAL journal, `synchronous = normal`, WAL autocheckpoint every 40000 pages.
    pub fn open_read_write(
        db_path: impl AsRef<Path>,
        store_dir: StoreDir,
    ) -> Result<StoreDb, DbError> {
        let path = db_path.as_ref().to_path_buf();
        let db_dir = db_dir_of(&path);
        fs::create_dir_all(&db_dir).map_err(|source| DbError::Io {
            path: db_dir.clone(),
            source,
        })?;
        let schema_file = db_dir.join("schema");
        let schema = read_schema_file(&schema_file)?;
        if let Some(version) = schema.filter(|v| *v != NIX_SCHEMA_VERSION) {
            return Err(DbError::UnsupportedSchema {
                file: schema_file,
                found: version.to_string(),
                supported: NIX_SCHEMA_VERSION,
            });
        }

        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|source| DbError::Open {
            path: path.clone(),
            source,
        })?;
        let mut db = StoreDb {
            conn,
            store_dir,
            path,
            read_only: false,
            ca_tables: Cell::new(false),
        };
        db.configure_connection()?;
        let open_err = |source| DbError::Open {
            path: db.path.clone(),
            source,
        };
        db.conn
            .pragma_update(None, "foreign_keys", 1)
            .map_err(open_err)?;
        db.conn
            .pragma_update(None, "synchronous", "normal")
            .map_err(open_err)?;
        let mode: String = db
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            let _: String = db
                .conn
                .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
                .map_err(open_err)?;
        }
        db.conn
            .pragma_update(None, "wal_autocheckpoint", 40000)
            .map_err(open_err)?;

        if schema.is_none() {
            tracing::info!(db = %db.path.display(), "initialising a new Nix store database (schema {NIX_SCHEMA_VERSION})");
            let tx = db
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx("creating the schema")?;
            tx.execute_batch(STORE_SCHEMA).ctx("creating the schema")?;
            tx.commit().ctx("creating the schema")?;
            write_schema_file(&schema_file, NIX_SCHEMA_VERSION)?;
        }
        db.check_tables()?;
        Ok(db)
    }

    /// Opens a (deferred) read transaction: the snapshot is taken by the first query after it.
    pub(crate) fn begin_read(&self) -> Result<(), DbError> {
        self.conn
            .execute_batch("BEGIN")
            .ctx("beginning a read transaction")
    }

    /// Ends the transaction [`StoreDb::begin_read`] opened; a connection that cannot end it cleanly
    /// rolls it back.
    pub(crate) fn end_read(&self) {
        if self.conn.execute_batch("COMMIT").is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn configure_connection(&self) -> Result<(), DbError> {
        self.conn
            .busy_timeout(DEFAULT_BUSY_TIMEOUT)
            .map_err(|source| DbError::Open {
                path: self.path.clone(),
                source,
            })?;
        self.conn.set_prepared_statement_cache_capacity(32);
        // Read pages through a memory map instead of a read() per page-cache miss: path lookups hit random
        // pages of a database that is often far bigger than SQLite's default 2 MB page cache. The map is
        // address space, not memory; SQLite caps it at the file size.
        self.conn
            .pragma_update(None, "mmap_size", MMAP_SIZE)
            .map_err(|source| DbError::Open {
                path: self.path.clone(),
                source,
            })?;
        Ok(())
    }

    /// Refuse files that are not Nix databases with a clear error, instead of failing on the first query.
    fn check_tables(&self) -> Result<(), DbError> {
        // The first read of a file that is not SQLite fails here ("file is not a database").
        let open_err = |source| DbError::Open {
            path: self.path.clone(),
            source,
        };
        for table in ["ValidPaths", "Refs", "DerivationOutputs"] {
            if !self.has_table(table).map_err(open_err)? {
                return Err(DbError::NotNixDb {
                    path: self.path.clone(),
                    reason: format!("no {table} table"),
                });
            }
        }
        let mut stmt = self
            .conn
            .prepare("pragma table_info(ValidPaths)")
            .map_err(open_err)?;
        let columns: Vec<String> = stmt
            .query_map([], |r| r.get(1))
            .map_err(open_err)?
            .collect::<Result<_, _>>()
            .map_err(open_err)?;
        for column in [
            "id",
            "path",
            "hash",
            "registrationTime",
            "deriver",
            "narSize",
            "ultimate",
            "sigs",
            "ca",
        ] {
            if !columns.iter().any(|c| c == column) {
                return Err(DbError::NotNixDb {
                    path: self.path.clone(),
                    reason: format!(
                        "ValidPaths has no {column} column (not schema {NIX_SCHEMA_VERSION})"
                    ),
                });
            }
        }
        Ok(())
    }

    fn has_table(&self, name: &str) -> Result<bool, rusqlite::Error> {
        self.conn
            .prepare_cached(Q_HAS_TABLE)?
            .query_row([name], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
    }

    /// Whether `Realisations` and `RealisationsRefs` exist (Nix creates them only with ca-derivations on).
    fn has_ca_tables(&self) -> Result<bool, rusqlite::Error> {
        if !self.ca_tables.get() {
            let present = self.has_table("Realisations")? && self.has_table("RealisationsRefs")?;
            self.ca_tables.set(present);
        }
        Ok(self.ca_tables.get())
    }

    /// Change how long statements wait for another process's lock (default [`DEFAULT_BUSY_TIMEOUT`]).
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<(), DbError> {
        self.conn
            .busy_timeout(timeout)
            .ctx("setting the busy timeout")
    }

    /// The logical store directory paths in this database live in.
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.path
    }

    /// Whether this connection was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    // ------------------------------------------------------------------------------------------------------
    // Queries

    /// Everything Nix knows about a valid path, or `None` if it is not valid. One indexed query.
    pub fn query_path_info(&self, p: &StorePath) -> Result<Option<ValidPathInfo>, DbError> {
        let full = self.store_dir.display(p);
        self.path_info_query(Q_PATH_INFO, &full, |_| Ok(Some((full.clone(), p.clone()))))
    }

    /// Path info by the 32-character hash part alone (a narinfo request): one range query on the path index.
    /// `None` if no valid path has this hash.
    pub fn query_path_info_by_hash_part(
        &self,
        h: &StorePathHash,
    ) -> Result<Option<ValidPathInfo>, DbError> {
        let prefix = self.hash_prefix(h);
        self.path_info_query(Q_PATH_INFO_BY_PREFIX, &prefix, |found| {
            self.path_with_prefix(found, &prefix, h)
        })
    }

    /// Run one of the path info queries: the first row carries the `ValidPaths` columns (0..=7) and the first
    /// reference (8), further rows one reference each. `pick` decides from the path column (7) whether the
    /// row is the one asked for.
    fn path_info_query(
        &self,
        sql: &'static str,
        param: &str,
        pick: impl FnOnce(Option<String>) -> Result<Option<(String, StorePath)>, DbError>,
    ) -> Result<Option<ValidPathInfo>, DbError> {
        let context = "querying path info";
        let mut stmt = self.conn.prepare_cached(sql).ctx(context)?;
        let mut rows = stmt.query([param]).ctx(context)?;
        let Some(first) = rows.next().ctx(context)? else {
            return Ok(None);
        };
        let Some((full, path)) = pick(text_col(first, 7, "ValidPaths", "path", param)?)? else {
            return Ok(None);
        };
        let mut info = self.path_row(first, path, &full)?;
        let mut row = Some(first);
        while let Some(r) = row {
            if let Some(reference) = text_ref(r, 8, "Refs", "reference", &full)? {
                info.references
                    .push(self.parse_path("Refs", "reference", &full, reference)?);
            }
            row = rows.next().ctx(context)?;
        }
        info.references.sort();
        info.references.dedup();
        Ok(Some(info))
    }

    /// The valid store path with this hash part, if any (Nix's `queryPathFromHashPart`).
    pub fn query_path_from_hash_part(
        &self,
        h: &StorePathHash,
    ) -> Result<Option<StorePath>, DbError> {
        let prefix = self.hash_prefix(h);
        let mut stmt = self
            .conn
            .prepare_cached(Q_PATH_BY_PREFIX)
            .ctx("querying a path by hash part")?;
        let found = stmt
            .query_row([&prefix], |row| {
                Ok(text_col(row, 0, "ValidPaths", "path", &prefix))
            })
            .optional()
            .ctx("querying a path by hash part")?
            .transpose()?
            .flatten();
        Ok(self.path_with_prefix(found, &prefix, h)?.map(|(_, p)| p))
    }

    /// The first path at or after `prefix` in path order belongs to hash `h` only if it starts with `prefix`.
    fn path_with_prefix(
        &self,
        found: Option<String>,
        prefix: &str,
        h: &StorePathHash,
    ) -> Result<Option<(String, StorePath)>, DbError> {
        match found {
            Some(full) if full.starts_with(prefix) => {
                // The prefix pins the store directory and the hash part (no need to decode it again),
                // but a hand-edited row could still hold a malformed name.
                let name = StorePathName::new(&full[prefix.len()..])
                    .map_err(|e| corrupt("ValidPaths", "path", &full, &full, &e.to_string()))?;
                let p = StorePath::from_parts(*h, name);
                Ok(Some((full, p)))
            }
            _ => Ok(None),
        }
    }

    /// `<store dir>/<hash>-`: every path with this hash part starts with it and sorts right after it.
    fn hash_prefix(&self, h: &StorePathHash) -> String {
        let dir = self.store_dir.as_str();
        let mut prefix = String::with_capacity(dir.len() + 2 + StorePathHash::ENCODED_LEN);
        prefix.push_str(dir);
        prefix.push('/');
        prefix.push_str(&harmonia_utils_hash::nix_base32::encode(h.as_bytes()));
        prefix.push('-');
        prefix
    }

    /// Whether the path is registered as valid.
    pub fn is_valid_path(&self, p: &StorePath) -> Result<bool, DbError> {
        let full = self.store_dir.display(p);
        let mut stmt = self
            .conn
            .prepare_cached(Q_IS_VALID)
            .ctx("checking path validity")?;
        Ok(stmt
            .query_row([&full], |_| Ok(()))
            .optional()
            .ctx("checking path validity")?
            .is_some())
    }

    /// The subset of `paths` that is valid, in the given order, from one snapshot of the database.
    pub fn query_valid_paths(&self, paths: &[StorePath]) -> Result<Vec<StorePath>, DbError> {
        let context = "checking path validity";
        // One read transaction for the whole batch: one WAL read lock instead of one per path. It only reads,
        // so dropping it (rollback) is the same as committing. Inside a write transaction of this connection
        // (impossible through this API) it would fail rather than nest.
        let tx = self.conn.unchecked_transaction().ctx(context)?;
        let mut valid = Vec::new();
        for p in paths {
            if self.is_valid_path(p)? {
                valid.push(p.clone());
            }
        }
        tx.finish().ctx(context)?;
        Ok(valid)
    }

    /// The references of a path, sorted; empty if the path is not valid.
    pub fn query_references(&self, p: &StorePath) -> Result<Vec<StorePath>, DbError> {
        self.query_paths(
            Q_REFERENCES,
            "Refs",
            &self.store_dir.display(p),
            "querying references",
        )
    }

    /// The valid paths referring to `p`, sorted (Nix's `queryReferrers`); empty if there are none.
    pub fn query_referrers(&self, p: &StorePath) -> Result<Vec<StorePath>, DbError> {
        self.query_paths(
            Q_REFERRERS,
            "Refs",
            &self.store_dir.display(p),
            "querying referrers",
        )
    }

    /// The valid derivations that have `p` as an output (from `DerivationOutputs`), sorted.
    pub fn query_valid_derivers(&self, p: &StorePath) -> Result<Vec<StorePath>, DbError> {
        self.query_paths(
            Q_VALID_DERIVERS,
            "DerivationOutputs",
            &self.store_dir.display(p),
            "querying derivers",
        )
    }

    /// The outputs of a valid derivation recorded in `DerivationOutputs` as `(name, path)`, sorted by name;
    /// empty if the derivation is not valid. Floating content-addressed outputs appear only as realisations.
    pub fn query_derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<Vec<(String, StorePath)>, DbError> {
        let context = "querying derivation outputs";
        let full = self.store_dir.display(drv);
        let mut stmt = self.conn.prepare_cached(Q_DRV_OUTPUTS).ctx(context)?;
        let mut rows = stmt.query([&full]).ctx(context)?;
        let mut outputs = Vec::new();
        while let Some(row) = rows.next().ctx(context)? {
            let name = required_text(row, 0, "DerivationOutputs", "id", &full)?;
            let out = required_text(row, 1, "DerivationOutputs", "path", &full)?;
            outputs.push((
                name,
                self.parse_path("DerivationOutputs", "path", &full, &out)?,
            ));
        }
        outputs.sort();
        Ok(outputs)
    }

    /// Every valid path, sorted.
    pub fn query_all_valid_paths(&self) -> Result<Vec<StorePath>, DbError> {
        let context = "querying all valid paths";
        let mut stmt = self.conn.prepare_cached(Q_ALL_PATHS).ctx(context)?;
        let mut rows = stmt.query([]).ctx(context)?;
        let mut paths = Vec::new();
        while let Some(row) = rows.next().ctx(context)? {
            let full = required_text(row, 0, "ValidPaths", "path", "(all paths)")?;
            paths.push(self.parse_path("ValidPaths", "path", &full, &full)?);
        }
        paths.sort();
        Ok(paths)
    }

    /// The realisation of a derivation output, by its id `sha256:<hash>!<output>`.
    ///
    /// `None` when it is not registered, or when the database has no `Realisations` table (Nix creates it only
    /// with the ca-derivations feature on). A malformed id is an [`DbError::InvalidDrvOutput`].
    pub fn query_realisation(&self, drv_output_id: &str) -> Result<Option<Realisation>, DbError> {
        let id = DrvOutput::from_str(drv_output_id)?;
        self.query_realisation_by_id(&id)
    }

    /// [`StoreDb::query_realisation`] for an already parsed id.
    pub fn query_realisation_by_id(&self, id: &DrvOutput) -> Result<Option<Realisation>, DbError> {
        let context = "querying a realisation";
        if !self.has_ca_tables().ctx(context)? {
            return Ok(None);
        }
        let Some((row_id, out_path, signatures)) = self.realisation_core(id)? else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(Q_REALISATION_REFS).ctx(context)?;
        let mut rows = stmt.query([row_id]).ctx(context)?;
        let mut dependent_realisations = BTreeMap::new();
        let row_name = id.to_string();
        while let Some(row) = rows.next().ctx(context)? {
            let hash = required_text(row, 0, "Realisations", "drvPath", &row_name)?;
            let output = required_text(row, 1, "Realisations", "outputName", &row_name)?;
            let path = required_text(row, 2, "ValidPaths", "path", &row_name)?;
            let dep_id = DrvOutput::from_str(&format!("{hash}!{output}")).map_err(|e| {
                corrupt("Realisations", "drvPath", &row_name, &hash, &e.to_string())
            })?;
            dependent_realisations.insert(
                dep_id,
                self.parse_path("ValidPaths", "path", &row_name, &path)?,
            );
        }
        Ok(Some(Realisation {
            id: id.clone(),
            out_path,
            signatures,
            dependent_realisations,
        }))
    }

    fn realisation_core(
        &self,
        id: &DrvOutput,
    ) -> Result<Option<(i64, StorePath, Vec<String>)>, DbError> {
        realisation_core(&self.conn, &self.store_dir, id)
    }

    /// Run a query yielding one column of full store paths, bound to one parameter; sorted, deduplicated.
    fn query_paths(
        &self,
        sql: &'static str,
        table: &'static str,
        param: &str,
        context: &'static str,
    ) -> Result<Vec<StorePath>, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).ctx(context)?;
        let mut rows = stmt.query([param]).ctx(context)?;
        let mut paths = Vec::new();
        while let Some(row) = rows.next().ctx(context)? {
            let full = required_text(row, 0, table, "path", param)?;
            paths.push(self.parse_path(table, "path", param, &full)?);
        }
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// Decode the `ValidPaths` columns 0..=6 of [`Q_PATH_INFO`] (references come later).
    fn path_row(
        &self,
        row: &Row<'_>,
        path: StorePath,
        full: &str,
    ) -> Result<ValidPathInfo, DbError> {
        const T: &str = "ValidPaths";
        let hash = text_ref(row, 0, T, "hash", full)?
            .ok_or_else(|| corrupt(T, "hash", full, "NULL", "missing"))?;
        let nar_hash = Hash::parse(hash)
            .map_err(|e| e.to_string())
            .and_then(|h| NarHash::try_from(h).map_err(|e| e.to_string()))
            .map_err(|reason| corrupt(T, "hash", full, hash, &reason))?;
        let registration_time = int_col(row, 1, T, "registrationTime", full)?.unwrap_or(0);
        let deriver = match text_ref(row, 2, T, "deriver", full)? {
            // Nix writes NULL for "no deriver"; very old databases may hold an empty string.
            Some(d) if !d.is_empty() => Some(self.parse_path(T, "deriver", full, d)?),
            _ => None,
        };
        let nar_size = match int_col(row, 3, T, "narSize", full)? {
            None => 0,
            Some(n) => u64::try_from(n)
                .map_err(|_| corrupt(T, "narSize", full, &n.to_string(), "negative"))?,
        };
        let ultimate = int_col(row, 4, T, "ultimate", full)? == Some(1);
        let signatures = split_sigs(text_ref(row, 5, T, "sigs", full)?);
        let ca = text_ref(row, 6, T, "ca", full)?
            .filter(|ca| !ca.is_empty())
            .map(str::to_owned);
        Ok(ValidPathInfo {
            path,
            nar_hash,
            nar_size,
            registration_time,
            deriver,
            ultimate,
            signatures,
            ca,
            references: Vec::new(),
        })
    }

    fn parse_path(
        &self,
        table: &'static str,
        column: &'static str,
        row: &str,
        value: &str,
    ) -> Result<StorePath, DbError> {
        parse_path(&self.store_dir, table, column, row, value)
    }

    // ------------------------------------------------------------------------------------------------------
    // Writes

    fn check_writable(&self) -> Result<(), DbError> {
        if self.read_only {
            Err(DbError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Register paths as valid with their references, signatures and content addresses, in one transaction,
    /// the way Nix's `registerValidPaths` does.
    ///
    /// New paths are inserted, already valid ones updated in place (nar hash and size, ultimate, signatures,
    /// CA; like Nix, the deriver and registration time of an existing row are kept). References may point at
    /// the path itself, at other paths of the batch, or at already valid paths; anything else, or a reference
    /// cycle within the batch, rolls the whole transaction back. A `registration_time` of 0 means now.
    ///
    /// Nix also fills `DerivationOutputs` when a `.drv` becomes valid, by reading it; this does not read files,
    /// so pass those rows (see [`crate::parse_derivation_outputs`]) to
    /// [`StoreDb::register_valid_paths_and_outputs`].
    pub fn register_valid_paths(&mut self, infos: &[ValidPathInfo]) -> Result<(), DbError> {
        self.register_valid_paths_and_outputs(infos, &[])
    }

    /// [`StoreDb::register_valid_paths`] plus `DerivationOutputs` rows `(drv, output name, output path)` in the
    /// same transaction; each `drv` must be valid or in `infos`.
    pub fn register_valid_paths_and_outputs(
        &mut self,
        infos: &[ValidPathInfo],
        derivation_outputs: &[(StorePath, String, StorePath)],
    ) -> Result<(), DbError> {
        self.check_writable()?;
        let cas = infos
            .iter()
            .map(|info| self.check_info(info))
            .collect::<Result<Vec<_>, _>>()?;
        for (drv, name, _) in derivation_outputs {
            check_output_name(name).map_err(|reason| DbError::InvalidInput {
                path: self.store_dir.display(drv),
                field: "derivation output name",
                reason,
            })?;
        }
        check_no_cycle(&self.store_dir, infos)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);

        let context = "registering valid paths";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(context)?;
        {
            let mut ids: HashMap<&StorePath, i64> = HashMap::new();
            let mut id_stmt = tx.prepare_cached(Q_IS_VALID).ctx(context)?;
            let mut insert = tx.prepare_cached(S_INSERT_PATH).ctx(context)?;
            let mut update = tx.prepare_cached(S_UPDATE_PATH).ctx(context)?;
            for (info, ca) in infos.iter().zip(&cas) {
                let full = self.store_dir.display(&info.path);
                let nar_hash = info.nar_hash.to_typed_base16();
                // Nix writes NULL rather than 0 / false / "" for these.
                let nar_size = (info.nar_size != 0).then_some(info.nar_size as i64);
                let ultimate = info.ultimate.then_some(1i64);
                let sigs = join_sigs(&info.signatures);
                let ca = ca.as_deref();
                let existing: Option<i64> = id_stmt
                    .query_row([&full], |r| r.get(0))
                    .optional()
                    .ctx(context)?;
                let id = match existing {
                    Some(id) => {
                        update
                            .execute(params![nar_size, nar_hash, ultimate, sigs, ca, full])
                            .ctx(context)?;
                        id
                    }
                    None => {
                        let time = if info.registration_time == 0 {
                            now
                        } else {
                            info.registration_time
                        };
                        let deriver = info.deriver.as_ref().map(|d| self.store_dir.display(d));
                        insert
                            .execute(params![
                                full, nar_hash, time, deriver, nar_size, ultimate, sigs, ca
                            ])
                            .ctx(context)?;
                        tx.last_insert_rowid()
                    }
                };
                ids.insert(&info.path, id);
            }

            let mut add_ref = tx.prepare_cached(S_ADD_REFERENCE).ctx(context)?;
            for info in infos {
                let referrer = ids[&info.path];
                for r in &info.references {
                    let reference = match ids.get(r) {
                        Some(id) => *id,
                        None => id_stmt
                            .query_row([self.store_dir.display(r)], |row| row.get(0))
                            .optional()
                            .ctx(context)?
                            .ok_or_else(|| DbError::ReferenceNotValid {
                                path: self.store_dir.display(&info.path),
                                reference: self.store_dir.display(r),
                            })?,
                    };
                    add_ref.execute([referrer, reference]).ctx(context)?;
                }
            }

            let mut add_output = tx.prepare_cached(S_ADD_DRV_OUTPUT).ctx(context)?;
            for (drv, name, out) in derivation_outputs {
                let drv_id = match ids.get(drv) {
                    Some(id) => *id,
                    None => id_stmt
                        .query_row([self.store_dir.display(drv)], |row| row.get(0))
                        .optional()
                        .ctx(context)?
                        .ok_or_else(|| DbError::InvalidPath(self.store_dir.display(drv)))?,
                };
                add_output
                    .execute(params![drv_id, name, self.store_dir.display(out)])
                    .ctx(context)?;
            }
        }
        tx.commit().ctx(context)?;
        tracing::debug!(
            paths = infos.len(),
            outputs = derivation_outputs.len(),
            "registered valid paths"
        );
        Ok(())
    }

    /// Record outputs `(name, path)` of a valid derivation in `DerivationOutputs` (one transaction).
    pub fn register_derivation_outputs(
        &mut self,
        drv: &StorePath,
        outputs: &[(String, StorePath)],
    ) -> Result<(), DbError> {
        let rows: Vec<_> = outputs
            .iter()
            .map(|(name, out)| (drv.clone(), name.clone(), out.clone()))
            .collect();
        self.register_valid_paths_and_outputs(&[], &rows)
    }

    /// Validate what Nix would refuse or could not read back.
    /// Returns the content address in Nix's canonical rendering (what Nix stores after parsing it).
    fn check_info(&self, info: &ValidPathInfo) -> Result<Option<String>, DbError> {
        let path = || self.store_dir.display(&info.path);
        if i64::try_from(info.nar_size).is_err() {
            return Err(DbError::InvalidInput {
                path: path(),
                field: "narSize",
                reason: "does not fit SQLite's i64".into(),
            });
        }
        for sig in &info.signatures {
            check_sig(sig).map_err(|reason| DbError::InvalidInput {
                path: path(),
                field: "signature",
                reason,
            })?;
        }
        if let Some(ca) = &info.ca {
            let parsed = ContentAddress::from_str(ca).map_err(|e| DbError::InvalidInput {
                path: path(),
                field: "ca",
                reason: e.to_string(),
            })?;
            let expected = self
                .ca_path(&parsed, info)
                .map_err(|reason| DbError::InvalidInput {
                    path: path(),
                    field: "ca",
                    reason,
                })?;
            if expected != info.path {
                return Err(DbError::CaMismatch {
                    path: path(),
                    ca: ca.clone(),
                    expected: self.store_dir.display(&expected),
                });
            }
            return Ok(Some(parsed.to_string()));
        }
        Ok(None)
    }

    /// The store path a content address gives for this name and these references (Nix's
    /// `ValidPathInfo::isContentAddressed`).
    fn ca_path(&self, ca: &ContentAddress, info: &ValidPathInfo) -> Result<StorePath, String> {
        let self_ref = info.references.contains(&info.path);
        let others: Vec<StorePath> = info
            .references
            .iter()
            .filter(|r| **r != info.path)
            .cloned()
            .collect();
        let name = info.path.name().to_string();
        match ca {
            ContentAddress::Text(hash) => {
                if self_ref {
                    return Err("a text path cannot refer to itself".into());
                }
                self.store_dir
                    .make_text_path(hash, &others, &name)
                    .map_err(|e| e.to_string())
            }
            ContentAddress::Flat(_) | ContentAddress::Recursive(_) => self
                .store_dir
                .make_fixed_output_path(ca, &others, self_ref, &name)
                .map_err(|e| e.to_string()),
        }
    }

    /// Remove paths from the database in one transaction (Nix's `invalidatePathChecked`, as the garbage
    /// collector does before deleting files). A path still referenced by a valid path outside the batch is
    /// refused with [`DbError::PathInUse`]; within the batch, referrers go first. Their `Refs`,
    /// `DerivationOutputs` and realisations go with them (the schema's cascades). Paths that are not valid are
    /// ignored. Deleting the files is the caller's business.
    pub fn invalidate_paths(&mut self, paths: &[StorePath]) -> Result<(), DbError> {
        self.check_writable()?;
        let context = "invalidating paths";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(context)?;
        {
            let batch: std::collections::HashSet<&StorePath> = paths.iter().collect();
            // Referrers of each path, excluding itself.
            let mut referrers: HashMap<&StorePath, Vec<StorePath>> = HashMap::new();
            let mut stmt = tx.prepare_cached(Q_REFERRERS).ctx(context)?;
            for p in &batch {
                let full = self.store_dir.display(p);
                let mut rows = stmt.query([&full]).ctx(context)?;
                let mut list = Vec::new();
                while let Some(row) = rows.next().ctx(context)? {
                    let r = parse_path(
                        &self.store_dir,
                        "Refs",
                        "path",
                        &full,
                        &required_text(row, 0, "Refs", "path", &full)?,
                    )?;
                    if r != **p {
                        if !batch.contains(&r) {
                            return Err(DbError::PathInUse {
                                path: full,
                                referrer: self.store_dir.display(&r),
                            });
                        }
                        list.push(r);
                    }
                }
                referrers.insert(p, list);
            }
            // Delete a path once none of its referrers in the batch is left; a cycle cannot occur among
            // valid paths, but guard against looping forever on a corrupt database anyway.
            let mut delete = tx.prepare_cached(S_INVALIDATE_PATH).ctx(context)?;
            let mut left: Vec<&StorePath> = batch.iter().copied().collect();
            left.sort();
            let mut remaining = batch.clone();
            while !left.is_empty() {
                let (ready, blocked): (Vec<&StorePath>, Vec<&StorePath>) = left
                    .iter()
                    .partition(|p| referrers[*p].iter().all(|r| !remaining.contains(r)));
                if ready.is_empty() {
                    return Err(DbError::ReferenceCycle(self.store_dir.display(blocked[0])));
                }
                for p in ready {
                    delete.execute([self.store_dir.display(p)]).ctx(context)?;
                    remaining.remove(p);
                }
                left = blocked;
            }
        }
        tx.commit().ctx(context)
    }

    /// Add signatures to a valid path, keeping the ones it has (Nix's `addSignatures`).
    pub fn add_signatures(&mut self, p: &StorePath, sigs: &[String]) -> Result<(), DbError> {
        self.check_writable()?;
        let full = self.store_dir.display(p);
        for sig in sigs {
            check_sig(sig).map_err(|reason| DbError::InvalidInput {
                path: full.clone(),
                field: "signature",
                reason,
            })?;
        }
        let context = "adding signatures";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(context)?;
        {
            let current = tx
                .prepare_cached(Q_SIGS)
                .ctx(context)?
                .query_row([&full], |row| {
                    Ok(text_col(row, 0, "ValidPaths", "sigs", &full))
                })
                .optional()
                .ctx(context)?
                .ok_or_else(|| DbError::InvalidPath(full.clone()))??;
            let mut all = split_sigs(current.as_deref());
            all.extend(sigs.iter().cloned());
            tx.prepare_cached(S_UPDATE_SIGS)
                .ctx(context)?
                .execute(params![join_sigs(&all), full])
                .ctx(context)?;
        }
        tx.commit().ctx(context)
    }

    /// Create the `Realisations` tables if the database lacks them (what Nix does when ca-derivations is
    /// enabled), and write `ca-schema` if missing. Refuses a CA schema older than version 2.
    pub fn ensure_ca_schema(&mut self) -> Result<(), DbError> {
        let context = "checking the CA schema";
        let present = self.has_ca_tables().ctx(context)?;
        if self.read_only {
            return if present {
                Ok(())
            } else {
                Err(DbError::NoRealisations)
            };
        }
        let file = db_dir_of(&self.path).join("ca-schema");
        let version = read_schema_file(&file)?;
        if let Some(v) = version.filter(|v| *v < MIN_CA_SCHEMA_VERSION) {
            return Err(DbError::UnsupportedSchema {
                file,
                found: v.to_string(),
                supported: NIX_CA_SCHEMA_VERSION,
            });
        }
        if !present {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx(context)?;
            tx.execute_batch(CA_SCHEMA).ctx(context)?;
            tx.commit().ctx(context)?;
        }
        if version.is_none() {
            write_schema_file(&file, NIX_CA_SCHEMA_VERSION)?;
        }
        Ok(())
    }

    /// Register a realisation (Nix's `registerDrvOutput`): a new one is inserted; registering the same output
    /// path again merges the signatures; a different output path for the same id is a conflict. Every
    /// dependent realisation must already be registered with the same output path. Creates the CA tables if
    /// needed.
    pub fn register_realisation(&mut self, r: &Realisation) -> Result<(), DbError> {
        self.check_writable()?;
        let id = r.id.to_string();
        for sig in &r.signatures {
            check_sig(sig).map_err(|reason| DbError::InvalidInput {
                path: id.clone(),
                field: "signature",
                reason,
            })?;
        }
        self.ensure_ca_schema()?;
        let context = "registering a realisation";
        let out_full = self.store_dir.display(&r.out_path);
        // Check everything we need with plain reads first, then write in one immediate transaction.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(context)?;
        let row_id = match realisation_core(&tx, &self.store_dir, &r.id)? {
            Some((row_id, existing, sigs)) => {
                if existing != r.out_path {
                    return Err(DbError::RealisationConflict {
                        id,
                        existing: self.store_dir.display(&existing),
                        new: out_full,
                    });
                }
                let mut all = sigs;
                all.extend(r.signatures.iter().cloned());
                tx.prepare_cached(S_UPDATE_REALISATION)
                    .ctx(context)?
                    .execute(params![
                        join_sigs(&all).unwrap_or_default(),
                        r.id.db_hash(),
                        r.id.output_name()
                    ])
                    .ctx(context)?;
                row_id
            }
            None => {
                let out_id: i64 = tx
                    .prepare_cached(Q_IS_VALID)
                    .ctx(context)?
                    .query_row([&out_full], |row| row.get(0))
                    .optional()
                    .ctx(context)?
                    .ok_or_else(|| DbError::InvalidPath(out_full.clone()))?;
                // Unlike ValidPaths.sigs, Nix writes "" (never NULL) here and asserts non-NULL on reading.
                let sigs = join_sigs(&r.signatures).unwrap_or_default();
                tx.prepare_cached(S_INSERT_REALISATION)
                    .ctx(context)?
                    .execute(params![r.id.db_hash(), r.id.output_name(), out_id, sigs])
                    .ctx(context)?;
                tx.last_insert_rowid()
            }
        };
        for (dep, dep_path) in &r.dependent_realisations {
            let dep_row = match realisation_core(&tx, &self.store_dir, dep)? {
                Some((dep_row, path, _)) if path == *dep_path => dep_row,
                _ => {
                    return Err(DbError::RealisationDependency {
                        id,
                        dependency: dep.to_string(),
                    });
                }
            };
            tx.prepare_cached(S_ADD_REALISATION_REF)
                .ctx(context)?
                .execute([row_id, dep_row])
                .ctx(context)?;
        }
        tx.commit().ctx(context)
    }
}

/// `(Realisations.id, output path, signatures)` of a registered realisation.
fn realisation_core(
    conn: &Connection,
    store_dir: &StoreDir,
    id: &DrvOutput,
) -> Result<Option<(i64, StorePath, Vec<String>)>, DbError> {
    let context = "querying a realisation";
    let row_name = id.to_string();
    let mut stmt = conn.prepare_cached(Q_REALISATION).ctx(context)?;
    let row = stmt
        .query_row(params![id.db_hash(), id.output_name()], |row| {
            Ok((|| {
                let row_id = int_col(row, 0, "Realisations", "id", &row_name)?
                    .ok_or_else(|| corrupt("Realisations", "id", &row_name, "NULL", "missing"))?;
                let path = required_text(row, 1, "ValidPaths", "path", &row_name)?;
                let sigs = text_col(row, 2, "Realisations", "signatures", &row_name)?;
                let out_path = parse_path(store_dir, "ValidPaths", "path", &row_name, &path)?;
                Ok((row_id, out_path, split_sigs(sigs.as_deref())))
            })())
        })
        .optional()
        .ctx(context)?;
    row.transpose()
}

fn parse_path(
    store_dir: &StoreDir,
    table: &'static str,
    column: &'static str,
    row: &str,
    value: &str,
) -> Result<StorePath, DbError> {
    store_dir
        .parse_path(value)
        .map_err(|e| corrupt(table, column, row, value, &e.to_string()))
}

/// A [`DbError::CorruptRow`], with the value cut to a readable length.
fn corrupt(
    table: &'static str,
    column: &'static str,
    row: &str,
    value: &str,
    reason: &str,
) -> DbError {
    let cut = |s: &str| -> String {
        if s.chars().count() > 300 {
            s.chars().take(300).chain("…".chars()).collect()
        } else {
            s.to_owned()
        }
    };
    DbError::CorruptRow {
        table,
        column,
        row: cut(row),
        value: cut(value),
        reason: reason.to_owned(),
    }
}

/// A nullable text column; any other storage class (integer, blob, invalid UTF-8) is corruption.
fn text_col(
    row: &Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
    name: &str,
) -> Result<Option<String>, DbError> {
    Ok(text_ref(row, idx, table, column, name)?.map(str::to_owned))
}

/// [`text_col`] borrowed from the row, for values that are parsed rather than kept.
fn text_ref<'r>(
    row: &'r Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
    name: &str,
) -> Result<Option<&'r str>, DbError> {
    match row.get_ref(idx) {
        Ok(ValueRef::Null) => Ok(None),
        Ok(ValueRef::Text(bytes)) => match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(corrupt(
                table,
                column,
                name,
                &String::from_utf8_lossy(bytes),
                "not UTF-8",
            )),
        },
        Ok(other) => Err(corrupt(
            table,
            column,
            name,
            &format!("{other:?}"),
            "expected text",
        )),
        Err(source) => Err(DbError::Sqlite {
            context: "reading a column",
            source,
        }),
    }
}

/// A text column that must not be NULL.
fn required_text(
    row: &Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
    name: &str,
) -> Result<String, DbError> {
    text_col(row, idx, table, column, name)?
        .ok_or_else(|| corrupt(table, column, name, "NULL", "missing"))
}

/// A nullable integer column.
fn int_col(
    row: &Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
    name: &str,
) -> Result<Option<i64>, DbError> {
    match row.get_ref(idx) {
        Ok(ValueRef::Null) => Ok(None),
        Ok(ValueRef::Integer(i)) => Ok(Some(i)),
        Ok(other) => Err(corrupt(
            table,
            column,
            name,
            &format!("{other:?}"),
            "expected an integer",
        )),
        Err(source) => Err(DbError::Sqlite {
            context: "reading a column",
            source,
        }),
    }
}

/// Nix keeps signatures as a set: split on spaces, drop empties, sort, deduplicate.
fn split_sigs(s: Option<&str>) -> Vec<String> {
    let set: BTreeSet<&str> = s
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    set.into_iter().map(str::to_owned).collect()
}

/// The `sigs` column: the sorted set joined by spaces, NULL when empty (as Nix writes it).
fn join_sigs(sigs: &[String]) -> Option<String> {
    let set: BTreeSet<&str> = sigs.iter().map(String::as_str).collect();
    if set.is_empty() {
        None
    } else {
        Some(set.into_iter().collect::<Vec<_>>().join(" "))
    }
}

/// A signature must survive the space-separated column: non-empty, no whitespace or control characters.
fn check_sig(sig: &str) -> Result<(), String> {
    if sig.is_empty() {
        return Err("empty signature".into());
    }
    if let Some(c) = sig.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("signature contains {c:?}"));
    }
    if !sig.contains(':') {
        return Err("signature is not of the form name:base64".into());
    }
    Ok(())
}

/// Refuse reference cycles among the paths of one batch (self-references are fine), as Nix's topological
/// sort does. Iterative depth-first search, so a long chain cannot overflow the stack.
fn check_no_cycle(store_dir: &StoreDir, infos: &[ValidPathInfo]) -> Result<(), DbError> {
    let index: HashMap<&StorePath, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, info)| (&info.path, i))
        .collect();
    let edges: Vec<Vec<usize>> = infos
        .iter()
        .map(|info| {
            info.references
                .iter()
                .filter(|r| **r != info.path)
                .filter_map(|r| index.get(r).copied())
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; infos.len()];
    for start in 0..infos.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        state[start] = 1;
        while let Some((node, next)) = stack.last_mut() {
            if let Some(&child) = edges[*node].get(*next) {
                *next += 1;
                match state[child] {
                    0 => {
                        state[child] = 1;
                        stack.push((child, 0));
                    }
                    1 => {
                        return Err(DbError::ReferenceCycle(
                            store_dir.display(&infos[child].path),
                        ));
                    }
                    _ => {}
                }
            } else {
                state[*node] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

/// Whether a read-only open failed because SQLite could not create the `-shm` WAL index (SQLite reports
/// "attempt to write a readonly database" or "unable to open database file" on the first read).
fn needs_wal_index(path: &Path, source: &rusqlite::Error) -> bool {
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    matches!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    ) && !Path::new(&shm).exists()
}

/// The directory holding `db.sqlite` and the `schema` files.
fn db_dir_of(db_path: &Path) -> PathBuf {
    match db_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The version in a Nix schema file (`schema`, `ca-schema`); `None` if the file does not exist.
fn read_schema_file(file: &Path) -> Result<Option<u32>, DbError> {
    match fs::read(file) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            match text.trim().parse::<u32>() {
                // Nix treats 0 like a missing file.
                Ok(0) => Ok(None),
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(DbError::UnsupportedSchema {
                    file: file.to_path_buf(),
                    found: text.chars().take(40).collect(),
                    supported: NIX_SCHEMA_VERSION,
                }),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DbError::Io {
            path: file.to_path_buf(),
            source,
        }),
    }
}

/// Write a schema file atomically (temporary file in the same directory, then rename).
fn write_schema_file(file: &Path, version: u32) -> Result<(), DbError> {
    let io = |source| DbError::Io {
        path: file.to_path_buf(),
        source,
    };
    let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(version.to_string().as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, file).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use harmonia_utils_hash::NarHash;

    fn sp(base: &str) -> StorePath {
        StorePath::from_base_name(base).expect("store path")
    }

    fn info(path: &str, refs: &[&str]) -> ValidPathInfo {
        ValidPathInfo {
            path: sp(path),
            nar_hash: NarHash::digest_of(b""),
            nar_size: 0,
            registration_time: 0,
            deriver: None,
            ultimate: false,
            signatures: vec![],
            ca: None,
            references: refs.iter().map(|r| sp(r)).collect(),
        }
    }

    const A: &str = "00000000000000000000000000000000-a";
    const B: &str = "11111111111111111111111111111111-b";
    const C: &str = "22222222222222222222222222222222-c";

    #[test]
    fn signatures_are_a_sorted_set_and_null_when_empty() {
        assert_eq!(split_sigs(None), Vec::<String>::new());
        assert_eq!(split_sigs(Some("")), Vec::<String>::new());
        assert_eq!(
            split_sigs(Some("b:2  a:1 b:2 ")),
            vec!["a:1".to_string(), "b:2".to_string()]
        );
        assert_eq!(join_sigs(&[]), None);
        assert_eq!(
            join_sigs(&["b:2".into(), "a:1".into(), "b:2".into()]).as_deref(),
            Some("a:1 b:2")
        );
        assert!(check_sig("cache.nixos.org-1:abc=").is_ok());
        for bad in ["", "no-colon", "a: b", "a:b\n", "a:\u{7f}"] {
            assert!(check_sig(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cycles_within_a_batch_are_found_and_self_references_allowed() {
        let dir = StoreDir::default();
        assert!(check_no_cycle(&dir, &[info(A, &[A, B]), info(B, &[C]), info(C, &[])]).is_ok());
        // References to paths outside the batch do not count.
        assert!(check_no_cycle(&dir, &[info(A, &[C]), info(B, &[C])]).is_ok());
        assert!(matches!(
            check_no_cycle(&dir, &[info(A, &[B]), info(B, &[C]), info(C, &[A])]),
            Err(DbError::ReferenceCycle(_))
        ));
        assert!(matches!(
            check_no_cycle(&dir, &[info(A, &[B]), info(B, &[A, B])]),
            Err(DbError::ReferenceCycle(_))
        ));
        // A long chain does not overflow the stack.
        let names: Vec<String> = (0..100_000u32)
            .map(|i| {
                let mut bytes = [0u8; 20];
                bytes[..4].copy_from_slice(&i.to_be_bytes());
                format!("{}-p", StorePathHash::from_bytes(bytes))
            })
            .collect();
        let chain: Vec<ValidPathInfo> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                info(
                    n,
                    &names
                        .get(i + 1)
                        .map(|r| vec![r.as_str()])
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert!(check_no_cycle(&dir, &chain).is_ok());
    }

    #[test]
    fn schema_files_are_read_like_nix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("schema");
        assert_eq!(read_schema_file(&file).unwrap(), None);
        write_schema_file(&file, 10).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "10");
        assert_eq!(read_schema_file(&file).unwrap(), Some(10));
        std::fs::write(&file, "10\n").unwrap();
        assert_eq!(read_schema_file(&file).unwrap(), Some(10));
        std::fs::write(&file, "0").unwrap();
        assert_eq!(read_schema_file(&file).unwrap(), None);
        std::fs::write(&file, "ten").unwrap();
        assert!(matches!(
            read_schema_file(&file),
            Err(DbError::UnsupportedSchema { .. })
        ));
        assert_eq!(db_dir_of(Path::new("db.sqlite")), PathBuf::from("."));
    }

    #[test]
    fn connections_can_move_between_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<StoreDb>();
        send_sync::<crate::StoreDbPool>();
        send_sync::<DbError>();
    }
}
