//! Everything besides adding paths: GC roots, signatures, realisations, build logs and store verification.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use harmonia_store_db::{DrvOutput, Realisation};
use harmonia_store_path::StorePath;
use harmonia_utils_hash::{Algorithm, Hash, Hasher, NarHash};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{LocalStore, StoreError};

/// Most directory levels we descend under `gcroots` (Nix's own layout is two or three deep).
const MAX_ROOT_DEPTH: usize = 16;

/// The NAR hash and size of a path on disk, computed like `nix-store --dump | sha256sum` (blocking).
pub(super) fn nar_hash_blocking(path: &Path) -> Result<(NarHash, u64), StoreError> {
    let mut h = Hasher::new(Algorithm::Sha256);
    let size = harmonia_file_nar::NarEncoder::new(path).write_to(&mut h)?;
    let hash = NarHash::try_from(h.finish()).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok((hash, size))
}

/// Creates `link` -> `target` atomically (a temporary link renamed over whatever was there).
fn make_symlink(target: &str, link: &Path) -> std::io::Result<()> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RealisationJson {
    id: String,
    out_path: String,
    #[serde(default)]
    signatures: Vec<String>,
    #[serde(default)]
    dependent_realisations: BTreeMap<String, String>,
}

impl LocalStore {
    async fn blocking<T, F>(f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    fn gcroots(&self) -> PathBuf {
        self.state_dir().join("gcroots")
    }

    /// Registers `link` (a symlink outside the store) as an indirect GC root, as Nix's `addIndirectRoot`:
    /// `gcroots/auto/<sha1 of the link path, nix-base32>` -> `link`.
    pub async fn add_indirect_root(&self, link: &str) -> Result<(), StoreError> {
        if !crate::worker::is_absolute_clean(link) {
            return Err(StoreError::Invalid(format!(
                "GC root {link:?} must be an absolute path"
            )));
        }
        let name = Hash::digest_of(Algorithm::Sha1, link.as_bytes()).to_nix_base32();
        let auto = self.gcroots().join("auto").join(name);
        let link = link.to_owned();
        Self::blocking(move || {
            make_symlink(&link, &auto).map_err(StoreError::io("cannot create the indirect GC root"))
        })
        .await
    }

    /// Creates the symlink `gc_root` -> `path` and registers it as an indirect root (Nix's `addPermRoot`).
    pub async fn add_perm_root(
        &self,
        path: &StorePath,
        gc_root: &str,
    ) -> Result<String, StoreError> {
        let sd = self.store_dir().as_str();
        let real = self.real_path(path);
        let in_store = gc_root.starts_with(&format!("{sd}/"))
            || Path::new(gc_root).starts_with(real.parent().unwrap_or(Path::new("/")));
        if !crate::worker::is_absolute_clean(gc_root) || in_store {
            return Err(StoreError::Invalid(format!(
                "creating a garbage collector root ({gc_root}) in the Nix store is forbidden (or the path is not absolute)"
            )));
        }
        if !self.is_valid_path(path.clone()).await? {
            return Err(StoreError::NotValid(self.store_dir().display(path)));
        }
        let target = self.store_dir().display(path);
        let link = PathBuf::from(gc_root);
        Self::blocking(move || {
            make_symlink(&target, &link).map_err(StoreError::io("cannot create the GC root"))
        })
        .await?;
        self.add_indirect_root(gc_root).await?;
        Ok(gc_root.to_owned())
    }

    /// The GC roots under `gcroots` (direct links into the store, and indirect ones through `auto/`), as
    /// (link, store path) pairs.
    pub async fn find_roots(&self) -> Result<Vec<(String, StorePath)>, StoreError> {
        let root = self.gcroots();
        let sd = self.store_dir().clone();
        Self::blocking(move || {
            let mut out = Vec::new();
            let resolve = |link: &Path| -> Option<StorePath> {
                let target = std::fs::read_link(link).ok()?;
                let t = target.to_str()?;
                sd.parse_path_with_subpath(t).ok().map(|(p, _)| p)
            };
            let mut stack = vec![(root, 0usize)];
            while let Some((dir, depth)) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(ft) = entry.file_type() else { continue };
                    if ft.is_dir() && depth < MAX_ROOT_DEPTH {
                        stack.push((path, depth + 1));
                    } else if ft.is_symlink() {
                        if let Some(p) = resolve(&path) {
                            out.push((path.to_string_lossy().into_owned(), p));
                        } else if let Ok(user_link) = std::fs::read_link(&path) {
                            // An indirect root: the link points at the user's symlink, which points into
                            // the store (or is gone, then it is no root).
                            if let Some(p) = resolve(&user_link) {
                                out.push((user_link.to_string_lossy().into_owned(), p));
                            }
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    /// Adds signatures to a valid path.
    pub async fn add_signatures(
        &self,
        path: StorePath,
        sigs: Vec<String>,
    ) -> Result<(), StoreError> {
        for s in &sigs {
            harmonia_utils_signature::Signature::parse(s)
                .map_err(|e| StoreError::Invalid(format!("invalid signature {s:?}: {e}")))?;
        }
        if !self.is_valid_path(path.clone()).await? {
            return Err(StoreError::NotValid(self.store_dir().display(&path)));
        }
        self.write_db(move |db| db.add_signatures(&path, &sigs))
            .await
    }

    /// Checks that every valid path exists and, with `check_contents`, that its NAR hash and size still match
    /// the database. Returns one message per problem, worded like Nix's.
    pub async fn verify(&self, check_contents: bool) -> Result<Vec<String>, StoreError> {
        let paths = self.query_all_valid_paths().await?;
        let mut problems = Vec::new();
        for p in paths {
            let Some(info) = self.query_path_info(p.clone()).await? else {
                continue;
            };
            let real = self.real_path(&p);
            let shown = self.store_dir().display(&p);
            let result = Self::blocking(move || {
                if std::fs::symlink_metadata(&real).is_err() {
                    return Ok(Some(format!(
                        "path '{shown}' disappeared, but it is still valid"
                    )));
                }
                if !check_contents {
                    return Ok(None);
                }
                let (hash, size) = nar_hash_blocking(&real)?;
                if hash != info.nar_hash {
                    return Ok(Some(format!(
                        "path '{shown}' was modified! expected hash '{}', got '{}'",
                        info.nar_hash, hash
                    )));
                }
                if info.nar_size != 0 && size != info.nar_size {
                    return Ok(Some(format!(
                        "path '{shown}' has size {size}, the database says {}",
                        info.nar_size
                    )));
                }
                Ok(None)
            })
            .await?;
            problems.extend(result);
        }
        Ok(problems)
    }

    /// The realisation `id` ("sha256:<hex>!out"), as (output path, Nix's JSON) if known.
    pub async fn query_realisation(
        &self,
        id: String,
    ) -> Result<Vec<(StorePath, String)>, StoreError> {
        if id.parse::<DrvOutput>().is_err() {
            return Err(StoreError::Invalid(format!(
                "invalid derivation output id {id:?}"
            )));
        }
        let found = self.read(move |db| db.query_realisation(&id)).await?;
        Ok(found
            .into_iter()
            .map(|r| {
                let deps: BTreeMap<String, String> = r
                    .dependent_realisations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let json = serde_json::json!({
                    "id": r.id.to_string(),
                    "outPath": r.out_path.to_string(),
                    "signatures": r.signatures,
                    "dependentRealisations": deps,
                });
                (r.out_path, json.to_string())
            })
            .collect())
    }

    async fn register_realisation(&self, r: Realisation) -> Result<(), StoreError> {
        if !self.is_valid_path(r.out_path.clone()).await? {
            return Err(StoreError::NotValid(self.store_dir().display(&r.out_path)));
        }
        self.write_db(move |db| {
            db.ensure_ca_schema()?;
            db.register_realisation(&r)
        })
        .await
    }

    /// RegisterDrvOutput before 1.31: an id and an output path.
    pub async fn register_realisation_legacy(
        &self,
        id: &str,
        out_path: StorePath,
    ) -> Result<(), StoreError> {
        let id = id
            .parse::<DrvOutput>()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.register_realisation(Realisation {
            id,
            out_path,
            signatures: Vec::new(),
            dependent_realisations: BTreeMap::new(),
        })
        .await
    }

    /// RegisterDrvOutput from 1.31: Nix's realisation JSON.
    pub async fn register_realisation_json(&self, json: &str) -> Result<(), StoreError> {
        let bad = |e: String| StoreError::Invalid(format!("invalid realisation: {e}"));
        let j: RealisationJson = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let parse_path = |s: &str| -> Result<StorePath, StoreError> {
            match self.store_dir().parse_path(s) {
                Ok(p) => Ok(p),
                Err(_) => s.parse::<StorePath>().map_err(|e| bad(e.to_string())),
            }
        };
        let mut deps = BTreeMap::new();
        for (k, v) in &j.dependent_realisations {
            deps.insert(
                k.parse::<DrvOutput>().map_err(|e| bad(e.to_string()))?,
                parse_path(v)?,
            );
        }
        let mut signatures = j.signatures;
        signatures.sort();
        signatures.dedup();
        self.register_realisation(Realisation {
            id: j.id.parse::<DrvOutput>().map_err(|e| bad(e.to_string()))?,
            out_path: parse_path(&j.out_path)?,
            signatures,
            dependent_realisations: deps,
        })
        .await
    }

    /// Stores a build log as Nix does: `<log_dir>/<first 2 chars>/<rest of base name>.bz2`, bzip2-compressed,
    /// written to a temporary file and renamed into place.
    pub async fn add_build_log<R: AsyncRead + Unpin + Send>(
        &self,
        drv: &StorePath,
        mut log: R,
    ) -> Result<(), StoreError> {
        let base = drv.to_string();
        let (dir, rest) = base.split_at(2);
        let dir = self.log_dir().join(dir);
        let dest = dir.join(format!("{rest}.bz2"));
        let tmp = dir.join(format!(".{rest}.bz2.tmp-{}", std::process::id()));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let tmp2 = tmp.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            std::fs::create_dir_all(&dir)
                .map_err(StoreError::io("cannot create the log directory"))?;
            let file = std::fs::File::create(&tmp2)
                .map_err(StoreError::io("cannot create the log file"))?;
            let mut enc = bzip2::write::BzEncoder::new(file, bzip2::Compression::default());
            while let Some(chunk) = rx.blocking_recv() {
                enc.write_all(&chunk)
                    .map_err(StoreError::io("cannot write the log file"))?;
            }
            enc.finish()
                .map_err(StoreError::io("cannot write the log file"))?
                .sync_all()
                .map_err(StoreError::io("cannot write the log file"))?;
            std::fs::rename(&tmp2, &dest).map_err(StoreError::io("cannot move the log into place"))
        });
        let mut read_err = None;
        loop {
            let mut buf = vec![0u8; 64 << 10];
            match log.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(buf).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    read_err = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        if read_err.is_some() || written.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        if let Some(e) = read_err {
            return Err(StoreError::Io {
                what: "cannot read the log".into(),
                source: e,
            });
        }
        written
    }
}
