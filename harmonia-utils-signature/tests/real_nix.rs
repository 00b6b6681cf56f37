//! Keys made by real Nix (`nix-store --generate-binary-cache-key`) against our parser.

use std::path::Path;

use harmonia_utils_signature::{PublicKey, SecretKey, SignatureError};

/// Runs `nix-store --generate-binary-cache-key NAME SECRET PUBLIC` with a throwaway NIX_CONF_DIR
/// and returns the two files' contents.
/// A key pair made by the real `nix-store --generate-binary-cache-key` (inside a throwaway chroot
/// store, so the machine's own store is never opened): the secret and public key files' text.
fn nix_generate(dir: &Path, name: &str) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let (secret, _) = harmonia_test_support::generate_signing_key(dir, name);
    let public = secret.with_extension("public");
    (
        std::fs::read_to_string(secret).unwrap(),
        std::fs::read_to_string(public).unwrap(),
    )
}

#[test]
fn public_key_derived_from_nix_secret_equals_nix_public_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["cache.example.org-1", "k", "weird_name+x=1"] {
        let (secret_text, public_text) = nix_generate(dir.path(), name);
        let secret = SecretKey::parse(&secret_text).unwrap();
        assert_eq!(secret.name(), name);
        let derived = secret.to_public_key();
        assert_eq!(derived.to_string(), public_text.trim());
        assert_eq!(PublicKey::parse(&public_text).unwrap(), derived);
        // Our text form of the secret is byte-identical to what Nix wrote.
        assert_eq!(secret.to_nix_string().as_str(), secret_text.trim());
        // File content with a trailing newline (as an editor would save it) is accepted.
        assert_eq!(
            SecretKey::parse(&format!("{secret_text}\n"))
                .unwrap()
                .to_public_key(),
            derived
        );
    }
}

#[test]
fn signatures_verify_only_with_the_matching_nix_key() {
    let dir = tempfile::tempdir().unwrap();
    let (sa, pa) = nix_generate(dir.path(), "a");
    // Same name, different key: Nix looks keys up by name, so this is the interesting case.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (sb, pb) = nix_generate(&other, "a");
    let (sa, pa, sb, pb) = (
        SecretKey::parse(&sa).unwrap(),
        PublicKey::parse(&pa).unwrap(),
        SecretKey::parse(&sb).unwrap(),
        PublicKey::parse(&pb).unwrap(),
    );
    assert_ne!(pa, pb);
    let msg = b"1;/nix/store/00000000000000000000000000000000-x;sha256:0;1;";
    let sig = sa.sign(msg);
    assert!(pa.verify(msg, &sig));
    assert!(!pb.verify(msg, &sig));
    assert!(pb.verify(msg, &sb.sign(msg)));
}

#[test]
fn corrupted_nix_secret_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (sa, _) = nix_generate(dir.path(), "a");
    let (_, pb) = nix_generate(&dir.path().join("b"), "b");
    // Splice b's public key into a's secret: seed and public half disagree.
    let (_, sa_data) = sa.trim().split_once(':').unwrap();
    let (_, pb_data) = pb.trim().split_once(':').unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64.decode(sa_data).unwrap();
    bytes[32..].copy_from_slice(&b64.decode(pb_data).unwrap());
    let spliced = format!("a:{}", b64.encode(&bytes));
    assert_eq!(
        SecretKey::parse(&spliced).unwrap_err(),
        SignatureError::KeyMismatch { name: "a".into() }
    );
    // A public key file is not a secret key.
    assert!(matches!(
        SecretKey::parse(&pb).unwrap_err(),
        SignatureError::WrongLength {
            expected: 64,
            actual: 32,
            ..
        }
    ));
}
