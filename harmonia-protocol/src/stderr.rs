//! The stderr channel: what the daemon sends between a request and its reply
//! (log lines, activities, results, data requests) and how it ends (LAST or ERROR).
//!
//! Layouts from Nix's `daemon.cc` (`TunnelLogger`) and `worker-protocol-connection.cc`
//! (`processStderr`): START_ACTIVITY is id, level, type, text, fields, parent; RESULT is
//! id, type, fields; a field is a type tag (0 int, 1 string) and its value. ERROR is
//! structured from 1.26 (`"Error"`, level, `"Error"`, message, 0, traces as (0, text)),
//! and a message plus an exit status before.

use std::fmt;

use tokio::io::AsyncRead;

use crate::error::{ProtocolError, Result};
use crate::version::ProtocolVersion;
use crate::wire::{Encoder, MAX_STRING, NixDeserialize, NixReader, NixSerialize};

/// STDERR_NEXT: a log line.
pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
/// STDERR_READ: the daemon asks the client for up to N bytes of data.
pub const STDERR_READ: u64 = 0x6461_7461;
/// STDERR_WRITE: the daemon sends data for the client's sink.
pub const STDERR_WRITE: u64 = 0x6461_7416;
/// STDERR_LAST: the operation succeeded; its reply follows.
pub const STDERR_LAST: u64 = 0x616c_7473;
/// STDERR_ERROR: the operation failed.
pub const STDERR_ERROR: u64 = 0x6378_7470;
/// STDERR_START_ACTIVITY: an activity (build, download...) started.
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
/// STDERR_STOP_ACTIVITY: an activity ended.
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
/// STDERR_RESULT: an activity produced a result (progress, build log line...).
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// Nix's verbosity levels (`lvlError` = 0 ... `lvlVomit` = 7).
pub mod verbosity {
    /// lvlError
    pub const ERROR: u64 = 0;
    /// lvlWarn
    pub const WARN: u64 = 1;
    /// lvlNotice
    pub const NOTICE: u64 = 2;
    /// lvlInfo
    pub const INFO: u64 = 3;
    /// lvlTalkative
    pub const TALKATIVE: u64 = 4;
    /// lvlChatty
    pub const CHATTY: u64 = 5;
    /// lvlDebug
    pub const DEBUG: u64 = 6;
    /// lvlVomit
    pub const VOMIT: u64 = 7;
}

/// An error as the daemon reports it (Nix's `ErrorInfo`, without positions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixError {
    /// Verbosity level of the error (usually [`verbosity::ERROR`]).
    pub level: u64,
    /// The message.
    pub msg: String,
    /// Trace lines, innermost first.
    pub traces: Vec<String>,
    /// Exit status (only sent before 1.26; Nix uses 1 by default).
    pub exit_status: u64,
}

impl NixError {
    /// An error at level ERROR with exit status 1 and no traces.
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            level: verbosity::ERROR,
            msg: msg.into(),
            traces: Vec::new(),
            exit_status: 1,
        }
    }
}

impl fmt::Display for NixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        for t in &self.traces {
            write!(f, "\n  … {t}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NixError {}

impl NixSerialize for NixError {
    fn serialize(&self, enc: &mut Encoder) {
        if enc.version() >= ProtocolVersion::new(1, 26) {
            enc.write_str("Error");
            enc.write_u64(self.level);
            enc.write_str("Error"); // formerly the error's name
            enc.write_str(&self.msg);
            enc.write_u64(0); // no position
            enc.write_u64(self.traces.len() as u64);
            for t in &self.traces {
                enc.write_u64(0); // no position
                enc.write_str(t);
            }
        } else {
            enc.write_str(&self.msg);
            enc.write_u64(self.exit_status);
        }
    }
}

impl NixDeserialize for NixError {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        if r.version() >= ProtocolVersion::new(1, 26) {
            let ty = r.read_bytes("error type", 64).await?;
            if ty != b"Error" {
                return Err(ProtocolError::invalid("error type", &ty));
            }
            let level = r.read_u64().await?;
            let _name = r.read_bytes("error name", 1024).await?;
            let msg = r.read_string("error message", MAX_STRING).await?;
            let have_pos = r.read_u64().await?;
            if have_pos != 0 {
                return Err(ProtocolError::invalid(
                    "error position",
                    have_pos.to_string().as_bytes(),
                ));
            }
            let n = r.read_count("error traces").await?;
            let mut traces = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let have_pos = r.read_u64().await?;
                if have_pos != 0 {
                    return Err(ProtocolError::invalid(
                        "trace position",
                        have_pos.to_string().as_bytes(),
                    ));
                }
                traces.push(r.read_string("error trace", MAX_STRING).await?);
            }
            Ok(NixError {
                level,
                msg,
                traces,
                exit_status: 1,
            })
        } else {
            let msg = r.read_string("error message", MAX_STRING).await?;
            let exit_status = r.read_u64().await?;
            Ok(NixError {
                level: verbosity::ERROR,
                msg,
                traces: Vec::new(),
                exit_status,
            })
        }
    }
}

/// A field of an activity or result: an integer or a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Type tag 0.
    Int(u64),
    /// Type tag 1.
    String(String),
}

impl NixSerialize for Field {
    fn serialize(&self, enc: &mut Encoder) {
        match self {
            Field::Int(i) => {
                enc.write_u64(0);
                enc.write_u64(*i);
            }
            Field::String(s) => {
                enc.write_u64(1);
                enc.write_str(s);
            }
        }
    }
}

impl NixDeserialize for Field {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        match r.read_u64().await? {
            0 => Ok(Field::Int(r.read_u64().await?)),
            1 => Ok(Field::String(r.read_string("field", MAX_STRING).await?)),
            t => Err(ProtocolError::invalid(
                "field type",
                t.to_string().as_bytes(),
            )),
        }
    }
}

/// Nix's activity types (`ActivityType`), for START_ACTIVITY.
pub mod activity_type {
    /// actUnknown
    pub const UNKNOWN: u64 = 0;
    /// actCopyPath
    pub const COPY_PATH: u64 = 100;
    /// actFileTransfer
    pub const FILE_TRANSFER: u64 = 101;
    /// actRealise
    pub const REALISE: u64 = 102;
    /// actCopyPaths
    pub const COPY_PATHS: u64 = 103;
    /// actBuilds
    pub const BUILDS: u64 = 104;
    /// actBuild
    pub const BUILD: u64 = 105;
    /// actOptimiseStore
    pub const OPTIMISE_STORE: u64 = 106;
    /// actVerifyPaths
    pub const VERIFY_PATHS: u64 = 107;
    /// actSubstitute
    pub const SUBSTITUTE: u64 = 108;
    /// actQueryPathInfo
    pub const QUERY_PATH_INFO: u64 = 109;
    /// actPostBuildHook
    pub const POST_BUILD_HOOK: u64 = 110;
    /// actBuildWaiting
    pub const BUILD_WAITING: u64 = 111;
}

/// Nix's result types (`ResultType`), for RESULT.
pub mod result_type {
    /// resFileLinked
    pub const FILE_LINKED: u64 = 100;
    /// resBuildLogLine
    pub const BUILD_LOG_LINE: u64 = 101;
    /// resUntrustedPath
    pub const UNTRUSTED_PATH: u64 = 102;
    /// resCorruptedPath
    pub const CORRUPTED_PATH: u64 = 103;
    /// resSetPhase
    pub const SET_PHASE: u64 = 104;
    /// resProgress
    pub const PROGRESS: u64 = 105;
    /// resSetExpected
    pub const SET_EXPECTED: u64 = 106;
    /// resPostBuildLogLine
    pub const POST_BUILD_LOG_LINE: u64 = 107;
}

/// One message on the stderr channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StderrMsg {
    /// A log line (Nix appends the newline itself when logging).
    Next(String),
    /// The daemon wants up to this many bytes of data (answered with a byte string).
    Read(u64),
    /// Data for the client's sink.
    Write(Vec<u8>),
    /// Success: the reply follows.
    Last,
    /// Failure: the operation is over.
    Error(NixError),
    /// An activity starts.
    StartActivity {
        /// Activity id (unique per daemon process).
        id: u64,
        /// Verbosity level.
        level: u64,
        /// [`activity_type`].
        activity_type: u64,
        /// Human text.
        text: String,
        /// Type-specific fields.
        fields: Vec<Field>,
        /// Parent activity id, 0 for none.
        parent: u64,
    },
    /// An activity stops.
    StopActivity(u64),
    /// An activity has a result.
    Result {
        /// Activity id.
        id: u64,
        /// [`result_type`].
        result_type: u64,
        /// Type-specific fields.
        fields: Vec<Field>,
    },
}

impl StderrMsg {
    /// Whether this message ends the stderr phase of an operation.
    pub fn is_terminal(&self) -> bool {
        matches!(self, StderrMsg::Last | StderrMsg::Error(_))
    }
}

/// Activities and results are only sent from 1.20 on; this crate's minimum is 1.21,
/// so they are always written.
impl NixSerialize for StderrMsg {
    fn serialize(&self, enc: &mut Encoder) {
        match self {
            StderrMsg::Next(s) => {
                enc.write_u64(STDERR_NEXT);
                enc.write_str(s);
            }
            StderrMsg::Read(n) => {
                enc.write_u64(STDERR_READ);
                enc.write_u64(*n);
            }
            StderrMsg::Write(data) => {
                enc.write_u64(STDERR_WRITE);
                enc.write_bytes(data);
            }
            StderrMsg::Last => enc.write_u64(STDERR_LAST),
            StderrMsg::Error(e) => {
                enc.write_u64(STDERR_ERROR);
                enc.write(e);
            }
            StderrMsg::StartActivity {
                id,
                level,
                activity_type,
                text,
                fields,
                parent,
            } => {
                enc.write_u64(STDERR_START_ACTIVITY);
                enc.write_u64(*id);
                enc.write_u64(*level);
                enc.write_u64(*activity_type);
                enc.write_str(text);
                enc.write(fields);
                enc.write_u64(*parent);
            }
            StderrMsg::StopActivity(id) => {
                enc.write_u64(STDERR_STOP_ACTIVITY);
                enc.write_u64(*id);
            }
            StderrMsg::Result {
                id,
                result_type,
                fields,
            } => {
                enc.write_u64(STDERR_RESULT);
                enc.write_u64(*id);
                enc.write_u64(*result_type);
                enc.write(fields);
            }
        }
    }
}

impl NixDeserialize for StderrMsg {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let code = r.read_u64().await?;
        Ok(match code {
            STDERR_NEXT => StderrMsg::Next(r.read_string("log line", MAX_STRING).await?),
            STDERR_READ => StderrMsg::Read(r.read_u64().await?),
            STDERR_WRITE => StderrMsg::Write(r.read_bytes("written data", MAX_STRING).await?),
            STDERR_LAST => StderrMsg::Last,
            STDERR_ERROR => StderrMsg::Error(r.read().await?),
            STDERR_START_ACTIVITY => StderrMsg::StartActivity {
                id: r.read_u64().await?,
                level: r.read_u64().await?,
                activity_type: r.read_u64().await?,
                text: r.read_string("activity text", MAX_STRING).await?,
                fields: r.read().await?,
                parent: r.read_u64().await?,
            },
            STDERR_STOP_ACTIVITY => StderrMsg::StopActivity(r.read_u64().await?),
            STDERR_RESULT => StderrMsg::Result {
                id: r.read_u64().await?,
                result_type: r.read_u64().await?,
                fields: r.read().await?,
            },
            other => return Err(ProtocolError::UnknownStderr(other)),
        })
    }
}

/// Shorthands for the server side of an operation.
impl Encoder {
    /// A log line (STDERR_NEXT); Nix's loggers end each line with a newline.
    pub fn write_log(&mut self, line: &str) {
        self.write(&StderrMsg::Next(format!("{line}\n")));
    }

    /// STDERR_LAST then the reply: the operation succeeded.
    pub fn write_reply<T: NixSerialize + ?Sized>(&mut self, reply: &T) {
        self.write_u64(STDERR_LAST);
        self.write(reply);
    }

    /// STDERR_ERROR with `err` in the version's form: the operation failed.
    pub fn write_error(&mut self, err: &NixError) {
        self.write_u64(STDERR_ERROR);
        self.write(err);
    }
}
