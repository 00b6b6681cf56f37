//! The per-request work of a binary cache: build, sign and render a narinfo; plus parsing and verifying.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::str::FromStr;

use criterion::{Criterion, criterion_group, criterion_main};
use harmonia_store_nar_info::NarInfo;
use harmonia_store_path::{StoreDir, StorePath};
use harmonia_utils_hash::{Algorithm, Hash, NarHash, nix_base32};
use harmonia_utils_signature::SecretKey;

fn path(i: u8, name: &str) -> StorePath {
    StorePath::from_str(&format!("{}-{name}", nix_base32::encode(&[i; 20]))).unwrap()
}

/// A typical narinfo: a package with a dozen references, a deriver and one upstream signature.
fn typical() -> NarInfo {
    let upstream = SecretKey::from_seed("cache.nixos.org-1", &[5; 32]).unwrap();
    let mut ni = NarInfo {
        store_path: path(1, "hello-2.12.1"),
        url: format!("nar/{}.nar", nix_base32::encode(&[9; 32])),
        compression: "none".into(),
        file_hash: Some(Hash::new(Algorithm::Sha256, &[9; 32]).unwrap()),
        file_size: Some(226_488),
        nar_hash: NarHash::from_digest([9; 32]),
        nar_size: 226_488,
        references: (2..14).map(|i| path(i, &format!("lib-{i}-1.0"))).collect(),
        deriver: Some(path(99, "hello-2.12.1.drv")),
        system: None,
        signatures: Vec::new(),
        ca: None,
    };
    ni.references.sort();
    ni.sign(&StoreDir::default(), &upstream);
    ni
}

fn bench(c: &mut Criterion) {
    let sd = StoreDir::default();
    let key = SecretKey::from_seed("harmonia-1", &[7; 32]).unwrap();
    let public = [key.to_public_key()];
    let ni = typical();
    let text = ni.render(&sd);

    c.bench_function("narinfo render", |b| b.iter(|| black_box(&ni).render(&sd)));
    c.bench_function("narinfo fingerprint", |b| {
        b.iter(|| black_box(&ni).fingerprint(&sd))
    });
    let fp = ni.fingerprint(&sd);
    c.bench_function("ed25519 sign of the fingerprint alone", |b| {
        b.iter(|| key.sign(black_box(fp.as_bytes())))
    });
    c.bench_function("narinfo sign+render (per request)", |b| {
        b.iter(|| {
            let mut n = black_box(&ni).clone();
            n.sign(&sd, &key);
            n.render(&sd)
        })
    });
    c.bench_function("narinfo parse", |b| {
        b.iter(|| NarInfo::parse(&sd, black_box(&text)).unwrap())
    });
    let mut signed = ni.clone();
    signed.sign(&sd, &key);
    c.bench_function("narinfo verify", |b| {
        b.iter(|| assert!(black_box(&signed).verify(&sd, &public)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
