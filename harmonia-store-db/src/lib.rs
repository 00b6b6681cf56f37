//! Read and write access to Nix's SQLite store database (schema 10).
