//! The Nix worker protocol: wire primitives, framing, handshake and typed operations,
//! both sides, versions 1.21 (Nix 2.3) to 1.38.
//!
//! - [`wire`]: u64s, padded strings, collections; [`NixSerialize`]/[`NixDeserialize`]
//!   with a version context and the [`nix_struct!`] macro for version-gated structs.
//! - [`handshake`]: magic numbers, version negotiation, the 1.38 feature exchange.
//! - [`stderr`]: the channel between a request and its reply (logs, activities, errors);
//!   [`logger`] queues such messages from work running outside the connection task.
//! - [`request`]: op codes, typed requests ([`Request`], [`read_request`]) and replies.
//! - [`framed`], [`nar`], [`multiple`]: the data that follows some requests.
//! - [`client`]: a client over any stream (unix socket) for tests and tools.
//!
//! Bounded reads throughout: a length field never allocates more than what arrived.

#![deny(unsafe_code)]

pub mod client;
pub mod error;
pub mod framed;
pub mod handshake;
pub mod logger;
pub mod multiple;
pub mod nar;
pub mod request;
pub mod stderr;
pub mod types;
pub mod version;
pub mod wire;

pub use error::{ProtocolError, Result};

pub use handshake::{
    ClientHandshake, Negotiated, ServerHandshake, TrustLevel, WORKER_MAGIC_1, WORKER_MAGIC_2,
    client_handshake, server_handshake,
};
pub use request::{Op, Operation, Request, read_request};
pub use stderr::{NixError, StderrMsg};
/// Used by [`nix_struct!`] so that crates using the macro need not name tokio.
#[doc(hidden)]
pub use tokio as __tokio;
pub use types::{UnkeyedValidPathInfo, ValidPathInfo};
pub use version::{MIN_VERSION, PROTOCOL_VERSION, ProtocolVersion};
pub use wire::{Encoder, NixDeserialize, NixReader, NixSerialize, NixWriter};
