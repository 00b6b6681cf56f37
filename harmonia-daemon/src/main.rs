//! A nix-daemon replacement that speaks the Nix worker protocol on a unix socket.

mod auth;
mod config;
mod server;
mod store;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;

/// Command line: everything else lives in the config file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (see the README for every key); defaults apply when neither this nor the
    /// environment variable is given.
    #[arg(long, env = "HARMONIA_DAEMON_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => config::Config::load(path)?,
        None => config::Config::parse("")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let store = store::LocalStore::open(&config).await?;
        let listener = server::bind_socket(&config.socket_path)?;
        let daemon = Arc::new(server::Daemon { config, store });
        server::serve(daemon, listener).await
    })
}
