//! Hot paths of the protocol: encoding and decoding path infos (QueryPathInfo replies,
//! what `nix path-info --all` asks for thousands of times), reading framed streams
//! (AddToStoreNar) and finding a NAR's end (AddMultipleToStore, old AddToStore).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::BTreeSet;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use harmonia_protocol::framed::{FramedReader, FramedWriter};
use harmonia_protocol::nar::NarPassthrough;
use harmonia_protocol::request::QueryPathInfoResponse;
use harmonia_protocol::types::UnkeyedValidPathInfo;
use harmonia_protocol::{Encoder, NixReader, PROTOCOL_VERSION};
use harmonia_store_path::{StoreDir, StorePath};
use harmonia_utils_hash::NarHash;
use tokio::io::{AsyncWriteExt, BufReader};

fn sample(i: u32) -> UnkeyedValidPathInfo {
    let p = |n: u32| -> StorePath { format!("{:0>32}-path-{n}", n % 10).parse().unwrap() };
    UnkeyedValidPathInfo {
        deriver: Some(p(i + 1)),
        nar_hash: NarHash::digest_of(&i.to_le_bytes()),
        references: (0..5).map(|k| p(i + k)).collect::<BTreeSet<_>>(),
        registration_time: 1_700_000_000,
        nar_size: 4096,
        ultimate: true,
        signatures: ["cache.example.org-1:c2lnbmF0dXJl".to_string()].into(),
        ca: None,
    }
}

fn path_infos(c: &mut Criterion) {
    let infos: Vec<QueryPathInfoResponse> = (0..3000)
        .map(|i| QueryPathInfoResponse(Some(sample(i))))
        .collect();
    let mut g = c.benchmark_group("path_info");
    g.throughput(Throughput::Elements(infos.len() as u64));
    g.bench_function("encode_3000", |b| {
        b.iter(|| {
            let mut enc = Encoder::new(PROTOCOL_VERSION, StoreDir::default());
            for i in &infos {
                enc.write(i);
            }
            enc.take_buffer()
        })
    });
    let mut enc = Encoder::new(PROTOCOL_VERSION, StoreDir::default());
    for i in &infos {
        enc.write(i);
    }
    let bytes = enc.take_buffer();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    g.bench_function("decode_3000", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut r = NixReader::new(&bytes[..], PROTOCOL_VERSION, StoreDir::default());
                for _ in 0..3000 {
                    let _: QueryPathInfoResponse = r.read().await.unwrap();
                }
            })
        })
    });
    g.finish();
}

fn streams(c: &mut Criterion) {
    const SIZE: usize = 64 << 20;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let payload = vec![7u8; SIZE];
    let framed = rt.block_on(async {
        let mut w = FramedWriter::new(Vec::with_capacity(SIZE + SIZE / 1000));
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
        w.into_inner()
    });
    let mut nar = Vec::new();
    for t in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"regular",
        b"contents",
    ] {
        nar.extend((t.len() as u64).to_le_bytes());
        nar.extend(t);
        nar.resize(nar.len().next_multiple_of(8), 0);
    }
    nar.extend((SIZE as u64).to_le_bytes());
    nar.extend(&payload);
    nar.extend(1u64.to_le_bytes());
    nar.extend(b")\0\0\0\0\0\0\0");

    let mut g = c.benchmark_group("streams");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("framed_read_64MiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                tokio::io::copy(&mut FramedReader::new(&framed[..]), &mut tokio::io::sink())
                    .await
                    .unwrap()
            })
        })
    });
    g.bench_function("nar_passthrough_64MiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut p = NarPassthrough::new(BufReader::with_capacity(64 << 10, &nar[..]));
                tokio::io::copy(&mut p, &mut tokio::io::sink())
                    .await
                    .unwrap()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, path_infos, streams);
criterion_main!(benches);
