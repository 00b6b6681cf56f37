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

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = config::Config::load_from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .max_blocking_threads(app::blocking_threads(config.workers))
        .thread_name("harmonia-cache")
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
