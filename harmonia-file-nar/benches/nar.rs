//! criterion benches: NAR encoding of a tree of ~8,000 small files (~155 MB) and of a 256 MiB file, from
//! page cache; hashing; decoding of the same NARs from memory; restoring them; listing the tree.
//!
//! `NAR_BENCH_TREE=/some/dir` benches that directory instead of the generated tree.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use harmonia_file_nar::{NarDecoder, NarEncoder, encode, hash_and_size_blocking, list, restore};

const TREE_FILES: usize = 8_000;
const BIG_FILE: usize = 256 << 20;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A tree shaped like a copy of /usr/share/doc: ~8,000 files of 0..39 KB (mean ~19.5 KB) in nested
/// directories, some executables and symlinks.
fn make_tree(root: &Path) {
    let pool = random_bytes(1, 1 << 20);
    let mut state = 42u64;
    for i in 0..TREE_FILES {
        let dir =
            root.join(format!("pkg-{:03}", i / 20))
                .join(if i % 3 == 0 { "examples" } else { "" });
        fs::create_dir_all(&dir).expect("mkdir");
        let r = splitmix(&mut state);
        let size = (r % 39_000) as usize;
        let start = (r >> 32) as usize % (pool.len() - size);
        let path = dir.join(format!("file-{i}.txt"));
        fs::write(&path, &pool[start..start + size]).expect("write");
        if i % 50 == 0 {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        if i % 100 == 0 {
            std::os::unix::fs::symlink(format!("file-{i}.txt"), dir.join(format!("link-{i}")))
                .expect("symlink");
        }
    }
}

struct Inputs {
    _tmp: tempfile::TempDir,
    tree: PathBuf,
    big: PathBuf,
}

fn inputs() -> Inputs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tree = match std::env::var_os("NAR_BENCH_TREE") {
        Some(t) => PathBuf::from(t),
        None => {
            let t = tmp.path().join("tree");
            make_tree(&t);
            t
        }
    };
    let big = tmp.path().join("big");
    fs::write(&big, random_bytes(7, BIG_FILE)).expect("write big file");
    Inputs {
        _tmp: tmp,
        tree,
        big,
    }
}

fn drain(path: &Path) -> u64 {
    let mut n = 0;
    for chunk in NarEncoder::new(path) {
        n += black_box(chunk.expect("encode")).len() as u64;
    }
    n
}

fn nar_of(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    NarEncoder::new(path).write_to(&mut out).expect("encode");
    out
}

fn benches(c: &mut Criterion) {
    let inputs = inputs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    for (name, path) in [
        ("tree-8000-files", &inputs.tree),
        ("file-256MiB", &inputs.big),
    ] {
        let nar = nar_of(path); // also warms the page cache
        let size = nar.len() as u64;
        let mut g = c.benchmark_group(name);
        g.sample_size(10).throughput(Throughput::Bytes(size));
        g.bench_function("encode-sync", |b| b.iter(|| assert_eq!(drain(path), size)));
        g.bench_function("encode-async-stream", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut s = encode(path.clone());
                    let mut n = 0u64;
                    while let Some(chunk) = s.next().await {
                        n += black_box(chunk.expect("encode")).len() as u64;
                    }
                    assert_eq!(n, size);
                })
            })
        });
        g.bench_function("hash-and-size", |b| {
            b.iter(|| assert_eq!(hash_and_size_blocking(path).expect("hash").1, size))
        });
        g.bench_function("decode", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut d = NarDecoder::new(&nar[..]);
                    assert_eq!(d.skip_to_end().await.expect("decode"), size);
                })
            })
        });
        g.bench_function("restore", |b| {
            // Each restore goes to a fresh temp dir, removed outside the timed part.
            b.iter_batched(
                || tempfile::tempdir().expect("tempdir"),
                |out| {
                    rt.block_on(restore(&nar[..], &out.path().join("r")))
                        .expect("restore");
                    out
                },
                BatchSize::PerIteration,
            )
        });
        if path == &inputs.tree {
            g.bench_function("list", |b| b.iter(|| black_box(list(path).expect("list"))));
        }
        g.finish();
    }
}

criterion_group! {
    name = nar;
    config = Criterion::default();
    targets = benches
}
criterion_main!(nar);
