//! `/<hash>.narinfo` (signed on the fly) and `/<hash>.ls` (the NAR listing).

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use harmonia_store_db::{SnapshotReader, StoreDb, ValidPathInfo};
use harmonia_store_nar_info::NarInfo;
use harmonia_store_path::{ContentAddress, StorePathHash};
use harmonia_utils_hash::{Algorithm, Hash};
use harmonia_utils_signature::Signature;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::app::{SharedState, blocking, full_response};
use crate::error::{ServerError, ServerResult};
use crate::http_util::{CACHE_IMMUTABLE, CACHE_NARINFO, if_none_match};

/// Dispatches top-level files by suffix: `<hash>.narinfo` and `<hash>.ls`.
///
/// Takes the whole request rather than `Uri` and `HeaderMap` extractors, which would clone both.
pub async fn top_level_file(State(state): State<SharedState>, req: Request) -> Response {
    let name = req.uri().path().trim_start_matches('/');
    let result = if let Some(hash) = name.strip_suffix(".narinfo") {
        narinfo(state, hash, req.headers()).await
    } else if let Some(hash) = name.strip_suffix(".ls") {
        listing(state, hash).await
    } else {
        Err(ServerError::NotFound)
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The metrics label of a request routed to [`top_level_file`] (matched as `/{file}`).
pub fn route_label(path: &str) -> &'static str {
    if path.ends_with(".narinfo") {
        "/{hash}.narinfo"
    } else if path.ends_with(".ls") {
        "/{hash}.ls"
    } else {
        "/{file}"
    }
}

fn parse_hash(hash: &str) -> ServerResult<StorePathHash> {
    hash.parse()
        .map_err(|_| ServerError::BadRequest("malformed store path hash\n"))
}

/// Builds the narinfo text for a path: our URL scheme, uncompressed NAR, the database's signatures
/// plus one fresh signature per configured key. `hash` is the path's hash part as text (the request
/// already has it, so it is not encoded again).
pub fn render_narinfo(
    state: &crate::app::AppState,
    info: ValidPathInfo,
    hash: &str,
) -> ServerResult<String> {
    let nar_hash32 = info.nar_hash.hash().to_nix_base32();
    let mut url = String::with_capacity(20 + nar_hash32.len() + hash.len());
    url.push_str("nar/");
    url.push_str(&nar_hash32);
    url.push_str(".nar?hash=");
    url.push_str(hash);
    let mut signatures = Vec::with_capacity(info.signatures.len() + state.config.sign_keys.len());
    for sig in &info.signatures {
        match sig.parse::<Signature>() {
            Ok(s) => signatures.push(s),
            Err(e) => {
                tracing::warn!(path = %info.path, "ignoring malformed signature in the database: {e}")
            }
        }
    }
    let ca = match &info.ca {
        Some(ca) if !ca.is_empty() => Some(ca.parse::<ContentAddress>().map_err(|e| {
            ServerError::CorruptMetadata(format!("content address of {}: {e}", info.path))
        })?),
        _ => None,
    };
    // `CA:` is the last line. Nix stores the canonical text, which can be copied instead of
    // re-encoding the hash; anything else (e.g. a base16 hash) is rendered from the parsed value.
    let (ca, ca_text) = match (ca, info.ca) {
        (Some(parsed), Some(text)) if text.len() == canonical_ca_len(&parsed) => (None, Some(text)),
        (parsed, _) => (parsed, None),
    };
    let mut narinfo = NarInfo {
        store_path: info.path,
        url,
        compression: "none".to_owned(),
        file_hash: Some(*info.nar_hash.hash()),
        file_size: Some(info.nar_size),
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: info.references,
        deriver: info.deriver,
        system: None,
        signatures: Vec::new(),
        ca,
    };
    for sig in signatures {
        narinfo.add_signature(sig);
    }
    if !state.config.sign_keys.is_empty() {
        let fingerprint = narinfo.fingerprint(&state.store_dir);
        for sig in state
            .signatures
            .get_or_sign(fingerprint, &state.config.sign_keys)
        {
            narinfo.add_signature(sig);
        }
    }
    let mut text = narinfo.render(&state.store_dir);
    if let Some(ca) = ca_text {
        text.reserve(ca.len() + 5);
        text.push_str("CA: ");
        text.push_str(&ca);
        text.push('\n');
    }
    Ok(text)
}

/// Length of the canonical text of `ca` (`fixed:r:sha256:<nix-base32>` and the like).
///
/// A text that parsed as `ca` and has this length is the canonical one: the prefix and the algorithm
/// name have only one spelling, and of the hash encodings only nix-base32 has this length.
fn canonical_ca_len(ca: &ContentAddress) -> usize {
    let (prefix, hash) = match ca {
        ContentAddress::Text(h) => ("text:", h),
        ContentAddress::Flat(h) => ("fixed:", h),
        ContentAddress::Recursive(h) => ("fixed:r:", h),
    };
    let algo = hash.algorithm();
    prefix.len() + algo.name().len() + 1 + algo.nix_base32_len()
}

async fn narinfo(
    state: SharedState,
    hash_text: &str,
    headers: &HeaderMap,
) -> ServerResult<Response> {
    let hash = parse_hash(hash_text)?;
    let text = match inline_lookup(&state, &hash) {
        Ok(info) => render_narinfo(&state, info.ok_or(ServerError::NotFound)?, hash_text)?,
        Err(e) if e.is_busy() => {
            // Another process holds a lock SQLite would have to wait for: wait on a database
            // thread instead of on this async worker.
            let st = state.clone();
            let hash_text = hash_text.to_owned();
            state
                .db_threads
                .run(move || {
                    let info = st
                        .db
                        .with_conn(|db| db.query_path_info_by_hash_part(&hash))?
                        .ok_or(ServerError::NotFound)?;
                    render_narinfo(&st, info, &hash_text)
                })
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    // The ETag names the exact bytes, so instances with other keys or newer signatures never
    // collide in a shared cache.
    let etag = etag_of(text.as_bytes());
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ServerError::Http(e.into()))?;
    if if_none_match(headers, &etag) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        res.headers_mut().insert(header::ETAG, etag_value);
        res.headers_mut()
            .insert(header::CACHE_CONTROL, CACHE_NARINFO);
        return Ok(res);
    }
    let mut res = full_response("text/x-nix-narinfo", CACHE_NARINFO, Bytes::from(text));
    res.headers_mut().insert(header::ETAG, etag_value);
    Ok(res)
}

/// How long the narinfo lookups of one worker thread may share a read snapshot of the database.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(5);

thread_local! {
    /// This worker thread's read-only connection for narinfo lookups, with the database it reads.
    static INLINE_DB: RefCell<Option<(PathBuf, SnapshotReader)>> = const { RefCell::new(None) };
}

/// Looks the path up right here on the async worker, never waiting for a lock.
///
/// Why not on a database thread: the hand-off there and back cost two cross-thread wake-ups, and
/// the response `String` built there was freed here, in another malloc arena; together that was
/// about a fifth of the CPU of a narinfo request. The lookup itself is one indexed point query:
/// 4 µs for a miss and 5–20 µs for a hit with 0–8 references (`cargo bench -p harmonia-store-db`),
/// about what writing the response to the socket costs. In WAL mode a reader only waits for a lock
/// during recovery or a non-WAL database's commit; with a busy timeout of zero SQLite reports that
/// as busy at once and [`narinfo`] retries on a database thread, which may wait.
///
/// Each worker thread keeps its own connection, and its lookups share one read transaction for up
/// to [`SNAPSHOT_MAX_AGE`] (ended earlier when the worker goes idle, see [`release_snapshot`]):
/// starting a transaction per lookup (two `fcntl`s on the `-shm` file and a WAL size check) held
/// narinfo at 50–53k requests/s, sharing it gave 62–67k in the same minutes. A lookup may thus see
/// the database as of a few milliseconds earlier, which no client can tell from a request that
/// arrived that much earlier.
fn inline_lookup(
    state: &crate::app::AppState,
    hash: &StorePathHash,
) -> Result<Option<ValidPathInfo>, harmonia_store_db::DbError> {
    INLINE_DB.with(|cell| {
        let mut slot = cell.borrow_mut();
        let db_path = &state.config.nix_db_path;
        if slot.as_ref().is_none_or(|(path, _)| path != db_path) {
            let db = StoreDb::open_read_only(db_path, state.store_dir.clone())?;
            db.set_busy_timeout(Duration::ZERO)?;
            *slot = Some((db_path.clone(), SnapshotReader::new(db, SNAPSHOT_MAX_AGE)));
        }
        match slot.as_mut() {
            Some((_, reader)) => reader.with_db(|db| db.query_path_info_by_hash_part(hash)),
            None => Ok(None),
        }
    })
}

/// Ends this thread's shared narinfo snapshot, so an idle server never holds one back; the runtime
/// calls it whenever a worker thread runs out of work.
pub fn release_snapshot() {
    let _ = INLINE_DB.try_with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            if let Some((_, reader)) = slot.as_mut() {
                reader.release();
            }
        }
    });
}

/// A strong entity tag naming exactly these bytes: `"<first 128 bits of their sha256, base16>"`.
fn etag_of(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Hash::digest_of(Algorithm::Sha256, bytes);
    let mut etag = String::with_capacity(34);
    etag.push('"');
    for b in &digest.digest()[..16] {
        etag.push(char::from(HEX[usize::from(b >> 4)]));
        etag.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    etag.push('"');
    etag
}

async fn listing(state: SharedState, hash: &str) -> ServerResult<Response> {
    let hash = parse_hash(hash)?;
    let st = state.clone();
    let json = blocking(move || {
        let path = st
            .db
            .with_conn(|db| db.query_path_from_hash_part(&hash))?
            .ok_or(ServerError::NotFound)?;
        let real = st.config.real_nix_store.join(path.to_string());
        let listing = harmonia_file_nar::list(&real).map_err(|e| {
            tracing::warn!(%path, "cannot list: {e}");
            ServerError::NotFound
        })?;
        Ok(listing.to_json())
    })
    .await?;
    Ok(full_response(
        "application/json",
        CACHE_IMMUTABLE,
        Bytes::from(json),
    ))
}

/// Signatures of recently served fingerprints.
///
/// A signature depends only on the key and the fingerprint (path, NAR hash and size, references),
/// which is recomputed from the database on every request, so a hit can never be stale; it only
/// saves the ed25519 work that dominates a narinfo request. Bounded in entries and in bytes of
/// fingerprints: cleared when either limit would be passed.
pub struct SignatureCache {
    inner: std::sync::Mutex<SignatureMap>,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct SignatureMap {
    map: std::collections::HashMap<String, Vec<Signature>>,
    /// Sum of the lengths of the fingerprints in `map`.
    bytes: usize,
}

/// Fingerprints remembered at most.
const SIGNATURE_CACHE_ENTRIES: usize = 16 * 1024;
/// Bytes of fingerprints remembered at most (a path with many references has a long one).
const SIGNATURE_CACHE_BYTES: usize = 8 << 20;

impl SignatureCache {
    /// An empty cache with the default bounds.
    pub fn new() -> SignatureCache {
        SignatureCache::with_bounds(SIGNATURE_CACHE_ENTRIES, SIGNATURE_CACHE_BYTES)
    }

    /// An empty cache holding at most `max_entries` fingerprints of at most `max_bytes` in total.
    pub fn with_bounds(max_entries: usize, max_bytes: usize) -> SignatureCache {
        SignatureCache {
            inner: std::sync::Mutex::new(SignatureMap::default()),
            max_entries,
            max_bytes,
        }
    }

    /// The signatures of `fingerprint` by every key, signing only on a miss.
    ///
    /// `keys` must be the same on every call (the server's configured keys): they are not part of
    /// the cache key.
    pub fn get_or_sign(
        &self,
        fingerprint: String,
        keys: &[harmonia_utils_signature::SecretKey],
    ) -> Vec<Signature> {
        let lock = || self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sigs) = lock().map.get(&fingerprint) {
            return sigs.clone();
        }
        let sigs: Vec<Signature> = keys
            .iter()
            .map(|k| k.sign(fingerprint.as_bytes()))
            .collect();
        if fingerprint.len() > self.max_bytes {
            return sigs;
        }
        let mut cache = lock();
        if cache.map.len() >= self.max_entries || cache.bytes + fingerprint.len() > self.max_bytes {
            cache.map.clear();
            cache.bytes = 0;
        }
        let len = fingerprint.len();
        if cache.map.insert(fingerprint, sigs.clone()).is_none() {
            cache.bytes += len;
        }
        sigs
    }

    /// Number of fingerprints remembered.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let cache = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (cache.map.len(), cache.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harmonia_utils_signature::SecretKey;

    fn keys() -> Vec<SecretKey> {
        ["cache-a", "cache-b"]
            .iter()
            .enumerate()
            .map(|(i, name)| SecretKey::from_seed(name, &[i as u8 + 1; 32]).expect("key"))
            .collect()
    }

    #[test]
    fn catch_all_routes_are_labelled_by_suffix() {
        let hash = "0xss8fshg1yzzfqzzpnx22dlc55qm7v1";
        assert_eq!(route_label(&format!("/{hash}.narinfo")), "/{hash}.narinfo");
        assert_eq!(route_label(&format!("/{hash}.ls")), "/{hash}.ls");
        assert_eq!(route_label("/favicon.ico"), "/{file}");
    }

    #[test]
    fn canonical_ca_text_is_recognised_by_its_length() {
        let hash = Hash::digest_of(Algorithm::Sha256, b"x");
        let b32 = hash.to_nix_base32();
        let b16 = hash.to_string().replace(&b32, &hash.to_base16());
        for canonical in [
            format!("fixed:r:sha256:{b32}"),
            format!("fixed:sha256:{b32}"),
            format!("text:sha256:{b32}"),
        ] {
            let ca: ContentAddress = canonical.parse().expect("parses");
            assert_eq!(ca.to_string(), canonical);
            assert_eq!(canonical_ca_len(&ca), canonical.len());
        }
        let other: ContentAddress = format!("fixed:r:{b16}").parse().expect("base16 parses");
        assert_ne!(canonical_ca_len(&other), format!("fixed:r:{b16}").len());
    }

    #[test]
    fn etag_is_the_quoted_sha256_prefix() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(etag_of(b"abc"), "\"ba7816bf8f01cfea414140de5dae2223\"");
        assert_ne!(etag_of(b"abc"), etag_of(b"abd"));
    }

    #[test]
    fn memoised_signatures_equal_fresh_ones() {
        let keys = keys();
        let cache = SignatureCache::new();
        for fp in ["1;/nix/store/a;sha256:x;1;", "1;/nix/store/b;sha256:y;2;"] {
            let fresh: Vec<Signature> = keys.iter().map(|k| k.sign(fp.as_bytes())).collect();
            assert_eq!(cache.get_or_sign(fp.to_owned(), &keys), fresh);
            // The second call is a hit and must give the same signatures.
            assert_eq!(cache.get_or_sign(fp.to_owned(), &keys), fresh);
            for (k, sig) in keys.iter().zip(&fresh) {
                assert!(k.to_public_key().verify(fp.as_bytes(), sig));
            }
        }
        assert_eq!(cache.len(), (2, 52));
    }

    #[test]
    fn bounded_in_entries_and_bytes() {
        let keys = keys();
        let cache = SignatureCache::with_bounds(4, 100);
        for i in 0..50 {
            let fp = format!("1;/nix/store/{i:020};sha256:x;1;");
            let sigs = cache.get_or_sign(fp.clone(), &keys);
            assert!(keys[0].to_public_key().verify(fp.as_bytes(), &sigs[0]));
            let (entries, bytes) = cache.len();
            assert!(
                entries <= 4 && bytes <= 100,
                "{entries} entries, {bytes} bytes"
            );
            assert!(entries >= 1);
        }
        // 40-byte fingerprints: at most 2 fit into 100 bytes.
        assert!(cache.len().0 <= 2);
        // A fingerprint larger than the whole budget is signed but not remembered.
        let huge = "x".repeat(101);
        let sigs = cache.get_or_sign(huge.clone(), &keys);
        assert_eq!(sigs[1], keys[1].sign(huge.as_bytes()));
        assert!(cache.len().1 <= 100);
    }
}
