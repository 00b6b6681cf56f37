//! Listeners (TCP, unix socket, TLS) and the per-connection HTTP driver.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::config::{Bind, Config, TlsPaths};
use crate::stall::StallTimeout;
use crate::zerocopy::{SpliceIo, SpliceQueue, SpliceTarget};

/// How long a client may take to send a request head (also bounds idle keep-alive connections).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a response write may make no progress before the connection is dropped.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long SIGTERM/SIGINT waits for responses in flight before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Largest request head we buffer; Nix's requests are a few hundred bytes.
const MAX_READ_BUF: usize = 64 * 1024;

/// Serves `router` on the configured address until SIGINT/SIGTERM.
pub async fn run(config: &Config, router: Router) -> Result<()> {
    let tls = config.tls.as_ref().map(load_tls).transpose()?;
    let permits = Arc::new(Semaphore::new(
        config.workers.saturating_mul(config.max_connection_rate),
    ));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let graceful = GracefulShutdown::new();
    match &config.bind {
        Bind::Tcp(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}: change `bind`"))?;
            tracing::info!(
                "listening on {}{}",
                if tls.is_some() { "https://" } else { "http://" },
                listener.local_addr().unwrap_or(*addr)
            );
            loop {
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => p.context("connection limiter closed")?,
                    () = &mut shutdown => break,
                };
                let (stream, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(v) => v,
                        Err(e) => { accept_error(e).await; continue; }
                    },
                    () = &mut shutdown => break,
                };
                // Small responses (narinfo) must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                tracing::trace!(%peer, "accepted");
                spawn_connection(stream, &router, tls.as_ref(), permit, graceful.watcher());
            }
        }
        Bind::Unix(path) => {
            remove_stale_socket(path)?;
            let listener = UnixListener::bind(path).with_context(|| {
                format!(
                    "cannot listen on unix socket {}: change `bind`",
                    path.display()
                )
            })?;
            tracing::info!("listening on unix:{}", path.display());
            loop {
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => p.context("connection limiter closed")?,
                    () = &mut shutdown => break,
                };
                let stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => { accept_error(e).await; continue; }
                    },
                    () = &mut shutdown => break,
                };
                spawn_connection(stream, &router, tls.as_ref(), permit, graceful.watcher());
            }
            let _ = std::fs::remove_file(path);
        }
    }
    // Stop accepting, let responses in flight finish (idle keep-alive connections close at once).
    tracing::info!(
        connections = graceful.count(),
        "shutting down: draining connections for up to {}s",
        SHUTDOWN_GRACE.as_secs()
    );
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    Ok(())
}

async fn accept_error(e: std::io::Error) {
    // Usually EMFILE/ENFILE: back off instead of spinning.
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display())),
        Ok(_) => Err(anyhow!(
            "{} exists and is not a socket: change `bind` or remove it",
            path.display()
        )),
        Err(_) => Ok(()),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

/// Serves one accepted connection on a task of its own: HTTPS when `tls` is set, else plain HTTP/1.1
/// whose NAR bodies may be spliced straight to the socket (see [`crate::zerocopy`]).
fn spawn_connection<S>(
    stream: S,
    router: &Router,
    tls: Option<&TlsAcceptor>,
    permit: OwnedSemaphorePermit,
    watcher: Watcher,
) where
    S: SpliceTarget + Send + 'static,
{
    let router = router.clone();
    let tls = tls.cloned();
    tokio::spawn(async move {
        let _permit = permit;
        match tls {
            None => {
                let queue = SpliceQueue::default();
                let stream =
                    StallTimeout::new(SpliceIo::new(stream, queue.clone()), WRITE_STALL_TIMEOUT);
                serve_http1(stream, router, Some(queue), watcher).await;
            }
            Some(acceptor) => {
                let stream = StallTimeout::new(stream, WRITE_STALL_TIMEOUT);
                let stream = match tokio::time::timeout(
                    TLS_HANDSHAKE_TIMEOUT,
                    acceptor.accept(stream),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                if h2 {
                    serve_http2(stream, router, watcher).await;
                } else {
                    serve_http1(stream, router, None, watcher).await;
                }
            }
        }
    });
}

/// Serves HTTP/1.1 on `stream`; with `splice`, handlers find the connection's [`SpliceQueue`] in the
/// request's extensions.
async fn serve_http1<S>(stream: S, router: Router, splice: Option<SpliceQueue>, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::ServiceExt::map_request(
        router,
        move |mut req: http::Request<hyper::body::Incoming>| {
            if let Some(queue) = &splice {
                req.extensions_mut().insert(queue.clone());
            }
            req
        },
    );
    let svc = TowerToHyperService::new(svc);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        // Queue body chunks instead of copying them into one buffer: the zero-copy NAR bodies depend on
        // their chunks reaching the socket wrapper as they are.
        .writev(true)
        .max_buf_size(MAX_READ_BUF);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection ended with an error: {e}");
    }
}

async fn serve_http2<S>(stream: S, router: Router, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("HTTP/2 connection ended with an error: {e}");
    }
}

/// Reads the PEM certificate chain and private key (PKCS#8, RSA or SEC1).
fn load_tls(paths: &TlsPaths) -> Result<TlsAcceptor> {
    let cert_pem = std::fs::read(&paths.cert).with_context(|| {
        format!(
            "cannot read the TLS certificate {}: fix `tls_cert_path`",
            paths.cert.display()
        )
    })?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate", paths.cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "no certificate found in {}: `tls_cert_path` must name a PEM file",
            paths.cert.display()
        ));
    }
    let key_pem = std::fs::read(&paths.key).with_context(|| {
        format!(
            "cannot read the TLS key {}: fix `tls_key_path`",
            paths.key.display()
        )
    })?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("{} is not a PEM private key", paths.key.display()))?
        .ok_or_else(|| {
            anyhow!(
                "no PKCS#8, RSA or SEC1 private key found in {}: fix `tls_key_path`",
                paths.key.display()
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the TLS key {} does not fit the certificate {}",
                paths.key.display(),
                paths.cert.display()
            )
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
