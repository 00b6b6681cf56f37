//! The encoder against real Nix: bytes equal `nix-store --dump`, hash and size equal `nix path-info --json`,
//! `encode_from_offset(N)` equals `dump[N..]`, listings equal Nix's, restores dump back identically, and
//! the decoder sees every node of Nix's dumps.

use futures::StreamExt;
use harmonia_file_nar::{
    ListingEntry, NarDecoder, NarEncoder, NarError, NarEvent, NarListing, encode,
    encode_from_offset, hash_and_size, list_with_nar_size, restore,
};
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

/// Removes `narOffset` everywhere (a local store's `nix store ls` does not know NAR offsets).
fn strip_nar_offsets(v: &mut serde_json::Value) {
    if let Some(obj) = v.as_object_mut() {
        obj.remove("narOffset");
        for child in obj.values_mut() {
            strip_nar_offsets(child);
        }
    }
}

/// Every regular file of `entry` (at `path`) with its contents from disk, checked against `nar`.
fn check_offsets(entry: &ListingEntry, path: &std::path::Path, nar: &[u8], seen: &mut usize) {
    match entry {
        ListingEntry::Regular {
            size, nar_offset, ..
        } => {
            let off = nar_offset.expect("our listing always has narOffset") as usize;
            let contents = std::fs::read(path).expect("read fixture file");
            assert_eq!(contents.len() as u64, *size, "{}", path.display());
            assert!(
                nar.get(off..off + contents.len()) == Some(&contents[..]),
                "narOffset {off} of {} does not point at its bytes",
                path.display()
            );
            // The size field sits right before the contents.
            assert_eq!(nar[off - 8..off], size.to_le_bytes());
            *seen += 1;
        }
        ListingEntry::Directory { entries } => {
            for (name, child) in entries {
                check_offsets(child, &path.join(name), nar, seen);
            }
        }
        ListingEntry::Symlink { .. } => {}
    }
}

#[test]
fn listing_matches_nix_store_ls_and_binary_cache_ls() {
    let fx = standard_fixture();
    let cache = tempfile::tempdir().expect("tempdir");
    let paths: Vec<&str> = fx.paths.all.iter().map(String::as_str).collect();
    fx.store.copy_to_binary_cache_with(
        &paths,
        cache.path(),
        "compression=none&write-nar-listing=true",
    );
    let mut files = 0;
    for path in &paths {
        let real = fx.store.real_path(path);
        let (listing, nar_size) = list_with_nar_size(&real).expect("listing failed");
        let dump = fx.store.dump(path);
        assert_eq!(
            nar_size,
            dump.len() as u64,
            "NAR size of {path} from metadata"
        );

        // Byte for byte what `nix copy --to file://...?write-nar-listing=true` wrote.
        let ls_file = cache
            .path()
            .join(format!("{}.ls", harmonia_test_support::hash_part(path)));
        let nix_ls = std::fs::read_to_string(&ls_file).expect("nix copy wrote no .ls file");
        assert_eq!(listing.to_json(), nix_ls, "{path}: .ls differs from Nix's");
        let parsed: NarListing = serde_json::from_str(&nix_ls).expect("Nix's .ls parses");
        assert_eq!(parsed, listing);

        // The root equals `nix store ls -R --json` on the local store (which has no narOffset).
        let mut ours = serde_json::to_value(&listing.root).expect("serialise");
        strip_nar_offsets(&mut ours);
        assert_eq!(
            ours,
            fx.store.store_ls(path),
            "{path}: differs from nix store ls"
        );

        check_offsets(&listing.root, &real, &dump, &mut files);
    }
    assert!(files >= 15, "only {files} regular files checked");
}

#[tokio::test]
async fn restoring_our_dump_gives_the_same_tree() {
    let fx = standard_fixture();
    let out = tempfile::tempdir().expect("tempdir");
    for (i, path) in fx.paths.all.iter().enumerate() {
        let nar = collect(encode(fx.store.real_path(path))).await;
        let dest = out.path().join(format!("restored-{i}"));
        restore(&nar[..], &dest).await.expect("restore failed");
        let again = fx
            .store
            .run(fx.store.nix("nix-store").arg("--dump").arg(&dest));
        assert!(
            again == nar,
            "{path}: nix-store --dump of the restored tree differs"
        );
        // Restoring onto an existing destination is refused.
        let err = restore(&nar[..], &dest)
            .await
            .expect_err("restored over an existing path");
        assert!(matches!(err, NarError::DestinationExists { .. }), "{err}");
    }
    let tree = out.path().join(format!(
        "restored-{}",
        fx.paths
            .all
            .iter()
            .position(|p| *p == fx.paths.tree)
            .expect("tree in all")
    ));
    assert_eq!(
        std::fs::read_link(tree.join(harmonia_test_support::TREE_SYMLINK_OUTSIDE))
            .expect("symlink"),
        std::path::Path::new(harmonia_test_support::TREE_SYMLINK_OUTSIDE_TARGET)
    );
}

#[tokio::test]
async fn decoding_nix_dumps_sees_every_node() {
    let fx = standard_fixture();
    for path in &fx.paths.all {
        let dump = fx.store.dump(path);
        let real = fx.store.real_path(path);
        let mut decoder = NarDecoder::new(&dump[..]);
        let mut current: Option<(std::path::PathBuf, Vec<u8>, u64)> = None;
        let mut nodes = 0;
        while let Some(ev) = decoder.next().await {
            let ev = ev.unwrap_or_else(|e| panic!("decoding the dump of {path}: {e}"));
            if let NarEvent::Contents(data) = &ev {
                current
                    .as_mut()
                    .expect("contents without a file")
                    .1
                    .extend_from_slice(data);
                continue;
            }
            if let Some((file, contents, nar_offset)) = current.take() {
                assert_eq!(
                    std::fs::read(&file).expect("read"),
                    contents,
                    "{}",
                    file.display()
                );
                assert_eq!(
                    &dump[nar_offset as usize..][..contents.len()],
                    &contents[..]
                );
            }
            nodes += 1;
            match ev {
                NarEvent::Directory { path } => assert!(path.under(&real).is_dir()),
                NarEvent::File {
                    path,
                    executable,
                    size,
                    nar_offset,
                } => {
                    let meta = std::fs::symlink_metadata(path.under(&real)).expect("stat");
                    assert_eq!(meta.len(), size);
                    use std::os::unix::fs::PermissionsExt;
                    assert_eq!(meta.permissions().mode() & 0o100 != 0, executable);
                    current = Some((path.under(&real), Vec::new(), nar_offset));
                }
                NarEvent::Symlink { path, target } => {
                    use std::os::unix::ffi::OsStrExt;
                    let on_disk = std::fs::read_link(path.under(&real)).expect("readlink");
                    assert_eq!(on_disk.as_os_str().as_bytes(), &target[..]);
                }
                NarEvent::EndDirectory { .. } | NarEvent::Contents(_) => {}
            }
        }
        if let Some((file, contents, _)) = current.take() {
            assert_eq!(std::fs::read(&file).expect("read"), contents);
        }
        assert_eq!(
            decoder.offset(),
            dump.len() as u64,
            "{path}: decoder stopped early"
        );
        assert!(nodes >= 1);
    }
}
