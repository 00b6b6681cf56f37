//! `/<hash>.narinfo` (signed on the fly) and `/<hash>.ls` (the NAR listing).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use harmonia_store_db::ValidPathInfo;
use harmonia_store_nar_info::NarInfo;
use harmonia_store_path::{ContentAddress, StorePathHash};
use harmonia_utils_hash::{Algorithm, Hash};
use harmonia_utils_signature::Signature;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

use crate::app::{SharedState, blocking, full_response};
use crate::error::{ServerError, ServerResult};
use crate::http_util::{CACHE_IMMUTABLE, CACHE_NARINFO, if_none_match};
use crate::metrics::RouteLabel;

/// Dispatches top-level files by suffix: `<hash>.narinfo` and `<hash>.ls`.
pub async fn top_level_file(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let name = uri.path().trim_start_matches('/');
    let (label, result) = if let Some(hash) = name.strip_suffix(".narinfo") {
        ("/{hash}.narinfo", narinfo(state, hash, &headers).await)
    } else if let Some(hash) = name.strip_suffix(".ls") {
        ("/{hash}.ls", listing(state, hash).await)
    } else {
        ("/{file}", Err(ServerError::NotFound))
    };
    let mut res = result.unwrap_or_else(IntoResponse::into_response);
    res.extensions_mut().insert(RouteLabel(label));
    res
}

fn parse_hash(hash: &str) -> ServerResult<StorePathHash> {
    hash.parse()
        .map_err(|_| ServerError::BadRequest("malformed store path hash\n"))
}

/// Builds the narinfo text for a path: our URL scheme, uncompressed NAR, the database's signatures
/// plus one fresh signature per configured key.
pub fn render_narinfo(state: &crate::app::AppState, info: ValidPathInfo) -> ServerResult<String> {
    let nar_hash32 = info.nar_hash.hash().to_nix_base32();
    let url = format!("nar/{nar_hash32}.nar?hash={}", info.path.hash());
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
    Ok(narinfo.render(&state.store_dir))
}

async fn narinfo(state: SharedState, hash: &str, headers: &HeaderMap) -> ServerResult<Response> {
    let hash = parse_hash(hash)?;
    let st = state.clone();
    let text = state
        .db_threads
        .run(move || {
            let info = st
                .db
                .with_conn(|db| db.query_path_info_by_hash_part(&hash))?
                .ok_or(ServerError::NotFound)?;
            render_narinfo(&st, info)
        })
        .await?;
    // The ETag names the exact bytes, so instances with other keys or newer signatures never
    // collide in a shared cache.
    let digest = Hash::digest_of(Algorithm::Sha256, text.as_bytes());
    let etag = format!("\"{}\"", &digest.to_nix_base32()[..32]);
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
/// saves the ed25519 work that dominates a narinfo request. Bounded: cleared when full.
pub struct SignatureCache {
    map: std::sync::Mutex<std::collections::HashMap<String, Vec<Signature>>>,
}

/// Fingerprints remembered at most (a few hundred bytes each).
const SIGNATURE_CACHE_ENTRIES: usize = 16 * 1024;

impl SignatureCache {
    /// An empty cache.
    pub fn new() -> SignatureCache {
        SignatureCache {
            map: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The signatures of `fingerprint` by every key, signing only on a miss.
    pub fn get_or_sign(
        &self,
        fingerprint: String,
        keys: &[harmonia_utils_signature::SecretKey],
    ) -> Vec<Signature> {
        let lock = || self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sigs) = lock().get(&fingerprint) {
            return sigs.clone();
        }
        let sigs: Vec<Signature> = keys
            .iter()
            .map(|k| k.sign(fingerprint.as_bytes()))
            .collect();
        let mut map = lock();
        if map.len() >= SIGNATURE_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(fingerprint, sigs.clone());
        sigs
    }
}
