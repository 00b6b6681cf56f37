//! The one error type of the HTTP layer and its single mapping to a status.
//!
//! Bodies are short fixed texts: internal details (filesystem paths, SQL errors) go to the log only.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Everything a request handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The thing asked for does not exist (unknown hash, missing log, path outside a store path).
    #[error("not found")]
    NotFound,
    /// The request itself is malformed; the text says what is wrong without echoing input.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A byte range that does not overlap the resource.
    #[error("range not satisfiable (size {size})")]
    RangeNotSatisfiable {
        /// The full size of the resource.
        size: u64,
    },
    /// Nix's database could not be read.
    #[error("database error: {0}")]
    Db(#[from] harmonia_store_db::DbError),
    /// A store path's files could not be read.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A response could not be assembled (an invalid header value of ours).
    #[error("building the response failed: {0}")]
    Http(#[from] http::Error),
    /// A blocking task panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A database thread panicked while answering (or is gone).
    #[error("database thread failed")]
    DbThreadFailed,
    /// The database holds data we cannot interpret (e.g. a malformed hash column).
    #[error("corrupt store metadata: {0}")]
    CorruptMetadata(String),
}

impl ServerError {
    /// The status and the (path-free) body for this error.
    pub fn status_and_body(&self) -> (StatusCode, &'static str) {
        match self {
            ServerError::NotFound => (StatusCode::NOT_FOUND, "not found\n"),
            ServerError::BadRequest(what) => (StatusCode::BAD_REQUEST, what),
            ServerError::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n")
            }
            ServerError::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, "database error\n"),
            ServerError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (StatusCode::NOT_FOUND, "not found\n")
            }
            ServerError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "I/O error\n"),
            ServerError::Http(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
            // Cancelled means the runtime is shutting down.
            ServerError::Join(e) if e.is_cancelled() => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            }
            ServerError::Join(_) | ServerError::DbThreadFailed => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
            ServerError::CorruptMetadata(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt store metadata\n",
            ),
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let mut res = (status, body).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let ServerError::RangeNotSatisfiable { size } = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        res
    }
}

/// Result of a handler.
pub type ServerResult<T> = Result<T, ServerError>;
