//! One connection: the handshake, then requests until the client hangs up.
//!
//! Every operation ends with STDERR_LAST and its reply, or STDERR_ERROR; an error leaves the connection usable
//! whenever the request's data could be consumed to its end (framed streams are drained, raw NARs scanned to
//! their end). Only a stream we can no longer follow ends the connection, as in Nix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use harmonia_protocol::ProtocolError;
use harmonia_protocol::framed::FramedReader;
use harmonia_protocol::handshake::{ServerHandshake, TrustLevel, server_handshake};
use harmonia_protocol::multiple::MultipleReader;
use harmonia_protocol::nar::{NarPassthrough, read_tunneled_nar};
use harmonia_protocol::request::{
    AddToStoreRequest, AddToStoreResponse, Done, NoReply, Op, QueryMissingResponse,
    QueryPathInfoResponse, QueryRealisationResponse, RegisterDrvOutputRequest, Request,
    read_request,
};
use harmonia_protocol::stderr::{NixError, StderrMsg};
use harmonia_protocol::types::{UnkeyedValidPathInfo, ValidPathInfo as WireInfo};
use harmonia_protocol::version::{PROTOCOL_VERSION, ProtocolVersion};
use harmonia_protocol::wire::{NixReader, NixSerialize, NixWriter};
use harmonia_store_db::ValidPathInfo;
use harmonia_store_path::{StorePath, StorePathHash};
use harmonia_utils_hash::Algorithm;
use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tracing::{Instrument, debug, debug_span, warn};

use crate::auth::{Access, Peer};
use crate::server::Daemon;
use crate::store::{AddOptions, CaMethod, CaSource, LocalStore, StoreError};

/// A client that does not finish the handshake in this time is dropped (it holds a socket meanwhile).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

type Reader = NixReader<BufReader<OwnedReadHalf>>;
type Writer = NixWriter<OwnedWriteHalf>;

/// How an operation failed.
enum OpError {
    /// Tell the client; the connection goes on.
    Client(String),
    /// Tell the client if possible, then close: the stream cannot be followed any more.
    Fatal(anyhow::Error),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Client(e.to_string())
    }
}

impl From<ProtocolError> for OpError {
    fn from(e: ProtocolError) -> Self {
        OpError::Fatal(e.into())
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
        OpError::Fatal(e.into())
    }
}

type OpResult = Result<(), OpError>;

/// The connection's state.
struct Conn<'a> {
    store: &'a LocalStore,
    r: Reader,
    w: Writer,
    trusted: bool,
    peer: &'a Peer,
    /// Temporary GC roots of this connection (kept for when garbage collection arrives).
    temp_roots: BTreeSet<StorePath>,
}

/// Serves one client until it hangs up.
pub async fn run(
    daemon: &Daemon,
    stream: UnixStream,
    peer: &Peer,
    access: Access,
) -> anyhow::Result<()> {
    let store = &daemon.store;
    let (rd, wr) = stream.into_split();
    let sd = store.store_dir().clone();
    let mut r = NixReader::new(
        BufReader::with_capacity(64 << 10, rd),
        PROTOCOL_VERSION,
        sd.clone(),
    );
    let mut w = NixWriter::new(wr, PROTOCOL_VERSION, sd);
    let info = ServerHandshake {
        version: PROTOCOL_VERSION,
        nix_version: format!("harmonia-daemon {}", env!("CARGO_PKG_VERSION")),
        trust: if access == Access::Trusted {
            TrustLevel::Trusted
        } else {
            TrustLevel::NotTrusted
        },
        features: BTreeSet::new(),
    };
    let negotiated =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, server_handshake(&mut r, &mut w, &info))
            .await
            .context("handshake timed out")?
            .context("handshake failed")?;
    debug!(version = %negotiated.version, "handshake done");
    if access == Access::Denied {
        // Say why before hanging up, so that the user sees it instead of a bare "connection closed".
        if let Ok(Some(_)) = read_request(&mut r).await {
            w.write(&StderrMsg::Error(NixError::new(format!(
                "user '{}' is not allowed to connect to the Nix daemon",
                peer.user
            ))));
            w.flush().await?;
        }
        return Ok(());
    }
    let mut conn = Conn {
        store,
        r,
        w,
        trusted: access == Access::Trusted,
        peer,
        temp_roots: BTreeSet::new(),
    };
    loop {
        let req = match read_request(&mut conn.r).await {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(()),
            Err(e) => {
                // Unknown op codes and unparsable requests: the stream cannot be followed any more. Say so
                // (unless the client is gone), then close, as Nix does.
                if !e.is_eof() {
                    conn.w
                        .write(&StderrMsg::Error(NixError::new(e.to_string())));
                    let _ = conn.w.flush().await;
                }
                return Err(e.into());
            }
        };
        let op = req.op();
        let span = debug_span!("op", op = op.name());
        match conn.handle(req).instrument(span).await {
            Ok(()) => {}
            Err(OpError::Client(msg)) => {
                debug!(op = op.name(), "refused: {msg}");
                conn.w.write(&StderrMsg::Error(NixError::new(msg)));
                conn.w.flush().await?;
            }
            Err(OpError::Fatal(e)) => {
                conn.w
                    .write(&StderrMsg::Error(NixError::new(format!("{e:#}"))));
                let _ = conn.w.flush().await;
                return Err(e.context(format!("during {}", op.name())));
            }
        }
    }
}

fn to_wire_info(info: ValidPathInfo) -> (StorePath, UnkeyedValidPathInfo) {
    let ca = info.ca.as_deref().and_then(|s| match s.parse() {
        Ok(ca) => Some(ca),
        Err(e) => {
            warn!(path = %info.path, "ignoring unparsable content address {s:?} in the database: {e}");
            None
        }
    });
    (
        info.path,
        UnkeyedValidPathInfo {
            deriver: info.deriver,
            nar_hash: info.nar_hash,
            references: info.references.into_iter().collect(),
            registration_time: info.registration_time.max(0) as u64,
            nar_size: info.nar_size,
            ultimate: info.ultimate,
            signatures: info.signatures.into_iter().collect(),
            ca,
        },
    )
}

fn from_wire_info(info: WireInfo, trusted: bool) -> ValidPathInfo {
    let i = info.info;
    ValidPathInfo {
        path: info.path,
        nar_hash: i.nar_hash,
        nar_size: i.nar_size,
        registration_time: 0,
        deriver: i.deriver,
        // Only a trusted client may claim a path was built locally.
        ultimate: trusted && i.ultimate,
        signatures: i.signatures.into_iter().collect(),
        ca: i.ca.map(|c| c.to_string()),
        references: i.references.into_iter().collect(),
    }
}

/// Parses Nix's content-address method with algorithm ("text:sha256", "fixed:r:sha256", "fixed:sha1").
fn parse_method_algo(s: &str) -> Result<(CaMethod, Algorithm), OpError> {
    let bad = || OpError::Client(format!("unsupported content-address method {s:?}"));
    let (method, algo) = if let Some(a) = s.strip_prefix("text:") {
        (CaMethod::Text, a)
    } else if let Some(a) = s.strip_prefix("fixed:r:") {
        (CaMethod::Recursive, a)
    } else if let Some(a) = s.strip_prefix("fixed:") {
        (CaMethod::Flat, a)
    } else {
        return Err(bad());
    };
    let algo: Algorithm = algo.parse().map_err(|_| bad())?;
    Ok((method, algo))
}

impl Conn<'_> {
    fn version(&self) -> ProtocolVersion {
        self.r.version()
    }

    fn path_str(&self, p: &StorePath) -> String {
        self.store.store_dir().display(p)
    }

    /// STDERR_LAST and the reply.
    async fn reply<T: NixSerialize + ?Sized>(&mut self, v: &T) -> OpResult {
        self.w.write(&StderrMsg::Last);
        self.w.write(v);
        self.w.flush().await?;
        Ok(())
    }

    fn require_trusted(&self, what: &str) -> OpResult {
        if self.trusted {
            Ok(())
        } else {
            Err(OpError::Client(format!(
                "you are not privileged to {what} (user '{}' is not in `trusted_users`)",
                self.peer.user
            )))
        }
    }

    fn unsupported(op: Op) -> OpError {
        OpError::Client(format!(
            "operation {} is not supported by harmonia-daemon yet (builds and garbage collection come later)",
            op.name()
        ))
    }

    async fn handle(&mut self, req: Request) -> OpResult {
        let store = self.store;
        let op = req.op();
        match req {
            Request::SetOptions(o) => {
                debug!(
                    verbosity = o.verbosity,
                    overrides = o.overrides.len(),
                    "client options"
                );
                self.reply(&NoReply).await
            }
            Request::IsValidPath(r) => {
                let v = store.is_valid_path(r.path).await?;
                self.reply(&v).await
            }
            Request::QueryValidPaths(r) => {
                let valid: BTreeSet<StorePath> = store
                    .query_valid_paths(r.paths.into_iter().collect())
                    .await?
                    .into_iter()
                    .collect();
                self.reply(&valid).await
            }
            Request::QueryPathInfo(r) => {
                let info = store.query_path_info(r.path).await?;
                self.reply(&QueryPathInfoResponse(info.map(|i| to_wire_info(i).1)))
                    .await
            }
            Request::QueryPathFromHashPart(r) => {
                let found = match r.hash_part.0.parse::<StorePathHash>() {
                    Ok(h) => store.query_path_from_hash_part(h).await?,
                    Err(_) => None,
                };
                self.reply(&found).await
            }
            Request::QueryAllValidPaths(_) => {
                let all: BTreeSet<StorePath> =
                    store.query_all_valid_paths().await?.into_iter().collect();
                self.reply(&all).await
            }
            Request::QueryReferrers(r) => {
                let v: BTreeSet<StorePath> =
                    store.query_referrers(r.path).await?.into_iter().collect();
                self.reply(&v).await
            }
            Request::QueryValidDerivers(r) => {
                let v: BTreeSet<StorePath> = store
                    .query_valid_derivers(r.path)
                    .await?
                    .into_iter()
                    .collect();
                self.reply(&v).await
            }
            Request::QueryDeriver(r) => {
                let d = store.query_path_info(r.path).await?.and_then(|i| i.deriver);
                self.reply(&d).await
            }
            Request::QueryDerivationOutputMap(r) => {
                let map: BTreeMap<String, Option<StorePath>> = store
                    .query_derivation_outputs(r.path)
                    .await?
                    .into_iter()
                    .map(|(name, p)| (name, Some(p)))
                    .collect();
                self.reply(&map).await
            }
            Request::QueryDerivationOutputs(r) => {
                let outs: BTreeSet<StorePath> = store
                    .query_derivation_outputs(r.path)
                    .await?
                    .into_iter()
                    .map(|(_, p)| p)
                    .collect();
                self.reply(&outs).await
            }
            Request::QueryDerivationOutputNames(r) => {
                let names: BTreeSet<String> = store
                    .query_derivation_outputs(r.path)
                    .await?
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                self.reply(&names).await
            }
            Request::QueryMissing(r) => {
                let resp = self.query_missing(r.targets).await?;
                self.reply(&resp).await
            }
            Request::QuerySubstitutablePaths(_) => {
                // No substituters: nothing is substitutable.
                self.reply(&BTreeSet::<StorePath>::new()).await
            }
            Request::QuerySubstitutablePathInfo(_) => {
                self.reply(&harmonia_protocol::request::QuerySubstitutablePathInfoResponse(None))
                    .await
            }
            Request::QuerySubstitutablePathInfos(_) => {
                let none: Vec<(StorePath, harmonia_protocol::request::SubstitutablePathInfo)> =
                    Vec::new();
                self.reply(&none).await
            }
            Request::NarFromPath(r) => self.nar_from_path(r.path).await,
            Request::AddToStoreNar(req) => {
                let opts = AddOptions {
                    repair: req.repair,
                    check_sigs: !(self.trusted && req.dont_check_sigs),
                };
                if req.repair {
                    self.require_trusted("repair paths")?;
                }
                let info = from_wire_info(req.info, self.trusted);
                if self.version() >= ProtocolVersion::new(1, 23) {
                    let mut framed = FramedReader::new(self.r.inner_mut());
                    let res = store.add_nar(info, &mut framed, opts).await;
                    // Whatever happened, read the stream to its end so the next request is in step.
                    framed.drain().await?;
                    res?;
                } else {
                    self.add_tunneled(info, opts).await?;
                }
                self.reply(&NoReply).await
            }
            Request::AddMultipleToStore(req) => {
                let opts = AddOptions {
                    repair: req.repair,
                    check_sigs: !(self.trusted && req.dont_check_sigs),
                };
                if req.repair {
                    // Consume the stream before refusing, so the connection stays usable.
                    MultipleReader::new(self.r.inner_mut(), store.store_dir().clone())
                        .finish()
                        .await?;
                    self.require_trusted("repair paths")?;
                }
                let trusted = self.trusted;
                let mut m = MultipleReader::new(self.r.inner_mut(), store.store_dir().clone());
                // Inline on this connection's thread; the batch registers paths in groups (see AddBatch).
                let mut batch = store.add_batch();
                let mut result = Ok(());
                let mut read_err = None;
                loop {
                    let info = match batch.while_waiting(m.next_info()).await {
                        Ok(Some(info)) => from_wire_info(info, trusted),
                        Ok(None) => break,
                        Err(e) => {
                            read_err = Some(e);
                            break;
                        }
                    };
                    if let Err(e) = batch.add(info, m.nar(), opts).await {
                        result = Err(e);
                        break;
                    }
                }
                // Whatever happened, the paths verified so far become valid, as Nix's per-path adds would.
                let registered = batch.finish();
                if let Some(e) = read_err {
                    return Err(e.into());
                }
                result = result.and(registered);
                // Also after an error (possibly inside a NAR): read the frames to their end.
                m.finish().await?;
                result?;
                self.reply(&NoReply).await
            }
            Request::AddToStore(AddToStoreRequest::Ca {
                name,
                method_algo,
                references,
                repair,
            }) => {
                let parsed = parse_method_algo(&method_algo.0);
                let mut framed = FramedReader::new(self.r.inner_mut());
                let res = match parsed {
                    Ok((method, algo)) => {
                        let source = if method == CaMethod::Recursive {
                            CaSource::Nar
                        } else {
                            CaSource::Contents
                        };
                        store
                            .add_ca(
                                &name.0,
                                method,
                                algo,
                                references.into_iter().collect(),
                                source,
                                &mut framed,
                                repair && self.trusted,
                            )
                            .await
                            .map_err(OpError::from)
                    }
                    Err(e) => Err(e),
                };
                if res.is_err() {
                    framed.drain().await?;
                }
                let info = res?;
                let (path, info) = to_wire_info(info);
                self.reply(&AddToStoreResponse::Info(Box::new(WireInfo { path, info })))
                    .await
            }
            Request::AddToStore(AddToStoreRequest::Legacy {
                name,
                fixed,
                recursive,
                hash_algo,
            }) => {
                // Nix's compatibility rule: a non-fixed add is recursive sha256.
                let (method, algo) = if !fixed {
                    (CaMethod::Recursive, Algorithm::Sha256)
                } else {
                    let algo = hash_algo.0.parse::<Algorithm>();
                    let method = if recursive != 0 {
                        CaMethod::Recursive
                    } else {
                        CaMethod::Flat
                    };
                    match algo {
                        Ok(a) => (method, a),
                        Err(_) => {
                            let mut nar = NarPassthrough::new(self.r.inner_mut());
                            tokio::io::copy(&mut nar, &mut tokio::io::sink()).await?;
                            return Err(OpError::Client(format!(
                                "unknown hash algorithm {:?}",
                                hash_algo.0
                            )));
                        }
                    }
                };
                let mut nar = NarPassthrough::new(self.r.inner_mut());
                let res = store
                    .add_ca(
                        &name.0,
                        method,
                        algo,
                        Vec::new(),
                        CaSource::Nar,
                        &mut nar,
                        false,
                    )
                    .await;
                if res.is_err() {
                    // Follow the NAR to its end; if it is malformed we cannot, and the connection ends.
                    tokio::io::copy(&mut nar, &mut tokio::io::sink()).await?;
                }
                let info = res?;
                self.reply(&AddToStoreResponse::Path(info.path)).await
            }
            Request::AddTextToStore(r) => {
                let info = store
                    .add_text(
                        &r.name.0,
                        r.text.0,
                        r.references.into_iter().collect(),
                        false,
                    )
                    .await?;
                self.reply(&info.path).await
            }
            Request::EnsurePath(r) => {
                if store.is_valid_path(r.path.clone()).await? {
                    self.reply(&Done).await
                } else {
                    Err(OpError::Client(format!(
                        "path '{}' is not valid, and harmonia-daemon cannot substitute or build it",
                        self.path_str(&r.path)
                    )))
                }
            }
            Request::AddTempRoot(r) => {
                self.temp_roots.insert(r.path);
                self.reply(&Done).await
            }
            Request::AddIndirectRoot(r) => {
                store.add_indirect_root(&r.path).await?;
                self.reply(&Done).await
            }
            Request::AddPermRoot(r) => {
                self.require_trusted("create permanent GC roots")?;
                let root = store.add_perm_root(&r.path, &r.gc_root).await?;
                self.reply(&root).await
            }
            Request::FindRoots(_) => {
                let mut roots = store.find_roots().await?;
                for p in &self.temp_roots {
                    roots.push(("{temp}".to_owned(), p.clone()));
                }
                self.reply(&roots).await
            }
            Request::SyncWithGC(_) => self.reply(&Done).await,
            Request::AddSignatures(r) => {
                self.require_trusted("add signatures")?;
                store
                    .add_signatures(r.path, r.signatures.into_iter().collect())
                    .await?;
                self.reply(&Done).await
            }
            Request::VerifyStore(r) => {
                if r.repair {
                    return Err(OpError::Client(
                        "harmonia-daemon cannot repair paths yet; verify without --repair".into(),
                    ));
                }
                let problems = store.verify(r.check_contents).await?;
                for p in &problems {
                    self.w.write(&StderrMsg::Next(format!("{p}\n")));
                }
                let errors = !problems.is_empty();
                self.reply(&errors).await
            }
            Request::QueryRealisation(r) => {
                let found = store.query_realisation(r.id.0).await?;
                let resp = if self.version() < ProtocolVersion::new(1, 31) {
                    QueryRealisationResponse::OutPaths(
                        found.iter().map(|(p, _)| p.clone()).collect(),
                    )
                } else {
                    QueryRealisationResponse::Realisations(
                        found.into_iter().map(|(_, j)| j).collect(),
                    )
                };
                self.reply(&resp).await
            }
            Request::RegisterDrvOutput(r) => {
                self.require_trusted("register realisations")?;
                match r {
                    RegisterDrvOutputRequest::Legacy { id, out_path } => {
                        store.register_realisation_legacy(&id, out_path.0).await?
                    }
                    RegisterDrvOutputRequest::Realisation(json) => {
                        store.register_realisation_json(&json).await?
                    }
                }
                self.reply(&NoReply).await
            }
            Request::AddBuildLog(r) => {
                let trusted = self.trusted;
                let mut framed = FramedReader::new(self.r.inner_mut());
                let res = if trusted {
                    store.add_build_log(&r.drv_path.0, &mut framed).await
                } else {
                    Err(StoreError::Forbidden(
                        "you are not privileged to add logs".into(),
                    ))
                };
                if res.is_err() {
                    framed.drain().await?;
                }
                res?;
                self.reply(&Done).await
            }
            Request::BuildPaths(r) => {
                // Building what is already there is a no-op (`nix-store -r` of valid paths, `nix build` of
                // built outputs); anything that would need a build is refused.
                let missing = self.query_missing(r.paths).await?;
                if missing.will_build.is_empty() && missing.unknown.is_empty() {
                    self.reply(&Done).await
                } else {
                    Err(Self::unsupported(op))
                }
            }
            Request::BuildPathsWithResults(_)
            | Request::BuildDerivation(_)
            | Request::CollectGarbage(_)
            | Request::OptimiseStore(_) => Err(Self::unsupported(op)),
        }
    }
}

impl Conn<'_> {
    /// NarFromPath: STDERR_LAST, then the NAR raw, from the real store directory, with file contents sent
    /// by `sendfile` (see [`crate::nar_send`]).
    async fn nar_from_path(&mut self, path: StorePath) -> OpResult {
        use harmonia_file_nar::NarPiece;
        if !self.store.is_valid_path(path.clone()).await? {
            return Err(OpError::Client(format!(
                "path '{}' is not valid",
                self.path_str(&path)
            )));
        }
        let mut pieces = crate::nar_send::pieces(self.store.real_path(&path));
        // Take the first piece before committing to success, so a path that vanished from disk is an
        // ordinary error rather than a broken stream.
        let first = match pieces.next() {
            Some(Ok(piece)) => Some(piece),
            Some(Err(e)) => {
                return Err(OpError::Client(format!(
                    "cannot read '{}': {e}",
                    self.path_str(&path)
                )));
            }
            None => None,
        };
        self.w.write(&StderrMsg::Last);
        crate::nar_send::widen_send_buffer(self.w.inner_mut().as_ref());
        for piece in first.into_iter().map(Ok).chain(pieces) {
            // Mid-stream the client is parsing a NAR: an error can only end the connection.
            match piece.map_err(|e| OpError::Fatal(anyhow::Error::new(e)))? {
                NarPiece::Bytes(bytes) => self.w.write_raw_now(&bytes).await?,
                NarPiece::File(segment) => {
                    self.w.write_raw_now(&[]).await?;
                    crate::nar_send::send_segment(self.w.inner_mut().as_ref(), segment).await?;
                }
            }
        }
        self.w.flush().await?;
        Ok(())
    }

    /// AddToStoreNar at 1.21/1.22: the daemon pulls the NAR with STDERR_READ while the store consumes it.
    async fn add_tunneled(&mut self, info: ValidPathInfo, opts: AddOptions) -> OpResult {
        let (tx, rx) = tokio::io::duplex(256 << 10);
        let store = self.store;
        let (r, w) = (&mut self.r, &mut self.w);
        let pull = async move {
            let mut tx = tx;
            read_tunneled_nar(r, w, &mut tx).await
        };
        let add = async move {
            let mut rx = rx;
            let added = store.add_nar(info, &mut rx, opts).await;
            // Keep taking what the client sends even after a refusal, so the session stays in step.
            let _ = tokio::io::copy(&mut rx, &mut tokio::io::sink()).await;
            added
        };
        let (added, pulled) = tokio::join!(add, pull);
        match (added, pulled) {
            (Ok(()), Ok(_)) => Ok(()),
            // The whole NAR came through: the connection is in step, only the add failed.
            (Err(e), Ok(_)) => Err(e.into()),
            (_, Err(e)) => Err(OpError::Fatal(e.into())),
        }
    }

    /// QueryMissing without substituters or builds: invalid derivation outputs would be built (when the
    /// derivation is valid), any other invalid path is unknown.
    async fn query_missing(&self, targets: Vec<String>) -> Result<QueryMissingResponse, OpError> {
        let store = self.store;
        let mut resp = QueryMissingResponse::default();
        for t in targets {
            let (path_part, outputs) = match t.split_once('!') {
                Some((p, o)) => (p, Some(o)),
                None => (t.as_str(), None),
            };
            let path = store
                .store_dir()
                .parse_path(path_part)
                .map_err(|e| OpError::Client(format!("invalid derived path {t:?}: {e}")))?;
            match outputs {
                None => {
                    if !store.is_valid_path(path.clone()).await? {
                        resp.unknown.insert(path);
                    }
                }
                Some(wanted) => {
                    if !store.is_valid_path(path.clone()).await? {
                        resp.unknown.insert(path);
                        continue;
                    }
                    let outs = store.query_derivation_outputs(path.clone()).await?;
                    let selected: Vec<StorePath> = outs
                        .into_iter()
                        .filter(|(name, _)| wanted == "*" || wanted.split(',').any(|w| w == name))
                        .map(|(_, p)| p)
                        .collect();
                    let valid = store.query_valid_paths(selected.clone()).await?;
                    if selected.is_empty() || valid.len() < selected.len() {
                        resp.will_build.insert(path);
                    }
                }
            }
        }
        Ok(resp)
    }
}

/// Whether `p` is a sane absolute path for a GC root link.
pub(crate) fn is_absolute_clean(p: &str) -> bool {
    Path::new(p).is_absolute() && !p.split('/').any(|c| c == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_algo() {
        assert!(matches!(
            parse_method_algo("fixed:r:sha256"),
            Ok((CaMethod::Recursive, Algorithm::Sha256))
        ));
        assert!(matches!(
            parse_method_algo("fixed:sha1"),
            Ok((CaMethod::Flat, Algorithm::Sha1))
        ));
        assert!(matches!(
            parse_method_algo("text:sha256"),
            Ok((CaMethod::Text, Algorithm::Sha256))
        ));
        assert!(parse_method_algo("fixed:git:sha1").is_err());
        assert!(parse_method_algo("bogus").is_err());
    }
}
