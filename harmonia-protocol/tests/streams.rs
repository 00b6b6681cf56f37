//! Property tests for the data that follows requests: framed streams split at random
//! points, and random NARs found exactly in a stream that goes on after them.

mod common;

use common::{s, u};
use harmonia_protocol::framed::{FramedReader, FramedWriter};
use harmonia_protocol::nar::{NarPassthrough, NarScanner};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A file system object, for generating NARs.
#[derive(Debug, Clone)]
enum Node {
    File { executable: bool, contents: Vec<u8> },
    Symlink(String),
    Dir(Vec<(String, Node)>),
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(executable, contents)| Node::File {
                executable,
                contents
            }),
        "[ -~]{1,20}".prop_map(Node::Symlink),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        proptest::collection::btree_map("[a-z()]{1,8}", inner, 0..4)
            .prop_map(|m| Node::Dir(m.into_iter().collect()))
    })
}

fn encode(n: &Node, out: &mut Vec<u8>) {
    out.extend(s("("));
    match n {
        Node::File {
            executable,
            contents,
        } => {
            out.extend(s("type"));
            out.extend(s("regular"));
            if *executable {
                out.extend(s("executable"));
                out.extend(s(""));
            }
            out.extend(s("contents"));
            out.extend(s(contents));
        }
        Node::Symlink(t) => {
            out.extend(s("type"));
            out.extend(s("symlink"));
            out.extend(s("target"));
            out.extend(s(t));
        }
        Node::Dir(entries) => {
            out.extend(s("type"));
            out.extend(s("directory"));
            for (name, child) in entries {
                out.extend(s("entry"));
                out.extend(s("("));
                out.extend(s("name"));
                out.extend(s(name));
                out.extend(s("node"));
                encode(child, out);
                out.extend(s(")"));
            }
        }
    }
    out.extend(s(")"));
}

fn nar(n: &Node) -> Vec<u8> {
    let mut out = s("nix-archive-1");
    encode(n, &mut out);
    out
}

proptest! {
    #[test]
    fn framed_round_trip(len in 0usize..300_000, seed in any::<u64>(), cuts in proptest::collection::vec(1usize..70_000, 0..4), trailer in proptest::collection::vec(any::<u8>(), 0..16)) {
        // Generating big byte vectors element by element is slow; derive them from a seed.
        let payload: Vec<u8> = (0..len as u64).map(|i| (seed.wrapping_mul(i | 1) >> 13) as u8).collect();
        rt().block_on(async {
            let mut w = FramedWriter::new(Vec::new());
            let mut rest = &payload[..];
            for c in &cuts {
                let c = (*c).min(rest.len());
                w.write_all(&rest[..c]).await.unwrap();
                rest = &rest[c..];
            }
            w.write_all(rest).await.unwrap();
            w.shutdown().await.unwrap();
            let mut wire = w.into_inner();
            wire.extend_from_slice(&trailer);
            let mut r = FramedReader::new(&wire[..]);
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, payload);
            assert_eq!(r.into_inner(), &trailer[..]);
        });
    }

    /// Frames written by hand in arbitrary sizes (as Nix's 32 KiB sink does) read back.
    #[test]
    fn framed_reader_accepts_any_frame_sizes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..500), 0..10)) {
        let mut wire = Vec::new();
        for c in &chunks {
            wire.extend(u(c.len() as u64));
            wire.extend(c);
        }
        wire.extend(u(0));
        let got = rt().block_on(async {
            let mut got = Vec::new();
            FramedReader::new(&wire[..]).read_to_end(&mut got).await.unwrap();
            got
        });
        prop_assert_eq!(got, chunks.concat());
    }

    #[test]
    fn nar_end_is_found_exactly(n in node(), trailer in proptest::collection::vec(any::<u8>(), 0..64), cap in 1usize..100) {
        let nar = nar(&n);
        let mut wire = nar.clone();
        wire.extend_from_slice(&trailer);
        let mut sc = NarScanner::new();
        prop_assert_eq!(sc.feed(&wire).unwrap(), nar.len());
        prop_assert!(sc.is_done());
        let (got, rest) = rt().block_on(async {
            let mut p = NarPassthrough::new(BufReader::with_capacity(cap, &wire[..]));
            let mut got = Vec::new();
            p.read_to_end(&mut got).await.unwrap();
            let mut rest = Vec::new();
            p.into_inner().read_to_end(&mut rest).await.unwrap();
            (got, rest)
        });
        prop_assert_eq!(got, nar);
        prop_assert_eq!(rest, trailer);
    }

    #[test]
    fn truncated_nars_are_not_done(n in node(), cut in any::<prop::sample::Index>()) {
        let nar = nar(&n);
        let cut = cut.index(nar.len());
        let mut sc = NarScanner::new();
        prop_assert_eq!(sc.feed(&nar[..cut]).unwrap(), cut);
        prop_assert!(!sc.is_done());
    }
}
