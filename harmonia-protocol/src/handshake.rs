//! The handshake and version negotiation, both sides.
//!
//! Order (Nix's `worker-protocol-connection.cc` and `daemon.cc`):
//! 1. client → `WORKER_MAGIC_1`; daemon → `WORKER_MAGIC_2`, daemon version (flushed
//!    before reading on: Nix ≤ 2.19 clients wait for it before sending their version);
//! 2. client → its version; both use the minimum;
//! 3. from 1.38: client → its feature set (strings), daemon → its feature set;
//! 4. client → obsolete CPU affinity (from 1.14: 0, or 1 and a CPU number) and obsolete
//!    reserveSpace (from 1.11);
//! 5. daemon → its Nix version string (from 1.33) and whether it trusts the client
//!    (from 1.35: 0 unknown, 1 trusted, 2 not trusted);
//! 6. daemon → the stderr channel of the "startup" work, ended by STDERR_LAST.

use std::collections::BTreeSet;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ProtocolError, Result};
use crate::stderr::StderrMsg;
use crate::version::{MIN_VERSION, PROTOCOL_VERSION, ProtocolVersion};
use crate::wire::{MAX_SHORT_STRING, NixReader, NixWriter};

/// Sent by the client first.
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// The daemon's answer.
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;
/// Cap on the number of features in the 1.38 exchange.
const MAX_FEATURES: usize = 1024;

/// Whether the daemon trusts the client (Nix's `std::optional<TrustedFlag>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustLevel {
    /// Not said (wire 0; also what a pre-1.35 daemon means).
    Unknown,
    /// Trusted (wire 1).
    Trusted,
    /// Not trusted (wire 2).
    NotTrusted,
}

impl TrustLevel {
    /// The wire value.
    pub fn to_wire(self) -> u64 {
        match self {
            TrustLevel::Unknown => 0,
            TrustLevel::Trusted => 1,
            TrustLevel::NotTrusted => 2,
        }
    }

    /// Parses the wire value.
    pub fn from_wire(v: u64) -> Result<Self> {
        match v {
            0 => Ok(TrustLevel::Unknown),
            1 => Ok(TrustLevel::Trusted),
            2 => Ok(TrustLevel::NotTrusted),
            _ => Err(ProtocolError::invalid(
                "trust flag",
                v.to_string().as_bytes(),
            )),
        }
    }
}

/// What the server says about itself during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHandshake {
    /// The highest version to offer (normally [`PROTOCOL_VERSION`]).
    pub version: ProtocolVersion,
    /// The daemon's Nix version string, sent from 1.33 (e.g. "2.24.0 (harmonia 0.1.0)").
    pub nix_version: String,
    /// Whether this client is trusted, sent from 1.35.
    pub trust: TrustLevel,
    /// Features offered in the 1.38 exchange.
    pub features: BTreeSet<String>,
}

/// What the client offers during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    /// The highest version to offer (normally [`PROTOCOL_VERSION`]).
    pub version: ProtocolVersion,
    /// Features offered in the 1.38 exchange.
    pub features: BTreeSet<String>,
}

impl Default for ClientHandshake {
    fn default() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            features: BTreeSet::new(),
        }
    }
}

/// The outcome of a handshake, on either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The version both sides now speak (the lower of the two offers).
    pub version: ProtocolVersion,
    /// The version the peer offered.
    pub peer_version: ProtocolVersion,
    /// Features both sides offered (empty before 1.38).
    pub features: BTreeSet<String>,
    /// The daemon's Nix version (client side, from 1.33).
    pub daemon_nix_version: Option<String>,
    /// The daemon's trust in us (client side; `Unknown` before 1.35).
    pub trust: TrustLevel,
    /// Messages the daemon sent during its startup work (client side).
    pub startup_messages: Vec<StderrMsg>,
}

async fn read_features<R: AsyncRead + Unpin + Send>(
    r: &mut NixReader<R>,
) -> Result<BTreeSet<String>> {
    let n = r.read_count("feature set").await?;
    if n > MAX_FEATURES {
        return Err(ProtocolError::TooLong {
            what: "feature set",
            len: n as u64,
            max: MAX_FEATURES as u64,
        });
    }
    let mut out = BTreeSet::new();
    for _ in 0..n {
        out.insert(r.read_string("feature", MAX_SHORT_STRING).await?);
    }
    Ok(out)
}

/// Server side of the handshake. On success both halves are switched to the negotiated
/// version and STDERR_LAST has been sent and flushed: the next thing on the wire is the
/// client's first operation. A client older than 1.21 gets [`ProtocolError::UnsupportedVersion`]
/// (Nix closes the connection in that case too).
pub async fn server_handshake<R, W>(
    r: &mut NixReader<R>,
    w: &mut NixWriter<W>,
    info: &ServerHandshake,
) -> Result<Negotiated>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let magic = r.read_u64().await?;
    if magic != WORKER_MAGIC_1 {
        return Err(ProtocolError::BadMagic {
            expected: WORKER_MAGIC_1,
            got: magic,
        });
    }
    w.write_u64(WORKER_MAGIC_2);
    w.write_u64(info.version.to_wire());
    w.flush().await?;

    let peer_version = ProtocolVersion::from_wire(r.read_u64().await?);
    // Like Nix's daemon, speak the lower of both versions, even to a client of a newer
    // major version (it is the client's business to refuse us).
    let version = peer_version.min(info.version);
    if version < MIN_VERSION {
        return Err(ProtocolError::UnsupportedVersion(peer_version));
    }
    r.set_version(version);
    w.set_version(version);

    let mut features = BTreeSet::new();
    if version >= ProtocolVersion::new(1, 38) {
        let client_features = read_features(r).await?;
        w.write(&info.features);
        w.flush().await?;
        features = client_features
            .intersection(&info.features)
            .cloned()
            .collect();
    }

    if version >= ProtocolVersion::new(1, 14) && r.read_u64().await? != 0 {
        let _cpu = r.read_u64().await?; // obsolete CPU affinity
    }
    if version >= ProtocolVersion::new(1, 11) {
        let _reserve_space = r.read_u64().await?; // obsolete
    }
    if version >= ProtocolVersion::new(1, 33) {
        w.write_str(&info.nix_version);
    }
    if version >= ProtocolVersion::new(1, 35) {
        w.write_u64(info.trust.to_wire());
    }
    w.write(&StderrMsg::Last);
    w.flush().await?;

    Ok(Negotiated {
        version,
        peer_version,
        features,
        daemon_nix_version: None,
        trust: info.trust,
        startup_messages: Vec::new(),
    })
}

/// Client side of the handshake. On success both halves are switched to the negotiated
/// version and the daemon's startup stderr work has been read up to STDERR_LAST.
pub async fn client_handshake<R, W>(
    r: &mut NixReader<R>,
    w: &mut NixWriter<W>,
    info: &ClientHandshake,
) -> Result<Negotiated>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    w.write_u64(WORKER_MAGIC_1);
    w.write_u64(info.version.to_wire());
    w.flush().await?;

    let magic = r.read_u64().await?;
    if magic != WORKER_MAGIC_2 {
        return Err(ProtocolError::BadMagic {
            expected: WORKER_MAGIC_2,
            got: magic,
        });
    }
    let peer_version = ProtocolVersion::from_wire(r.read_u64().await?);
    let version = peer_version.min(info.version);
    if peer_version.major() != 1 || version < MIN_VERSION {
        return Err(ProtocolError::UnsupportedVersion(peer_version));
    }
    r.set_version(version);
    w.set_version(version);

    let mut features = BTreeSet::new();
    if version >= ProtocolVersion::new(1, 38) {
        w.write(&info.features);
        w.flush().await?;
        let daemon_features = read_features(r).await?;
        features = daemon_features
            .intersection(&info.features)
            .cloned()
            .collect();
    }

    if version >= ProtocolVersion::new(1, 14) {
        w.write_u64(0); // obsolete CPU affinity
    }
    if version >= ProtocolVersion::new(1, 11) {
        w.write_bool(false); // obsolete reserveSpace
    }
    w.flush().await?;

    let daemon_nix_version = if version >= ProtocolVersion::new(1, 33) {
        Some(r.read_string("daemon version", MAX_SHORT_STRING).await?)
    } else {
        None
    };
    let trust = if version >= ProtocolVersion::new(1, 35) {
        TrustLevel::from_wire(r.read_u64().await?)?
    } else {
        TrustLevel::Unknown
    };

    let mut startup_messages = Vec::new();
    loop {
        match r.read::<StderrMsg>().await? {
            StderrMsg::Last => break,
            StderrMsg::Error(e) => return Err(ProtocolError::Remote(e)),
            StderrMsg::Read(_) => return Err(ProtocolError::UnexpectedStderr("STDERR_READ")),
            StderrMsg::Write(_) => return Err(ProtocolError::UnexpectedStderr("STDERR_WRITE")),
            other => {
                if startup_messages.len() < 1024 {
                    startup_messages.push(other);
                }
            }
        }
    }

    Ok(Negotiated {
        version,
        peer_version,
        features,
        daemon_nix_version,
        trust,
        startup_messages,
    })
}
