//! Test helpers: throwaway chroot Nix stores built by the real Nix, and helpers to drive our binaries.
