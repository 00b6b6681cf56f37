//! A Nix binary cache server that serves a Nix store over HTTP(S).

fn main() {}
