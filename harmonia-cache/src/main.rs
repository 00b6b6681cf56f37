//! A Nix binary cache server that serves a Nix store over HTTP(S).
//!
//! Metadata comes straight from Nix's SQLite database, NARs are produced from the files on disk.
//! Configuration: a TOML file named by `CONFIG_FILE` (see `config.rs`), logging via `RUST_LOG`.

mod app;
mod config;
mod dbthreads;
mod error;
mod http_util;
mod log;
mod metrics;
mod nar;
mod narcache;
mod narinfo;
mod realisation;
mod serve;
mod server;
mod stall;
mod stepper;
mod zerocopy;

use std::sync::Arc;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

/// Allocations at least this big get pages of their own from the kernel and give them back when freed.
///
/// glibc raises its mmap threshold to the size of every mapped block that is freed, so after a zstd
/// response (whose context allocates a few MiB) blocks of that size come from the heap arenas and stay
/// there after they are freed. Measured on /usr/include: RSS 41 -> 53 MB after two zstd responses, and
/// 62-65 MB peaks during 64 downloads after them; with a fixed threshold 41 MB and 52-53 MB. Buffers
/// the server reuses (NAR chunks of 80 KiB) stay below it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts, and
    // M_MMAP_THRESHOLD with a value in glibc's accepted range (at most 32 MiB) has no other effect.
    #[allow(unsafe_code)]
    let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if set != 1 {
        tracing::warn!(
            "could not fix the allocator's mmap threshold; freed memory may stay resident"
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() {}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    fix_mmap_threshold();
    let config = config::Config::load_from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .max_blocking_threads(app::blocking_threads(config.workers))
        .thread_name("harmonia-cache")
        .on_thread_park(narinfo::release_snapshot)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let metrics = metrics::install()?;
        let state = Arc::new(app::AppState::new(config, metrics)?);
        let router = app::router(state.clone());
        server::run(&state.config, router).await
    })
}
