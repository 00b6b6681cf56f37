use std::fmt;
use std::str::FromStr;

use harmonia_utils_hash::{Algorithm, Hash, compress_hash};

use crate::error::{StorePathError, snippet};
use crate::{ContentAddress, StorePath, StorePathHash, StorePathName};

/// The logical store directory (Nix's `storeDir`, e.g. `/nix/store`): store paths are its direct entries.
///
/// It is part of every store path hash, so a chroot store at `DIR/nix/store` still has the logical store dir
/// `/nix/store`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl Default for StoreDir {
    /// `/nix/store`.
    fn default() -> Self {
        StoreDir("/nix/store".to_owned())
    }
}

impl StoreDir {
    /// A store directory: an absolute path, no `.`/`..`/empty components, not `/`; trailing slashes are dropped.
    pub fn new(dir: &str) -> Result<StoreDir, StorePathError> {
        let invalid = |reason| StorePathError::InvalidStoreDir {
            dir: snippet(dir),
            reason,
        };
        let trimmed = dir.trim_end_matches('/');
        if !dir.starts_with('/') {
            return Err(invalid("must be an absolute path"));
        }
        if trimmed.is_empty() {
            return Err(invalid("must not be the root directory"));
        }
        if trimmed.contains('\0') {
            return Err(invalid("must not contain NUL"));
        }
        if trimmed[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(invalid(
                "must be canonical (no empty, '.' or '..' components)",
            ));
        }
        Ok(StoreDir(trimmed.to_owned()))
    }

    /// The directory as text, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full path of a store path: `<store dir>/<hash>-<name>`.
    pub fn display(&self, p: &StorePath) -> String {
        format!("{}/{}", self.0, p)
    }

    /// Parses a full store path, which must be a direct entry of this directory (nothing after the base name).
    pub fn parse_path(&self, full: &str) -> Result<StorePath, StorePathError> {
        let (path, rest) = self.parse_path_with_subpath(full)?;
        if !rest.is_empty() {
            return Err(StorePathError::HasSubpath(snippet(full)));
        }
        Ok(path)
    }

    /// Parses a path in or below a store path: returns the store path and the rest, which is empty or starts
    /// with `/` (e.g. `/nix/store/<hash>-foo/bin/foo` gives `<hash>-foo` and `/bin/foo`).
    pub fn parse_path_with_subpath<'a>(
        &self,
        full: &'a str,
    ) -> Result<(StorePath, &'a str), StorePathError> {
        let base_and_rest = full
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStoreDir {
                path: snippet(full),
                store_dir: self.0.clone(),
            })?;
        let (base, rest) = match base_and_rest.find('/') {
            Some(i) => base_and_rest.split_at(i),
            None => (base_and_rest, ""),
        };
        Ok((StorePath::from_base_name(base)?, rest))
    }

    /// Nix's `makeStorePath`: sha256 of `<type>:<algo>:<hex of inner hash>:<store dir>:<name>`, XOR-folded to
    /// 20 bytes.
    pub fn make_store_path(
        &self,
        path_type: &str,
        inner_hash: &Hash,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        let name = StorePathName::new(name)?;
        let fingerprint = format!(
            "{path_type}:{}:{}:{}",
            inner_hash.to_typed_base16(),
            self.0,
            name
        );
        let digest = Hash::digest_of(Algorithm::Sha256, fingerprint.as_bytes());
        let mut bytes = [0u8; StorePathHash::LEN];
        bytes.copy_from_slice(&compress_hash(digest.digest(), StorePathHash::LEN));
        Ok(StorePath::from_parts(
            StorePathHash::from_bytes(bytes),
            name,
        ))
    }

    /// Nix's `makeType`: the kind, then `:<full path>` for each reference in order, then `:self`.
    fn make_type(&self, kind: &str, refs: &[StorePath], self_ref: bool) -> String {
        let mut sorted: Vec<&StorePath> = refs.iter().collect();
        // Nix keeps references in a sorted set.
        sorted.sort();
        sorted.dedup();
        let mut s = kind.to_owned();
        for r in sorted {
            s.push(':');
            s.push_str(&self.display(r));
        }
        if self_ref {
            s.push_str(":self");
        }
        s
    }

    /// The path of a source added by `nix-store --add` or a recursive sha256 fixed-output path: type `source`
    /// with references, over the NAR hash.
    pub fn make_source_path(
        &self,
        nar_hash: &Hash,
        refs: &[StorePath],
        self_ref: bool,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        self.make_store_path(&self.make_type("source", refs, self_ref), nar_hash, name)
    }

    /// The path of a text file (`builtins.toFile`, `.drv` files): type `text` with references, over the sha256
    /// of the contents.
    pub fn make_text_path(
        &self,
        text_hash: &Hash,
        refs: &[StorePath],
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        if text_hash.algorithm() != Algorithm::Sha256 {
            return Err(StorePathError::TextHashNotSha256(text_hash.algorithm()));
        }
        self.make_store_path(&self.make_type("text", refs, false), text_hash, name)
    }

    /// Nix's `makeFixedOutputPath` (and text paths for [`ContentAddress::Text`]): recursive sha256 is a source
    /// path; everything else is `output:out` over `sha256("fixed:out:<r:?><algo>:<hex>:")` and has no
    /// references.
    pub fn make_fixed_output_path(
        &self,
        ca: &ContentAddress,
        refs: &[StorePath],
        self_ref: bool,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        let (prefix, hash) = match ca {
            ContentAddress::Text(h) => {
                if self_ref {
                    return Err(StorePathError::SelfReferenceNotAllowed);
                }
                return self.make_text_path(h, refs, name);
            }
            ContentAddress::Recursive(h) if h.algorithm() == Algorithm::Sha256 => {
                return self.make_source_path(h, refs, self_ref, name);
            }
            ContentAddress::Recursive(h) => ("r:", h),
            ContentAddress::Flat(h) => ("", h),
        };
        if !refs.is_empty() || self_ref {
            return Err(StorePathError::ReferencesNotAllowed(if prefix.is_empty() {
                "flat"
            } else {
                "recursive non-sha256"
            }));
        }
        let inner = format!("fixed:out:{prefix}{}:", hash.to_typed_base16());
        self.make_store_path(
            "output:out",
            &Hash::digest_of(Algorithm::Sha256, inner.as_bytes()),
            name,
        )
    }

    /// Nix's `makeOutputPath`: the path of output `output_name` of a derivation with the given (modulo) hash;
    /// the name gets `-<output>` appended unless the output is `out`.
    pub fn make_output_path(
        &self,
        drv_hash: &Hash,
        output_name: &str,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        let path_type = format!("output:{output_name}");
        if output_name == "out" {
            self.make_store_path(&path_type, drv_hash, name)
        } else {
            self.make_store_path(&path_type, drv_hash, &format!("{name}-{output_name}"))
        }
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for StoreDir {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreDir::new(s)
    }
}

impl AsRef<str> for StoreDir {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_dirs() {
        assert_eq!(StoreDir::default().as_str(), "/nix/store");
        assert_eq!(StoreDir::new("/nix/store/").unwrap(), StoreDir::default());
        assert_eq!(StoreDir::new("/a").unwrap().as_str(), "/a");
        for bad in [
            "",
            "/",
            "//",
            "nix/store",
            "/nix//store",
            "/nix/./store",
            "/nix/../store",
            "/nix/\0",
        ] {
            assert!(
                matches!(
                    StoreDir::new(bad),
                    Err(StorePathError::InvalidStoreDir { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn full_paths() {
        let sd = StoreDir::default();
        let base = "lpg73p3x49mjkxrdj3vxhhzslln67blr-foo";
        let full = format!("/nix/store/{base}");
        let p = sd.parse_path(&full).unwrap();
        assert_eq!(p.to_string(), base);
        assert_eq!(sd.display(&p), full);
        let sub = format!("{full}/bin/x");
        let (q, rest) = sd.parse_path_with_subpath(&sub).unwrap();
        assert_eq!((q, rest), (p.clone(), "/bin/x"));
        assert_eq!(sd.parse_path_with_subpath(&full).unwrap(), (p, ""));
        assert_eq!(
            sd.parse_path(&format!("{full}/bin")),
            Err(StorePathError::HasSubpath(format!("{full}/bin")))
        );
        assert_eq!(
            sd.parse_path(&format!("{full}/")),
            Err(StorePathError::HasSubpath(format!("{full}/")))
        );
        for bad in [
            base.to_owned(),
            format!("/nix/store2/{base}"),
            format!("/nix/{base}"),
            "/nix/store".into(),
            "".into(),
        ] {
            assert!(
                matches!(
                    sd.parse_path(&bad),
                    Err(StorePathError::NotInStoreDir { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            sd.parse_path("/nix/store/"),
            Err(StorePathError::TooShort(String::new()))
        );
    }

    #[test]
    fn fixed_output_rules() {
        let sd = StoreDir::default();
        let r: StorePath = "lpg73p3x49mjkxrdj3vxhhzslln67blr-foo".parse().unwrap();
        let sha1 = Hash::digest_of(Algorithm::Sha1, b"x");
        let sha256 = Hash::digest_of(Algorithm::Sha256, b"x");
        assert!(matches!(
            sd.make_fixed_output_path(
                &ContentAddress::Flat(sha256),
                std::slice::from_ref(&r),
                false,
                "x"
            ),
            Err(StorePathError::ReferencesNotAllowed(_))
        ));
        assert!(matches!(
            sd.make_fixed_output_path(&ContentAddress::Recursive(sha1), &[], true, "x"),
            Err(StorePathError::ReferencesNotAllowed(_))
        ));
        assert_eq!(
            sd.make_fixed_output_path(&ContentAddress::Text(sha256), &[], true, "x"),
            Err(StorePathError::SelfReferenceNotAllowed)
        );
        assert_eq!(
            sd.make_text_path(&sha1, &[], "x"),
            Err(StorePathError::TextHashNotSha256(Algorithm::Sha1))
        );
        assert_eq!(
            sd.make_source_path(&sha256, &[], false, "a b"),
            Err(StorePathError::NameCharacter {
                position: 1,
                character: ' '
            })
        );
        // Recursive sha256 is a source path, with references.
        assert_eq!(
            sd.make_fixed_output_path(
                &ContentAddress::Recursive(sha256),
                std::slice::from_ref(&r),
                true,
                "x"
            )
            .unwrap(),
            sd.make_source_path(&sha256, &[r.clone(), r.clone()], true, "x")
                .unwrap()
        );
    }

    /// The NAR serialisation of a single non-executable regular file.
    fn file_nar(contents: &[u8]) -> Vec<u8> {
        let mut nar = Vec::new();
        let mut put = |s: &[u8]| {
            nar.extend_from_slice(&(s.len() as u64).to_le_bytes());
            nar.extend_from_slice(s);
            nar.resize(nar.len().next_multiple_of(8), 0);
        };
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
            contents,
            b")",
        ] {
            put(t);
        }
        nar
    }

    #[test]
    fn vectors_from_nix_2_8() {
        // Printed by Nix 2.8 in a chroot store: `builtins.toFile "." "text"`, `builtins.toFile "a?b=c+d" "text"`
        // and `nix-store --add` of a file `.foo` containing "hi\n".
        let sd = StoreDir::default();
        let text = Hash::digest_of(Algorithm::Sha256, b"text");
        assert_eq!(
            sd.make_text_path(&text, &[], ".").unwrap().to_string(),
            "9ilvi5cilskf8c0x81k2jijzhhmm9ac9-."
        );
        assert_eq!(
            sd.make_text_path(&text, &[], "a?b=c+d")
                .unwrap()
                .to_string(),
            "b6p5bgzhrmda14i906w4khqfnzabmadl-a?b=c+d"
        );
        let nar_hash = Hash::digest_of(Algorithm::Sha256, &file_nar(b"hi\n"));
        assert_eq!(
            sd.make_source_path(&nar_hash, &[], false, ".foo")
                .unwrap()
                .to_string(),
            "lpg73p3x49mjkxrdj3vxhhzslln67blr-.foo"
        );
    }

    #[test]
    fn output_names() {
        let sd = StoreDir::default();
        let h = Hash::digest_of(Algorithm::Sha256, b"drv");
        assert_eq!(
            sd.make_output_path(&h, "out", "hello")
                .unwrap()
                .name()
                .as_str(),
            "hello"
        );
        assert_eq!(
            sd.make_output_path(&h, "dev", "hello")
                .unwrap()
                .name()
                .as_str(),
            "hello-dev"
        );
        assert_ne!(
            sd.make_output_path(&h, "out", "hello").unwrap().hash(),
            sd.make_output_path(&h, "dev", "hello").unwrap().hash()
        );
    }
}
