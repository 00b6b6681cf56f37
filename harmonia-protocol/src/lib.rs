//! The Nix worker protocol: wire primitives, framing, handshake and typed operations, both sides.
