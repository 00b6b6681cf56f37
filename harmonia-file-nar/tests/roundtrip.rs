//! Property tests: random trees -> NAR -> decode / restore -> encode give the same bytes, listings agree
//! with the decoder's offsets, and `encode_from_offset` gives the tail of the NAR.

mod common;

use std::collections::BTreeMap;

use common::{Tree, decode_all, nar, tree_from_events};
use harmonia_file_nar::{
    ListingEntry, NarDecoder, NarEncoder, NarEvent, NarScanner, list_with_nar_size, restore,
};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-zA-Z0-9._+-]{1,12}".prop_map(String::into_bytes),
        // Non-ASCII and raw non-UTF-8 bytes (valid on Linux, sorted by bytes in a NAR).
        proptest::collection::vec(1u8..=255, 1..6),
    ]
    .prop_filter("valid entry name", |n| {
        n.as_slice() != b"." && n.as_slice() != b".." && !n.contains(&b'/') && !n.contains(&0)
    })
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(executable, contents)| Tree::File {
                executable,
                contents
            }),
        (any::<bool>(), 0usize..300_000).prop_map(|(executable, len)| Tree::File {
            executable,
            contents: (0..len).map(|i| (i * 31 % 251) as u8).collect(),
        }),
        "[a-zA-Z0-9/._-]{1,40}".prop_map(|t| Tree::Symlink(t.into_bytes())),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        proptest::collection::btree_map(name(), inner, 0..6)
            .prop_map(|m: BTreeMap<Vec<u8>, Tree>| Tree::Dir(m.into_iter().collect()))
    })
}

fn encode_all(path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in NarEncoder::new(path) {
        out.extend_from_slice(&chunk.expect("encoding failed"));
    }
    out
}

fn offsets_of(entry: &ListingEntry, prefix: Vec<u8>, out: &mut Vec<(Vec<u8>, u64)>) {
    match entry {
        ListingEntry::Regular { nar_offset, .. } => out.push((prefix, nar_offset.expect("offset"))),
        ListingEntry::Directory { entries } => {
            for (name, child) in entries {
                let mut p = prefix.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name.as_bytes());
                offsets_of(child, p, out);
            }
        }
        ListingEntry::Symlink { .. } => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn decode_restore_encode_round_trip(t in tree(), cut in any::<prop::sample::Index>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let bytes = nar(&t);
        // decode(nar(t)) == t
        let events = rt.block_on(decode_all(&bytes)).expect("decoding a valid NAR");
        prop_assert_eq!(tree_from_events(events.clone()), t.clone());

        // encode(restore(nar(t))) == nar(t)
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("root");
        rt.block_on(restore(&bytes[..], &dest)).expect("restore");
        let again = encode_all(&dest);
        prop_assert!(again == bytes, "re-encoded NAR differs");

        // The listing (metadata only) agrees with the decoder on size and every narOffset.
        let (listing, size) = list_with_nar_size(&dest).expect("listing");
        prop_assert_eq!(size, bytes.len() as u64);
        let mut from_listing = Vec::new();
        offsets_of(&listing.root, Vec::new(), &mut from_listing);
        let from_decoder: Vec<(Vec<u8>, u64)> = events.iter().filter_map(|e| match e {
            NarEvent::File { path, nar_offset, .. } => Some((path.as_bytes().to_vec(), *nar_offset)),
            _ => None,
        }).collect();
        // Lossy UTF-8 names in the listing: compare only when all names are UTF-8.
        if from_decoder.iter().all(|(p, _)| std::str::from_utf8(p).is_ok()) {
            prop_assert_eq!(from_listing, from_decoder);
        }

        // encode_from_offset(N) == nar[N..]
        let offset = cut.index(bytes.len() + 1);
        let mut tail = Vec::new();
        for chunk in NarEncoder::from_offset(&dest, offset as u64) {
            tail.extend_from_slice(&chunk.expect("encoding from offset"));
        }
        prop_assert!(tail == bytes[offset..], "tail from {} differs", offset);

        // The decoder stops at the end of the NAR, leaving what follows.
        let mut with_trailer = bytes.clone();
        with_trailer.extend_from_slice(b"trailing");
        let mut decoder = NarDecoder::new(&with_trailer[..]);
        let n = rt.block_on(decoder.skip_to_end()).expect("decoding");
        prop_assert_eq!(n, bytes.len() as u64);
        prop_assert_eq!(decoder.into_inner(), &b"trailing"[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let _ = rt.block_on(decode_all(&data));
        let mut prefixed = common::nar(&Tree::Dir(Vec::new()))[..40].to_vec();
        prefixed.extend_from_slice(&data);
        let _ = rt.block_on(decode_all(&prefixed));
    }

    #[test]
    fn corrupted_nars_are_rejected_or_decode_cleanly(t in tree(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let mut bytes = nar(&t);
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        // Either an error or a valid NAR whose re-serialisation is exactly the input.
        if let Ok(events) = rt.block_on(decode_all(&bytes)) {
            prop_assert_eq!(nar(&tree_from_events(events)), bytes);
        }
    }

    /// The daemon finds the end of an unframed NAR with the scanner and then decodes it, so on every
    /// input the decoder accepts, the scanner must end at exactly the same byte (else the connection
    /// desynchronises); on other inputs it must fail or stop without panicking, fed in any split.
    #[test]
    fn scanner_ends_where_the_decoder_ends(t in tree(), pos in any::<prop::sample::Index>(), byte in any::<u8>(), corrupt in any::<bool>(), split in 1usize..64) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let mut bytes = nar(&t);
        if corrupt {
            let i = pos.index(bytes.len());
            bytes[i] = byte;
        }
        let mut wire = bytes.clone();
        wire.extend_from_slice(b"NEXT-REQUEST");
        let mut decoder = NarDecoder::new(&wire[..]);
        let decoded = rt.block_on(decoder.skip_to_end());
        let mut scanner = NarScanner::new();
        let mut scanned = Ok(0usize);
        for piece in wire.chunks(split) {
            match scanner.feed(piece) {
                Ok(n) => {
                    scanned = scanned.map(|s| s + n);
                    if n < piece.len() {
                        break;
                    }
                }
                Err(e) => {
                    scanned = Err(e);
                    break;
                }
            }
        }
        if let Ok(end) = decoded {
            let used = scanned.expect("the scanner refused a NAR the decoder accepted");
            prop_assert!(scanner.is_done());
            prop_assert_eq!(used as u64, end);
            prop_assert_eq!(scanner.consumed(), end);
        }
    }
}
