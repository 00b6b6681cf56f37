//! Nix hashes (md5, sha1, sha256, sha512) and their encodings: nix-base32, base16, base64 and SRI.
