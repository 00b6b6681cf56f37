//! One connection: the worker protocol loop.

use anyhow::Result;
use tokio::net::UnixStream;

use crate::auth::{Access, Peer};
use crate::server::Daemon;

/// Serves one client until it hangs up.
pub async fn run(
    _daemon: &Daemon,
    _stream: UnixStream,
    _peer: &Peer,
    _access: Access,
) -> Result<()> {
    Ok(())
}
