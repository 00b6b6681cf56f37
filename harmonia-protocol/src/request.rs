//! Operations: their codes, typed requests and typed replies, version-aware.
//!
//! Layouts from Nix's `daemon.cc` (`performOp`) and `remote-store.cc`. Each request
//! struct implements [`Operation`], which names its op code and the type of its reply
//! (written after STDERR_LAST). Some operations carry data after the request (see each
//! type's docs): it is read with [`crate::framed::FramedReader`] or
//! [`crate::nar::NarPassthrough`] by the caller.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use harmonia_store_path::StorePath;
use tokio::io::AsyncRead;

use crate::error::{ProtocolError, Result};
use crate::nix_struct;
use crate::types::{Blob, ShortString, StorePathBase, UnkeyedValidPathInfo, ValidPathInfo};
use crate::version::ProtocolVersion;
use crate::wire::{Encoder, NixDeserialize, NixReader, NixSerialize};

/// An operation's request type: its code and the type of its reply.
pub trait Operation: NixSerialize + NixDeserialize {
    /// The operation code.
    const OP: Op;
    /// The reply written after STDERR_LAST ([`NoReply`] when there is none).
    type Response: NixSerialize + NixDeserialize;
}

/// The reply of operations that send nothing after STDERR_LAST (SetOptions,
/// AddMultipleToStore, RegisterDrvOutput, NarFromPath whose NAR follows raw).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoReply;

impl NixSerialize for NoReply {
    fn serialize(&self, _enc: &mut Encoder) {}
}

impl NixDeserialize for NoReply {
    async fn deserialize<R: AsyncRead + Unpin + Send>(_r: &mut NixReader<R>) -> Result<Self> {
        Ok(NoReply)
    }
}

/// The `1` many operations answer to say "done" (Nix writes `conn.to << 1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Done;

impl NixSerialize for Done {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_u64(1);
    }
}

impl NixDeserialize for Done {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        r.read_u64().await?;
        Ok(Done)
    }
}

macro_rules! ops {
    ($( $(#[$m:meta])* $name:ident = $code:literal => $req:ty ),* $(,)?) => {
        /// A worker protocol operation code (Nix's `WorkerProto::Op`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u64)]
        pub enum Op {
            $( $(#[$m])* $name = $code, )*
        }

        impl Op {
            /// The code for a number, if known.
            pub fn from_u64(v: u64) -> Option<Op> {
                match v {
                    $( $code => Some(Op::$name), )*
                    _ => None,
                }
            }

            /// Nix's name for the operation.
            pub fn name(self) -> &'static str {
                match self {
                    $( Op::$name => stringify!($name), )*
                }
            }
        }

        /// A request of any operation, as read by a server.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $( $(#[$m])* $name($req), )*
        }

        impl Request {
            /// The operation code.
            pub fn op(&self) -> Op {
                match self {
                    $( Request::$name(_) => Op::$name, )*
                }
            }

            /// Reads the request body of `op` (the code was already read).
            pub async fn read_body<R: AsyncRead + Unpin + Send>(
                r: &mut NixReader<R>,
                op: Op,
            ) -> Result<Request> {
                Ok(match op {
                    $( Op::$name => Request::$name(r.read::<$req>().await?), )*
                })
            }
        }

        impl NixSerialize for Request {
            fn serialize(&self, enc: &mut Encoder) {
                enc.write_u64(self.op() as u64);
                match self {
                    $( Request::$name(req) => req.serialize(enc), )*
                }
            }
        }
    };
}

macro_rules! operation {
    ($req:ty, $op:ident, $resp:ty) => {
        impl Operation for $req {
            const OP: Op = Op::$op;
            type Response = $resp;
        }
    };
}

ops! {
    /// 1: is this path valid?
    IsValidPath = 1 => PathRequest,
    /// 6: paths referring to this one.
    QueryReferrers = 6 => PathRequest,
    /// 7: add a path from a dump (CA form from 1.25, legacy form before).
    AddToStore = 7 => AddToStoreRequest,
    /// 8: add a text file (obsolete since 1.25 but still sent by older clients).
    AddTextToStore = 8 => AddTextToStoreRequest,
    /// 9: build derived paths.
    BuildPaths = 9 => BuildPathsRequest,
    /// 10: make sure a path is valid, substituting it if needed.
    EnsurePath = 10 => PathRequest,
    /// 11: add a temporary GC root for the connection's lifetime.
    AddTempRoot = 11 => PathRequest,
    /// 12: register an indirect GC root (a symlink outside the store).
    AddIndirectRoot = 12 => AddIndirectRootRequest,
    /// 13: obsolete, answers 1.
    SyncWithGC = 13 => Empty,
    /// 14: list GC roots.
    FindRoots = 14 => Empty,
    /// 18: obsolete deriver query.
    QueryDeriver = 18 => PathRequest,
    /// 19: client settings.
    SetOptions = 19 => SetOptionsRequest,
    /// 20: garbage collection.
    CollectGarbage = 20 => CollectGarbageRequest,
    /// 21: substitutable path info of one path.
    QuerySubstitutablePathInfo = 21 => PathRequest,
    /// 22: obsolete derivation outputs query.
    QueryDerivationOutputs = 22 => PathRequest,
    /// 23: all valid paths.
    QueryAllValidPaths = 23 => Empty,
    /// 26: path info.
    QueryPathInfo = 26 => PathRequest,
    /// 28: obsolete derivation output names query.
    QueryDerivationOutputNames = 28 => PathRequest,
    /// 29: the store path with this hash part.
    QueryPathFromHashPart = 29 => QueryPathFromHashPartRequest,
    /// 30: substitutable path infos.
    QuerySubstitutablePathInfos = 30 => QuerySubstitutablePathInfosRequest,
    /// 31: which of these paths are valid.
    QueryValidPaths = 31 => QueryValidPathsRequest,
    /// 32: which of these paths are substitutable.
    QuerySubstitutablePaths = 32 => PathSetRequest,
    /// 33: valid derivers of an output path.
    QueryValidDerivers = 33 => PathRequest,
    /// 34: deduplicate the store.
    OptimiseStore = 34 => Empty,
    /// 35: verify the store.
    VerifyStore = 35 => VerifyStoreRequest,
    /// 36: build a derivation sent inline.
    BuildDerivation = 36 => BuildDerivationRequest,
    /// 37: add signatures to a path.
    AddSignatures = 37 => AddSignaturesRequest,
    /// 38: stream a path's NAR.
    NarFromPath = 38 => PathRequest,
    /// 39: add a path with its info and NAR.
    AddToStoreNar = 39 => AddToStoreNarRequest,
    /// 40: what would building these need.
    QueryMissing = 40 => QueryMissingRequest,
    /// 41: a derivation's output names and paths.
    QueryDerivationOutputMap = 41 => PathRequest,
    /// 42: register a realisation.
    RegisterDrvOutput = 42 => RegisterDrvOutputRequest,
    /// 43: look up a realisation.
    QueryRealisation = 43 => QueryRealisationRequest,
    /// 44: add many paths in one framed stream.
    AddMultipleToStore = 44 => AddMultipleToStoreRequest,
    /// 45: store a build log.
    AddBuildLog = 45 => AddBuildLogRequest,
    /// 46: build and return per-path results.
    BuildPathsWithResults = 46 => BuildPathsRequest,
    /// 47: register a permanent GC root.
    AddPermRoot = 47 => AddPermRootRequest,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u64)
    }
}

/// Reads the next request. `Ok(None)` when the client closed the connection cleanly
/// between requests. After any error (an unknown op code, an invalid store path, a
/// truncated request...) the position in the stream is unknown: answer with
/// STDERR_ERROR and close the connection, as Nix does for errors raised before an
/// operation starts its work.
pub async fn read_request<R: AsyncRead + Unpin + Send>(
    r: &mut NixReader<R>,
) -> Result<Option<Request>> {
    let Some(code) = r.try_read_u64().await? else {
        return Ok(None);
    };
    let op = Op::from_u64(code).ok_or(ProtocolError::UnknownOp(code))?;
    Request::read_body(r, op).await.map(Some)
}

nix_struct! {
    /// A request with no parameters.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Empty {}
}

nix_struct! {
    /// A request naming one store path.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PathRequest {
        /// The path.
        pub path: StorePath,
    }
}

nix_struct! {
    /// A request naming a set of store paths.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct PathSetRequest {
        /// The paths.
        pub paths: BTreeSet<StorePath>,
    }
}

nix_struct! {
    /// SetOptions: the client's settings. Reply: none.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct SetOptionsRequest {
        /// keep-failed
        pub keep_failed: bool,
        /// keep-going
        pub keep_going: bool,
        /// fallback
        pub try_fallback: bool,
        /// Verbosity level.
        pub verbosity: u64,
        /// max-jobs
        pub max_build_jobs: u64,
        /// max-silent-time
        pub max_silent_time: u64,
        /// Obsolete useBuildHook (clients send 1).
        pub use_build_hook: u64,
        /// Build output verbosity (lvlError means verbose builds).
        pub verbose_build: u64,
        /// Obsolete logType.
        pub log_type: u64,
        /// Obsolete printBuildTrace.
        pub print_build_trace: u64,
        /// cores
        pub build_cores: u64,
        /// substitute
        pub use_substitutes: bool,
        /// Other settings, name and value, in the order sent.
        pub overrides: Vec<(ShortString, String)>,
    }
}

nix_struct! {
    /// QueryValidPaths. Reply: the valid subset.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct QueryValidPathsRequest {
        /// Paths to check.
        pub paths: BTreeSet<StorePath>,
        /// Substitute missing paths first (from 1.27).
        @since(1, 27) pub substitute: bool,
    }
}

nix_struct! {
    /// QueryPathFromHashPart. Reply: the path or none.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct QueryPathFromHashPartRequest {
        /// The 32-character nix-base32 hash part (not validated here: Nix answers none).
        pub hash_part: ShortString,
    }
}

/// QuerySubstitutablePathInfos: before 1.22 a set of paths, then a map from path to an
/// optional content address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySubstitutablePathInfosRequest {
    /// The paths and their content addresses (always none before 1.22).
    pub paths: BTreeMap<StorePath, Option<harmonia_store_path::ContentAddress>>,
}

impl NixSerialize for QuerySubstitutablePathInfosRequest {
    fn serialize(&self, enc: &mut Encoder) {
        if enc.version() < ProtocolVersion::new(1, 22) {
            let set: BTreeSet<&StorePath> = self.paths.keys().collect();
            enc.write_u64(set.len() as u64);
            for p in set {
                enc.write(p);
            }
        } else {
            enc.write(&self.paths);
        }
    }
}

impl NixDeserialize for QuerySubstitutablePathInfosRequest {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let paths = if r.version() < ProtocolVersion::new(1, 22) {
            r.read::<BTreeSet<StorePath>>()
                .await?
                .into_iter()
                .map(|p| (p, None))
                .collect()
        } else {
            r.read().await?
        };
        Ok(Self { paths })
    }
}

/// AddToStore, in the form of the negotiated version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddToStoreRequest {
    /// From 1.25: name, content-address method with algorithm (e.g. "fixed:r:sha256",
    /// "text:sha256"), references, repair; then the dump as a framed stream. Reply:
    /// [`ValidPathInfo`].
    Ca {
        /// Store path name.
        name: ShortString,
        /// Content-address method and hash algorithm, as Nix renders them.
        method_algo: ShortString,
        /// References.
        references: BTreeSet<StorePath>,
        /// Repair an existing path.
        repair: bool,
    },
    /// Before 1.25: name, "fixed" flag (obsolete), recursive flag, hash algorithm; then a
    /// NAR, unframed (find its end with [`crate::nar::NarPassthrough`]); for flat
    /// ingestion the NAR holds a single regular file. Reply: the store path.
    Legacy {
        /// Store path name.
        name: ShortString,
        /// Obsolete; when false Nix forces recursive sha256.
        fixed: bool,
        /// 1 for NAR (recursive) ingestion, 0 for flat.
        recursive: u64,
        /// Hash algorithm name ("sha256"...).
        hash_algo: ShortString,
    },
}

impl NixSerialize for AddToStoreRequest {
    fn serialize(&self, enc: &mut Encoder) {
        match self {
            AddToStoreRequest::Ca {
                name,
                method_algo,
                references,
                repair,
            } => {
                enc.write(name);
                enc.write(method_algo);
                enc.write(references);
                enc.write_bool(*repair);
            }
            AddToStoreRequest::Legacy {
                name,
                fixed,
                recursive,
                hash_algo,
            } => {
                enc.write(name);
                enc.write_bool(*fixed);
                enc.write_u64(*recursive);
                enc.write(hash_algo);
            }
        }
    }
}

impl NixDeserialize for AddToStoreRequest {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        if r.version() >= ProtocolVersion::new(1, 25) {
            Ok(AddToStoreRequest::Ca {
                name: r.read().await?,
                method_algo: r.read().await?,
                references: r.read().await?,
                repair: r.read().await?,
            })
        } else {
            Ok(AddToStoreRequest::Legacy {
                name: r.read().await?,
                fixed: r.read().await?,
                recursive: r.read().await?,
                hash_algo: r.read().await?,
            })
        }
    }
}

/// The reply of AddToStore, which differs by version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddToStoreResponse {
    /// From 1.25: the new path's info.
    Info(Box<ValidPathInfo>),
    /// Before 1.25: the new path.
    Path(StorePath),
}

impl NixSerialize for AddToStoreResponse {
    fn serialize(&self, enc: &mut Encoder) {
        match self {
            AddToStoreResponse::Info(i) => enc.write(i),
            AddToStoreResponse::Path(p) => enc.write(p),
        }
    }
}

impl NixDeserialize for AddToStoreResponse {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        if r.version() >= ProtocolVersion::new(1, 25) {
            Ok(AddToStoreResponse::Info(r.read().await?))
        } else {
            Ok(AddToStoreResponse::Path(r.read().await?))
        }
    }
}

nix_struct! {
    /// AddTextToStore. Reply: the store path.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AddTextToStoreRequest {
        /// Store path name.
        pub name: ShortString,
        /// The file's contents.
        pub text: Blob,
        /// References.
        pub references: BTreeSet<StorePath>,
    }
}

nix_struct! {
    /// BuildPaths / BuildPathsWithResults. Derived paths are kept as sent
    /// ("/nix/store/x.drv!out,dev", "/nix/store/x.drv^*", or a plain path).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct BuildPathsRequest {
        /// Derived paths, as sent.
        pub paths: Vec<String>,
        /// Build mode: 0 normal, 1 repair, 2 check.
        pub mode: u64,
    }
}

nix_struct! {
    /// AddIndirectRoot. Reply: [`Done`].
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct AddIndirectRootRequest {
        /// The symlink outside the store.
        pub path: String,
    }
}

nix_struct! {
    /// AddPermRoot. Reply: the GC root path (a string).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AddPermRootRequest {
        /// The path to protect.
        pub path: StorePath,
        /// Where the root symlink goes.
        pub gc_root: String,
    }
}

nix_struct! {
    /// CollectGarbage. Reply: [`CollectGarbageResponse`].
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct CollectGarbageRequest {
        /// 0 return live, 1 return dead, 2 delete dead, 3 delete specific.
        pub action: u64,
        /// Paths for "delete specific".
        pub paths_to_delete: BTreeSet<StorePath>,
        /// Ignore liveness (refused by Nix).
        pub ignore_liveness: bool,
        /// Stop after freeing this many bytes.
        pub max_freed: u64,
        /// Obsolete field.
        pub obsolete1: u64,
        /// Obsolete field.
        pub obsolete2: u64,
        /// Obsolete field.
        pub obsolete3: u64,
    }
}

nix_struct! {
    /// CollectGarbage's reply.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct CollectGarbageResponse {
        /// Paths deleted or returned.
        pub paths: BTreeSet<String>,
        /// Bytes freed.
        pub bytes_freed: u64,
        /// Obsolete field (0).
        pub obsolete: u64,
    }
}

nix_struct! {
    /// VerifyStore. Reply: whether errors remain (bool).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct VerifyStoreRequest {
        /// Hash every path's contents.
        pub check_contents: bool,
        /// Repair what is broken.
        pub repair: bool,
    }
}

nix_struct! {
    /// One output of an inline derivation: name, path (may be empty), hash algorithm
    /// (with "r:" for recursive; empty if not fixed), hash (base16; may be empty).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct DerivationOutput {
        /// Output name.
        pub name: String,
        /// Output path, or empty.
        pub path: String,
        /// Hash algorithm or empty.
        pub hash_algo: String,
        /// Hash or empty.
        pub hash: String,
    }
}

nix_struct! {
    /// Nix's `BasicDerivation` as sent inline by BuildDerivation.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct BasicDerivation {
        /// Outputs.
        pub outputs: Vec<DerivationOutput>,
        /// Input sources.
        pub input_srcs: BTreeSet<StorePath>,
        /// System, e.g. "x86_64-linux".
        pub platform: String,
        /// Builder program.
        pub builder: String,
        /// Builder arguments.
        pub args: Vec<String>,
        /// Environment.
        pub env: Vec<(String, String)>,
    }
}

nix_struct! {
    /// BuildDerivation (parsed so a daemon can refuse it and keep the connection).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct BuildDerivationRequest {
        /// The derivation's store path.
        pub drv_path: StorePath,
        /// The derivation.
        pub drv: BasicDerivation,
        /// Build mode.
        pub mode: u64,
    }
}

nix_struct! {
    /// AddSignatures. Reply: [`Done`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AddSignaturesRequest {
        /// The path.
        pub path: StorePath,
        /// Signatures, each `keyname:base64`.
        pub signatures: BTreeSet<String>,
    }
}

nix_struct! {
    /// AddToStoreNar: the path's info, then repair and dontCheckSigs. The NAR follows as
    /// a framed stream from 1.23; at 1.21/1.22 the daemon pulls it with STDERR_READ (see
    /// [`crate::nar::read_tunneled_nar`]). Reply: none.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AddToStoreNarRequest {
        /// The path and its claimed metadata.
        pub info: ValidPathInfo,
        /// Repair an existing path.
        pub repair: bool,
        /// Skip signature checks (only honoured for trusted clients).
        pub dont_check_sigs: bool,
    }
}

nix_struct! {
    /// QueryMissing. Reply: [`QueryMissingResponse`].
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct QueryMissingRequest {
        /// Derived paths, as sent.
        pub targets: Vec<String>,
    }
}

nix_struct! {
    /// QueryMissing's reply.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct QueryMissingResponse {
        /// Derivations that would be built.
        pub will_build: BTreeSet<StorePath>,
        /// Paths that would be substituted.
        pub will_substitute: BTreeSet<StorePath>,
        /// Paths whose status is unknown.
        pub unknown: BTreeSet<StorePath>,
        /// Bytes to download.
        pub download_size: u64,
        /// Unpacked NAR bytes.
        pub nar_size: u64,
    }
}

/// RegisterDrvOutput, in the form of the negotiated version. Reply: none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterDrvOutputRequest {
    /// Before 1.31: the output id (`sha256:<hex>!out`) and the output path's base name.
    Legacy {
        /// Derivation output id.
        id: String,
        /// Output path.
        out_path: StorePathBase,
    },
    /// From 1.31: the realisation as JSON.
    Realisation(String),
}

impl NixSerialize for RegisterDrvOutputRequest {
    fn serialize(&self, enc: &mut Encoder) {
        match self {
            RegisterDrvOutputRequest::Legacy { id, out_path } => {
                enc.write_str(id);
                enc.write(out_path);
            }
            RegisterDrvOutputRequest::Realisation(json) => enc.write_str(json),
        }
    }
}

impl NixDeserialize for RegisterDrvOutputRequest {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        if r.version() < ProtocolVersion::new(1, 31) {
            Ok(RegisterDrvOutputRequest::Legacy {
                id: r.read().await?,
                out_path: r.read().await?,
            })
        } else {
            Ok(RegisterDrvOutputRequest::Realisation(r.read().await?))
        }
    }
}

nix_struct! {
    /// QueryRealisation. Reply: [`QueryRealisationResponse`].
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct QueryRealisationRequest {
        /// Derivation output id (`sha256:<hex>!out`).
        pub id: ShortString,
    }
}

/// QueryRealisation's reply: before 1.31 a set of output paths, from 1.31 a set of
/// realisations as JSON. Writing the wrong form for the version writes it anyway; pick
/// by `version() >= 1.31`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRealisationResponse {
    /// Before 1.31.
    OutPaths(BTreeSet<StorePath>),
    /// From 1.31.
    Realisations(BTreeSet<String>),
}

impl NixSerialize for QueryRealisationResponse {
    fn serialize(&self, enc: &mut Encoder) {
        match self {
            QueryRealisationResponse::OutPaths(p) => enc.write(p),
            QueryRealisationResponse::Realisations(r) => enc.write(r),
        }
    }
}

impl NixDeserialize for QueryRealisationResponse {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        if r.version() < ProtocolVersion::new(1, 31) {
            Ok(QueryRealisationResponse::OutPaths(r.read().await?))
        } else {
            Ok(QueryRealisationResponse::Realisations(r.read().await?))
        }
    }
}

nix_struct! {
    /// AddMultipleToStore: repair, dontCheckSigs; then a framed stream holding a count
    /// and that many (path info at version 1.16, NAR) pairs (see
    /// [`crate::multiple`]). Reply: none.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct AddMultipleToStoreRequest {
        /// Repair existing paths.
        pub repair: bool,
        /// Skip signature checks (only honoured for trusted clients).
        pub dont_check_sigs: bool,
    }
}

nix_struct! {
    /// AddBuildLog: the derivation's base name; the log follows as a framed stream.
    /// Reply: [`Done`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AddBuildLogRequest {
        /// The derivation (sent as its base name).
        pub drv_path: StorePathBase,
    }
}

/// QueryPathInfo's reply: a validity flag, then the info if valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPathInfoResponse(pub Option<UnkeyedValidPathInfo>);

impl NixSerialize for QueryPathInfoResponse {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_flagged(&self.0);
    }
}

impl NixDeserialize for QueryPathInfoResponse {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        Ok(Self(r.read_flagged().await?))
    }
}

nix_struct! {
    /// One substitutable path info (QuerySubstitutablePathInfo's reply body).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct SubstitutablePathInfo {
        /// Deriver, if known.
        pub deriver: Option<StorePath>,
        /// References.
        pub references: BTreeSet<StorePath>,
        /// Compressed download size.
        pub download_size: u64,
        /// NAR size.
        pub nar_size: u64,
    }
}

/// QuerySubstitutablePathInfo's reply: a flag then the info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySubstitutablePathInfoResponse(pub Option<SubstitutablePathInfo>);

impl NixSerialize for QuerySubstitutablePathInfoResponse {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_flagged(&self.0);
    }
}

impl NixDeserialize for QuerySubstitutablePathInfoResponse {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        Ok(Self(r.read_flagged().await?))
    }
}

operation!(SetOptionsRequest, SetOptions, NoReply);
operation!(QueryValidPathsRequest, QueryValidPaths, BTreeSet<StorePath>);
operation!(
    QueryPathFromHashPartRequest,
    QueryPathFromHashPart,
    Option<StorePath>
);
operation!(AddToStoreRequest, AddToStore, AddToStoreResponse);
operation!(AddTextToStoreRequest, AddTextToStore, StorePath);
operation!(AddIndirectRootRequest, AddIndirectRoot, Done);
operation!(AddPermRootRequest, AddPermRoot, String);
operation!(
    CollectGarbageRequest,
    CollectGarbage,
    CollectGarbageResponse
);
operation!(VerifyStoreRequest, VerifyStore, bool);
operation!(AddSignaturesRequest, AddSignatures, Done);
operation!(AddToStoreNarRequest, AddToStoreNar, NoReply);
operation!(QueryMissingRequest, QueryMissing, QueryMissingResponse);
operation!(RegisterDrvOutputRequest, RegisterDrvOutput, NoReply);
operation!(
    QueryRealisationRequest,
    QueryRealisation,
    QueryRealisationResponse
);
operation!(AddMultipleToStoreRequest, AddMultipleToStore, NoReply);
operation!(AddBuildLogRequest, AddBuildLog, Done);
operation!(
    QuerySubstitutablePathInfosRequest,
    QuerySubstitutablePathInfos,
    Vec<(StorePath, SubstitutablePathInfo)>
);

/// Typed wrappers for operations that share a request shape, so that each has its own
/// [`Operation`] impl (and reply type) for clients.
pub mod typed {
    use super::*;

    macro_rules! path_op {
        ($(#[$m:meta])* $name:ident, $op:ident, $resp:ty) => {
            $(#[$m])*
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub struct $name(pub StorePath);

            impl NixSerialize for $name {
                fn serialize(&self, enc: &mut Encoder) {
                    enc.write(&self.0);
                }
            }

            impl NixDeserialize for $name {
                async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
                    Ok($name(r.read().await?))
                }
            }

            impl Operation for $name {
                const OP: Op = Op::$op;
                type Response = $resp;
            }
        };
    }

    path_op!(/// IsValidPath: reply bool.
        IsValidPath, IsValidPath, bool);
    path_op!(/// QueryReferrers: reply the referrers.
        QueryReferrers, QueryReferrers, BTreeSet<StorePath>);
    path_op!(/// EnsurePath: reply [`Done`].
        EnsurePath, EnsurePath, Done);
    path_op!(/// AddTempRoot: reply [`Done`].
        AddTempRoot, AddTempRoot, Done);
    path_op!(/// QueryPathInfo: reply the info if valid.
        QueryPathInfo, QueryPathInfo, QueryPathInfoResponse);
    path_op!(/// QueryValidDerivers: reply the derivers.
        QueryValidDerivers, QueryValidDerivers, BTreeSet<StorePath>);
    path_op!(/// QueryDerivationOutputMap: reply output name to path (none if unknown).
        QueryDerivationOutputMap, QueryDerivationOutputMap, BTreeMap<String, Option<StorePath>>);
    path_op!(/// NarFromPath: no reply value; the NAR follows STDERR_LAST raw.
        NarFromPath, NarFromPath, NoReply);
    path_op!(/// QueryDeriver (obsolete): reply the deriver or none.
        QueryDeriver, QueryDeriver, Option<StorePath>);
    path_op!(/// QueryDerivationOutputs (obsolete): reply the outputs.
        QueryDerivationOutputs, QueryDerivationOutputs, BTreeSet<StorePath>);
    path_op!(/// QueryDerivationOutputNames (obsolete): reply the output names.
        QueryDerivationOutputNames, QueryDerivationOutputNames, BTreeSet<String>);
    path_op!(/// QuerySubstitutablePathInfo: reply the info if substitutable.
        QuerySubstitutablePathInfo, QuerySubstitutablePathInfo, QuerySubstitutablePathInfoResponse);

    macro_rules! empty_op {
        ($(#[$m:meta])* $name:ident, $op:ident, $resp:ty) => {
            $(#[$m])*
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
            pub struct $name;

            impl NixSerialize for $name {
                fn serialize(&self, _enc: &mut Encoder) {}
            }

            impl NixDeserialize for $name {
                async fn deserialize<R: AsyncRead + Unpin + Send>(_r: &mut NixReader<R>) -> Result<Self> {
                    Ok($name)
                }
            }

            impl Operation for $name {
                const OP: Op = Op::$op;
                type Response = $resp;
            }
        };
    }

    empty_op!(/// QueryAllValidPaths: reply every valid path.
        QueryAllValidPaths, QueryAllValidPaths, BTreeSet<StorePath>);
    empty_op!(/// FindRoots: reply (link, target) pairs.
        FindRoots, FindRoots, Vec<(String, StorePath)>);
    empty_op!(/// SyncWithGC (obsolete): reply [`Done`].
        SyncWithGC, SyncWithGC, Done);
    empty_op!(/// OptimiseStore: reply [`Done`].
        OptimiseStore, OptimiseStore, Done);

    /// QuerySubstitutablePaths: reply the substitutable subset.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct QuerySubstitutablePaths(pub BTreeSet<StorePath>);

    impl NixSerialize for QuerySubstitutablePaths {
        fn serialize(&self, enc: &mut Encoder) {
            enc.write(&self.0);
        }
    }

    impl NixDeserialize for QuerySubstitutablePaths {
        async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
            Ok(Self(r.read().await?))
        }
    }

    impl Operation for QuerySubstitutablePaths {
        const OP: Op = Op::QuerySubstitutablePaths;
        type Response = BTreeSet<StorePath>;
    }

    /// BuildPaths: reply [`Done`].
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct BuildPaths(pub BuildPathsRequest);

    impl NixSerialize for BuildPaths {
        fn serialize(&self, enc: &mut Encoder) {
            enc.write(&self.0);
        }
    }

    impl NixDeserialize for BuildPaths {
        async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
            Ok(Self(r.read().await?))
        }
    }

    impl Operation for BuildPaths {
        const OP: Op = Op::BuildPaths;
        type Response = Done;
    }
}

/// An optional duration in microseconds (BuildResult's CPU times): a tag (0 none, 1
/// some) then the value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptionalMicros(pub Option<u64>);

impl NixSerialize for OptionalMicros {
    fn serialize(&self, enc: &mut Encoder) {
        match self.0 {
            None => enc.write_u64(0),
            Some(v) => {
                enc.write_u64(1);
                enc.write_u64(v);
            }
        }
    }
}

impl NixDeserialize for OptionalMicros {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        match r.read_u64().await? {
            0 => Ok(OptionalMicros(None)),
            1 => Ok(OptionalMicros(Some(r.read_u64().await?))),
            t => Err(ProtocolError::invalid(
                "optional tag",
                t.to_string().as_bytes(),
            )),
        }
    }
}

nix_struct! {
    /// Nix's `BuildResult` (reply of BuildDerivation, and per path of
    /// BuildPathsWithResults), with the fields of each version.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct BuildResult {
        /// Status code (0 Built, 1 Substituted, 2 AlreadyValid, 3 PermanentFailure, ...).
        pub status: u64,
        /// Error message, empty on success.
        pub error_msg: String,
        /// How many times the derivation was built (from 1.29).
        @since(1, 29) pub times_built: u64,
        /// Whether repeated builds differed (from 1.29).
        @since(1, 29) pub is_non_deterministic: bool,
        /// Start time, seconds since the epoch (from 1.29).
        @since(1, 29) pub start_time: u64,
        /// Stop time, seconds since the epoch (from 1.29).
        @since(1, 29) pub stop_time: u64,
        /// User CPU time (from 1.37).
        @since(1, 37) pub cpu_user: OptionalMicros,
        /// System CPU time (from 1.37).
        @since(1, 37) pub cpu_system: OptionalMicros,
        /// Built outputs: derivation output id to realisation JSON (from 1.28).
        @since(1, 28) pub built_outputs: BTreeMap<String, String>,
    }
}

operation!(BuildDerivationRequest, BuildDerivation, BuildResult);
operation!(
    BuildPathsRequest,
    BuildPathsWithResults,
    Vec<(String, BuildResult)>
);
