//! The unix-socket listener: safe socket creation, peer credentials, one task per connection, graceful shutdown.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::auth::{self, Access, Peer};
use crate::config::Config;
use crate::store::LocalStore;
use crate::worker;

/// How long running connections get to finish after SIGTERM/SIGINT before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State shared by every connection.
pub struct Daemon {
    /// The resolved configuration.
    pub config: Config,
    /// The store being served.
    pub store: LocalStore,
}

/// Creates the socket at `path`: its parent directory is created, a stale socket is removed (but never
/// anything that is not a socket, nor a socket a live daemon still answers on), and the mode is 0666 like
/// nix-daemon's so that every user can connect; `allowed_users` is what keeps people out.
pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create socket directory {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another daemon is already listening on {}: stop it or set `socket_path`",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket: remove it or set `socket_path`",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    Ok(listener)
}

/// Accepts connections until SIGTERM or SIGINT, then lets running connections finish for a short while.
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut conns = JoinSet::new();
    let mut next_id: u64 = 0;
    info!(socket = %daemon.config.socket_path.display(), "listening");
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_id += 1;
                    let span = info_span!("conn", id = next_id);
                    let d = daemon.clone();
                    conns.spawn_blocking(move || serve_on_own_thread(d, stream, span));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    if let Err(e) = std::fs::remove_file(&daemon.config.socket_path) {
        debug!("cannot remove socket: {e}");
    }
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        // Connection threads cannot be aborted; they end with the process (temporary paths of adds cut
        // short are removed at the next start).
        info!(
            "cutting {} connection(s) still open after the grace period",
            conns.len()
        );
    }
    Ok(())
}

/// Runs one connection on a thread of its own, with a single-threaded runtime, like nix-daemon's process per
/// connection.
///
/// Why not a task on the shared runtime: a request such as QueryPathInfo is one small SQLite read, and
/// handing it to `spawn_blocking` and back costs two cross-thread wake-ups, which made every query about
/// twice as slow as nix-daemon's. Here the connection's own thread runs its short database reads inline
/// ([`LocalStore::read`]): they can only delay this connection, never anyone else. So do the restores of
/// AddToStoreNar / AddMultipleToStore and NarFromPath's walk and `sendfile`s; AddToStore and AddTextToStore
/// still restore on the blocking pool.
fn serve_on_own_thread(daemon: Arc<Daemon>, stream: UnixStream, span: tracing::Span) {
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot move the connection to its thread: {e}");
            return;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!("cannot start a runtime for the connection: {e}");
            return;
        }
    };
    runtime.block_on(
        async move {
            match UnixStream::from_std(std_stream) {
                Ok(stream) => handle(daemon, stream).await,
                Err(e) => warn!("cannot register the connection: {e}"),
            }
        }
        .instrument(span),
    );
}

async fn handle(daemon: Arc<Daemon>, stream: UnixStream) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot read peer credentials: {e}");
            return;
        }
    };
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    let d = daemon.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        let peer = Peer::resolve(uid, gid, pid);
        let access = auth::access(&peer, &d.config.trusted_users, &d.config.allowed_users);
        (peer, access)
    })
    .await;
    let Ok((peer, access)) = resolved else {
        warn!("peer lookup task failed");
        return;
    };
    debug!(user = %peer.user, uid = peer.uid, pid = ?peer.pid, ?access, "accepted");
    if access == Access::Denied {
        warn!(user = %peer.user, "user is not allowed to connect");
    }
    match worker::run(&daemon, stream, &peer, access).await {
        Ok(()) => debug!("connection closed"),
        Err(e) => debug!("connection ended: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_replaces_stale_socket_but_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sub/socket");
        let l = bind_socket(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        // A live listener is not stolen.
        assert!(bind_socket(&sock).is_err());
        drop(l);
        // The stale socket left behind is replaced.
        let _l = bind_socket(&sock).unwrap();

        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = bind_socket(&file).unwrap_err();
        assert!(format!("{err:#}").contains("not a socket"));
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}
