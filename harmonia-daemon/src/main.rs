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
use tokio::io::AsyncWriteExt;

/// Command line: everything else lives in the config file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (see the README for every key); defaults apply when neither this nor the
    /// environment variable is given.
    #[arg(long, env = "HARMONIA_DAEMON_CONFIG")]
    config: Option<PathBuf>,
    /// Relay one worker-protocol session between stdin/stdout and the running daemon's socket (like
    /// `nix-daemon --stdio`), for clients that reach the daemon through a pipe, such as `ssh-ng://`.
    #[arg(long)]
    stdio: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    if args.stdio {
        return runtime.block_on(relay_stdio(config.socket_path));
    }
    runtime.block_on(async move {
        let store = store::LocalStore::open(&config).await?;
        let listener = server::bind_socket(&config.socket_path)?;
        let daemon = Arc::new(server::Daemon { config, store });
        server::serve(daemon, listener).await
    })
}

/// Copies stdin to the daemon's socket and the socket to stdout until both directions are done.
async fn relay_stdio(socket: PathBuf) -> Result<()> {
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| format!("cannot connect to harmonia-daemon at {}", socket.display()))?;
    let (mut from_daemon, mut to_daemon) = stream.into_split();
    let upstream = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut to_daemon).await?;
        to_daemon.shutdown().await
    };
    let downstream = async {
        let mut stdout = tokio::io::stdout();
        tokio::io::copy(&mut from_daemon, &mut stdout).await?;
        stdout.flush().await
    };
    // The session is over when the daemon hangs up; the client's stdin may stay open until then.
    tokio::select! {
        r = downstream => r.context("relaying the daemon's output")?,
        r = async { upstream.await?; std::future::pending::<std::io::Result<()>>().await } => {
            r.context("relaying the client's input")?
        }
    }
    Ok(())
}
