//! Ed25519 keys and signatures in Nix's name:base64 form, as used to sign binary caches.
