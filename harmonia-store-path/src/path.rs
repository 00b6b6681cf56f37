use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use harmonia_utils_hash::{HashError, nix_base32};

use crate::error::{StorePathError, snippet};

/// The 20-byte hash part of a store path, written as 32 nix-base32 characters.
///
/// Ordered like its text form (Nix orders store paths by base name), which is not the byte order of the
/// digest: nix-base32 writes the last byte first.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StorePathHash([u8; StorePathHash::LEN]);

impl StorePathHash {
    /// Length of the digest in bytes.
    pub const LEN: usize = 20;
    /// Length of the nix-base32 text form.
    pub const ENCODED_LEN: usize = 32;

    /// A hash part from its raw 20 bytes.
    pub fn from_bytes(bytes: [u8; StorePathHash::LEN]) -> StorePathHash {
        StorePathHash(bytes)
    }

    /// The raw 20 bytes.
    pub fn as_bytes(&self) -> &[u8; StorePathHash::LEN] {
        &self.0
    }

    /// Parses the hash part from the first 32 bytes of `s` (a base name, or exactly a hash).
    fn parse_prefix(s: &str) -> Result<StorePathHash, StorePathError> {
        let Some(head) = s.as_bytes().get(..StorePathHash::ENCODED_LEN) else {
            return Err(StorePathError::HashLength(s.len()));
        };
        if let Some(pos) = head.iter().position(|b| !b.is_ascii()) {
            // Everything before `pos` is ASCII, so `pos` starts a character.
            let character = s
                .get(pos..)
                .and_then(|r| r.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(StorePathError::HashCharacter {
                position: pos,
                character,
            });
        }
        let text = s
            .get(..StorePathHash::ENCODED_LEN)
            .ok_or(StorePathError::HashLength(s.len()))?;
        let mut bytes = [0u8; StorePathHash::LEN];
        // 32 characters carry exactly 160 bits, so every string of alphabet characters is canonical.
        nix_base32::decode_into(text, &mut bytes).map_err(|e| match e {
            HashError::InvalidCharacter {
                position,
                character,
                ..
            } => StorePathError::HashCharacter {
                position,
                character,
            },
            _ => StorePathError::HashLength(text.len()),
        })?;
        Ok(StorePathHash(bytes))
    }
}

impl FromStr for StorePathHash {
    type Err = StorePathError;

    /// Parses 32 nix-base32 characters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != StorePathHash::ENCODED_LEN {
            return Err(StorePathError::HashLength(s.len()));
        }
        StorePathHash::parse_prefix(s)
    }
}

impl fmt::Display for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&nix_base32::encode(&self.0))
    }
}

impl fmt::Debug for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePathHash({self})")
    }
}

impl Ord for StorePathHash {
    fn cmp(&self, other: &Self) -> Ordering {
        // The first character encodes the top bits of the last byte, and the alphabet is in ASCII order, so
        // comparing bytes from the last one orders like the text.
        self.0.iter().rev().cmp(other.0.iter().rev())
    }
}

impl PartialOrd for StorePathHash {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The name part of a store path, checked by Nix 2.8's rules (`libstore/path.cc`, `checkName`): 1 to 211
/// characters from `[A-Za-z0-9+-._?=]`.
///
/// Nix 2.8 accepts names starting with `.` (`nix-store --add` of a dotfile gives `<hash>-.foo`), so they are
/// accepted here too: a store must be able to serve every path Nix put in it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePathName(String);

impl StorePathName {
    /// The longest name Nix allows.
    pub const MAX_LEN: usize = 211;

    /// Checks a name against Nix's rules.
    pub fn new(s: &str) -> Result<StorePathName, StorePathError> {
        StorePathName::check(s)?;
        Ok(StorePathName(s.to_owned()))
    }

    fn check(s: &str) -> Result<(), StorePathError> {
        if s.is_empty() {
            return Err(StorePathError::EmptyName);
        }
        if s.len() > StorePathName::MAX_LEN {
            return Err(StorePathError::NameTooLong(s.len()));
        }
        if let Some((position, character)) = s.char_indices().find(|&(_, c)| !is_name_char(c)) {
            return Err(StorePathError::NameCharacter {
                position,
                character,
            });
        }
        Ok(())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')
}

impl FromStr for StorePathName {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePathName::new(s)
    }
}

impl fmt::Display for StorePathName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorePathName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePathName({:?})", self.0)
    }
}

impl AsRef<str> for StorePathName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A store path without its store directory: the base name `<hash>-<name>`.
///
/// `FromStr` parses a base name, `Display` renders it; use [`crate::StoreDir`] for full paths. Ordered by
/// base name, as Nix orders `StorePathSet`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    // Field order matters for the derived `Ord`: the hash part comes first in the base name.
    hash: StorePathHash,
    name: StorePathName,
}

impl StorePath {
    /// A store path from its two parts.
    pub fn from_parts(hash: StorePathHash, name: StorePathName) -> StorePath {
        StorePath { hash, name }
    }

    /// Parses a base name `<32 nix-base32 chars>-<name>`.
    pub fn from_base_name(s: &str) -> Result<StorePath, StorePathError> {
        let bytes = s.as_bytes();
        if bytes.len() <= StorePathHash::ENCODED_LEN {
            return Err(StorePathError::TooShort(snippet(s)));
        }
        let hash = StorePathHash::parse_prefix(s)?;
        // The hash part is ASCII, so byte 32 starts a character.
        let rest = &s[StorePathHash::ENCODED_LEN..];
        let name = rest
            .strip_prefix('-')
            .ok_or_else(|| StorePathError::MissingDash(snippet(s)))?;
        Ok(StorePath {
            hash,
            name: StorePathName::new(name)?,
        })
    }

    /// The hash part.
    pub fn hash(&self) -> &StorePathHash {
        &self.hash
    }

    /// The name part.
    pub fn name(&self) -> &StorePathName {
        &self.name
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::from_base_name(s)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash, self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "lpg73p3x49mjkxrdj3vxhhzslln67blr-.foo";

    #[test]
    fn parses_and_displays() {
        let p: StorePath = BASE.parse().unwrap();
        assert_eq!(p.to_string(), BASE);
        assert_eq!(p.hash().to_string(), "lpg73p3x49mjkxrdj3vxhhzslln67blr");
        assert_eq!(p.name().as_str(), ".foo");
        let again = StorePath::from_parts(*p.hash(), p.name().clone());
        assert_eq!(again, p);
        let h = StorePathHash::from_bytes(*p.hash().as_bytes());
        assert_eq!(&h, p.hash());
    }

    #[test]
    fn names_follow_nix_2_8() {
        // Accepted by Nix 2.8's builtins.toFile (checked by hand and in tests/nix_oracle.rs).
        for ok in [".", "..", ".x", "a?b=c+d", "A-Z_0.9", &"x".repeat(211)] {
            assert!(StorePathName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(StorePathName::new(""), Err(StorePathError::EmptyName));
        assert_eq!(
            StorePathName::new(&"x".repeat(212)),
            Err(StorePathError::NameTooLong(212))
        );
        assert_eq!(
            StorePathName::new("a b"),
            Err(StorePathError::NameCharacter {
                position: 1,
                character: ' '
            })
        );
        assert_eq!(
            StorePathName::new("aé"),
            Err(StorePathError::NameCharacter {
                position: 1,
                character: 'é'
            })
        );
        for bad in ["a/b", "a\0", "a:b", "a~", "a@", "a,b", "a*"] {
            assert!(
                matches!(
                    StorePathName::new(bad),
                    Err(StorePathError::NameCharacter { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_base_names() {
        let h = "lpg73p3x49mjkxrdj3vxhhzslln67blr";
        let cases: Vec<(String, StorePathError)> = vec![
            (String::new(), StorePathError::TooShort(String::new())),
            (h.to_owned(), StorePathError::TooShort(h.to_owned())),
            (format!("{h}-"), StorePathError::EmptyName),
            (
                format!("{h}_foo"),
                StorePathError::MissingDash(format!("{h}_foo")),
            ),
            (
                format!("e{}-foo", &h[1..]),
                StorePathError::HashCharacter {
                    position: 0,
                    character: 'e',
                },
            ),
            (
                format!("{}o-foo", &h[..31]),
                StorePathError::HashCharacter {
                    position: 31,
                    character: 'o',
                },
            ),
            (
                format!("{}A-foo", &h[..31]),
                StorePathError::HashCharacter {
                    position: 31,
                    character: 'A',
                },
            ),
            (
                format!("{}é-foo", &h[..30]),
                StorePathError::HashCharacter {
                    position: 30,
                    character: 'é',
                },
            ),
            (
                format!("{}é-foo", &h[..31]),
                StorePathError::HashCharacter {
                    position: 31,
                    character: 'é',
                },
            ),
            (
                format!("{h}-a/b"),
                StorePathError::NameCharacter {
                    position: 1,
                    character: '/',
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<StorePath>(), Err(expected), "{input:?}");
        }
        assert_eq!(
            "abc".parse::<StorePathHash>(),
            Err(StorePathError::HashLength(3))
        );
    }

    #[test]
    fn ordering_is_by_base_name() {
        let names = [
            "00000000000000000000000000000000-a",
            "0000000000000000000000000000000z-a",
            "00000000000000000000000000000010-a",
            "z0000000000000000000000000000000-a",
            "1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b",
            "1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-a",
            "lpg73p3x49mjkxrdj3vxhhzslln67blr-.foo",
        ];
        let mut paths: Vec<StorePath> = names.iter().map(|s| s.parse().unwrap()).collect();
        paths.sort();
        let mut sorted: Vec<&str> = names.to_vec();
        sorted.sort();
        let got: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        assert_eq!(got, sorted);
    }
}
