//! The narinfo format of Nix binary caches: parse, render, fingerprint, sign and verify.
