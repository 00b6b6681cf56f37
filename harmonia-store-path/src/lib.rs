//! Nix store directories and store paths: parsing, validation and computing them as Nix does.
