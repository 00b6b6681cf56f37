//! The encoder against real Nix: bytes equal `nix-store --dump`, hash and size equal `nix path-info --json`,
//! and `encode_from_offset(N)` equals `dump[N..]`.

use futures::StreamExt;
use harmonia_file_nar::{NarEncoder, encode, encode_from_offset, hash_and_size};
use harmonia_test_support::standard_fixture;

async fn collect(mut s: harmonia_file_nar::NarStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("encoding failed"));
    }
    out
}

/// The chunks of `encoder` concatenated, stopping once at least `limit` bytes were produced.
fn concat(encoder: NarEncoder, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in encoder {
        out.extend_from_slice(&chunk.expect("encoding failed"));
        if out.len() >= limit {
            break;
        }
    }
    out
}

#[tokio::test]
async fn encoding_matches_nix_store_dump_and_path_info() {
    let fx = standard_fixture();
    let infos = fx
        .store
        .path_info(&fx.paths.all.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(infos.as_array().map(Vec::len), Some(fx.paths.all.len()));
    for info in infos.as_array().into_iter().flatten() {
        let path = info["path"].as_str().expect("path-info without path");
        let real = fx.store.real_path(path);
        let expected = fx.store.dump(path);

        let ours = collect(encode(real.clone())).await;
        assert!(
            ours == expected,
            "async NAR of {path} differs from nix-store --dump"
        );
        let sync = concat(NarEncoder::new(&real), usize::MAX);
        assert!(
            sync == expected,
            "sync NAR of {path} differs from nix-store --dump"
        );

        let (hash, size) = hash_and_size(real).await.expect("hash_and_size failed");
        assert_eq!(Some(size), info["narSize"].as_u64(), "narSize of {path}");
        let nix_hash = info["narHash"].as_str().expect("path-info without narHash");
        let nix_hash: harmonia_utils_hash::NarHash =
            nix_hash.parse().expect("Nix's narHash parses");
        assert_eq!(hash, nix_hash, "narHash of {path}");
    }
}

#[tokio::test]
async fn encode_from_offset_equals_the_tail_of_the_dump() {
    let fx = standard_fixture();
    for path in [
        &fx.paths.tree,
        &fx.paths.big_file,
        &fx.paths.top,
        &fx.paths.text_file,
    ] {
        let real = fx.store.real_path(path);
        let dump = fx.store.dump(path);
        let len = dump.len() as u64;
        // Every offset in the first KiB and around the end (headers, names, padding, small contents),
        // then a stride through the rest (inside big file contents, chunk boundaries).
        let mut offsets: Vec<u64> = (0..len.min(1024)).collect();
        offsets.extend(len.saturating_sub(300)..=len);
        offsets.extend((0..len).step_by(65_537));
        offsets.extend(
            [1 << 20, (1 << 20) + 1, (2 << 20) - 1, len / 2]
                .into_iter()
                .filter(|o| *o <= len),
        );
        for offset in offsets {
            // Comparing 64 KiB from each offset is enough: past the first chunk the encoder is in the
            // same state as a full encode. A stride of full tails checks the rest.
            let limit = if offset % 65_537 == 0 {
                usize::MAX
            } else {
                64 << 10
            };
            let tail = concat(NarEncoder::from_offset(&real, offset), limit);
            let end = (offset as usize).saturating_add(tail.len()).min(dump.len());
            assert!(
                tail.len() >= (dump.len() - offset as usize).min(limit),
                "{path} from offset {offset}: short output"
            );
            assert!(
                tail == dump[offset as usize..end],
                "{path} from offset {offset} differs"
            );
        }
        let async_tail = collect(encode_from_offset(real.clone(), len / 3)).await;
        assert!(
            async_tail == dump[(len / 3) as usize..],
            "{path}: async from offset {}",
            len / 3
        );
        let past: Vec<_> = NarEncoder::from_offset(&real, len + 1).collect();
        assert!(
            matches!(past.last(), Some(Err(harmonia_file_nar::NarError::OffsetPastEnd { nar_size, .. })) if *nar_size == len),
            "{path}: offset past the end must be an error"
        );
    }
}
