//! The real Nix 2.8 client (protocol 1.34) against a toy daemon built only from this
//! crate's server side: `nix path-info --json` and `nix copy --to` through it must give
//! what the chroot store itself gives. This checks our handshake,
//! replies and AddMultipleToStore/AddToStoreNar reading against the
//! real client, independently of harmonia-daemon.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use harmonia_protocol::framed::FramedReader;
use harmonia_protocol::handshake::{ServerHandshake, TrustLevel, server_handshake};
use harmonia_protocol::multiple::MultipleReader;
use harmonia_protocol::request::*;
use harmonia_protocol::stderr::{NixError, STDERR_LAST};
use harmonia_protocol::types::UnkeyedValidPathInfo;
use harmonia_protocol::{
    Encoder, NixReader, NixWriter, PROTOCOL_VERSION, ProtocolError, read_request,
};
use harmonia_store_path::{StoreDir, StorePath};
use harmonia_test_support::{FixtureStore, standard_fixture};
use harmonia_utils_hash::NarHash;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

type Store = Arc<Mutex<BTreeMap<StorePath, (UnkeyedValidPathInfo, Vec<u8>)>>>;
type Ops = Arc<Mutex<Vec<Op>>>;
/// Requests whose bytes from the real client differ from our encoding of them.
type Mismatches = Arc<Mutex<Vec<String>>>;

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
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&buf.filled()[before..]);
        }
        res
    }
}

fn take(log: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()))
}

fn lock(
    store: &Store,
) -> std::sync::MutexGuard<'_, BTreeMap<StorePath, (UnkeyedValidPathInfo, Vec<u8>)>> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

async fn connection(
    stream: UnixStream,
    store: Store,
    ops: Ops,
    bad: Mismatches,
) -> Result<(), ProtocolError> {
    let (r, w) = stream.into_split();
    let dir = StoreDir::default();
    let log = Arc::new(Mutex::new(Vec::new()));
    let r = Recording {
        inner: r,
        log: log.clone(),
    };
    let mut r = NixReader::new(BufReader::new(r), PROTOCOL_VERSION, dir.clone());
    let mut w = NixWriter::new(w, PROTOCOL_VERSION, dir.clone());
    let info = ServerHandshake {
        version: PROTOCOL_VERSION,
        nix_version: "2.8.0".into(),
        trust: TrustLevel::Trusted,
        features: Default::default(),
    };
    let n = server_handshake(&mut r, &mut w, &info).await?;
    // The client's handshake: magic, version, CPU affinity 0, reserveSpace 0.
    let mut expected = Encoder::new(n.version, dir.clone());
    for x in [0x6e697863, n.peer_version.to_wire(), 0, 0] {
        expected.write_u64(x);
    }
    let raw = take(&log);
    if raw != expected.buffer() {
        bad.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("handshake: {raw:?}"));
    }
    while let Some(req) = read_request(&mut r).await? {
        ops.lock().unwrap_or_else(|e| e.into_inner()).push(req.op());
        // The real client waits for each reply, so for requests without data the bytes
        // read since the last reply are exactly this request: re-encoding must match.
        let raw = take(&log);
        if !matches!(
            req,
            Request::AddToStoreNar(_) | Request::AddMultipleToStore(_)
        ) {
            let mut enc = Encoder::new(r.version(), dir.clone());
            enc.write(&req);
            if raw != enc.buffer() {
                bad.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                    "{}: {raw:?} vs {:?}",
                    req.op(),
                    enc.buffer()
                ));
            }
        }
        match req {
            Request::SetOptions(_) => w.write_reply(&NoReply),
            Request::IsValidPath(PathRequest { path }) => {
                let valid = lock(&store).contains_key(&path);
                w.write_reply(&valid);
            }
            Request::EnsurePath(PathRequest { path }) => {
                if lock(&store).contains_key(&path) {
                    w.write_reply(&Done);
                } else {
                    w.write_error(&NixError::new(format!(
                        "path '{}' is not valid",
                        dir.display(&path)
                    )));
                }
            }
            Request::AddTempRoot(_) => w.write_reply(&Done),
            // Everything served here is valid: nothing is missing, "building" is a no-op.
            Request::QueryMissing(_) => w.write_reply(&QueryMissingResponse::default()),
            Request::BuildPaths(_) => w.write_reply(&Done),
            Request::QueryPathInfo(PathRequest { path }) => {
                let info = lock(&store).get(&path).map(|(i, _)| i.clone());
                w.write_reply(&QueryPathInfoResponse(info));
            }
            Request::QueryValidPaths(q) => {
                let s = lock(&store);
                let valid: std::collections::BTreeSet<StorePath> =
                    q.paths.into_iter().filter(|p| s.contains_key(p)).collect();
                w.write_reply(&valid);
            }
            Request::QueryAllValidPaths(_) => {
                let all: std::collections::BTreeSet<StorePath> =
                    lock(&store).keys().cloned().collect();
                w.write_reply(&all);
            }
            Request::NarFromPath(PathRequest { path }) => {
                let nar = lock(&store).get(&path).map(|(_, n)| n.clone());
                match nar {
                    Some(nar) => {
                        w.write_u64(STDERR_LAST);
                        w.write_raw_now(&nar).await?;
                    }
                    None => w.write_error(&NixError::new("not valid")),
                }
            }
            Request::AddToStoreNar(req) => {
                let mut nar = Vec::new();
                FramedReader::new(r.inner_mut())
                    .read_to_end(&mut nar)
                    .await?;
                add(&store, req.info.path, req.info.info, nar, &mut w);
            }
            Request::AddMultipleToStore(_) => {
                let mut m = MultipleReader::new(r.inner_mut(), dir.clone());
                let mut items = Vec::new();
                while let Some(i) = m.next_info().await? {
                    let mut nar = Vec::new();
                    m.nar().read_to_end(&mut nar).await?;
                    items.push((i, nar));
                }
                m.finish().await?;
                let mut ok = true;
                for (i, nar) in items {
                    ok &= add(&store, i.path, i.info, nar, &mut w);
                }
                if ok {
                    w.write_reply(&NoReply);
                }
            }
            other => w.write_error(&NixError::new(format!(
                "{} is not supported by the toy daemon",
                other.op()
            ))),
        }
        w.flush().await?;
        take(&log);
    }
    Ok(())
}

/// Checks the NAR against its claimed hash and size, as a real daemon must; writes the
/// error (and returns false) on mismatch, otherwise stores it (the caller replies).
fn add<W>(
    store: &Store,
    path: StorePath,
    info: UnkeyedValidPathInfo,
    nar: Vec<u8>,
    w: &mut NixWriter<W>,
) -> bool {
    if NarHash::digest_of(&nar) != info.nar_hash || nar.len() as u64 != info.nar_size {
        w.write_error(&NixError::new(format!(
            "hash mismatch importing path '{path}'"
        )));
        return false;
    }
    lock(store).insert(path, (info, nar));
    true
}

fn spawn_toy_daemon(socket: &Path, store: Store, bad: Mismatches) -> Ops {
    let listener = UnixListener::bind(socket).unwrap();
    let ops = Ops::default();
    let seen = ops.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            let ops = ops.clone();
            let bad = bad.clone();
            tokio::spawn(async move {
                if let Err(e) = connection(stream, store, ops, bad).await {
                    tracing::warn!("toy daemon connection: {e}");
                }
            });
        }
    });
    seen
}

fn nix(fx: &FixtureStore, args: &[&str]) -> std::process::Output {
    let mut cmd: Command = fx.nix(args[0]);
    cmd.args(&args[1..]);
    cmd.output().unwrap()
}

fn lock_ops(ops: &Ops) -> Vec<Op> {
    ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nix_client_talks_to_our_server_side() {
    if Command::new("nix").arg("--version").output().is_err() {
        eprintln!("SKIPPED: nix is not installed");
        return;
    }
    let fx = Arc::new(blocking(standard_fixture).await);
    let tmp = tempfile::tempdir().unwrap();

    // Serve the fixture's paths (info from `nix path-info --json`, NARs from
    // `nix-store --dump`).
    let full: Store = Arc::default();
    for p in &fx.paths.all {
        let j = fx.store.path_info(&[p]);
        let j = &j[0];
        let dir = StoreDir::default();
        let info = UnkeyedValidPathInfo {
            deriver: j["deriver"].as_str().map(|d| dir.parse_path(d).unwrap()),
            nar_hash: j["narHash"].as_str().unwrap().parse().unwrap(),
            references: j["references"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| dir.parse_path(r.as_str().unwrap()).unwrap())
                .collect(),
            registration_time: j["registrationTime"].as_u64().unwrap(),
            nar_size: j["narSize"].as_u64().unwrap(),
            ultimate: j["ultimate"].as_bool().unwrap_or(false),
            signatures: j["signatures"]
                .as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default(),
            ca: j["ca"].as_str().map(|c| c.parse().unwrap()),
        };
        lock(&full).insert(dir.parse_path(p).unwrap(), (info, fx.store.dump(p)));
    }
    let sock_full: PathBuf = tmp.path().join("full.sock");
    let bad = Mismatches::default();
    let read_ops = spawn_toy_daemon(&sock_full, full.clone(), bad.clone());
    let url = format!("unix://{}", sock_full.display());

    // nix path-info --json through our server == the store's own answer.
    // .drv paths are left out: given a .drv, `nix path-info` reads the derivation from
    // the logical /nix/store (unix:// stores are local-fs stores to the client).
    let all: Vec<String> = fx
        .paths
        .all
        .iter()
        .filter(|p| !p.ends_with(".drv"))
        .cloned()
        .collect();
    let (ours, theirs) = {
        let fx = fx.clone();
        let url = url.clone();
        blocking(move || {
            let mut args = vec!["nix", "path-info", "--json", "--store", &url];
            args.extend(all.iter().map(String::as_str));
            let ours = nix(&fx.store, &args);
            let root = fx.store.root().to_str().unwrap().to_string();
            let mut args = vec!["nix", "path-info", "--json", "--store", &root];
            args.extend(all.iter().map(String::as_str));
            (ours, nix(&fx.store, &args))
        })
        .await
    };
    assert!(
        ours.status.success(),
        "nix path-info via our server: {}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let ours: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
    let theirs: serde_json::Value = serde_json::from_slice(&theirs.stdout).unwrap();
    assert_eq!(ours, theirs);

    // Not tested here: `nix store dump-path --store unix://...` never sends NarFromPath;
    // Nix's unix:// store reads NARs from the local file system (`UDSRemoteStore`
    // overrides narFromPath with LocalFSStore's).

    // nix copy --to our (empty) server: the real client's upload path.
    let empty: Store = Arc::default();
    let sock_empty = tmp.path().join("empty.sock");
    let ops = spawn_toy_daemon(&sock_empty, empty.clone(), bad.clone());
    let to = format!("unix://{}", sock_empty.display());
    let top = fx.paths.top.clone();
    let out = {
        let fx = fx.clone();
        blocking(move || {
            let root = fx.store.root().to_str().unwrap().to_string();
            nix(
                &fx.store,
                &["nix", "copy", "--from", &root, "--to", &to, &top],
            )
        })
        .await
    };
    assert!(
        out.status.success(),
        "nix copy --to our server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = lock(&empty).clone();
    for p in [&fx.paths.top, &fx.paths.dep] {
        let sp = StoreDir::default().parse_path(p).unwrap();
        let (info, nar) = got.get(&sp).unwrap_or_else(|| panic!("{p} was not copied"));
        assert_eq!(nar, &fx.store.dump(p));
        assert_eq!(info.nar_size, nar.len() as u64);
    }
    // Nix 2.8 uploads with AddMultipleToStore to daemons >= 1.32.
    assert!(
        lock_ops(&ops).contains(&Op::AddMultipleToStore),
        "ops used: {:?}",
        lock_ops(&ops)
    );
    // Every request the real client sent re-encodes to its exact bytes.
    let seen: BTreeSet<Op> = lock_ops(&read_ops)
        .into_iter()
        .chain(lock_ops(&ops))
        .collect();
    for op in [Op::SetOptions, Op::QueryPathInfo, Op::QueryValidPaths] {
        assert!(seen.contains(&op), "{op} not exercised: {seen:?}");
    }
    let bad = bad.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(bad.is_empty(), "requests whose bytes differ: {bad:?}");
}
