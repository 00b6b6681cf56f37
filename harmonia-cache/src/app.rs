//! Shared state, the router, and the small fixed endpoints.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;

use harmonia_store_db::{StoreDbPool, ValidPathInfo};
use harmonia_store_path::{StoreDir, StorePathHash};

use crate::config::Config;
use crate::error::{ServerError, ServerResult};
use crate::http_util::{CACHE_NONE, html_escape};

/// Everything handlers share, built once at start-up.
pub struct AppState {
    /// The resolved configuration.
    pub config: Config,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The `/nix-cache-info` body.
    pub cache_info: Bytes,
    /// Public keys of the signing keys, as a user puts them in `trusted-public-keys`.
    pub public_keys: Vec<String>,
    /// The logical store directory paths are rendered with.
    pub store_dir: StoreDir,
    /// Read-only connections to Nix's database.
    pub db: StoreDbPool,
    /// Threads that run the database lookups.
    pub db_threads: crate::dbthreads::DbThreads,
    /// Signatures by fingerprint, so repeated narinfo requests skip ed25519.
    pub signatures: crate::narinfo::SignatureCache,
    /// NARs of trees of many small files kept on disk (see [`crate::narcache`]), unless turned off.
    pub nar_cache: Option<Arc<crate::narcache::NarCache>>,
}

/// Shared handle to [`AppState`].
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Opens the database and pre-computes fixed responses from the configuration.
    pub fn new(config: Config, metrics: PrometheusHandle) -> anyhow::Result<AppState> {
        use anyhow::Context;
        let store_dir = StoreDir::new(&config.virtual_nix_store).map_err(|e| {
            anyhow::anyhow!(
                "`virtual_nix_store` = {:?} is not a valid store directory: {e}",
                config.virtual_nix_store
            )
        })?;
        // One connection per database thread and per blocking thread (`.ls`, `/serve` and
        // realisations query from there), so a query never waits for a connection.
        let connections = db_threads(config.workers) + blocking_threads(config.workers);
        let db = StoreDbPool::new(&config.nix_db_path, store_dir.clone(), connections)
            .with_context(|| {
                format!(
                    "cannot open the Nix database {}: set `nix_db_path` to Nix's db.sqlite",
                    config.nix_db_path.display()
                )
            })?;
        let cache_info = Bytes::from(format!(
            "StoreDir: {}\nWantMassQuery: 1\nPriority: {}\n",
            config.virtual_nix_store, config.priority
        ));
        let public_keys = config
            .sign_keys
            .iter()
            .map(|k| k.to_public_key().to_string())
            .collect();
        let config_workers = config.workers;
        let nar_cache = match &config.nar_cache {
            Some(nc) => match crate::narcache::NarCache::open(nc.dir.clone(), nc.max_bytes) {
                Ok(cache) => Some(Arc::new(cache)),
                Err(e) if nc.explicit => {
                    return Err(e.context("fix `nar_cache_dir`, or set `nar_cache_max_size = 0`"));
                }
                Err(e) => {
                    tracing::warn!(
                        "running without the NAR cache: {e:#} (set `nar_cache_dir` to a writable directory, or `nar_cache_max_size = 0`)"
                    );
                    None
                }
            },
            None => None,
        };
        Ok(AppState {
            nar_cache,
            config,
            metrics,
            cache_info,
            public_keys,
            store_dir,
            db,
            signatures: crate::narinfo::SignatureCache::new(),
            db_threads: crate::dbthreads::DbThreads::start(db_threads(config_workers))
                .context("starting the database threads")?,
        })
    }
}

/// Builds the router with every endpoint and the metrics middleware.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/nix-cache-info", get(cache_info))
        .route("/nar/{file}", get(crate::nar::nar))
        .route("/log/{drv}", get(crate::log::log))
        .route("/serve/{hash}", get(crate::serve::serve))
        .route("/serve/{hash}/", get(crate::serve::serve))
        .route("/serve/{hash}/{*path}", get(crate::serve::serve))
        .route("/realisations/{id}", get(crate::realisation::realisation))
        .route(
            "/build-trace-v2/{drv}/{output}",
            get(crate::realisation::build_trace),
        )
        .route("/{file}", get(crate::narinfo::top_level_file))
        .fallback(not_found)
        .layer(crate::metrics::TrackLayer)
        .with_state(state)
}

/// Size of tokio's blocking pool for `workers` async workers.
///
/// Every request's SQLite and filesystem work is a short blocking task. A small pool keeps its
/// threads busy draining the queue under load instead of waking a parked thread per request (a
/// context switch each), which is what dominated the narinfo path with tokio's default of 512.
pub fn blocking_threads(workers: usize) -> usize {
    (workers * 4).clamp(4, 64)
}

/// Number of database threads for `workers` async workers: as many as there are async workers, so
/// lookups keep pace with them while each thread stays busy under load.
pub fn db_threads(workers: usize) -> usize {
    workers.clamp(1, 16)
}

/// Runs blocking work (SQLite, filesystem) on tokio's blocking pool.
pub async fn blocking<T, F>(f: F) -> ServerResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> ServerResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

/// The database record of the valid path whose hash part is `hash`, or `NotFound`.
pub async fn lookup_by_hash(
    state: &SharedState,
    hash: StorePathHash,
) -> ServerResult<ValidPathInfo> {
    let st = state.clone();
    state
        .db_threads
        .run(move || {
            st.db
                .with_conn(|db| db.query_path_info_by_hash_part(&hash))?
                .ok_or(ServerError::NotFound)
        })
        .await
}

/// A complete in-memory response with explicit length (so HEAD reports it too).
pub fn full_response(
    content_type: &'static str,
    cache_control: HeaderValue,
    body: Bytes,
) -> Response {
    let len = body.len();
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, cache_control);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    res
}

async fn not_found() -> ServerError {
    ServerError::NotFound
}

async fn health() -> Response {
    full_response(
        "text/plain; charset=utf-8",
        CACHE_NONE,
        Bytes::from_static(b"OK\n"),
    )
}

async fn version() -> Response {
    full_response(
        "text/plain; charset=utf-8",
        CACHE_NONE,
        Bytes::from_static(concat!("harmonia-cache ", env!("CARGO_PKG_VERSION"), "\n").as_bytes()),
    )
}

async fn metrics(State(state): State<SharedState>) -> Response {
    full_response(
        "text/plain; version=0.0.4; charset=utf-8",
        CACHE_NONE,
        Bytes::from(state.metrics.render()),
    )
}

async fn cache_info(State(state): State<SharedState>) -> Response {
    full_response(
        "text/x-nix-cache-info",
        HeaderValue::from_static("public, max-age=86400"),
        state.cache_info.clone(),
    )
}

/// Whether a `Host` header value is safe to echo back as a URL authority.
fn plausible_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

async fn landing(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| plausible_host(h))
        .map(str::to_owned)
        .unwrap_or_else(|| state.config.bind.to_string());
    let substituter = format!("{scheme}://{host}");
    let keys_line = if state.public_keys.is_empty() {
        "# no signing key configured: set `sign_key_paths` to sign narinfo".to_owned()
    } else {
        format!("trusted-public-keys = {}", state.public_keys.join(" "))
    };
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>harmonia binary cache</title></head>\n\
<body><h1>harmonia binary cache</h1>\n\
<p>This server is a Nix binary cache for <code>{store}</code>. To use it, add these lines to <code>nix.conf</code>:</p>\n\
<pre>substituters = {sub}\n{keys}\n</pre>\n\
<p><a href=\"/nix-cache-info\">nix-cache-info</a> &middot; <a href=\"/metrics\">metrics</a> &middot; <a href=\"/version\">version</a></p>\n\
</body></html>\n",
        store = html_escape(&state.config.virtual_nix_store),
        sub = html_escape(&substituter),
        keys = html_escape(&keys_line),
    );
    let mut res = full_response("text/html; charset=utf-8", CACHE_NONE, Bytes::from(body));
    *res.status_mut() = StatusCode::OK;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_filter() {
        assert!(plausible_host("cache.example.org:5000"));
        assert!(plausible_host("[::1]:5000"));
        assert!(!plausible_host("a<script>"));
        assert!(!plausible_host(""));
    }
}
