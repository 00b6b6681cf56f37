//! Malformed NARs: each gives a typed error (never a panic, a hang or an allocation sized by the input).

mod common;

use common::{Tree, decode_all, nar, put_str};
use harmonia_file_nar::{MAX_DEPTH, MAX_PATH_LEN, NarDecoder, NarError, restore};

fn file(contents: &[u8]) -> Tree {
    Tree::File {
        executable: false,
        contents: contents.to_vec(),
    }
}

fn dir(entries: Vec<(&[u8], Tree)>) -> Tree {
    Tree::Dir(entries.into_iter().map(|(n, t)| (n.to_vec(), t)).collect())
}

fn sample() -> Tree {
    dir(vec![
        (b"a", file(b"hello")),
        (
            b"bin",
            dir(vec![(
                b"run",
                Tree::File {
                    executable: true,
                    contents: b"#!/bin/sh\n".to_vec(),
                },
            )]),
        ),
        (b"empty", dir(vec![])),
        (b"link", Tree::Symlink(b"a".to_vec())),
    ])
}

#[tokio::test]
async fn the_sample_is_valid() {
    let events = decode_all(&nar(&sample())).await.expect("valid NAR");
    assert_eq!(common::tree_from_events(events), sample());
}

#[tokio::test]
async fn every_truncation_is_a_truncation_error() {
    let full = nar(&sample());
    for len in 0..full.len() {
        match decode_all(&full[..len]).await {
            Err(NarError::Truncated { offset }) => assert!(offset <= len as u64),
            other => panic!("prefix of {len} bytes gave {other:?}"),
        }
    }
}

#[tokio::test]
async fn wrong_magic_and_garbage() {
    let mut bad = nar(&sample());
    bad[8] = b'N';
    assert!(matches!(decode_all(&bad).await, Err(NarError::BadMagic)));
    let mut other = Vec::new();
    put_str(&mut other, b"nix-archive-2");
    assert!(matches!(decode_all(&other).await, Err(NarError::BadMagic)));
    assert!(matches!(
        decode_all(b"\xff\xff\xff\xff\xff\xff\xff\xffgarbage").await,
        Err(NarError::BadMagic)
    ));
    assert!(matches!(
        decode_all(b"").await,
        Err(NarError::Truncated { offset: 0 })
    ));
    let text = b"this is not a NAR at all, just some text that goes on".repeat(10);
    assert!(decode_all(&text).await.is_err());
}

#[tokio::test]
async fn unsorted_and_duplicate_entries() {
    for names in [[&b"b"[..], b"a"], [b"a", b"a"], [b"ab", b"a"], [b"a", b"A"]] {
        let t = dir(vec![(names[0], file(b"1")), (names[1], file(b"2"))]);
        match decode_all(&nar(&t)).await {
            Err(NarError::UnsortedEntry { name, previous, .. }) => {
                assert_eq!(name.as_bytes(), names[1]);
                assert_eq!(previous.as_bytes(), names[0]);
            }
            other => panic!("{names:?} gave {other:?}"),
        }
    }
}

#[tokio::test]
async fn dangerous_names() {
    for name in [&b".."[..], b".", b"a/b", b"/etc", b"", b"a\0b", b"../../x"] {
        let t = dir(vec![(name, file(b"x"))]);
        match decode_all(&nar(&t)).await {
            Err(NarError::BadName { offset, .. }) => assert!(offset > 0),
            other => panic!("{name:?} gave {other:?}"),
        }
    }
}

#[tokio::test]
async fn non_zero_padding() {
    // In a token ("type" has no padding; "regular" has 1 byte), in a name, and after file contents.
    let good = nar(&dir(vec![(b"a", file(b"hello"))]));
    let positions: Vec<usize> = [&b"regular"[..], b"\x01\0\0\0\0\0\0\0a", b"hello"]
        .iter()
        .map(|needle| {
            good.windows(needle.len())
                .position(|w| w == *needle)
                .expect("needle present")
                + needle.len()
        })
        .collect();
    for pos in positions {
        let mut bad = good.clone();
        bad[pos] = 1;
        match decode_all(&bad).await {
            Err(NarError::BadPadding { offset }) => assert_eq!(offset, pos as u64),
            other => panic!("padding at {pos} gave {other:?}"),
        }
    }
}

fn with_length_at(needle: &[u8], claimed: u64, tree: &Tree) -> Vec<u8> {
    let mut bytes = nar(tree);
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
        - 8;
    bytes[pos..pos + 8].copy_from_slice(&claimed.to_le_bytes());
    bytes
}

#[tokio::test]
async fn huge_length_fields_never_allocate() {
    let huge = 1u64 << 60;
    let t = dir(vec![(b"name", Tree::Symlink(b"target".to_vec()))]);
    assert!(matches!(
        decode_all(&with_length_at(b"name\0\0\0\0\x04", huge, &t)).await,
        Err(NarError::UnexpectedToken { .. })
    ));
    // The entry name (the second "name" string).
    let mut bytes = nar(&t);
    let second = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"name")
        .nth(1)
        .expect("two names")
        .0;
    bytes[second - 8..second].copy_from_slice(&huge.to_le_bytes());
    assert!(matches!(decode_all(&bytes).await, Err(NarError::TooLong { len, .. }) if len == huge));
    assert!(matches!(
        decode_all(&with_length_at(
            b"target\0\0",
            huge,
            &dir(vec![(b"x", Tree::Symlink(b"target".to_vec()))])
        ))
        .await,
        Err(NarError::UnexpectedToken { .. })
    ));
    let mut target = nar(&Tree::Symlink(b"target".to_vec()));
    let pos = target.len() - 16 - 8 - 8;
    target[pos..pos + 8].copy_from_slice(&huge.to_le_bytes());
    assert!(matches!(decode_all(&target).await, Err(NarError::TooLong { len, .. }) if len == huge));
    // File contents are streamed: a 2^60-byte claim with 5 bytes behind it is just truncated.
    let contents = with_length_at(b"hello", huge, &file(b"hello"));
    let mut decoder = NarDecoder::new(&contents[..]);
    let mut largest = 0;
    let result = loop {
        match decoder.next().await {
            Some(Ok(harmonia_file_nar::NarEvent::Contents(c))) => largest = largest.max(c.len()),
            Some(Ok(_)) => {}
            Some(Err(e)) => break e,
            None => panic!("a 2^60-byte file in a short NAR decoded"),
        }
    };
    assert!(matches!(result, NarError::Truncated { .. }), "{result}");
    assert!(largest <= harmonia_file_nar::CONTENTS_CHUNK);
}

#[tokio::test]
async fn token_order_is_enforced() {
    let mut bad = Vec::new();
    for s in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"regular",
        b"executable",
        b"x",
    ] {
        put_str(&mut bad, s);
    }
    assert!(matches!(
        decode_all(&bad).await,
        Err(NarError::UnexpectedToken { .. })
    ));
    let mut bad = Vec::new();
    for s in [&b"nix-archive-1"[..], b"(", b"type", b"fifo"] {
        put_str(&mut bad, s);
    }
    assert!(
        matches!(decode_all(&bad).await, Err(NarError::UnexpectedToken { expected, .. }) if expected.contains("directory"))
    );
    let mut bad = Vec::new();
    for s in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"directory",
        b")",
        b")",
    ] {
        put_str(&mut bad, s);
    }
    // The extra ")" after the root is not read: the NAR ends at the first one.
    let mut decoder = NarDecoder::new(&bad[..]);
    assert!(decoder.skip_to_end().await.is_ok());
    assert_eq!(decoder.offset(), bad.len() as u64 - 16);
    let mut bad = Vec::new();
    for s in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
        b"a",
        b"type",
    ] {
        put_str(&mut bad, s);
    }
    assert!(
        matches!(decode_all(&bad).await, Err(NarError::UnexpectedToken { expected, .. }) if expected == "\"node\"")
    );
    // An empty symlink target.
    assert!(matches!(
        decode_all(&nar(&Tree::Symlink(Vec::new()))).await,
        Err(NarError::BadSymlinkTarget { .. })
    ));
}

/// Every event carries its full path, so deep trees of long names used to cost a copy of up to 1 MiB
/// (1024 levels of 1024-byte names) per event: a 20 MB NAR of such entries took 18 s to decode.
/// Paths are now bounded like the filesystem bounds them.
#[tokio::test]
async fn long_paths_are_refused() {
    let name = vec![b'n'; 255];
    // 16 levels of 255-byte names: 16 * 256 - 1 = 4095 bytes, just under the limit.
    let mut fits_tree = dir(vec![(name.as_slice(), dir(vec![]))]);
    for _ in 0..15 {
        fits_tree = dir(vec![(name.as_slice(), fits_tree)]);
    }
    let events = decode_all(&nar(&fits_tree)).await.expect("4095-byte path");
    assert_eq!(events.len(), 2 * 17);
    // One more level of "f" inside it: 4097 bytes.
    let mut too_long = dir(vec![(name.as_slice(), dir(vec![(b"f", file(b"x"))]))]);
    for _ in 0..15 {
        too_long = dir(vec![(name.as_slice(), too_long)]);
    }
    match decode_all(&nar(&too_long)).await {
        Err(NarError::TooLong { len, max, .. }) => {
            assert_eq!(max, MAX_PATH_LEN as u64);
            assert_eq!(len, 16 * 256 + 1);
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
}

#[tokio::test]
async fn nesting_is_bounded() {
    let mut t = dir(vec![]);
    for _ in 0..MAX_DEPTH {
        t = dir(vec![(b"d", t)]);
    }
    assert!(matches!(
        decode_all(&nar(&t)).await,
        Err(NarError::TooDeep { .. })
    ));
}

#[tokio::test]
async fn restore_never_writes_outside_dest() {
    let base = tempfile::tempdir().expect("tempdir");
    let dest = base.path().join("out");
    // A symlink out of dest, then a second entry of the same name (a duplicate) that would write through it.
    let evil = dir(vec![
        (
            b"l",
            Tree::Symlink(base.path().to_string_lossy().as_bytes().to_vec()),
        ),
        (b"l", dir(vec![(b"pwned", file(b"x"))])),
    ]);
    let err = restore(&nar(&evil)[..], &dest)
        .await
        .expect_err("duplicate accepted");
    assert!(matches!(err, NarError::UnsortedEntry { .. }), "{err}");
    assert!(!base.path().join("pwned").exists());
    for name in [&b".."[..], b"../escape", b"/tmp"] {
        let dest = base.path().join(format!("out-{}", name.len()));
        let t = dir(vec![(name, file(b"x"))]);
        let err = restore(&nar(&t)[..], &dest)
            .await
            .expect_err("bad name accepted");
        assert!(matches!(err, NarError::BadName { .. }), "{err}");
    }
    assert!(!base.path().join("escape").exists());
    // A truncated NAR is an error, not a silently short file.
    let full = nar(&sample());
    let err = restore(&full[..full.len() - 20], &base.path().join("short"))
        .await
        .expect_err("truncated NAR restored");
    assert!(matches!(err, NarError::Truncated { .. }), "{err}");
}

#[tokio::test]
async fn restore_root_file_and_symlink() {
    let base = tempfile::tempdir().expect("tempdir");
    let f = base.path().join("f");
    restore(
        &nar(&Tree::File {
            executable: true,
            contents: b"#!/bin/sh\n".to_vec(),
        })[..],
        &f,
    )
    .await
    .expect("restore file");
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(
        std::fs::metadata(&f).expect("stat").permissions().mode() & 0o100,
        0
    );
    assert_eq!(std::fs::read(&f).expect("read"), b"#!/bin/sh\n");
    let l = base.path().join("l");
    restore(
        &nar(&Tree::Symlink(b"/nonexistent/target".to_vec()))[..],
        &l,
    )
    .await
    .expect("restore symlink");
    assert_eq!(
        std::fs::read_link(&l).expect("readlink"),
        std::path::Path::new("/nonexistent/target")
    );
}

#[tokio::test]
async fn a_dropped_next_future_is_reported_not_mistaken_for_the_end() {
    let full = nar(&sample());
    // A reader that delivers the NAR in two parts with a pause, so the second next() can be dropped while
    // it waits.
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    let mut decoder = NarDecoder::new(rx);
    use tokio::io::AsyncWriteExt;
    // magic, "(", "type", "directory": exactly enough for the first event.
    tx.write_all(&full[..80]).await.expect("write");
    assert!(matches!(
        decoder.next().await,
        Some(Ok(harmonia_file_nar::NarEvent::Directory { .. }))
    ));
    let pending = tokio::time::timeout(std::time::Duration::from_millis(10), decoder.next()).await;
    assert!(
        pending.is_err(),
        "the decoder should be waiting for more bytes"
    );
    tx.write_all(&full[80..]).await.expect("write");
    assert!(matches!(
        decoder.next().await,
        Some(Err(NarError::Interrupted { .. }))
    ));
    assert!(decoder.next().await.is_none());
}
