//! `/log/<drv>`: build logs from Nix's log directory (`<state>/log/nix/drvs/<xx>/<rest>[.bz2]`).
//!
//! Nix writes logs bzip2-compressed. Real Nix clients (2.8 at least) send no `Accept-Encoding` header,
//! so we only pass the bzip2 bytes through with `Content-Encoding: bzip2` to clients that explicitly
//! list `bzip2`; everyone else gets plain text decompressed on the fly.

use std::io::Read;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use harmonia_store_path::StorePath;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use tokio_util::io::ReaderStream;

use crate::app::SharedState;
use crate::error::{ServerError, ServerResult};
use crate::http_util::{CACHE_IMMUTABLE, accepts_encoding};
use crate::stepper::{Step, StepStream};

/// Size of decompressed pieces sent to the client.
const LOG_CHUNK: usize = 64 * 1024;

enum LogFile {
    Plain(PathBuf),
    Bzip2(PathBuf),
}

fn find_log(log_dir: &std::path::Path, drv: &StorePath) -> Option<LogFile> {
    let base = drv.to_string();
    // Store path base names are ASCII, so splitting after two bytes is safe.
    let (prefix, rest) = base.split_at(2);
    let plain = log_dir.join(prefix).join(rest);
    if plain.is_file() {
        return Some(LogFile::Plain(plain));
    }
    let bz2 = log_dir.join(prefix).join(format!("{rest}.bz2"));
    bz2.is_file().then_some(LogFile::Bzip2(bz2))
}

/// `GET|HEAD /log/<drv base name>`.
pub async fn log(
    State(state): State<SharedState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ServerResult<Response> {
    let name = uri
        .path()
        .strip_prefix("/log/")
        .ok_or(ServerError::NotFound)?;
    let drv: StorePath = name
        .parse()
        .map_err(|_| ServerError::BadRequest("malformed derivation path\n"))?;
    if !name.ends_with(".drv") {
        return Err(ServerError::NotFound);
    }
    let log_dir = state.config.log_dir.clone();
    let found = tokio::task::spawn_blocking(move || find_log(&log_dir, &drv))
        .await?
        .ok_or(ServerError::NotFound)?;
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, CACHE_IMMUTABLE)
        .header(header::VARY, "Accept-Encoding");
    let is_head = method == Method::HEAD;
    let response = match found {
        LogFile::Plain(path) => {
            let file = tokio::fs::File::open(&path).await?;
            let len = file.metadata().await?.len();
            let body = if is_head {
                Body::empty()
            } else {
                Body::from_stream(ReaderStream::with_capacity(file, LOG_CHUNK))
            };
            builder.header(header::CONTENT_LENGTH, len).body(body)
        }
        LogFile::Bzip2(path) if accepts_encoding(&headers, "bzip2") => {
            let file = tokio::fs::File::open(&path).await?;
            let len = file.metadata().await?.len();
            let body = if is_head {
                Body::empty()
            } else {
                Body::from_stream(ReaderStream::with_capacity(file, LOG_CHUNK))
            };
            builder
                .header(header::CONTENT_ENCODING, "bzip2")
                .header(header::CONTENT_LENGTH, len)
                .body(body)
        }
        LogFile::Bzip2(path) => {
            let file = tokio::fs::File::open(&path).await?.into_std().await;
            let body = if is_head {
                Body::empty()
            } else {
                Body::from_stream(StepStream::new(Bunzip {
                    decoder: bzip2::read::MultiBzDecoder::new(std::io::BufReader::new(file)),
                }))
            };
            builder.body(body)
        }
    };
    response.map_err(ServerError::from)
}

/// Decompresses a bzip2 log one piece per blocking step.
struct Bunzip {
    decoder: bzip2::read::MultiBzDecoder<std::io::BufReader<std::fs::File>>,
}

impl Step for Bunzip {
    fn step(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let mut buf = vec![0u8; LOG_CHUNK];
        let mut filled = 0;
        while filled < buf.len() {
            match self.decoder.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
        if filled == 0 {
            return None;
        }
        buf.truncate(filled);
        Some(Ok(Bytes::from(buf)))
    }
}
