//! Adding paths: restore into a temporary directory inside the store while hashing, check against the claim,
//! rename into place under the path's lock, register in one transaction. On any failure (or cancellation) the
//! temporary directory goes away and no row is written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use harmonia_store_db::ValidPathInfo;
use harmonia_store_path::{ContentAddress, StorePath};
use harmonia_utils_hash::{Algorithm, Hash, Hasher, NarHash};
use harmonia_utils_signature::Signature;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::locks::{BatchLockFile, LockFile, PathLock};
use super::{LocalStore, StoreError, fsutil, restore};

/// Largest `.drv` file read to find the outputs to register with it.
const MAX_DRV_SIZE: u64 = 64 << 20;

/// Options of an add, as the client sends them.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddOptions {
    /// Replace the path even if it is already valid.
    pub repair: bool,
    /// Require a trusted signature or a content address (forced on for untrusted users).
    pub check_sigs: bool,
}

/// How a content-addressed path's hash is computed (Nix's `ContentAddressMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaMethod {
    /// `text:` — a single file hashed flat with sha256, references allowed.
    Text,
    /// `fixed:` — a single file hashed flat.
    Flat,
    /// `fixed:r:` — the NAR serialisation is hashed.
    Recursive,
}

/// How the bytes of a content-addressed add arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSource {
    /// A NAR (always for `Recursive`; for `Flat` in the pre-1.25 protocol, a NAR of one regular file).
    Nar,
    /// The plain contents of the single file (`Flat` and `Text` from protocol 1.25 on).
    Contents,
}

/// A temporary name inside the real store dir (same filesystem, so the final rename is atomic) that the
/// restored tree is written at. Removed when the add fails, and by `Drop` if the add is cancelled.
struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    fn new(real_dir: &Path) -> TempPath {
        TempPath {
            path: Some(fsutil::temp_path(real_dir)),
        }
    }

    fn out(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("/nonexistent"))
    }

    /// The tree was renamed into the store: nothing left to clean up.
    fn consumed(&mut self) {
        self.path = None;
    }

    /// Removes the tree now, on this thread.
    fn remove_now(mut self) {
        if let Some(p) = self.path.take()
            && let Err(e) = fsutil::remove_tree(&p)
        {
            tracing::warn!("cannot remove a temporary path in the store: {e}");
        }
    }

    async fn remove(mut self) {
        if let Some(p) = self.path.take() {
            let r = tokio::task::spawn_blocking(move || fsutil::remove_tree(&p)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!("cannot remove a temporary path in the store: {e}");
            }
        }
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // Only reached when the add was cancelled mid-way (client gone, shutdown); start-up cleanup is the
            // backstop if even this does not run.
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || fsutil::remove_tree(&p));
                }
                Err(_) => {
                    let _ = fsutil::remove_tree(&p);
                }
            }
        }
    }
}

/// Passes bytes through while hashing them (NAR sha256 and optionally a second algorithm) and refusing to read
/// past a size limit.
struct Tee<R> {
    inner: R,
    nar: Hasher,
    extra: Option<Hasher>,
    limit: Option<u64>,
}

impl<R> Tee<R> {
    fn new(inner: R, extra: Option<Algorithm>, limit: Option<u64>) -> Self {
        Tee {
            inner,
            nar: Hasher::new(Algorithm::Sha256),
            extra: extra.map(Hasher::new),
            limit,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tee<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let total = this.nar.bytes_hashed() + new.len() as u64;
                if this.limit.is_some_and(|l| total > l) {
                    // An error must come with nothing read.
                    buf.set_filled(before);
                    return Poll::Ready(Err(std::io::Error::other(
                        "the NAR is larger than the size the client claimed",
                    )));
                }
                this.nar.update(new);
                if let Some(h) = &mut this.extra {
                    h.update(new);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Computes the store path a content address gives, or `None` when it cannot (self-references in a
/// content-addressed path need hash rewriting, which we do not do).
fn path_for_ca(
    store: &LocalStore,
    ca: &ContentAddress,
    name: &str,
    path: Option<&StorePath>,
    refs: &[StorePath],
) -> Option<StorePath> {
    let self_ref = path.is_some_and(|p| refs.contains(p));
    let others: Vec<StorePath> = refs.iter().filter(|r| Some(*r) != path).cloned().collect();
    let sd = store.store_dir();
    match ca {
        ContentAddress::Text(h) if !self_ref => sd.make_text_path(h, &others, name).ok(),
        ContentAddress::Text(_) => None,
        _ if self_ref => None,
        _ => sd.make_fixed_output_path(ca, &others, false, name).ok(),
    }
}

async fn hash_file(path: PathBuf, algo: Algorithm) -> Result<Hash, StoreError> {
    tokio::task::spawn_blocking(move || hash_file_blocking(&path, algo))
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
}

/// The flat hash of the single regular file at `path`.
fn hash_file_blocking(path: &Path, algo: Algorithm) -> Result<Hash, StoreError> {
    let mut f =
        std::fs::File::open(path).map_err(StoreError::io("cannot read the added file back"))?;
    let meta = f
        .metadata()
        .map_err(StoreError::io("cannot read the added file back"))?;
    if !meta.is_file() {
        return Err(StoreError::Invalid(
            "flat content addressing needs a single regular file".into(),
        ));
    }
    let mut h = Hasher::new(algo);
    std::io::copy(&mut f, &mut h).map_err(StoreError::io("cannot read the added file back"))?;
    Ok(h.finish())
}

async fn nar_hash_of(path: PathBuf) -> Result<(NarHash, u64), StoreError> {
    tokio::task::spawn_blocking(move || super::maint::nar_hash_blocking(&path))
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
}

impl LocalStore {
    /// Whether `info` may be added by an untrusted user: it is content-addressed (its path follows from its
    /// content address) or carries a valid signature by a trusted key (Nix's `checkSignatures`).
    fn is_trusted_info(&self, info: &ValidPathInfo) -> bool {
        if let Some(ca) = info
            .ca
            .as_deref()
            .and_then(|s| s.parse::<ContentAddress>().ok())
        {
            let name = info.path.name().to_string();
            if path_for_ca(self, &ca, &name, Some(&info.path), &info.references).as_ref()
                == Some(&info.path)
            {
                return true;
            }
        }
        let fp = harmonia_store_nar_info::fingerprint(
            self.store_dir(),
            &info.path,
            &info.nar_hash,
            info.nar_size,
            &info.references,
        );
        info.signatures.iter().any(|s| {
            Signature::parse(s).is_ok_and(|sig| {
                self.trusted_keys()
                    .iter()
                    .any(|k| k.name() == sig.key_name() && k.verify(fp.as_bytes(), &sig))
            })
        })
    }

    /// Adds a path whose metadata the client states (AddToStoreNar): a batch of one. The whole NAR is
    /// always consumed from `nar` unless an error is returned before its end.
    pub async fn add_nar<R: AsyncRead + Unpin>(
        &self,
        info: ValidPathInfo,
        nar: R,
        opts: AddOptions,
    ) -> Result<(), StoreError> {
        let mut batch = self.add_batch();
        let added = batch.add(info, nar, opts).await;
        let registered = batch.finish();
        added.and(registered)
    }

    /// Starts a batch of adds whose metadata the client states (AddMultipleToStore); see [`AddBatch`].
    pub fn add_batch(&self) -> AddBatch<'_> {
        AddBatch {
            store: self,
            staged: Vec::new(),
            staged_paths: HashSet::new(),
            oldest: None,
            shared_lock: None,
            error: None,
        }
    }

    /// Restores the NAR at a temporary path in the store, inline, and checks it against the claim (hash,
    /// size, content address, signatures). On error the temporary tree is gone.
    async fn restore_checked<R: AsyncRead + Unpin>(
        &self,
        mut info: ValidPathInfo,
        nar: R,
        opts: AddOptions,
    ) -> Result<(ValidPathInfo, TempPath), StoreError> {
        let ca = match info.ca.as_deref() {
            Some(s) => Some(
                s.parse::<ContentAddress>()
                    .map_err(|e| StoreError::Invalid(format!("bad content address {s:?}: {e}")))?,
            ),
            None => None,
        };
        let extra = match &ca {
            Some(ContentAddress::Recursive(h)) if h.algorithm() != Algorithm::Sha256 => {
                Some(h.algorithm())
            }
            _ => None,
        };
        let tmp = TempPath::new(&self.inner.real_dir);
        let result = async {
            let mut tee = Tee::new(nar, extra, Some(info.nar_size));
            restore::restore_canonical(&mut tee, &tmp.out()).await?;
            let got_size = tee.nar.bytes_hashed();
            let got = NarHash::try_from(tee.nar.finish())
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let path_str = self.store_dir().display(&info.path);
            if got_size != info.nar_size {
                return Err(StoreError::Mismatch(format!(
                    "size mismatch importing path '{path_str}': the client claimed {} bytes, the NAR has {got_size}",
                    info.nar_size
                )));
            }
            if got != info.nar_hash {
                return Err(StoreError::Mismatch(format!(
                    "hash mismatch importing path '{path_str}': the client claimed {}, the NAR hashes to {}",
                    info.nar_hash, got
                )));
            }
            if let Some(ca) = &ca {
                let actual = match ca {
                    ContentAddress::Recursive(_) => match tee.extra.take() {
                        Some(h) => h.finish(),
                        None => *got.hash(),
                    },
                    ContentAddress::Flat(h) => hash_file_blocking(&tmp.out(), h.algorithm())?,
                    ContentAddress::Text(_) => hash_file_blocking(&tmp.out(), Algorithm::Sha256)?,
                };
                if &actual != ca.hash() {
                    return Err(StoreError::Mismatch(format!(
                        "content address mismatch importing path '{path_str}': claimed {ca}, the content has {actual}"
                    )));
                }
                let name = info.path.name().to_string();
                if path_for_ca(self, ca, &name, Some(&info.path), &info.references).as_ref()
                    != Some(&info.path)
                {
                    return Err(StoreError::Mismatch(format!(
                        "path '{path_str}' does not follow from its content address {ca}"
                    )));
                }
            }
            if opts.check_sigs && !self.is_trusted_info(&info) {
                return Err(StoreError::Forbidden(format!(
                    "cannot add path '{path_str}' because it lacks a signature by a trusted key"
                )));
            }
            info.references.sort();
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok((info, tmp)),
            Err(e) => {
                tmp.remove_now();
                Err(e)
            }
        }
    }

    /// Adds a content-addressed path whose store path we compute (AddToStore); returns its metadata.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_ca<R: AsyncRead + Unpin + Send>(
        &self,
        name: &str,
        method: CaMethod,
        algo: Algorithm,
        mut references: Vec<StorePath>,
        source: CaSource,
        reader: R,
        repair: bool,
    ) -> Result<ValidPathInfo, StoreError> {
        if method == CaMethod::Text && algo != Algorithm::Sha256 {
            return Err(StoreError::Invalid(format!(
                "text hashing must use sha256, not {algo}"
            )));
        }
        if method != CaMethod::Text
            && !references.is_empty()
            && !(method == CaMethod::Recursive && algo == Algorithm::Sha256)
        {
            return Err(StoreError::Invalid(
                "only text and sha256 recursive content-addressed paths may have references".into(),
            ));
        }
        let mut tmp = TempPath::new(&self.inner.real_dir);
        let result = async {
            let (ca_hash, nar_hash, nar_size) = match source {
                CaSource::Nar => {
                    let extra = (method == CaMethod::Recursive && algo != Algorithm::Sha256)
                        .then_some(algo);
                    let mut tee = Tee::new(reader, extra, None);
                    harmonia_file_nar::restore(&mut tee, &tmp.out()).await?;
                    let size = tee.nar.bytes_hashed();
                    let extra = tee.extra.take();
                    let nar_hash = NarHash::try_from(tee.nar.finish())
                        .map_err(|e| StoreError::Internal(e.to_string()))?;
                    let ca_hash = match method {
                        CaMethod::Recursive => extra
                            .map(Hasher::finish)
                            .unwrap_or_else(|| *nar_hash.hash()),
                        CaMethod::Flat | CaMethod::Text => hash_file(tmp.out(), algo).await?,
                    };
                    (ca_hash, nar_hash, size)
                }
                CaSource::Contents => {
                    if method == CaMethod::Recursive {
                        return Err(StoreError::Invalid(
                            "recursive content addressing needs a NAR".into(),
                        ));
                    }
                    let mut tee = Tee::new(reader, Some(algo), None);
                    let mut file = tokio::fs::File::create(tmp.out())
                        .await
                        .map_err(StoreError::io("cannot create the file in the store"))?;
                    tokio::io::copy(&mut tee, &mut file)
                        .await
                        .map_err(StoreError::io("cannot write the file into the store"))?;
                    // Every write done before we hash the file back (no fsync: like Nix, not per path).
                    file.flush()
                        .await
                        .map_err(StoreError::io("cannot write the file into the store"))?;
                    drop(file);
                    let ca_hash = tee
                        .extra
                        .take()
                        .map(Hasher::finish)
                        .ok_or_else(|| StoreError::Internal("hasher missing".into()))?;
                    let (nar_hash, size) = nar_hash_of(tmp.out()).await?;
                    (ca_hash, nar_hash, size)
                }
            };
            let ca = match method {
                CaMethod::Text => ContentAddress::Text(ca_hash),
                CaMethod::Flat => ContentAddress::Flat(ca_hash),
                CaMethod::Recursive => ContentAddress::Recursive(ca_hash),
            };
            references.sort();
            let path = path_for_ca(self, &ca, name, None, &references).ok_or_else(|| {
                StoreError::Invalid(format!("cannot make a store path named {name:?} for {ca}"))
            })?;
            let info = ValidPathInfo {
                path,
                nar_hash,
                nar_size,
                registration_time: 0,
                deriver: None,
                // Like Nix's addToStoreFromDump: content-addressed paths need no "ultimate" trust.
                ultimate: false,
                signatures: Vec::new(),
                ca: Some(ca.to_string()),
                references,
            };
            self.install(&mut tmp, info.clone(), repair).await?;
            Ok(info)
        }
        .await;
        tmp.remove().await;
        let info = result?;
        // Return what the database now says (registration time included).
        match self.query_path_info(info.path.clone()).await? {
            Some(stored) => Ok(stored),
            None => Ok(info),
        }
    }

    /// Adds a text file (AddTextToStore, `text:` AddToStore); returns its metadata.
    pub async fn add_text(
        &self,
        name: &str,
        text: Vec<u8>,
        references: Vec<StorePath>,
        repair: bool,
    ) -> Result<ValidPathInfo, StoreError> {
        self.add_ca(
            name,
            CaMethod::Text,
            Algorithm::Sha256,
            references,
            CaSource::Contents,
            &text[..],
            repair,
        )
        .await
    }

    /// Moves the restored tree to the path's place and registers it, under the path's locks (in-process, then
    /// Nix's `.lock` file), in one blocking step. A path that is already valid is left alone unless `repair`.
    async fn install(
        &self,
        tmp: &mut TempPath,
        mut info: ValidPathInfo,
        repair: bool,
    ) -> Result<(), StoreError> {
        let real = self.real_path(&info.path);
        let _lock = self.inner.locks.lock(&real).await;
        let outputs = self.derivation_outputs(&info.path, &tmp.out()).await?;
        if info.registration_time == 0 {
            info.registration_time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
        }
        let inner = self.inner.clone();
        let src = tmp.out();
        let moved = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            let _file_lock =
                LockFile::acquire(&real).map_err(StoreError::io("cannot lock the store path"))?;
            let sd = &inner.store_dir;
            let refs: Vec<StorePath> = info
                .references
                .iter()
                .filter(|r| **r != info.path)
                .cloned()
                .collect();
            let (valid, valid_refs) = inner.readers.with_conn(|db| {
                Ok::<_, StoreError>((db.is_valid_path(&info.path)?, db.query_valid_paths(&refs)?))
            })?;
            if valid && !repair {
                return Ok(false);
            }
            require_valid_refs(sd, &info.path, &refs, &valid_refs)?;
            fsutil::canonicalise(&src).map_err(StoreError::io("cannot set canonical metadata"))?;
            // A leftover (invalid) path, or the old copy when repairing, makes way.
            fsutil::remove_tree(&real)
                .map_err(StoreError::io("cannot remove the old copy of the path"))?;
            std::fs::rename(&src, &real)
                .map_err(StoreError::io("cannot move the path into the store"))?;
            let mut db = inner.writer.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = db.register_valid_paths_and_outputs(&[info], &outputs) {
                drop(db);
                let _ = fsutil::remove_tree(&real);
                return Err(e.into());
            }
            Ok(true)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        match moved {
            Ok(true) => {
                tmp.consumed();
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// For a `.drv` at `real`, the `DerivationOutputs` rows Nix registers with it; nothing for other paths.
    async fn derivation_outputs(
        &self,
        path: &StorePath,
        real: &Path,
    ) -> Result<Vec<(StorePath, String, StorePath)>, StoreError> {
        if !path.name().as_str().ends_with(".drv") {
            return Ok(Vec::new());
        }
        let (store, path, real) = (self.clone(), path.clone(), real.to_path_buf());
        tokio::task::spawn_blocking(move || store.derivation_outputs_blocking(&path, &real))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// [`LocalStore::derivation_outputs`] on this thread.
    fn derivation_outputs_blocking(
        &self,
        path: &StorePath,
        real: &Path,
    ) -> Result<Vec<(StorePath, String, StorePath)>, StoreError> {
        if !path.name().as_str().ends_with(".drv") {
            return Ok(Vec::new());
        }
        let read = || -> std::io::Result<Option<Vec<u8>>> {
            let meta = std::fs::symlink_metadata(real)?;
            if !meta.is_file() || meta.len() > MAX_DRV_SIZE {
                return Ok(None);
            }
            std::fs::read(real).map(Some)
        };
        let text = read().map_err(StoreError::io("cannot read the derivation"))?;
        let Some(text) = text else {
            tracing::warn!(drv = %path, "not registering outputs: the .drv is not a small regular file");
            return Ok(Vec::new());
        };
        let rows = match harmonia_store_db::parse_derivation_outputs(self.store_dir(), &text) {
            Ok(outputs) => outputs
                .into_iter()
                .map(|(name, out)| (path.clone(), name, out))
                .collect(),
            Err(e) => {
                tracing::warn!(drv = %path, "not registering outputs: {e}");
                Vec::new()
            }
        };
        Ok(rows)
    }
}

/// Most paths an [`AddBatch`] stages before it moves them into place and registers them.
const BATCH_MAX_PATHS: usize = 128;
/// Longest the first staged path of an [`AddBatch`] waits for the rest of its batch, also while the client
/// is slow to send more (see [`AddBatch::while_waiting`]).
const BATCH_MAX_AGE: Duration = Duration::from_millis(100);

/// A path restored, checked and locked, waiting at its temporary name for the rest of its batch.
struct Staged {
    tmp: TempPath,
    real: PathBuf,
    info: ValidPathInfo,
    outputs: Vec<(StorePath, String, StorePath)>,
    /// `None` when the batch's shared lock file holds the path.
    _file_lock: Option<LockFile>,
    _lock: PathLock,
}

/// Adds paths whose metadata the client states (AddToStoreNar, AddMultipleToStore), inline on the
/// connection's own thread.
///
/// Each NAR is restored at a temporary name in the store with canonical metadata, checked against the
/// claim, and staged under the path's locks (in-process, then Nix's `.lock` file). Staged paths are moved
/// into place and registered together, in one SQLite transaction, when the batch is full, when its first
/// path has waited [`BATCH_MAX_AGE`] (even while the client sends nothing), when it is finished, or before
/// waiting for a lock: Nix commits one transaction per path, which for small paths
/// costs more than writing them. Guarantees:
/// - a failed or cancelled add leaves no path and no row: until the flush a path exists only at its
///   temporary name (removed on drop, and by start-up cleanup after a crash);
/// - a path is only staged when its NAR was fully verified; a later failure (or [`AddBatch::finish`] after
///   an error) still registers the paths staged before it, as Nix's one-path-at-a-time adds would have;
/// - if the batch transaction fails, the paths are registered one at a time so that one bad path only
///   costs itself (and the paths that refer to it);
/// - locks are never waited for while others are held (the batch is flushed first), so two batches
///   cannot wait on each other.
pub struct AddBatch<'a> {
    store: &'a LocalStore,
    staged: Vec<Staged>,
    staged_paths: HashSet<StorePath>,
    oldest: Option<Instant>,
    /// Holds the `.lock` names of the staged paths (one inode for all of them, see [`BatchLockFile`]).
    shared_lock: Option<BatchLockFile>,
    /// The first error of a flush made while waiting, reported by the next `add` or by `finish`.
    error: Option<StoreError>,
}

impl AddBatch<'_> {
    /// Restores and checks one path from `nar` (read to the NAR's end unless an error is returned first)
    /// and stages it. A path that is already valid is left alone unless `opts.repair`.
    pub async fn add<R: AsyncRead + Unpin>(
        &mut self,
        mut info: ValidPathInfo,
        nar: R,
        opts: AddOptions,
    ) -> Result<(), StoreError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if info.registration_time == 0 {
            info.registration_time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
        }
        let store = self.store;
        let (info, tmp) = self
            .while_waiting(store.restore_checked(info, nar, opts))
            .await?;
        if let Some(e) = self.error.take() {
            tmp.remove_now();
            return Err(e);
        }
        self.stage(info, tmp, opts.repair).await?;
        let full = self.staged.len() >= BATCH_MAX_PATHS;
        let old = self.oldest.is_some_and(|t| t.elapsed() >= BATCH_MAX_AGE);
        if full || old {
            self.flush()?;
        }
        Ok(())
    }

    /// Moves the staged paths into place and registers them; returns the first error.
    pub fn finish(mut self) -> Result<(), StoreError> {
        let flushed = self.flush();
        match self.error.take() {
            Some(e) => Err(e),
            None => flushed,
        }
    }

    /// Awaits `fut` (reading from the client), registering the staged paths meanwhile once the first of
    /// them has waited [`BATCH_MAX_AGE`]: a slow client (one streaming from a slow substituter, say) does
    /// not keep finished paths invalid and locked. A failure of that flush is reported by the next
    /// [`AddBatch::add`] or by [`AddBatch::finish`].
    pub async fn while_waiting<F: std::future::Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        loop {
            let Some(due) = self.oldest.map(|t| t + BATCH_MAX_AGE) else {
                return fut.await;
            };
            tokio::select! {
                biased;
                out = &mut fut => return out,
                () = tokio::time::sleep_until(due.into()) => {
                    if let Err(e) = self.flush() {
                        self.error.get_or_insert(e);
                    }
                }
            }
        }
    }

    async fn stage(
        &mut self,
        info: ValidPathInfo,
        tmp: TempPath,
        repair: bool,
    ) -> Result<(), StoreError> {
        let store = self.store;
        let real = store.real_path(&info.path);
        let result = async {
            let lock = match store.inner.locks.try_lock(&real) {
                Some(lock) => lock,
                None => {
                    self.flush()?;
                    store.inner.locks.lock(&real).await
                }
            };
            let file_lock = if self.link_shared_lock(&real) {
                None
            } else {
                let io = StoreError::io("cannot lock the store path");
                Some(match LockFile::try_acquire(&real).map_err(io)? {
                    Some(l) => l,
                    None => {
                        self.flush()?;
                        LockFile::acquire(&real)
                            .map_err(StoreError::io("cannot lock the store path"))?
                    }
                })
            };
            let sd = store.store_dir();
            // References to paths staged in this batch become valid with it.
            let refs: Vec<StorePath> = info
                .references
                .iter()
                .filter(|r| **r != info.path && !self.staged_paths.contains(*r))
                .cloned()
                .collect();
            // One read transaction for the path and its references.
            let mut ask = refs.clone();
            ask.push(info.path.clone());
            let valid = store.read(move |db| db.query_valid_paths(&ask)).await?;
            if valid.last() == Some(&info.path) && !repair {
                return Ok(None);
            }
            require_valid_refs(sd, &info.path, &refs, &valid)?;
            let outputs = store.derivation_outputs_blocking(&info.path, &tmp.out())?;
            Ok(Some((outputs, file_lock, lock)))
        }
        .await;
        match result {
            Ok(Some((outputs, file_lock, lock))) => {
                self.staged_paths.insert(info.path.clone());
                self.oldest.get_or_insert_with(Instant::now);
                self.staged.push(Staged {
                    tmp,
                    real,
                    info,
                    outputs,
                    _file_lock: file_lock,
                    _lock: lock,
                });
                Ok(())
            }
            Ok(None) => {
                self.release_shared_lock(&real);
                tmp.remove_now();
                Ok(())
            }
            Err(e) => {
                self.release_shared_lock(&real);
                tmp.remove_now();
                Err(e)
            }
        }
    }

    /// Takes the `.lock` of `real` through the batch's shared lock file; `false` if that cannot be done
    /// (the caller takes a lock file of its own then).
    fn link_shared_lock(&mut self, real: &Path) -> bool {
        if self.shared_lock.is_none() {
            match BatchLockFile::new(&self.store.inner.real_dir) {
                Ok(shared) => self.shared_lock = Some(shared),
                Err(e) => {
                    tracing::debug!("no shared lock file: {e}");
                    return false;
                }
            }
        }
        self.shared_lock
            .as_mut()
            .is_some_and(|shared| shared.link(real))
    }

    /// Gives up `real`'s `.lock` early if the shared lock file holds it.
    fn release_shared_lock(&mut self, real: &Path) {
        if let Some(shared) = &mut self.shared_lock {
            shared.release(real);
        }
    }

    /// Moves every staged path into place, registers them in one transaction (one at a time if that fails)
    /// and releases their locks. A path that cannot be moved or registered is removed; the first such
    /// error is returned.
    fn flush(&mut self) -> Result<(), StoreError> {
        self.oldest = None;
        self.staged_paths.clear();
        if self.staged.is_empty() {
            self.shared_lock = None;
            return Ok(());
        }
        let mut first_err = None;
        let mut moved = Vec::with_capacity(self.staged.len());
        for mut s in self.staged.drain(..) {
            // Usually nothing is in the way. A leftover (invalid) copy, or the old one when repairing, makes
            // way: a file is replaced by the rename itself, anything else is removed first.
            let placed = match std::fs::rename(s.tmp.out(), &s.real) {
                Ok(()) => Ok(()),
                Err(_) => fsutil::remove_tree(&s.real)
                    .map_err(StoreError::io("cannot remove the old copy of the path"))
                    .and_then(|()| {
                        std::fs::rename(s.tmp.out(), &s.real)
                            .map_err(StoreError::io("cannot move the path into the store"))
                    }),
            };
            match placed {
                Ok(()) => {
                    s.tmp.consumed();
                    moved.push(s);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let infos: Vec<ValidPathInfo> = moved.iter().map(|s| s.info.clone()).collect();
        let outputs: Vec<_> = moved
            .iter()
            .flat_map(|s| s.outputs.iter().cloned())
            .collect();
        let mut db = self
            .store
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Err(e) = db.register_valid_paths_and_outputs(&infos, &outputs) {
            if moved.len() == 1 {
                let _ = fsutil::remove_tree(&moved[0].real);
                first_err.get_or_insert(e.into());
            } else {
                // One path spoiled the transaction: register them one at a time, in order, so that every
                // other path still becomes valid (those referring to a failed one fail in turn).
                for s in &moved {
                    if let Err(e) = db
                        .register_valid_paths_and_outputs(std::slice::from_ref(&s.info), &s.outputs)
                    {
                        let _ = fsutil::remove_tree(&s.real);
                        first_err.get_or_insert(e.into());
                    }
                }
            }
        }
        drop(db);
        // The rows are committed: release the lock files, then the in-process locks.
        self.shared_lock = None;
        drop(moved);
        first_err.map_or(Ok(()), Err)
    }
}

/// Nix's refusal of a path whose references (`refs`, not counting itself) are not all among `valid`.
fn require_valid_refs(
    sd: &harmonia_store_path::StoreDir,
    path: &StorePath,
    refs: &[StorePath],
    valid: &[StorePath],
) -> Result<(), StoreError> {
    match refs.iter().find(|r| !valid.contains(r)) {
        Some(missing) => Err(StoreError::Invalid(format!(
            "cannot add path '{}' because it references the invalid path '{}'",
            sd.display(path),
            sd.display(missing)
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harmonia_store_path::StoreDir;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn tee_hashes_and_limits() {
        let data = vec![7u8; 10_000];
        let mut tee = Tee::new(&data[..], Some(Algorithm::Sha1), Some(10_000));
        let mut out = Vec::new();
        tee.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        assert_eq!(tee.nar.bytes_hashed(), 10_000);
        assert_eq!(
            tee.extra.take().unwrap().finish(),
            Hash::digest_of(Algorithm::Sha1, &data)
        );
        let mut tee = Tee::new(&data[..], None, Some(9_999));
        assert!(tee.read_to_end(&mut Vec::new()).await.is_err());
    }

    /// A store to add to, opened the way the daemon opens it.
    async fn open_fixture() -> (harmonia_test_support::FixtureStore, LocalStore) {
        let f = harmonia_test_support::FixtureStore::new();
        let config = crate::config::Config::parse(&format!(
            "socket_path = {:?}\nreal_store_dir = {:?}\ndb_path = {:?}\nlog_dir = {:?}\n",
            f.scratch_dir().join("sock"),
            f.store_dir(),
            f.db_path(),
            f.log_dir(),
        ))
        .unwrap();
        let store = LocalStore::open(&config).await.unwrap();
        (f, store)
    }

    /// `n` input-addressed paths of one small file each, path `i` referring to path `i - 1`, with their
    /// NARs.
    fn chain(scratch: &Path, n: usize) -> Vec<(ValidPathInfo, Vec<u8>)> {
        const B32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
        let mut out: Vec<(ValidPathInfo, Vec<u8>)> = Vec::new();
        for i in 0..n {
            // 24 fixed characters and `i` in 8 nix-base32 digits.
            let mut hash = String::from("0123456789abcdfghijklmnp");
            let mut x = i;
            for _ in 0..8 {
                hash.push(B32[x % 32] as char);
                x /= 32;
            }
            let path = StoreDir::default()
                .parse_path(&format!("/nix/store/{hash}-p{i}"))
                .unwrap();
            let file = scratch.join(format!("p{i}"));
            std::fs::write(&file, format!("path {i}\n").repeat(1 + i % 5)).unwrap();
            let mut nar = Vec::new();
            harmonia_file_nar::NarEncoder::new(&file)
                .write_to(&mut nar)
                .unwrap();
            let references = out
                .last()
                .map(|(p, _)| vec![p.path.clone()])
                .unwrap_or_default();
            let info = ValidPathInfo {
                path,
                nar_hash: NarHash::try_from(Hash::digest_of(Algorithm::Sha256, &nar)).unwrap(),
                nar_size: nar.len() as u64,
                registration_time: 0,
                deriver: None,
                ultimate: false,
                signatures: Vec::new(),
                ca: None,
                references,
            };
            out.push((info, nar));
        }
        out
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".links")
            .collect();
        v.sort();
        v
    }

    const TRUSTED: AddOptions = AddOptions {
        repair: false,
        check_sigs: false,
    };

    #[tokio::test]
    async fn batches_register_every_path_and_leave_nothing_behind() {
        let (f, store) = open_fixture().await;
        // More than two batches, with references across their boundaries.
        let paths = chain(f.scratch_dir(), 2 * BATCH_MAX_PATHS + 10);
        // Leftovers of interrupted adds (invalid paths) at two of the names: a read-only tree and a file.
        let tree = store.real_path(&paths[0].0.path);
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/f"), b"old").unwrap();
        fsutil::canonicalise(&tree).unwrap();
        std::fs::write(store.real_path(&paths[1].0.path), b"old").unwrap();
        let mut batch = store.add_batch();
        for (info, nar) in &paths {
            batch.add(info.clone(), &nar[..], TRUSTED).await.unwrap();
        }
        batch.finish().unwrap();
        let all: Vec<StorePath> = paths.iter().map(|(i, _)| i.path.clone()).collect();
        assert_eq!(store.query_valid_paths(all.clone()).await.unwrap(), all);
        for k in [1, BATCH_MAX_PATHS, BATCH_MAX_PATHS + 1, all.len() - 1] {
            let p = all[k].clone();
            let refs = store.read(move |db| db.query_references(&p)).await.unwrap();
            assert_eq!(refs, vec![all[k - 1].clone()], "{k}");
        }
        let mut names: Vec<String> = all.iter().map(|p| p.to_string()).collect();
        names.sort();
        assert_eq!(
            entries(&f.store_dir()),
            names,
            "no lock or temporary files left"
        );
        f.verify_contents()
            .expect("nix-store --verify --check-contents");
        // Adding them again is a no-op.
        let mut batch = store.add_batch();
        for (info, nar) in &paths[..3] {
            batch.add(info.clone(), &nar[..], TRUSTED).await.unwrap();
        }
        batch.finish().unwrap();
        assert_eq!(entries(&f.store_dir()), names);
    }

    #[tokio::test]
    async fn staged_paths_are_locked_and_a_dropped_batch_leaves_nothing() {
        let (f, store) = open_fixture().await;
        let paths = chain(f.scratch_dir(), 3);
        let mut batch = store.add_batch();
        for (info, nar) in &paths[..2] {
            batch.add(info.clone(), &nar[..], TRUSTED).await.unwrap();
        }
        // Staged, not yet valid, and locked against Nix's lock protocol.
        let first = paths[0].0.path.clone();
        assert!(!store.is_valid_path(first.clone()).await.unwrap());
        assert!(
            LockFile::try_acquire(&store.real_path(&first))
                .unwrap()
                .is_none()
        );
        drop(batch);
        assert!(
            LockFile::try_acquire(&store.real_path(&first))
                .unwrap()
                .is_some()
        );
        // Temporary trees of a dropped batch are removed on the blocking pool.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !entries(&f.store_dir()).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(entries(&f.store_dir()), Vec::<String>::new());
        assert!(!store.is_valid_path(first).await.unwrap());

        // A failure keeps the paths staged before it: the third path's reference is missing.
        let mut batch = store.add_batch();
        let (info, nar) = &paths[0];
        batch.add(info.clone(), &nar[..], TRUSTED).await.unwrap();
        let (info, nar) = &paths[2];
        let err = batch
            .add(info.clone(), &nar[..], TRUSTED)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid path"), "{err}");
        batch.finish().unwrap();
        assert!(store.is_valid_path(paths[0].0.path.clone()).await.unwrap());
        assert!(!store.is_valid_path(paths[2].0.path.clone()).await.unwrap());
        assert_eq!(entries(&f.store_dir()), vec![paths[0].0.path.to_string()]);

        // A client that is slow to send the next path does not keep the staged ones waiting.
        let mut batch = store.add_batch();
        let (info, nar) = &paths[1];
        batch.add(info.clone(), &nar[..], TRUSTED).await.unwrap();
        assert!(!store.is_valid_path(info.path.clone()).await.unwrap());
        batch
            .while_waiting(tokio::time::sleep(BATCH_MAX_AGE * 3))
            .await;
        assert!(store.is_valid_path(info.path.clone()).await.unwrap());
        assert!(
            LockFile::try_acquire(&store.real_path(&info.path))
                .unwrap()
                .is_some()
        );
        batch.finish().unwrap();
    }
}
