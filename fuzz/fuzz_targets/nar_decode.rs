//! Fuzzes `harmonia_file_nar::NarDecoder` on arbitrary bytes.
//!
//! Beyond "no panic, no hang, no allocation sized by a claimed length": when the decoder accepts a
//! NAR, the events must describe exactly the bytes it consumed. The target rebuilds the tree from
//! the events and serialises it again with its own small NAR writer; the result must equal the
//! consumed prefix. Every file's `nar_offset` must point at its contents, and its `size` must match.
#![no_main]

use futures::executor::block_on;
use harmonia_file_nar::{NarDecoder, NarEvent, NarPath};
use libfuzzer_sys::fuzz_target;

enum Node {
    File { executable: bool, contents: Vec<u8> },
    Symlink(Vec<u8>),
    Directory(Vec<(Vec<u8>, Node)>),
}

struct Builder<'a> {
    nar: &'a [u8],
    /// Open directories: (name in parent, entries so far).
    stack: Vec<(Vec<u8>, Vec<(Vec<u8>, Node)>)>,
    root: Option<Node>,
    /// The file whose contents are streaming: (name, executable, size, nar_offset, contents).
    file: Option<(Vec<u8>, bool, u64, u64, Vec<u8>)>,
}

fn name_of(path: &NarPath) -> Vec<u8> {
    path.file_name().unwrap_or_default().to_vec()
}

impl Builder<'_> {
    fn attach(&mut self, name: Vec<u8>, node: Node) {
        match self.stack.last_mut() {
            Some((_, entries)) => entries.push((name, node)),
            None => {
                assert!(self.root.is_none(), "two root nodes");
                self.root = Some(node);
            }
        }
    }

    fn finish_file(&mut self) {
        if let Some((name, executable, size, offset, contents)) = self.file.take() {
            assert_eq!(contents.len() as u64, size, "contents length differs from size");
            let start = usize::try_from(offset).unwrap();
            assert_eq!(&self.nar[start..start + contents.len()], &contents[..], "bad nar_offset");
            self.attach(name, Node::File { executable, contents });
        }
    }

    fn event(&mut self, ev: NarEvent) {
        if !matches!(ev, NarEvent::Contents(_)) {
            self.finish_file();
        }
        match ev {
            NarEvent::Directory { path } => {
                assert_eq!(path.depth(), self.stack.len(), "directory at wrong depth");
                self.stack.push((name_of(&path), Vec::new()));
            }
            NarEvent::EndDirectory { .. } => {
                let (name, entries) = self.stack.pop().expect("EndDirectory without Directory");
                self.attach(name, Node::Directory(entries));
            }
            NarEvent::File { path, executable, size, nar_offset } => {
                assert_eq!(path.depth(), self.stack.len(), "file at wrong depth");
                self.file = Some((name_of(&path), executable, size, nar_offset, Vec::new()));
            }
            NarEvent::Contents(chunk) => {
                let file = self.file.as_mut().expect("Contents outside a file");
                assert!(!chunk.is_empty(), "empty Contents event");
                file.4.extend_from_slice(&chunk);
            }
            NarEvent::Symlink { path, target } => {
                assert_eq!(path.depth(), self.stack.len(), "symlink at wrong depth");
                self.attach(name_of(&path), Node::Symlink(target));
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len().next_multiple_of(8), 0);
}

fn put_node(out: &mut Vec<u8>, node: &Node) {
    put_str(out, b"(");
    put_str(out, b"type");
    match node {
        Node::File { executable, contents } => {
            put_str(out, b"regular");
            if *executable {
                put_str(out, b"executable");
                put_str(out, b"");
            }
            put_str(out, b"contents");
            put_str(out, contents);
        }
        Node::Symlink(target) => {
            put_str(out, b"symlink");
            put_str(out, b"target");
            put_str(out, target);
        }
        Node::Directory(entries) => {
            put_str(out, b"directory");
            for (name, child) in entries {
                put_str(out, b"entry");
                put_str(out, b"(");
                put_str(out, b"name");
                put_str(out, name);
                put_str(out, b"node");
                put_node(out, child);
                put_str(out, b")");
            }
        }
    }
    put_str(out, b")");
}

fuzz_target!(|data: &[u8]| {
    let mut decoder = NarDecoder::new(data);
    let mut builder = Builder { nar: data, stack: Vec::new(), root: None, file: None };
    let ok = block_on(async {
        while let Some(ev) = decoder.next().await {
            match ev {
                Ok(ev) => builder.event(ev),
                Err(_) => return false,
            }
        }
        true
    });
    // After an error or the end, the decoder stays finished.
    assert!(block_on(decoder.next()).is_none(), "events after the end or an error");
    if !ok {
        return;
    }
    builder.finish_file();
    assert!(builder.stack.is_empty(), "unclosed directory at the end");
    let root = builder.root.expect("accepted NAR without a root node");
    let consumed = usize::try_from(decoder.offset()).unwrap();
    let mut again = Vec::new();
    put_str(&mut again, b"nix-archive-1");
    put_node(&mut again, &root);
    assert_eq!(again.len(), consumed, "re-encoded length differs");
    assert_eq!(&again[..], &data[..consumed], "re-encoded bytes differ");
});
