//! Fuzzes `NarInfo::parse` on arbitrary text.
//!
//! Whatever parses must render to text that parses to the same value (and renders identically),
//! and signing it with a key must give a signature that key verifies.
#![no_main]

use std::sync::LazyLock;

use harmonia_store_nar_info::NarInfo;
use harmonia_store_path::StoreDir;
use harmonia_utils_signature::{PublicKey, SecretKey};
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<(SecretKey, PublicKey)> = LazyLock::new(|| {
    let secret = SecretKey::from_seed("fuzz-key-1", &[7; 32]).expect("valid test key");
    let public = secret.to_public_key();
    (secret, public)
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = StoreDir::default();
    let Ok(info) = NarInfo::parse(&dir, text) else {
        return;
    };

    let rendered = info.render(&dir);
    let reparsed = match NarInfo::parse(&dir, &rendered) {
        Ok(r) => r,
        Err(e) => panic!("rendered narinfo does not parse: {e}\n{rendered}"),
    };
    assert_eq!(reparsed, info, "render/parse changed the narinfo:\n{rendered}");
    assert_eq!(reparsed.render(&dir), rendered);

    let fingerprint = info.fingerprint(&dir);
    assert!(fingerprint.starts_with("1;"), "{fingerprint}");

    let (secret, public) = &*KEY;
    let mut signed = info;
    signed.sign(&dir, secret);
    assert!(signed.verify(&dir, std::slice::from_ref(public)), "our own signature does not verify");
});
