//! A nix-daemon replacement that speaks the Nix worker protocol on a unix socket.

mod auth;
mod config;
mod nar_send;
mod server;
mod store;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use std::os::fd::AsFd;

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
    if args.stdio {
        return relay_stdio(&config.socket_path);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Every connection holds one thread of this pool (see `server::serve_on_own_thread`).
        .max_blocking_threads(MAX_CONNECTIONS)
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(async move {
        let store = store::LocalStore::open(&config).await?;
        let listener = server::bind_socket(&config.socket_path)?;
        let daemon = Arc::new(server::Daemon { config, store });
        server::serve(daemon, listener).await
    });
    // Connections still open after the grace period end with the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Connections served at once (each on its own thread); more wait in the accept queue.
const MAX_CONNECTIONS: usize = 1024;

/// Copies stdin to the daemon's socket and the socket to stdout until the daemon hangs up, with plain blocking
/// reads and writes of whatever arrives (nothing is held back).
fn relay_stdio(socket: &std::path::Path) -> Result<()> {
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to harmonia-daemon at {}", socket.display()))?;
    let mut to_daemon = stream.try_clone().context("cannot clone the socket")?;
    // Unbuffered files on the standard descriptors (std's Stdout is line-buffered, which would hold NAR data).
    let mut stdin = std::fs::File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot use stdin")?,
    );
    let mut stdout = std::fs::File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot use stdout")?,
    );
    // The client's stdin may stay open until the daemon hangs up, so this thread is not joined.
    std::thread::spawn(move || {
        let _ = pump(&mut stdin, &mut to_daemon);
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
    });
    let mut from_daemon = stream;
    pump(&mut from_daemon, &mut stdout).context("relaying the daemon's output")?;
    Ok(())
}

/// Writes everything `from` yields to `to` as soon as it arrives, until end of file.
fn pump(from: &mut impl std::io::Read, to: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
