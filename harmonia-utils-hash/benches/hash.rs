//! Hot paths of harmonia-utils-hash: sha256 throughput and nix-base32 for store path (20 B) and sha256 (32 B)
//! digests.
// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use harmonia_utils_hash::{Algorithm, Hash, Hasher, nix_base32};
use std::hint::black_box;

fn sha256(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha256");
    for size in [1024usize, 1024 * 1024] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("digest_of", size), &data, |b, data| {
            b.iter(|| Hash::digest_of(Algorithm::Sha256, black_box(data)))
        });
        group.bench_with_input(
            BenchmarkId::new("hasher_64k_chunks", size),
            &data,
            |b, data| {
                b.iter(|| {
                    let mut h = Hasher::new(Algorithm::Sha256);
                    for chunk in black_box(data).chunks(64 * 1024) {
                        h.update(chunk);
                    }
                    h.finish()
                })
            },
        );
    }
    group.finish();
}

fn base32(c: &mut Criterion) {
    let mut group = c.benchmark_group("nix_base32");
    for size in [20usize, 32] {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 73 % 256) as u8).collect();
        let text = nix_base32::encode(&bytes);
        group.bench_with_input(BenchmarkId::new("encode", size), &bytes, |b, bytes| {
            b.iter(|| nix_base32::encode(black_box(bytes)))
        });
        group.bench_with_input(BenchmarkId::new("decode", size), &text, |b, text| {
            b.iter(|| nix_base32::decode(black_box(text)))
        });
    }
    group.finish();
}

criterion_group!(benches, sha256, base32);
criterion_main!(benches);
