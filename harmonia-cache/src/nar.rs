//! `/nar/...`: NARs streamed from the files on disk, with byte ranges and optional zstd.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use harmonia_file_nar::NarEncoder;
use harmonia_store_path::StorePathHash;
use http::{HeaderMap, Method, StatusCode, Uri, header};

use crate::app::{SharedState, lookup_by_hash};
use crate::error::{ServerError, ServerResult};
use crate::http_util::{
    ByteRange, CACHE_IMMUTABLE, RangeRequest, accepts_encoding, if_none_match, if_range_allows,
    parse_range,
};
use crate::metrics::{NAR_BYTES_TOTAL, NARS_TOTAL};
use crate::stepper::{Step, StepStream};
use crate::zerocopy::{PipeNar, SpliceQueue};

/// Chunk size of NAR bodies: large enough for few blocking hops per MiB, small enough that 64
/// concurrent downloads (two chunks in flight each) stay far below 64 MiB.
const NAR_CHUNK: usize = 256 * 1024;

/// Length of a sha256 digest in nix-base32.
const NAR_HASH_NIX32_LEN: usize = 52;
/// Length of a store path hash part.
const STORE_HASH_LEN: usize = 32;

/// The two URL forms: ours (`<narhash>.nar?hash=<storehash>`) and nix-serve's
/// (`<storehash>-<narhash>.nar`).
fn parse_nar_url(uri: &Uri) -> ServerResult<(StorePathHash, &str)> {
    let file = uri
        .path()
        .strip_prefix("/nar/")
        .ok_or(ServerError::NotFound)?;
    let stem = file.strip_suffix(".nar").ok_or(ServerError::NotFound)?;
    let (store_hash, nar_hash) = if stem.len() == STORE_HASH_LEN + 1 + NAR_HASH_NIX32_LEN
        && stem.as_bytes()[STORE_HASH_LEN] == b'-'
    {
        (&stem[..STORE_HASH_LEN], &stem[STORE_HASH_LEN + 1..])
    } else {
        let store_hash = uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("hash="))
            .ok_or(ServerError::BadRequest(
                "NAR URL needs ?hash=<store path hash>\n",
            ))?;
        (store_hash, stem)
    };
    if nar_hash.len() != NAR_HASH_NIX32_LEN
        || !nar_hash
            .bytes()
            .all(|b| harmonia_utils_hash::nix_base32::ALPHABET.contains(&b))
    {
        return Err(ServerError::BadRequest("malformed NAR hash\n"));
    }
    let store_hash = store_hash
        .parse::<StorePathHash>()
        .map_err(|_| ServerError::BadRequest("malformed store path hash\n"))?;
    Ok((store_hash, nar_hash))
}

/// `GET|HEAD /nar/<narhash>.nar?hash=<storehash>` and `/nar/<storehash>-<narhash>.nar`.
pub async fn nar(
    State(state): State<SharedState>,
    splice: Option<axum::Extension<SpliceQueue>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ServerResult<Response> {
    let (store_hash, nar_hash) = parse_nar_url(&uri)?;
    let info = lookup_by_hash(&state, store_hash).await?;
    if info.nar_hash.hash().to_nix_base32() != nar_hash {
        return Err(ServerError::NotFound);
    }
    let size = info.nar_size;
    let real_path = state.config.real_nix_store.join(info.path.to_string());
    let identity_etag = format!("\"{nar_hash}\"");
    let compressible = state.config.compression_level.is_some();

    let mut range = match headers.get(header::RANGE) {
        Some(v) if if_range_allows(&headers, &identity_etag) => parse_range(v.as_bytes(), size),
        _ => RangeRequest::Full,
    };
    // An empty NAR does not exist, but never divide a zero-length resource into ranges.
    if size == 0 {
        range = RangeRequest::Full;
    }
    let use_zstd = match (state.config.compression_level, range) {
        (Some(_), RangeRequest::Full) => {
            headers.get(header::RANGE).is_none() && accepts_encoding(&headers, "zstd")
        }
        _ => false,
    };
    let etag = if use_zstd {
        format!("\"{nar_hash}-zstd\"")
    } else {
        identity_etag
    };

    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/x-nix-nar")
        .header(header::CACHE_CONTROL, CACHE_IMMUTABLE)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag);
    if compressible {
        builder = builder.header(header::VARY, "Accept-Encoding");
    }
    if if_none_match(&headers, &etag) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(ServerError::from);
    }
    let is_head = method == Method::HEAD;
    // The NAR cache serves spliced, uncompressed bodies.
    let nar_cache = match (&splice, use_zstd, is_head) {
        (Some(_), false, false) => state.nar_cache.clone(),
        _ => None,
    };
    // One trip to the blocking pool: is the path on disk, is it a directory, is its NAR cached?
    let (is_dir, cached) = {
        let (real, key, cache) = (real_path.clone(), nar_hash.to_owned(), nar_cache.clone());
        tokio::task::spawn_blocking(move || {
            let is_dir = std::fs::symlink_metadata(&real).ok().map(|m| m.is_dir());
            let cached = cache.and_then(|c| c.open_entry(&key, size));
            (is_dir, cached)
        })
        .await?
    };
    // A path that is in the database but gone from disk is a miss, not a server fault.
    let Some(is_dir) = is_dir else {
        tracing::warn!(path = %info.path, "valid path missing on disk");
        return Err(ServerError::NotFound);
    };
    // Bodies written through the connection's splice queue: from the cache, or encoded from the tree.
    let piped = |queue: SpliceQueue, start: u64, len: u64| -> ServerResult<Body> {
        let body = match cached {
            Some((file, path)) => {
                let segment = harmonia_file_nar::FileSegment::new(file, path, start, len)
                    .map_err(std::io::Error::other)?;
                PipeNar::from_file(queue, segment, start, size)?
            }
            None => {
                if let Some(cache) = &nar_cache {
                    if is_dir && start == 0 && len == size {
                        cache.fill(real_path.clone(), info.nar_hash, size);
                    }
                }
                PipeNar::new(queue, real_path.clone(), start, len, size)?
            }
        };
        Ok(Body::from_stream(body))
    };

    let response = match range {
        RangeRequest::Unsatisfiable => return Err(ServerError::RangeNotSatisfiable { size }),
        RangeRequest::Single(r) => {
            let body = if is_head {
                Body::empty()
            } else if let Some(axum::Extension(queue)) = splice {
                piped(queue, r.start, r.len())?
            } else {
                Body::from_stream(CheckedNar::new(nar_stream(real_path, r.start), r, size))
            };
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{}", r.start, r.end, size),
                )
                .header(header::CONTENT_LENGTH, r.len())
                .body(body)
        }
        RangeRequest::Full if use_zstd => {
            let level = state
                .config
                .compression_level
                .unwrap_or(crate::config::DEFAULT_ZSTD_LEVEL);
            let body = if is_head {
                Body::empty()
            } else {
                Body::from_stream(StepStream::new(ZstdWorker::new(real_path, level, size)?))
            };
            builder
                .status(StatusCode::OK)
                .header(header::CONTENT_ENCODING, "zstd")
                .body(body)
        }
        RangeRequest::Full => {
            let body = if is_head {
                Body::empty()
            } else if let Some(axum::Extension(queue)) = splice {
                piped(queue, 0, size)?
            } else {
                Body::from_stream(CheckedNar::new(
                    nar_stream(real_path, 0),
                    ByteRange {
                        start: 0,
                        end: size.saturating_sub(1),
                    },
                    size,
                ))
            };
            builder
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, size)
                .body(body)
        }
    };
    response.map_err(ServerError::from)
}

/// The NAR encoder as a blocking step producer.
struct NarStep(NarEncoder);

impl Step for NarStep {
    fn step(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        self.0.next().map(|r| r.map_err(std::io::Error::other))
    }
}

fn nar_stream(path: std::path::PathBuf, offset: u64) -> StepStream<NarStep> {
    StepStream::new(NarStep(NarEncoder::with_chunk_size(
        path, offset, NAR_CHUNK,
    )))
}

/// A NAR body that ends exactly at the range end and fails if the NAR on disk no longer has the size
/// the database recorded, so a client never receives a silently wrong body.
struct CheckedNar<S> {
    inner: Option<S>,
    remaining: u64,
    /// Whether the NAR legitimately continues after the range (then we stop reading early).
    more_after: bool,
    full: bool,
}

impl<S> CheckedNar<S> {
    fn new(inner: S, range: ByteRange, size: u64) -> Self {
        CheckedNar {
            inner: Some(inner),
            remaining: range.len(),
            more_after: range.end + 1 < size,
            full: range.start == 0 && range.end + 1 >= size,
        }
    }
}

/// The error ending a NAR body whose files no longer add up to the size the database recorded.
pub(crate) fn changed_on_disk() -> std::io::Error {
    std::io::Error::other("store path changed on disk: NAR size differs from the database")
}

impl<S> Stream for CheckedNar<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.remaining == 0 && this.more_after {
            this.inner = None;
            return Poll::Ready(None);
        }
        match ready!(Pin::new(inner).poll_next(cx)) {
            Some(Ok(mut chunk)) => {
                let n = chunk.len() as u64;
                if n > this.remaining {
                    if !this.more_after {
                        this.inner = None;
                        return Poll::Ready(Some(Err(changed_on_disk())));
                    }
                    chunk.truncate(this.remaining as usize);
                }
                this.remaining -= chunk.len() as u64;
                metrics::counter!(NAR_BYTES_TOTAL).increment(chunk.len() as u64);
                // hyper stops polling once Content-Length bytes went out, so count here.
                if this.remaining == 0 && this.full {
                    metrics::counter!(NARS_TOTAL).increment(1);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => {
                this.inner = None;
                tracing::warn!("NAR stream failed: {e}");
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.inner = None;
                if this.remaining > 0 {
                    tracing::warn!("NAR ended {} bytes early", this.remaining);
                    return Poll::Ready(Some(Err(changed_on_disk())));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// Output of the zstd worker is handed out in pieces of at least this size.
const ZSTD_OUT_MIN: usize = 128 * 1024;

/// zstd jobs of a multithreaded response: zstd's default at level 3 is 8 MiB, and a context keeps
/// a few jobs' input and output buffered; 1 MiB keeps one response near 10 MiB.
const ZSTD_MT_JOB_SIZE: u32 = 1024 * 1024;
/// 1 MiB windows (level 3 alone would use 2 MiB): each job in flight keeps one. Measured on
/// /usr/include (116 MB NAR): with 2 MiB windows a multithreaded response cost 10-20% more CPU than a
/// single-threaded one and left the process at 58 MB RSS; with 1 MiB, no more CPU than
/// single-threaded, 36 MB RSS, and 0.8% more output.
const ZSTD_MT_WINDOW_LOG: u32 = 20;
/// Each job sees the whole window before it (overlap log 9). Small jobs with zstd's default overlap
/// (1/8 window at level 3) lost a quarter of the ratio on /usr/include (8.3x -> 6.6x); with the full
/// window the ratio stays that of single-threaded compression (8.8x).
const ZSTD_MT_OVERLAP_LOG: u32 = 9;
/// Responses compressed by several threads at once; the rest compress on their blocking thread
/// alone. Bounds both memory and threads: one client alone gets every core, many clients are
/// parallel anyway.
const ZSTD_MT_RESPONSES: usize = 1;

static ZSTD_MT_ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A slot among the [`ZSTD_MT_RESPONSES`] multithreaded responses, freed on drop.
struct ZstdMtSlot;

impl ZstdMtSlot {
    fn try_take() -> Option<ZstdMtSlot> {
        use std::sync::atomic::Ordering;
        ZSTD_MT_ACTIVE
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < ZSTD_MT_RESPONSES).then_some(n + 1)
            })
            .ok()
            .map(|_| ZstdMtSlot)
    }
}

impl Drop for ZstdMtSlot {
    fn drop(&mut self) {
        ZSTD_MT_ACTIVE.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The encoder and compressor of one zstd NAR response, moved to a blocking thread per step.
///
/// While few responses are compressed, zstd gets worker threads of its own (as many as there are
/// cores), so one client is not limited to one core; the blocking thread then only reads the NAR
/// and hands input over.
struct ZstdWorker {
    encoder: NarEncoder,
    /// Writes compressed bytes into a `Vec` we drain after each step.
    zstd: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    expected: u64,
    produced: u64,
    finished: bool,
    /// Declared after `zstd` so that the slot is freed only once its threads are gone.
    _mt: Option<ZstdMtSlot>,
}

impl ZstdWorker {
    fn new(path: std::path::PathBuf, level: i32, expected: u64) -> std::io::Result<ZstdWorker> {
        let mut zstd =
            zstd::stream::write::Encoder::new(Vec::with_capacity(ZSTD_OUT_MIN * 2), level)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mt = if cores > 1 {
            ZstdMtSlot::try_take()
        } else {
            None
        };
        if mt.is_some() {
            zstd.multithread(u32::try_from(cores).unwrap_or(1))?;
            zstd.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_MT_JOB_SIZE))?;
            zstd.set_parameter(zstd::stream::raw::CParameter::OverlapSizeLog(
                ZSTD_MT_OVERLAP_LOG,
            ))?;
            zstd.set_parameter(zstd::stream::raw::CParameter::WindowLog(ZSTD_MT_WINDOW_LOG))?;
        }
        Ok(ZstdWorker {
            encoder: NarEncoder::with_chunk_size(path, 0, NAR_CHUNK),
            zstd: Some(zstd),
            expected,
            produced: 0,
            finished: false,
            _mt: mt,
        })
    }

    fn fail(&mut self, e: std::io::Error) -> Option<Result<Bytes, std::io::Error>> {
        self.finished = true;
        self.zstd = None;
        Some(Err(e))
    }
}

impl Step for ZstdWorker {
    /// Encodes and compresses until at least `ZSTD_OUT_MIN` compressed bytes are ready or the NAR ends.
    fn step(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        use std::io::Write;
        if self.finished {
            return None;
        }
        loop {
            let zstd = self.zstd.as_mut()?;
            match self.encoder.next() {
                Some(Ok(chunk)) => {
                    self.produced += chunk.len() as u64;
                    if self.produced > self.expected {
                        return self.fail(changed_on_disk());
                    }
                    if let Err(e) = zstd.write_all(&chunk) {
                        return self.fail(e);
                    }
                    metrics::counter!(NAR_BYTES_TOTAL).increment(chunk.len() as u64);
                    if zstd.get_ref().len() >= ZSTD_OUT_MIN {
                        let out =
                            std::mem::replace(zstd.get_mut(), Vec::with_capacity(ZSTD_OUT_MIN * 2));
                        return Some(Ok(Bytes::from(out)));
                    }
                }
                Some(Err(e)) => return self.fail(std::io::Error::other(e)),
                None => {
                    if self.produced != self.expected {
                        return self.fail(changed_on_disk());
                    }
                    self.finished = true;
                    let zstd = self.zstd.take()?;
                    return match zstd.finish() {
                        Ok(out) => {
                            metrics::counter!(NARS_TOTAL).increment(1);
                            Some(Ok(Bytes::from(out)))
                        }
                        Err(e) => Some(Err(e)),
                    };
                }
            }
        }
    }
}
