//! A nix-daemon replacement that speaks the Nix worker protocol on a unix socket.

fn main() {}
