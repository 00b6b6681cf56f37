//! Ed25519 keys and signatures in Nix's `name:base64` form, as used to sign binary caches.
//!
//! The text forms are the ones `nix-store --generate-binary-cache-key NAME SECRET PUBLIC` writes and
//! the `Sig:` lines of a narinfo carry (Nix's `libstore/crypto.cc`):
//!
//! * secret key: `name:base64(seed ‖ public key)` (64 bytes),
//! * public key: `name:base64(public key)` (32 bytes),
//! * signature: `name:base64(ed25519 signature)` (64 bytes).
//!
//! The name is everything before the first `:` and must not be empty.
//!
//! ```
//! use harmonia_utils_signature::{PublicKey, SecretKey};
//!
//! // What `nix-store --generate-binary-cache-key` writes (normally read from the SECRET file).
//! let secret = SecretKey::from_seed("cache.example.org-1", &[7; 32]).unwrap();
//! let text = secret.to_nix_string();
//! let secret = SecretKey::parse(&text).unwrap();
//!
//! let public: PublicKey = secret.to_public_key().to_string().parse().unwrap();
//! let sig = secret.sign(b"1;/nix/store/...");
//! assert_eq!(sig.key_name(), "cache.example.org-1");
//! assert!(public.verify(b"1;/nix/store/...", &sig));
//! ```

#![deny(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// Standard base64 alphabet; padding is written, and accepted whether present or not on input
/// (Nix's own decoder stops at the first `=`).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Length in bytes of a Nix secret key (ed25519 seed followed by the public key).
pub const SECRET_KEY_LEN: usize = 64;
/// Length of the padded base64 text of a secret key.
const SECRET_KEY_TEXT_LEN: usize = SECRET_KEY_LEN.div_ceil(3) * 4;
/// Length in bytes of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length in bytes of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Which kind of `name:base64` value was being parsed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A secret key (`nix-store --generate-binary-cache-key` SECRET file).
    SecretKey,
    /// A public key (as in `trusted-public-keys`).
    PublicKey,
    /// A signature (a narinfo `Sig:` value).
    Signature,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::SecretKey => "secret key",
            Kind::PublicKey => "public key",
            Kind::Signature => "signature",
        })
    }
}

/// Why a key or signature could not be parsed or used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The text has no `:` separating the key name from the base64 data.
    #[error("{kind} is not of the form 'name:base64' (no ':' found)")]
    MissingColon {
        /// What was being parsed.
        kind: Kind,
    },
    /// The part before the `:` is empty.
    #[error("{kind} has an empty name before ':'")]
    EmptyName {
        /// What was being parsed.
        kind: Kind,
    },
    /// The part after the `:` is not valid base64.
    #[error("{kind} '{name}' has invalid base64 data: {reason}")]
    BadBase64 {
        /// What was being parsed.
        kind: Kind,
        /// The key name in front of the data.
        name: String,
        /// What the base64 decoder objected to.
        reason: String,
    },
    /// The decoded data has the wrong number of bytes.
    #[error("{kind} '{name}' decodes to {actual} bytes, expected {expected}")]
    WrongLength {
        /// What was being parsed.
        kind: Kind,
        /// The key name in front of the data.
        name: String,
        /// Bytes required for this kind.
        expected: usize,
        /// Bytes found.
        actual: usize,
    },
    /// The key name contains a `:` or a control character (it could not be written back).
    #[error("{kind} name {name:?} contains ':' or a control character")]
    InvalidName {
        /// What was being parsed.
        kind: Kind,
        /// The offending name.
        name: String,
    },
    /// The public half stored in a secret key does not belong to its seed.
    #[error("secret key '{name}' is corrupt: its public half does not match its seed")]
    KeyMismatch {
        /// The key name.
        name: String,
    },
    /// The 32 bytes of a public key are not a valid ed25519 point.
    #[error("public key '{name}' is not a valid ed25519 point")]
    InvalidPublicKey {
        /// The key name.
        name: String,
    },
}

/// The key name as put in an error: at most 80 bytes (cut at a character boundary, then `...`), so a
/// huge `name:` in a narinfo `Sig:` line cannot make a huge error message.
fn error_name(name: &str) -> String {
    const MAX: usize = 80;
    if name.len() <= MAX {
        return name.to_owned();
    }
    let mut end = MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &name[..end])
}

/// Key names are non-empty and free of `:` and control characters, so the text form is unambiguous
/// and fits on one narinfo line.
fn check_name(kind: Kind, name: &str) -> Result<(), SignatureError> {
    if name.is_empty() {
        return Err(SignatureError::EmptyName { kind });
    }
    if name.contains(|c: char| c == ':' || c.is_control()) {
        return Err(SignatureError::InvalidName {
            kind,
            name: error_name(name),
        });
    }
    Ok(())
}

/// Splits `name:base64`, checks the name and decodes the data into exactly `N` bytes in `out`.
///
/// The bytes may be a secret key, so they are written into the caller's (zeroizing) buffer rather
/// than returned by value: moving an array out of this frame would leave a copy behind that nothing
/// clears.
fn parse_named<'a, const N: usize>(
    kind: Kind,
    s: &'a str,
    out: &mut [u8; N],
) -> Result<&'a str, SignatureError> {
    let (name, data) = s
        .split_once(':')
        .ok_or(SignatureError::MissingColon { kind })?;
    check_name(kind, name)?;
    // Every base64 quad gives 3 bytes; anything much longer than needed is rejected before
    // decoding so the buffer is never sized by the input.
    let max_len = N.div_ceil(3) * 4;
    if data.len() > max_len {
        return Err(SignatureError::WrongLength {
            kind,
            name: error_name(name),
            expected: N,
            actual: data.len() / 4 * 3,
        });
    }
    // Large enough for any accepted input length (at most `N + 2` bytes for the lengths used here).
    let mut buf = Zeroizing::new([0u8; 66]);
    let n = BASE64
        .decode_slice(data.as_bytes(), &mut buf[..(max_len / 4 * 3).min(66)])
        .map_err(|e| SignatureError::BadBase64 {
            kind,
            name: error_name(name),
            reason: base64_reason(&e),
        })?;
    if n != N {
        return Err(SignatureError::WrongLength {
            kind,
            name: error_name(name),
            expected: N,
            actual: n,
        });
    }
    out.copy_from_slice(&buf[..N]);
    Ok(name)
}

/// Why base64 decoding failed, without the offending symbol: the decoder's own message quotes it, and
/// for a secret key a wrongly placed (but valid) last symbol carries bits of the seed.
fn base64_reason(e: &base64::DecodeSliceError) -> String {
    use base64::{DecodeError, DecodeSliceError};
    match e {
        DecodeSliceError::DecodeError(DecodeError::InvalidByte(offset, _)) => {
            format!("invalid character at offset {offset}")
        }
        DecodeSliceError::DecodeError(DecodeError::InvalidLastSymbol(offset, _)) => {
            format!("last character (offset {offset}) has non-zero trailing bits")
        }
        DecodeSliceError::DecodeError(DecodeError::InvalidLength(len)) => {
            format!("invalid length {len}")
        }
        DecodeSliceError::DecodeError(DecodeError::InvalidPadding) => "invalid padding".into(),
        DecodeSliceError::OutputSliceTooSmall => "too long".into(),
    }
}

/// A Nix binary-cache signing key: a name and an ed25519 key pair.
///
/// Parsed from the content of the SECRET file written by
/// `nix-store --generate-binary-cache-key` (surrounding whitespace is ignored).
/// The key material is zeroized on drop and never shown by `Debug`.
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses `name:base64(seed ‖ public)`, checking that the public half matches the seed.
    pub fn parse(s: &str) -> Result<SecretKey, SignatureError> {
        let mut bytes = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        let name = parse_named(Kind::SecretKey, s.trim(), &mut bytes)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes()[..] != bytes[32..] {
            return Err(SignatureError::KeyMismatch {
                name: error_name(name),
            });
        }
        Ok(SecretKey {
            name: name.to_owned(),
            key,
        })
    }

    /// Makes a key from a name and a 32-byte ed25519 seed (for generating keys).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<SecretKey, SignatureError> {
        check_name(Kind::SecretKey, name)?;
        Ok(SecretKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// The key name (the part before `:`), which also names its signatures.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs `msg`; the signature carries this key's name.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature {
            name: self.name.clone(),
            bytes: self.key.sign(msg).to_bytes(),
        }
    }

    /// The matching public key, with the same name.
    pub fn to_public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The secret in Nix's text form `name:base64(seed ‖ public)`, in a zeroizing string.
    pub fn to_nix_string(&self) -> Zeroizing<String> {
        // Assembled in place from borrowed halves: `to_keypair_bytes` returns the secret by value,
        // in a temporary that would not be cleared.
        let mut keypair = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        keypair[..32].copy_from_slice(self.key.as_bytes());
        keypair[32..].copy_from_slice(self.key.verifying_key().as_bytes());
        // Encode into a zeroizing buffer: `encode_string` goes through a 1 KiB stack buffer of its own
        // that would keep the encoded secret after we return.
        let mut encoded = Zeroizing::new([0u8; SECRET_KEY_TEXT_LEN]);
        let n = BASE64
            .encode_slice(&keypair[..], &mut encoded[..])
            .unwrap_or(0);
        // Sized once, so pushing never reallocates and leaves a stray copy behind.
        let mut out = Zeroizing::new(String::with_capacity(self.name.len() + 1 + n));
        out.push_str(&self.name);
        out.push(':');
        out.extend(encoded[..n].iter().map(|&b| char::from(b)));
        out
    }
}

// The only secret field, the `SigningKey`, zeroizes itself on drop (ed25519-dalek's `zeroize` feature).
impl zeroize::ZeroizeOnDrop for SecretKey {}

impl FromStr for SecretKey {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SecretKey::parse(s)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .field("public_key", &self.to_public_key().to_string())
            .finish_non_exhaustive()
    }
}

/// A Nix binary-cache public key, as listed in `trusted-public-keys`: `name:base64(32 bytes)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)`.
    pub fn parse(s: &str) -> Result<PublicKey, SignatureError> {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        let name = parse_named(Kind::PublicKey, s.trim(), &mut bytes)?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::InvalidPublicKey {
                name: error_name(name),
            })?;
        Ok(PublicKey {
            name: name.to_owned(),
            key,
        })
    }

    /// The key name (the part before `:`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32 raw key bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.key.as_bytes()
    }

    /// True if `sig` was made by this key over `msg`.
    ///
    /// Like Nix, a signature only counts for the key of the same name. Verification is strict
    /// (canonical encodings, no small-order points), matching libsodium's checks.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        sig.name == self.name
            && self
                .key
                .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.bytes))
                .is_ok()
    }
}

impl FromStr for PublicKey {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::parse(s)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        f.write_str(":")?;
        f.write_str(&BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.to_string()).finish()
    }
}

/// A detached signature with the name of the key that made it: `name:base64(64 bytes)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    name: String,
    bytes: [u8; SIGNATURE_LEN],
}

impl Signature {
    /// Parses `name:base64(64 bytes)` (a narinfo `Sig:` value).
    pub fn parse(s: &str) -> Result<Signature, SignatureError> {
        let mut bytes = [0u8; SIGNATURE_LEN];
        let name = parse_named(Kind::Signature, s, &mut bytes)?;
        Ok(Signature {
            name: name.to_owned(),
            bytes,
        })
    }

    /// Builds a signature from a key name and raw bytes.
    pub fn from_parts(name: &str, bytes: [u8; SIGNATURE_LEN]) -> Result<Signature, SignatureError> {
        check_name(Kind::Signature, name)?;
        Ok(Signature {
            name: name.to_owned(),
            bytes,
        })
    }

    /// The name of the key that made this signature.
    pub fn key_name(&self) -> &str {
        &self.name
    }

    /// The 64 raw signature bytes.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.bytes
    }

    /// Appends the text form `name:base64` to `out` without intermediate allocations.
    pub fn write_to(&self, out: &mut String) {
        out.push_str(&self.name);
        out.push(':');
        BASE64.encode_string(self.bytes, out);
    }

    /// Length in bytes of the text form.
    pub fn text_len(&self) -> usize {
        self.name.len() + 1 + SIGNATURE_LEN.div_ceil(3) * 4
    }
}

impl FromStr for Signature {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signature::parse(s)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(self.text_len());
        self.write_to(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Signature").field(&self.to_string()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, seed_byte: u8) -> SecretKey {
        SecretKey::from_seed(name, &[seed_byte; 32]).unwrap()
    }

    #[test]
    fn secret_key_text_round_trip() {
        let k = key("cache.example.org-1", 7);
        let text = k.to_nix_string();
        let k2 = SecretKey::parse(&format!("  {}\n", &*text)).unwrap();
        assert_eq!(k2.name(), "cache.example.org-1");
        assert_eq!(k2.to_public_key(), k.to_public_key());
        assert_eq!(*k2.to_nix_string(), *text);
        // The exact text Nix writes: name, ':', padded standard base64 of seed ‖ public key.
        assert_eq!(
            *text,
            format!(
                "cache.example.org-1:{}",
                BASE64.encode(k.key.to_keypair_bytes())
            )
        );
        assert_eq!(text.len(), text.capacity());
    }

    #[test]
    fn sign_and_verify() {
        let k = key("k", 1);
        let pk = k.to_public_key();
        let sig = k.sign(b"hello");
        assert_eq!(sig.key_name(), "k");
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellO", &sig));
        // Another key with the same name does not verify.
        assert!(!key("k", 2).to_public_key().verify(b"hello", &sig));
        // The same key under another name does not count (Nix looks keys up by name).
        let renamed = Signature::from_parts("other", *sig.as_bytes()).unwrap();
        assert!(!pk.verify(b"hello", &renamed));
        // A flipped bit fails.
        let mut bytes = *sig.as_bytes();
        bytes[10] ^= 1;
        assert!(!pk.verify(b"hello", &Signature::from_parts("k", bytes).unwrap()));
    }

    #[test]
    fn text_forms_round_trip() {
        let k = key("name-with.dots", 9);
        let pk = k.to_public_key();
        assert_eq!(PublicKey::parse(&pk.to_string()).unwrap(), pk);
        let sig = k.sign(b"x");
        let text = sig.to_string();
        assert_eq!(text.len(), sig.text_len());
        assert_eq!(Signature::parse(&text).unwrap(), sig);
        // Unpadded base64 is accepted too.
        let unpadded = text.trim_end_matches('=');
        assert_eq!(Signature::parse(unpadded).unwrap(), sig);
    }

    #[test]
    fn secret_material_is_zeroized_on_drop() {
        fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroized_on_drop::<SigningKey>();
        zeroized_on_drop::<SecretKey>();
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = key("k", 3);
        let secret = k.to_nix_string();
        let data = secret.split_once(':').unwrap().1;
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(data), "{dbg}");
        assert!(!dbg.contains(&data[..43]), "{dbg}");
        assert!(dbg.contains("\"k\""));
    }

    #[test]
    fn typed_errors() {
        use SignatureError as E;
        assert_eq!(
            SecretKey::parse("nocolon").unwrap_err(),
            E::MissingColon {
                kind: Kind::SecretKey
            }
        );
        assert_eq!(
            PublicKey::parse(":AAAA").unwrap_err(),
            E::EmptyName {
                kind: Kind::PublicKey
            }
        );
        assert!(matches!(
            Signature::parse("k:not base64!").unwrap_err(),
            E::BadBase64 { .. }
        ));
        assert!(matches!(
            PublicKey::parse("k:AAAA").unwrap_err(),
            E::WrongLength {
                expected: 32,
                actual: 3,
                ..
            }
        ));
        assert!(matches!(
            Signature::parse("k:").unwrap_err(),
            E::WrongLength { actual: 0, .. }
        ));
        let huge = format!("k:{}", "A".repeat(1 << 20));
        assert!(matches!(
            Signature::parse(&huge).unwrap_err(),
            E::WrongLength { .. }
        ));
        // Secret key whose public half belongs to another seed.
        let a = key("k", 1);
        let b = key("k", 2);
        let mut bytes = a.key.to_keypair_bytes();
        bytes[32..].copy_from_slice(b.to_public_key().as_bytes());
        let text = format!("k:{}", BASE64.encode(bytes));
        assert_eq!(
            SecretKey::parse(&text).unwrap_err(),
            E::KeyMismatch { name: "k".into() }
        );
    }

    proptest::proptest! {
        #[test]
        fn signature_text_round_trip(name in "[^:\\p{Cc}]{1,40}", bytes in proptest::array::uniform32(0u8..)) {
            let mut full = [0u8; 64];
            full[..32].copy_from_slice(&bytes);
            full[32..].copy_from_slice(&bytes);
            let sig = Signature::from_parts(&name, full).unwrap();
            proptest::prop_assert_eq!(Signature::parse(&sig.to_string()).unwrap(), sig);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}") {
            let _ = Signature::parse(&s);
            let _ = PublicKey::parse(&s);
            let _ = SecretKey::parse(&s);
        }
    }

    #[test]
    fn base64_errors_never_quote_secret_symbols() {
        // Seed bytes 0xff encode as '/' (all bits set), so a cut after two characters leaves set bits.
        let k = key("k", 0xff);
        let text = k.to_nix_string();
        let data = text.split_once(':').unwrap().1;
        // Cut the secret so its last character ends mid-byte with trailing bits set: the decoder's own
        // message would quote that character, a piece of the seed.
        let cut = (2..43)
            .map(|n| &data[..n])
            .find(|d| {
                matches!(
                    BASE64.decode(d),
                    Err(base64::DecodeError::InvalidLastSymbol(..))
                )
            })
            .expect("some prefix has trailing bits set");
        let last = cut.as_bytes()[cut.len() - 1];
        let err = SecretKey::parse(&format!("k:{cut}")).unwrap_err();
        assert!(
            matches!(&err, SignatureError::BadBase64 { reason, .. }
                if !reason.contains(&last.to_string()) && !reason.contains(char::from(last))),
            "{err}"
        );
        // An invalid character is reported by offset only.
        let err = SecretKey::parse(&format!("k:{}!{}", &data[..10], &data[11..])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret key 'k' has invalid base64 data: invalid character at offset 10"
        );
    }

    #[test]
    fn errors_quote_at_most_a_bounded_name() {
        let long = "é".repeat(1 << 16);
        for text in [
            format!("{long}:!!!!"),
            format!("{long}:AAAA"),
            format!("{long}\n:AAAA"),
        ] {
            let err = Signature::parse(&text).unwrap_err().to_string();
            assert!(
                err.len() < 300,
                "{} bytes: {}",
                err.len(),
                err.chars().take(100).collect::<String>()
            );
        }
        assert_eq!(error_name("short"), "short");
        assert!(error_name(&long).ends_with("..."));
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(matches!(
            Signature::from_parts("a:b", [0; 64]).unwrap_err(),
            SignatureError::InvalidName { .. }
        ));
        assert!(matches!(
            Signature::parse("a\nb:AAAA").unwrap_err(),
            SignatureError::InvalidName { .. }
        ));
        assert!(matches!(
            SecretKey::from_seed("", &[0; 32]).unwrap_err(),
            SignatureError::EmptyName { .. }
        ));
    }

    #[test]
    fn name_is_up_to_first_colon() {
        let k = key("a", 4);
        let sig = k.sign(b"m");
        let text = sig.to_string();
        // A colon in the data part is bad base64, not part of the name.
        let bad = format!("a::{}", &text[3..]);
        assert!(matches!(
            Signature::parse(&bad).unwrap_err(),
            SignatureError::BadBase64 { .. }
        ));
    }
}
