//! The real nix-daemon 2.8 as a byte-level oracle: at every version it speaks (1.21 to
//! 1.34) we record the exact bytes of its replies, decode them with our types, encode
//! them again and require the very same bytes. Any field we misplace, drop or pad
//! differently shows up here.

mod common;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use harmonia_protocol::client::Client;
use harmonia_protocol::handshake::ClientHandshake;
use harmonia_protocol::request::{
    Operation, QueryPathFromHashPartRequest, QueryValidPathsRequest, SetOptionsRequest, typed,
};
use harmonia_protocol::stderr::StderrMsg;
use harmonia_protocol::{Encoder, NixSerialize, ProtocolError, ProtocolVersion};
use harmonia_store_path::{StoreDir, StorePath};
use harmonia_test_support::{standard_fixture, wait_for_path};
use tokio::io::{AsyncRead, BufReader, ReadBuf};
use tokio::net::UnixStream;

/// Records every byte read through it.
struct Recording<R> {
    inner: R,
    log: Arc<Mutex<Vec<u8>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Recording<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            this.log
                .lock()
                .unwrap()
                .extend_from_slice(&buf.filled()[before..]);
        }
        res
    }
}

fn take(log: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    std::mem::take(&mut *log.lock().unwrap())
}

fn sp(full: &str) -> StorePath {
    StoreDir::default().parse_path(full).unwrap()
}

type Conn =
    Client<BufReader<Recording<tokio::net::unix::OwnedReadHalf>>, tokio::net::unix::OwnedWriteHalf>;

/// Calls `req`, and checks that LAST + encode(decoded reply) is exactly what came in.
async fn check<O: Operation>(c: &mut Conn, log: &Arc<Mutex<Vec<u8>>>, req: &O) -> O::Response
where
    O::Response: std::fmt::Debug,
{
    take(log);
    c.take_messages();
    let resp = c.call(req).await.unwrap();
    let raw = take(log);
    let mut enc = Encoder::new(c.version(), StoreDir::default());
    for m in c.take_messages() {
        enc.write(&m);
    }
    enc.write(&StderrMsg::Last);
    resp.serialize(&mut enc);
    assert_eq!(
        enc.buffer(),
        &raw[..],
        "{:?} at {}: re-encoded reply differs from nix-daemon's bytes",
        O::OP,
        c.version()
    );
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_re_encode_to_nix_daemon_bytes() {
    if std::process::Command::new("nix-daemon")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: nix-daemon is not installed");
        return;
    }
    let fx = standard_fixture();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let child = fx
        .store
        .nix("nix-daemon")
        .arg("--store")
        .arg(fx.store.root())
        .env("NIX_DAEMON_SOCKET_PATH", &socket)
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child);
    assert!(wait_for_path(&socket, Duration::from_secs(20)));

    let top = sp(&fx.paths.top);
    let bogus = sp("/nix/store/00000000000000000000000000000000-nope");
    for minor in [21u8, 22, 23, 25, 26, 27, 29, 31, 32, 33, 34] {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (r, w) = UnixStream::connect(&socket).await.unwrap().into_split();
        let offer = ClientHandshake {
            version: ProtocolVersion::new(1, minor),
            features: BTreeSet::new(),
        };
        let mut c: Conn = Client::handshake(
            BufReader::new(Recording {
                inner: r,
                log: log.clone(),
            }),
            w,
            StoreDir::default(),
            &offer,
        )
        .await
        .unwrap();
        // The daemon's handshake bytes: magic, its version, (1.33+) its Nix version, LAST.
        let raw = take(&log);
        let mut expected = Encoder::new(c.version(), StoreDir::default());
        expected.write_u64(0x6478696f);
        expected.write_u64(0x122);
        if minor >= 33 {
            expected.write_str(c.negotiated().daemon_nix_version.as_deref().unwrap());
        }
        expected.write(&StderrMsg::Last);
        assert_eq!(expected.buffer(), &raw[..], "handshake at 1.{minor}");

        check(
            &mut c,
            &log,
            &SetOptionsRequest {
                use_build_hook: 1,
                ..Default::default()
            },
        )
        .await;
        let info = check(&mut c, &log, &typed::QueryPathInfo(top.clone())).await;
        assert!(info.0.is_some());
        check(&mut c, &log, &typed::QueryPathInfo(bogus.clone())).await;
        check(&mut c, &log, &typed::QueryPathInfo(sp(&fx.paths.text_file))).await;
        check(&mut c, &log, &typed::IsValidPath(top.clone())).await;
        check(&mut c, &log, &typed::QueryAllValidPaths).await;
        check(
            &mut c,
            &log,
            &QueryValidPathsRequest {
                paths: [top.clone(), bogus.clone()].into(),
                substitute: false,
            },
        )
        .await;
        check(&mut c, &log, &typed::QueryReferrers(sp(&fx.paths.dep))).await;
        check(&mut c, &log, &typed::QueryValidDerivers(top.clone())).await;
        check(
            &mut c,
            &log,
            &typed::QueryDerivationOutputMap(sp(&fx.paths.top_drv)),
        )
        .await;
        check(
            &mut c,
            &log,
            &QueryPathFromHashPartRequest {
                hash_part: top.hash().to_string().as_str().into(),
            },
        )
        .await;
        check(
            &mut c,
            &log,
            &QueryPathFromHashPartRequest {
                hash_part: "00000000000000000000000000000000".into(),
            },
        )
        .await;
        check(&mut c, &log, &typed::AddTempRoot(top.clone())).await;
        check(&mut c, &log, &typed::FindRoots).await;

        // An error (structured from 1.26, message and status before), preceded by the
        // activities Nix reports while trying to substitute; all re-encoded exactly.
        take(&log);
        c.take_messages();
        let err = c.call(&typed::EnsurePath(bogus.clone())).await.unwrap_err();
        let raw = take(&log);
        let ProtocolError::Remote(e) = err else {
            panic!("expected a daemon error, got {err}")
        };
        let mut enc = Encoder::new(c.version(), StoreDir::default());
        let msgs = c.take_messages();
        assert!(
            msgs.iter()
                .any(|m| matches!(m, StderrMsg::StartActivity { .. })),
            "{msgs:?}"
        );
        for m in msgs {
            enc.write(&m);
        }
        enc.write_error(&e);
        assert_eq!(enc.buffer(), &raw[..], "error at 1.{minor}");
        // And the connection is still in sync.
        check(&mut c, &log, &typed::IsValidPath(top.clone())).await;
    }
}

/// Stops the daemon even when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
