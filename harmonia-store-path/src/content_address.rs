use std::fmt;
use std::str::FromStr;

use harmonia_utils_hash::{Algorithm, Hash};

use crate::error::{StorePathError, snippet};

/// How a content-addressed store path was made, with its hash (Nix's `ContentAddress`).
///
/// Text form as in the `ca` column of Nix's db and the `CA:` narinfo field (`libstore/content-address.cc`):
/// `text:sha256:<nix32>`, `fixed:<algo>:<nix32>` (flat file hash) or `fixed:r:<algo>:<nix32>` (NAR hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContentAddress {
    /// A text file (`builtins.toFile`, derivations): sha256 of the contents. Nix only has sha256 text
    /// addresses: [`ContentAddress::new`], `FromStr` and the path computations refuse any other algorithm.
    Text(Hash),
    /// A flat fixed-output file: hash of the file contents.
    Flat(Hash),
    /// A recursive fixed-output path: hash of its NAR serialisation.
    Recursive(Hash),
}

impl ContentAddress {
    /// A content address from its method and hash; text content addresses must be sha256.
    pub fn new(method: ContentAddressMethod, hash: Hash) -> Result<ContentAddress, StorePathError> {
        match method {
            ContentAddressMethod::Text if hash.algorithm() != Algorithm::Sha256 => {
                Err(StorePathError::TextHashNotSha256(hash.algorithm()))
            }
            ContentAddressMethod::Text => Ok(ContentAddress::Text(hash)),
            ContentAddressMethod::Flat => Ok(ContentAddress::Flat(hash)),
            ContentAddressMethod::Recursive => Ok(ContentAddress::Recursive(hash)),
        }
    }

    /// The hash, whatever the method.
    pub fn hash(&self) -> &Hash {
        match self {
            ContentAddress::Text(h) | ContentAddress::Flat(h) | ContentAddress::Recursive(h) => h,
        }
    }

    /// How the contents were hashed.
    pub fn method(&self) -> ContentAddressMethod {
        match self {
            ContentAddress::Text(_) => ContentAddressMethod::Text,
            ContentAddress::Flat(_) => ContentAddressMethod::Flat,
            ContentAddress::Recursive(_) => ContentAddressMethod::Recursive,
        }
    }
}

/// How a content-addressed path is hashed, without the hash (Nix's `ContentAddressMethod`).
///
/// With its algorithm it has the text form the worker protocol's `AddToStore` uses (`text:sha256`,
/// `fixed:<algo>`, `fixed:r:<algo>`); see [`ContentAddressMethod::parse_with_algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContentAddressMethod {
    /// Text: sha256 of the contents, references allowed, no self-reference.
    Text,
    /// Flat: hash of a single file's contents.
    Flat,
    /// Recursive: hash of the NAR serialisation.
    Recursive,
}

impl ContentAddressMethod {
    /// Parses `text:sha256`, `fixed:<algo>` or `fixed:r:<algo>`.
    pub fn parse_with_algorithm(
        s: &str,
    ) -> Result<(ContentAddressMethod, Algorithm), StorePathError> {
        let (method, algo) = if let Some(algo) = s.strip_prefix("text:") {
            (ContentAddressMethod::Text, algo)
        } else if let Some(algo) = s.strip_prefix("fixed:r:") {
            (ContentAddressMethod::Recursive, algo)
        } else if let Some(algo) = s.strip_prefix("fixed:") {
            (ContentAddressMethod::Flat, algo)
        } else {
            return Err(StorePathError::ContentAddressMethod(snippet(s)));
        };
        let algo: Algorithm = algo.parse().map_err(StorePathError::ContentAddressHash)?;
        if method == ContentAddressMethod::Text && algo != Algorithm::Sha256 {
            return Err(StorePathError::TextHashNotSha256(algo));
        }
        Ok((method, algo))
    }

    /// Renders `text:sha256`, `fixed:<algo>` or `fixed:r:<algo>`.
    pub fn render_with_algorithm(self, algo: Algorithm) -> String {
        match self {
            ContentAddressMethod::Text => format!("text:{algo}"),
            ContentAddressMethod::Flat => format!("fixed:{algo}"),
            ContentAddressMethod::Recursive => format!("fixed:r:{algo}"),
        }
    }
}

impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentAddress::Text(h) => write!(f, "text:{h}"),
            ContentAddress::Flat(h) => write!(f, "fixed:{h}"),
            ContentAddress::Recursive(h) => write!(f, "fixed:r:{h}"),
        }
    }
}

/// Parses `<algo>:<digest>` (any encoding, by length); SRI is not accepted here, as in Nix.
fn parse_typed_hash(s: &str) -> Result<Hash, StorePathError> {
    let (algo, digest) = s.split_once(':').ok_or_else(|| {
        StorePathError::ContentAddressHash(harmonia_utils_hash::HashError::MissingAlgorithm(
            snippet(s),
        ))
    })?;
    let algo: Algorithm = algo.parse().map_err(StorePathError::ContentAddressHash)?;
    Hash::parse_digest(algo, digest).map_err(StorePathError::ContentAddressHash)
}

impl FromStr for ContentAddress {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("text:") {
            let h = parse_typed_hash(rest)?;
            if h.algorithm() != Algorithm::Sha256 {
                return Err(StorePathError::TextHashNotSha256(h.algorithm()));
            }
            Ok(ContentAddress::Text(h))
        } else if let Some(rest) = s.strip_prefix("fixed:r:") {
            Ok(ContentAddress::Recursive(parse_typed_hash(rest)?))
        } else if let Some(rest) = s.strip_prefix("fixed:") {
            Ok(ContentAddress::Flat(parse_typed_hash(rest)?))
        } else {
            Err(StorePathError::ContentAddressMethod(snippet(s)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harmonia_utils_hash::HashError;

    #[test]
    fn round_trips() {
        for algo in Algorithm::ALL {
            let h = Hash::digest_of(algo, b"x");
            let mut cas = vec![ContentAddress::Flat(h), ContentAddress::Recursive(h)];
            if algo == Algorithm::Sha256 {
                cas.push(ContentAddress::Text(h));
            }
            for ca in cas {
                let s = ca.to_string();
                assert_eq!(s.parse::<ContentAddress>().unwrap(), ca, "{s}");
                assert_eq!(ca.hash(), &h);
            }
        }
        let h = Hash::digest_of(Algorithm::Sha256, b"x");
        assert_eq!(
            format!("fixed:r:{}", h.to_typed_base16())
                .parse::<ContentAddress>()
                .unwrap(),
            ContentAddress::Recursive(h)
        );
        assert_eq!(
            ContentAddress::Recursive(h).to_string(),
            format!("fixed:r:sha256:{}", h.to_nix_base32())
        );
    }

    #[test]
    fn methods() {
        for algo in Algorithm::ALL {
            let h = Hash::digest_of(algo, b"m");
            for method in [
                ContentAddressMethod::Flat,
                ContentAddressMethod::Recursive,
                ContentAddressMethod::Text,
            ] {
                let text = method.render_with_algorithm(algo);
                let ca = ContentAddress::new(method, h);
                if method == ContentAddressMethod::Text && algo != Algorithm::Sha256 {
                    assert_eq!(ca, Err(StorePathError::TextHashNotSha256(algo)));
                    assert_eq!(
                        ContentAddressMethod::parse_with_algorithm(&text),
                        Err(StorePathError::TextHashNotSha256(algo))
                    );
                    continue;
                }
                assert_eq!(
                    ContentAddressMethod::parse_with_algorithm(&text),
                    Ok((method, algo))
                );
                let ca = ca.unwrap();
                assert_eq!(ca.method(), method);
                // The method-and-algorithm text is the content address text without its digest.
                assert_eq!(ca.to_string(), format!("{text}:{}", h.to_nix_base32()));
            }
        }
        assert!(matches!(
            ContentAddressMethod::parse_with_algorithm("source:sha256"),
            Err(StorePathError::ContentAddressMethod(_))
        ));
        assert_eq!(
            ContentAddressMethod::parse_with_algorithm("fixed:r:sha3"),
            Err(StorePathError::ContentAddressHash(
                HashError::UnknownAlgorithm("sha3".into())
            ))
        );
    }

    #[test]
    fn bad_inputs() {
        let sha1 = Hash::digest_of(Algorithm::Sha1, b"x");
        assert_eq!(
            format!("text:{sha1}").parse::<ContentAddress>(),
            Err(StorePathError::TextHashNotSha256(Algorithm::Sha1))
        );
        assert!(matches!(
            "".parse::<ContentAddress>(),
            Err(StorePathError::ContentAddressMethod(_))
        ));
        assert!(matches!(
            "fixed".parse::<ContentAddress>(),
            Err(StorePathError::ContentAddressMethod(_))
        ));
        assert!(matches!(
            "source:sha256:00".parse::<ContentAddress>(),
            Err(StorePathError::ContentAddressMethod(_))
        ));
        assert_eq!(
            "fixed:md4:00".parse::<ContentAddress>(),
            Err(StorePathError::ContentAddressHash(
                HashError::UnknownAlgorithm("md4".into())
            ))
        );
        assert!(matches!(
            "fixed:r:sha256".parse::<ContentAddress>(),
            Err(StorePathError::ContentAddressHash(
                HashError::MissingAlgorithm(_)
            ))
        ));
        let sha256 = Hash::digest_of(Algorithm::Sha256, b"x");
        assert!(matches!(
            format!("fixed:{}", sha256.to_sri()).parse::<ContentAddress>(),
            Err(StorePathError::ContentAddressHash(
                HashError::MissingAlgorithm(_)
            ))
        ));
    }
}
