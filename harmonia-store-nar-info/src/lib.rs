//! The narinfo format of Nix binary caches: parse, render, fingerprint, sign and verify.
//!
//! A narinfo (`<hash>.narinfo` in a binary cache) is a list of `Key: value` lines describing one store
//! path and where its NAR lives. The grammar and field order follow Nix's `libstore/nar-info.cc`
//! (`NarInfo::NarInfo` and `NarInfo::to_string`); the signed fingerprint follows
//! `ValidPathInfo::fingerprint` in `libstore/path-info.cc`.
//!
//! ```
//! use harmonia_store_nar_info::NarInfo;
//! use harmonia_store_path::StoreDir;
//! use harmonia_utils_hash::NarHash;
//! use harmonia_utils_signature::SecretKey;
//!
//! let store_dir = StoreDir::default();
//! let text = format!(
//!     "StorePath: /nix/store/0c0ac8zfjigi3a1kydsj5g7b6y1jx3w5-hello-2.12\n\
//!      URL: nar/0c0ac8zfjigi3a1kydsj5g7b6y1jx3w5.nar\n\
//!      Compression: none\n\
//!      NarHash: {}\n\
//!      NarSize: 226488\n\
//!      References: \n",
//!     NarHash::digest_of(b"the nar")
//! );
//! let mut info = NarInfo::parse(&store_dir, &text).unwrap();
//! assert_eq!(info.render(&store_dir), text);
//!
//! let key = SecretKey::from_seed("cache.example.org-1", &[7; 32]).unwrap();
//! info.sign(&store_dir, &key);
//! assert!(info.verify(&store_dir, &[key.to_public_key()]));
//! let sig_line = format!("Sig: {}\n", info.signatures[0]);
//! assert!(info.render(&store_dir).ends_with(&sig_line));
//! ```

#![deny(unsafe_code)]

use std::cmp::Ordering;
use std::fmt::Write as _;

use harmonia_store_path::{ContentAddress, StoreDir, StorePath};
use harmonia_utils_hash::{Hash, NarHash};
use harmonia_utils_signature::{PublicKey, SecretKey, Signature};

mod error;
mod parse;

pub use error::{Field, NarInfoError};

/// Largest narinfo text [`NarInfo::parse`] accepts (Nix's own are a few hundred bytes; one with
/// thousands of references stays well below this).
pub const MAX_NARINFO_LEN: usize = 4 * 1024 * 1024;

/// The value `Deriver:` takes in some narinfo files when the deriver is not known.
pub const UNKNOWN_DERIVER: &str = "unknown-deriver";

/// The contents of a `.narinfo` file: a store path's metadata and where its (compressed) NAR lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// The store path described (`StorePath:`, written as a full path).
    pub store_path: StorePath,
    /// Where the NAR is, relative to the cache root (`URL:`), e.g. `nar/<filehash>.nar.xz`.
    pub url: String,
    /// How the NAR at `url` is compressed (`Compression:`): `none`, `xz`, `bzip2`, `zstd`, ...
    /// Nix reads a missing field as `bzip2`.
    pub compression: String,
    /// Hash of the file at `url` (`FileHash:`), if known.
    pub file_hash: Option<Hash>,
    /// Size in bytes of the file at `url` (`FileSize:`), if known.
    pub file_size: Option<u64>,
    /// sha256 of the uncompressed NAR (`NarHash:`).
    pub nar_hash: NarHash,
    /// Size in bytes of the uncompressed NAR (`NarSize:`); never 0 in a parsed narinfo.
    pub nar_size: u64,
    /// Store paths this path refers to (`References:`, base names separated by spaces).
    /// Parsing yields them sorted and without duplicates, as Nix keeps them.
    pub references: Vec<StorePath>,
    /// The derivation that built this path (`Deriver:`, a base name), if known.
    pub deriver: Option<StorePath>,
    /// The system the path was built for (`System:`), if given.
    pub system: Option<String>,
    /// Signatures over the [fingerprint](NarInfo::fingerprint), one `Sig:` line each. Parsing and
    /// [`NarInfo::add_signature`] keep them in Nix's order (sorted by their text), so rendering
    /// writes them as Nix does.
    pub signatures: Vec<Signature>,
    /// The content address of the path (`CA:`), for content-addressed paths.
    pub ca: Option<ContentAddress>,
}

impl NarInfo {
    /// Parses narinfo text written by Nix or another binary cache.
    ///
    /// Follows Nix's rules: `StorePath`, `URL`, `NarHash` and a non-zero `NarSize` are required, a
    /// missing `Compression` means `bzip2`, `Deriver: unknown-deriver` means no deriver, an empty `CA`
    /// or `System` means none, unknown keys are ignored. Stricter than Nix: a known key other than
    /// `Sig` may appear only once and every value must be valid, so a bad line is reported with its
    /// number instead of being misread. Blank lines and a missing final newline are accepted.
    pub fn parse(store_dir: &StoreDir, text: &str) -> Result<NarInfo, NarInfoError> {
        parse::parse(store_dir, text)
    }

    /// Renders the narinfo text exactly as Nix's `NarInfo::to_string` lays it out.
    ///
    /// Field order: StorePath, URL, Compression, FileHash, FileSize, NarHash, NarSize, References
    /// (always present, possibly empty), Deriver, System, Sig (one line each), CA. Optional fields
    /// are left out when absent. References are written sorted, as Nix does.
    pub fn render(&self, store_dir: &StoreDir) -> String {
        let mut out = String::with_capacity(self.rendered_len_hint(store_dir));
        self.render_into(store_dir, &mut out);
        out
    }

    /// Appends the rendered narinfo (see [`NarInfo::render`]) to `out`.
    pub fn render_into(&self, store_dir: &StoreDir, out: &mut String) {
        // `fmt::Write` for `String` never fails, so the results of `write!` are ignored.
        out.push_str("StorePath: ");
        push_full_path(out, store_dir, &self.store_path);
        out.push_str("\nURL: ");
        out.push_str(&self.url);
        out.push_str("\nCompression: ");
        out.push_str(&self.compression);
        out.push('\n');
        // Uncompressed NARs have FileHash = NarHash: encode it once.
        let nar_hash_at = if let Some(h) = &self.file_hash {
            out.push_str("FileHash: ");
            let at = out.len();
            push_typed_nix32(out, h);
            let range = at..out.len();
            out.push('\n');
            (h == self.nar_hash.hash()).then_some(range)
        } else {
            None
        };
        if let Some(size) = self.file_size {
            let _ = writeln!(out, "FileSize: {size}");
        }
        out.push_str("NarHash: ");
        // `sha512:` and 103 characters at most; copied through the stack because `out` is borrowed.
        let mut copy = [0u8; 128];
        match nar_hash_at {
            Some(range) if range.len() <= copy.len() => {
                let len = range.len();
                copy[..len].copy_from_slice(&out.as_bytes()[range]);
                match std::str::from_utf8(&copy[..len]) {
                    Ok(text) => out.push_str(text),
                    Err(_) => push_typed_nix32(out, self.nar_hash.hash()),
                }
            }
            _ => push_typed_nix32(out, self.nar_hash.hash()),
        }
        let _ = write!(out, "\nNarSize: {}\nReferences:", self.nar_size);
        // Nix writes "References: " followed by the space-joined list, even when it is empty.
        out.push(' ');
        for_each_canonical_ref(&self.references, |i, r| {
            if i > 0 {
                out.push(' ');
            }
            push_base_name(out, r);
        });
        out.push('\n');
        if let Some(d) = &self.deriver {
            out.push_str("Deriver: ");
            push_base_name(out, d);
            out.push('\n');
        }
        if let Some(system) = &self.system {
            out.push_str("System: ");
            out.push_str(system);
            out.push('\n');
        }
        for sig in &self.signatures {
            out.push_str("Sig: ");
            sig.write_to(out);
            out.push('\n');
        }
        if let Some(ca) = &self.ca {
            let _ = writeln!(out, "CA: {ca}");
        }
    }

    /// An upper estimate of the rendered length, to size the output buffer once.
    fn rendered_len_hint(&self, store_dir: &StoreDir) -> usize {
        // Base names are at most 32 + 1 + 211 bytes; 80 covers typical names without overshooting much.
        const PATH_GUESS: usize = 80;
        const LINES: usize = 160; // field names, hashes, sizes and newlines
        LINES
            + store_dir.as_str().len()
            + PATH_GUESS * (2 + self.references.len())
            + self.url.len()
            + self.compression.len()
            + self.system.as_ref().map_or(0, String::len)
            + self
                .signatures
                .iter()
                .map(|s| 6 + s.text_len())
                .sum::<usize>()
            + if self.ca.is_some() { 130 } else { 0 }
    }

    /// The string Nix signs for this path: `1;<path>;<narhash>;<narsize>;<refs>` (see [`fingerprint`]).
    pub fn fingerprint(&self, store_dir: &StoreDir) -> String {
        fingerprint(
            store_dir,
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Signs the fingerprint with `key` and adds the signature.
    ///
    /// A signature already present under the same key name is replaced: Nix looks trusted keys up by
    /// name, so two signatures with one name can never both count. See [`NarInfo::sign_all`].
    pub fn sign(&mut self, store_dir: &StoreDir, key: &SecretKey) {
        self.sign_all(store_dir, std::slice::from_ref(key));
    }

    /// Signs the fingerprint (computed once) with each key and adds the signatures, one per key name.
    pub fn sign_all(&mut self, store_dir: &StoreDir, keys: &[SecretKey]) {
        if keys.is_empty() {
            return;
        }
        let fp = self.fingerprint(store_dir);
        for key in keys {
            self.add_signature(key.sign(fp.as_bytes()));
        }
    }

    /// Adds `sig`, replacing any signature with the same key name, keeping the list in Nix's order
    /// (Nix keeps signatures in a set of strings, so it writes them sorted by their text `name:base64`).
    pub fn add_signature(&mut self, sig: Signature) {
        // Parsed narinfo may hold several signatures under one name (Nix keeps them all): drop every
        // one of them, not just the first.
        self.signatures.retain(|s| s.key_name() != sig.key_name());
        let pos = self
            .signatures
            .iter()
            .position(|s| nix_signature_order(s, &sig) == Ordering::Greater)
            .unwrap_or(self.signatures.len());
        self.signatures.insert(pos, sig);
    }

    /// True if at least one signature is valid under one of `keys` (matched by key name, as Nix does).
    pub fn verify(&self, store_dir: &StoreDir, keys: &[PublicKey]) -> bool {
        self.valid_signatures(store_dir, keys).next().is_some()
    }

    /// The signatures that are valid under one of `keys`.
    pub fn valid_signatures<'a>(
        &'a self,
        store_dir: &StoreDir,
        keys: &'a [PublicKey],
    ) -> impl Iterator<Item = &'a Signature> + 'a {
        let fp = if self.signatures.is_empty() || keys.is_empty() {
            String::new()
        } else {
            self.fingerprint(store_dir)
        };
        self.signatures.iter().filter(move |sig| {
            keys.iter()
                .any(|k| k.name() == sig.key_name() && k.verify(fp.as_bytes(), sig))
        })
    }
}

/// The string Nix signs for a store path (`ValidPathInfo::fingerprint`):
/// `1;<full store path>;sha256:<nix32 nar hash>;<nar size>;<full reference paths, comma-separated>`.
///
/// References are taken sorted and without duplicates whatever the order of `refs`, because Nix
/// computes the fingerprint from its sorted set. (Nix refuses to fingerprint a path whose NAR size is
/// 0; a parsed [`NarInfo`] never has one.)
pub fn fingerprint(
    store_dir: &StoreDir,
    path: &StorePath,
    nar_hash: &NarHash,
    nar_size: u64,
    refs: &[StorePath],
) -> String {
    let dir = store_dir.as_str();
    let mut out = String::with_capacity(80 + (dir.len() + 81) * (1 + refs.len()));
    out.push_str("1;");
    push_full_path(&mut out, store_dir, path);
    out.push(';');
    push_typed_nix32(&mut out, nar_hash.hash());
    let _ = write!(out, ";{nar_size};");
    for_each_canonical_ref(refs, |i, r| {
        if i > 0 {
            out.push(',');
        }
        push_full_path(&mut out, store_dir, r);
    });
    out
}

/// The order of Nix's `std::set<std::string>` of signatures: by the text `name:base64`.
///
/// Not the order of key names: `cache-1:...` sorts before `cache:...` because `-` < `:`.
pub(crate) fn nix_signature_order(a: &Signature, b: &Signature) -> Ordering {
    // Names never contain ':', so `name:` decides unless the names are equal; only then is the
    // base64 text (whose order is not the byte order) needed.
    fn prefix(s: &Signature) -> impl Iterator<Item = u8> + '_ {
        s.key_name().bytes().chain(std::iter::once(b':'))
    }
    prefix(a)
        .cmp(prefix(b))
        .then_with(|| a.to_string().cmp(&b.to_string()))
}

fn push_full_path(out: &mut String, store_dir: &StoreDir, path: &StorePath) {
    out.push_str(store_dir.as_str());
    out.push('/');
    push_base_name(out, path);
}

/// Appends `<hash>-<name>`; same text as `Display`, without its temporary allocation (this runs
/// for every reference of every narinfo a cache serves).
fn push_base_name(out: &mut String, path: &StorePath) {
    push_nix32(out, path.hash().as_bytes());
    out.push('-');
    out.push_str(path.name().as_str());
}

fn push_typed_nix32(out: &mut String, hash: &Hash) {
    out.push_str(hash.algorithm().name());
    out.push(':');
    push_nix32(out, hash.digest());
}

/// Appends the nix-base32 encoding of `bytes` (at most a sha512 digest) without allocating.
fn push_nix32(out: &mut String, bytes: &[u8]) {
    use harmonia_utils_hash::nix_base32::{ALPHABET, encoded_len};
    // Nix's bit order: the first character holds the highest bits, the last the lowest bits of byte 0.
    let digit = |n: usize| {
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = bytes.get(i + 1).map_or(0, |&b| u16::from(b) << (8 - j));
        ALPHABET[usize::from((low | high) & 0x1f)]
    };
    let len = encoded_len(bytes.len());
    // Encoded into a stack buffer and appended at once: pushing char by char costs a capacity and
    // UTF-8 check per character. 103 characters encode a sha512 digest, the longest there is.
    let mut buf = [0u8; 103];
    if let Some(buf) = buf.get_mut(..len) {
        for (k, slot) in buf.iter_mut().enumerate() {
            *slot = digit(len - 1 - k);
        }
        if let Ok(text) = std::str::from_utf8(buf) {
            out.push_str(text);
            return;
        }
    }
    out.reserve(len);
    for n in (0..len).rev() {
        out.push(char::from(digit(n)));
    }
}

/// Calls `f(index, path)` for each reference in Nix's order (sorted, no duplicates), without
/// allocating when `refs` already is in that order (always the case for parsed narinfo).
fn for_each_canonical_ref(refs: &[StorePath], mut f: impl FnMut(usize, &StorePath)) {
    if refs.windows(2).all(|w| w[0] < w[1]) {
        refs.iter().enumerate().for_each(|(i, r)| f(i, r));
    } else {
        let mut sorted: Vec<&StorePath> = refs.iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.into_iter().enumerate().for_each(|(i, r)| f(i, r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn allocation_free_encoders_match_display() {
        for seed in 0u8..=255 {
            let bytes: Vec<u8> = (0..65u8)
                .map(|i| i.wrapping_mul(seed).wrapping_add(seed))
                .collect();
            // 65 bytes do not fit the stack buffer: the fallback must agree too.
            for len in [0, 1, 16, 20, 32, 64, 65] {
                let mut out = String::new();
                push_nix32(&mut out, &bytes[..len]);
                assert_eq!(out, harmonia_utils_hash::nix_base32::encode(&bytes[..len]));
            }
            let path = StorePath::from_str(&format!(
                "{}-name-{seed}",
                harmonia_utils_hash::nix_base32::encode(&bytes[..20])
            ))
            .unwrap();
            let mut out = String::new();
            push_base_name(&mut out, &path);
            assert_eq!(out, path.to_string());
        }
    }
}
