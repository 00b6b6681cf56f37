//! A worker protocol client over any byte stream (a unix socket to a daemon, or an
//! in-memory duplex in tests): handshake, typed calls, NarFromPath and AddToStoreNar.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use harmonia_store_path::{StoreDir, StorePath};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{ProtocolError, Result};
use crate::framed::FramedWriter;
use crate::handshake::{ClientHandshake, Negotiated, client_handshake};
use crate::multiple::MultipleWriter;
use crate::nar::NarPassthrough;
use crate::request::{
    AddBuildLogRequest, AddMultipleToStoreRequest, AddToStoreNarRequest, AddToStoreRequest,
    AddToStoreResponse, Done, Operation, QueryPathFromHashPartRequest, QueryPathInfoResponse,
    QueryValidPathsRequest, SetOptionsRequest, typed,
};
use crate::stderr::StderrMsg;
use crate::types::{StorePathBase, UnkeyedValidPathInfo, ValidPathInfo};
use crate::version::{PROTOCOL_VERSION, ProtocolVersion};
use crate::wire::{MAX_STRING, NixReader, NixWriter};

/// How many stderr messages a client keeps for [`Client::take_messages`].
const MAX_KEPT_MESSAGES: usize = 10_000;

/// A connected, handshaken worker protocol client.
#[derive(Debug)]
pub struct Client<R, W> {
    reader: NixReader<R>,
    writer: NixWriter<W>,
    negotiated: Negotiated,
    messages: Vec<StderrMsg>,
}

/// A client over a unix socket.
pub type UnixClient = Client<BufReader<OwnedReadHalf>, OwnedWriteHalf>;

impl UnixClient {
    /// Connects to the daemon socket at `path` and performs the handshake offering
    /// `version` (normally [`PROTOCOL_VERSION`]).
    pub async fn connect(
        path: &Path,
        store_dir: StoreDir,
        version: ProtocolVersion,
    ) -> Result<Self> {
        let stream = UnixStream::connect(path).await?;
        let (r, w) = stream.into_split();
        Client::handshake(
            BufReader::new(r),
            w,
            store_dir,
            &ClientHandshake {
                version,
                ..ClientHandshake::default()
            },
        )
        .await
    }
}

impl<R, W> Client<R, W>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Performs the handshake on an established stream.
    pub async fn handshake(
        r: R,
        w: W,
        store_dir: StoreDir,
        offer: &ClientHandshake,
    ) -> Result<Self> {
        let mut reader = NixReader::new(r, PROTOCOL_VERSION, store_dir.clone());
        let mut writer = NixWriter::new(w, PROTOCOL_VERSION, store_dir);
        let negotiated = client_handshake(&mut reader, &mut writer, offer).await?;
        Ok(Self {
            reader,
            writer,
            negotiated,
            messages: Vec::new(),
        })
    }

    /// The negotiated version.
    pub fn version(&self) -> ProtocolVersion {
        self.negotiated.version
    }

    /// What the handshake established (daemon version, trust, features).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Log lines, activities and results received so far (oldest first).
    pub fn take_messages(&mut self) -> Vec<StderrMsg> {
        std::mem::take(&mut self.messages)
    }

    /// Reads the stderr channel up to STDERR_LAST; STDERR_ERROR becomes
    /// [`ProtocolError::Remote`]; STDERR_READ is answered from `source` if given.
    pub async fn process_stderr(
        &mut self,
        mut source: Option<&mut (dyn AsyncRead + Unpin + Send)>,
    ) -> Result<()> {
        loop {
            match self.reader.read::<StderrMsg>().await? {
                StderrMsg::Last => return Ok(()),
                StderrMsg::Error(e) => return Err(ProtocolError::Remote(e)),
                StderrMsg::Read(n) => {
                    let Some(src) = source.as_deref_mut() else {
                        return Err(ProtocolError::UnexpectedStderr("STDERR_READ"));
                    };
                    let want = n.min(MAX_STRING) as usize;
                    let mut buf = vec![0u8; want];
                    let got = src.read(&mut buf).await?;
                    self.writer.write_bytes(&buf[..got]);
                    self.writer.flush().await?;
                }
                StderrMsg::Write(_) => return Err(ProtocolError::UnexpectedStderr("STDERR_WRITE")),
                msg => {
                    tracing::debug!(?msg, "daemon message");
                    if self.messages.len() < MAX_KEPT_MESSAGES {
                        self.messages.push(msg);
                    }
                }
            }
        }
    }

    async fn send<O: Operation>(&mut self, req: &O) -> Result<()> {
        self.writer.write_u64(O::OP as u64);
        self.writer.write(req);
        self.writer.flush().await
    }

    /// Sends one operation, reads its stderr channel and its typed reply.
    pub async fn call<O: Operation>(&mut self, req: &O) -> Result<O::Response> {
        self.send(req).await?;
        self.process_stderr(None).await?;
        self.reader.read().await
    }

    /// SetOptions with Nix's defaults (what `nix` sends when nothing is configured).
    pub async fn set_options(&mut self, opts: &SetOptionsRequest) -> Result<()> {
        self.call(opts).await.map(|_| ())
    }

    /// IsValidPath.
    pub async fn is_valid_path(&mut self, path: &StorePath) -> Result<bool> {
        self.call(&typed::IsValidPath(path.clone())).await
    }

    /// QueryPathInfo: `None` if the path is not valid.
    pub async fn query_path_info(
        &mut self,
        path: &StorePath,
    ) -> Result<Option<UnkeyedValidPathInfo>> {
        let QueryPathInfoResponse(info) = self.call(&typed::QueryPathInfo(path.clone())).await?;
        Ok(info)
    }

    /// QueryValidPaths without substitution.
    pub async fn query_valid_paths(
        &mut self,
        paths: &BTreeSet<StorePath>,
    ) -> Result<BTreeSet<StorePath>> {
        self.call(&QueryValidPathsRequest {
            paths: paths.clone(),
            substitute: false,
        })
        .await
    }

    /// QueryAllValidPaths.
    pub async fn query_all_valid_paths(&mut self) -> Result<BTreeSet<StorePath>> {
        self.call(&typed::QueryAllValidPaths).await
    }

    /// QueryPathFromHashPart.
    pub async fn query_path_from_hash_part(
        &mut self,
        hash_part: &str,
    ) -> Result<Option<StorePath>> {
        self.call(&QueryPathFromHashPartRequest {
            hash_part: hash_part.into(),
        })
        .await
    }

    /// QueryReferrers.
    pub async fn query_referrers(&mut self, path: &StorePath) -> Result<BTreeSet<StorePath>> {
        self.call(&typed::QueryReferrers(path.clone())).await
    }

    /// QueryValidDerivers.
    pub async fn query_valid_derivers(&mut self, path: &StorePath) -> Result<BTreeSet<StorePath>> {
        self.call(&typed::QueryValidDerivers(path.clone())).await
    }

    /// QueryDerivationOutputMap.
    pub async fn query_derivation_output_map(
        &mut self,
        drv: &StorePath,
    ) -> Result<BTreeMap<String, Option<StorePath>>> {
        self.call(&typed::QueryDerivationOutputMap(drv.clone()))
            .await
    }

    /// NarFromPath: streams the NAR into `sink` and returns its size.
    pub async fn nar_from_path<S: AsyncWrite + Unpin>(
        &mut self,
        path: &StorePath,
        sink: &mut S,
    ) -> Result<u64> {
        self.send(&typed::NarFromPath(path.clone())).await?;
        self.process_stderr(None).await?;
        let mut nar = NarPassthrough::new(self.reader.inner_mut());
        // copy_buf hands the reader's buffer to the sink: no copy in between.
        let n = tokio::io::copy_buf(&mut nar, sink).await?;
        sink.flush().await?;
        Ok(n)
    }

    /// AddToStoreNar: sends the info and the NAR read from `nar` (framed from 1.23,
    /// through STDERR_READ before).
    pub async fn add_to_store_nar<N: AsyncRead + Unpin + Send>(
        &mut self,
        req: &AddToStoreNarRequest,
        nar: &mut N,
    ) -> Result<()> {
        self.send(req).await?;
        if self.version() >= ProtocolVersion::new(1, 23) {
            let sent = self.send_framed(nar).await;
            self.finish_upload(sent).await
        } else {
            self.process_stderr(Some(nar)).await
        }
    }

    async fn send_framed<N: AsyncRead + Unpin>(&mut self, data: &mut N) -> Result<()> {
        let mut framed = FramedWriter::new(self.writer.inner_mut());
        tokio::io::copy(data, &mut framed).await?;
        framed.shutdown().await?;
        Ok(())
    }

    /// After sending data: the daemon's verdict. If sending failed because the daemon
    /// gave up early (and said why), its error is more useful than a broken pipe.
    async fn finish_upload(&mut self, sent: Result<()>) -> Result<()> {
        match sent {
            Ok(()) => self.process_stderr(None).await,
            Err(send_err) => match self.process_stderr(None).await {
                Err(remote @ ProtocolError::Remote(_)) => Err(remote),
                _ => Err(send_err),
            },
        }
    }

    /// AddToStore: the CA form (1.25+) sends `data` framed, the legacy form sends it as
    /// is (it must be a NAR). Returns the reply of the negotiated version.
    pub async fn add_to_store<N: AsyncRead + Unpin + Send>(
        &mut self,
        req: &AddToStoreRequest,
        data: &mut N,
    ) -> Result<AddToStoreResponse> {
        self.send(req).await?;
        let sent = match req {
            AddToStoreRequest::Ca { .. } => self.send_framed(data).await,
            AddToStoreRequest::Legacy { .. } => {
                match tokio::io::copy(data, self.writer.inner_mut()).await {
                    Ok(_) => self.writer.flush().await,
                    Err(e) => Err(e.into()),
                }
            }
        };
        self.finish_upload(sent).await?;
        self.reader.read().await
    }

    /// AddBuildLog: stores `log` as the build log of `drv` (sent framed).
    pub async fn add_build_log<N: AsyncRead + Unpin + Send>(
        &mut self,
        drv: &StorePath,
        log: &mut N,
    ) -> Result<()> {
        self.send(&AddBuildLogRequest {
            drv_path: StorePathBase(drv.clone()),
        })
        .await?;
        let sent = self.send_framed(log).await;
        self.finish_upload(sent).await?;
        self.reader.read::<Done>().await.map(|_| ())
    }

    /// AddMultipleToStore: sends each path's info and NAR in one framed stream.
    pub async fn add_multiple_to_store<N: AsyncRead + Unpin>(
        &mut self,
        repair: bool,
        dont_check_sigs: bool,
        paths: &mut [(ValidPathInfo, N)],
    ) -> Result<()> {
        self.send(&AddMultipleToStoreRequest {
            repair,
            dont_check_sigs,
        })
        .await?;
        let store_dir = self.reader.store_dir().clone();
        let sent = send_multiple(self.writer.inner_mut(), store_dir, paths).await;
        self.finish_upload(sent).await
    }

    /// The reading half, for operations this type has no helper for.
    pub fn reader(&mut self) -> &mut NixReader<R> {
        &mut self.reader
    }

    /// The writing half, for operations this type has no helper for.
    pub fn writer(&mut self) -> &mut NixWriter<W> {
        &mut self.writer
    }
}

async fn send_multiple<W: AsyncWrite + Unpin + Send, N: AsyncRead + Unpin>(
    writer: W,
    store_dir: StoreDir,
    paths: &mut [(ValidPathInfo, N)],
) -> Result<()> {
    let mut m = MultipleWriter::begin(writer, store_dir, paths.len() as u64).await?;
    for (info, nar) in paths.iter_mut() {
        m.add(info, nar).await?;
    }
    m.finish().await?;
    Ok(())
}
