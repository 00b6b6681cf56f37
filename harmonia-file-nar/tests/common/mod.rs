//! A tiny reference NAR writer for tests: builds NARs from an in-memory tree, including malformed ones.

#![allow(dead_code)]

use harmonia_file_nar::{NarEvent, NarPath};

/// An in-memory file system object. Directory entries are written in the given order (so tests can craft
/// unsorted ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    File { executable: bool, contents: Vec<u8> },
    Symlink(Vec<u8>),
    Dir(Vec<(Vec<u8>, Tree)>),
}

pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(&[0u8; 8][..(8 - s.len() % 8) % 8]);
}

pub fn nar(tree: &Tree) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, b"nix-archive-1");
    node(&mut out, tree);
    out
}

fn node(out: &mut Vec<u8>, tree: &Tree) {
    put_str(out, b"(");
    put_str(out, b"type");
    match tree {
        Tree::File {
            executable,
            contents,
        } => {
            put_str(out, b"regular");
            if *executable {
                put_str(out, b"executable");
                put_str(out, b"");
            }
            put_str(out, b"contents");
            put_str(out, contents);
        }
        Tree::Symlink(target) => {
            put_str(out, b"symlink");
            put_str(out, b"target");
            put_str(out, target);
        }
        Tree::Dir(entries) => {
            put_str(out, b"directory");
            for (name, child) in entries {
                put_str(out, b"entry");
                put_str(out, b"(");
                put_str(out, b"name");
                put_str(out, name);
                put_str(out, b"node");
                node(out, child);
                put_str(out, b")");
            }
        }
    }
    put_str(out, b")");
}

/// Rebuilds the tree from decoder events (checking that paths nest properly).
pub fn tree_from_events(events: Vec<NarEvent>) -> Tree {
    let mut iter = events.into_iter().peekable();
    let tree = build(&mut iter, &NarPath::default());
    assert!(iter.next().is_none(), "events after the root node");
    tree
}

fn build(iter: &mut std::iter::Peekable<std::vec::IntoIter<NarEvent>>, at: &NarPath) -> Tree {
    match iter.next().expect("missing node") {
        NarEvent::File {
            path,
            executable,
            size,
            ..
        } => {
            assert_eq!(&path, at);
            let mut contents = Vec::new();
            while let Some(NarEvent::Contents(_)) = iter.peek() {
                if let Some(NarEvent::Contents(c)) = iter.next() {
                    assert!(!c.is_empty(), "empty contents chunk");
                    contents.extend_from_slice(&c);
                }
            }
            assert_eq!(contents.len() as u64, size);
            Tree::File {
                executable,
                contents,
            }
        }
        NarEvent::Symlink { path, target } => {
            assert_eq!(&path, at);
            Tree::Symlink(target)
        }
        NarEvent::Directory { path } => {
            assert_eq!(&path, at);
            let mut entries = Vec::new();
            loop {
                match iter.peek() {
                    Some(NarEvent::EndDirectory { path }) => {
                        assert_eq!(path, at);
                        iter.next();
                        break;
                    }
                    Some(
                        NarEvent::File { path, .. }
                        | NarEvent::Symlink { path, .. }
                        | NarEvent::Directory { path },
                    ) => {
                        let child = path.clone();
                        assert_eq!(
                            child.depth(),
                            at.depth() + 1,
                            "{child:?} is not a child of {at:?}"
                        );
                        let name = child.file_name().expect("child has a name").to_vec();
                        entries.push((name, build(iter, &child)));
                    }
                    other => panic!("unexpected event {other:?} in {at:?}"),
                }
            }
            Tree::Dir(entries)
        }
        other => panic!("unexpected event {other:?}"),
    }
}

/// Decodes a whole NAR from memory.
pub async fn decode_all(nar: &[u8]) -> Result<Vec<NarEvent>, harmonia_file_nar::NarError> {
    let mut decoder = harmonia_file_nar::NarDecoder::new(nar);
    let mut events = Vec::new();
    while let Some(ev) = decoder.next().await {
        events.push(ev?);
    }
    Ok(events)
}
