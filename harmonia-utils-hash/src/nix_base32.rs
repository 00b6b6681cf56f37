//! Nix's base32: alphabet `0123456789abcdfghijklmnpqrsvwxyz` (no `e`, `o`, `u`, `t`) and a reversed bit order,
//! so the last character holds the lowest bits of the first byte (`libutil/hash.cc`, `printHash32`).

use crate::error::{Encoding, HashError};

/// Nix's base32 alphabet.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

const INVALID: u8 = 0xff;

/// Maps an ASCII byte to its digit value, or `INVALID`.
const DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 32 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Number of nix-base32 characters encoding `byte_len` bytes (`ceil(byte_len * 8 / 5)`).
pub const fn encoded_len(byte_len: usize) -> usize {
    (byte_len * 8).div_ceil(5)
}

/// Number of bytes that `char_len` characters encode, if that length is a possible encoding.
pub const fn decoded_len(char_len: usize) -> Option<usize> {
    let bytes = char_len * 5 / 8;
    if encoded_len(bytes) == char_len {
        Some(bytes)
    } else {
        None
    }
}

/// Encodes `bytes` in nix-base32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = bytes.get(i + 1).map_or(0, |&b| u16::from(b) << (8 - j));
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

/// Decodes nix-base32 text into exactly `out.len()` bytes.
///
/// The text must be exactly [`encoded_len`]`(out.len())` characters, only from the alphabet, and canonical:
/// bits beyond the last byte (in the first character) must be zero, so every byte string has one encoding.
pub fn decode_into(s: &str, out: &mut [u8]) -> Result<(), HashError> {
    if s.len() != encoded_len(out.len()) {
        return Err(HashError::InvalidNixBase32Length(s.len()));
    }
    out.fill(0);
    let len = s.len();
    for (pos, c) in s.bytes().enumerate() {
        let digit = DECODE[usize::from(c)];
        if digit == INVALID {
            return Err(invalid_char(s, pos));
        }
        let bit = (len - pos - 1) * 5;
        let (i, j) = (bit / 8, bit % 8);
        let v = u16::from(digit) << j;
        out[i] |= v as u8;
        let carry = (v >> 8) as u8;
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry,
            None if carry != 0 => return Err(HashError::NonCanonicalNixBase32),
            None => {}
        }
    }
    Ok(())
}

/// Decodes nix-base32 text; the number of bytes follows from its length.
///
/// Rejects lengths that encode no whole number of bytes, characters outside the alphabet and non-canonical
/// encodings (see [`decode_into`]).
pub fn decode(s: &str) -> Result<Vec<u8>, HashError> {
    let n = decoded_len(s.len()).ok_or(HashError::InvalidNixBase32Length(s.len()))?;
    let mut out = vec![0u8; n];
    decode_into(s, &mut out)?;
    Ok(out)
}

fn invalid_char(s: &str, pos: usize) -> HashError {
    // `pos` is the first byte that is not an alphabet (ASCII) character, so it starts a UTF-8 sequence.
    let character = s
        .get(pos..)
        .and_then(|r| r.chars().next())
        .unwrap_or(char::REPLACEMENT_CHARACTER);
    HashError::InvalidCharacter {
        encoding: Encoding::NixBase32,
        position: pos,
        character,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(encoded_len(0), 0);
        assert_eq!(encoded_len(1), 2);
        assert_eq!(encoded_len(16), 26);
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(64), 103);
        assert_eq!(decoded_len(52), Some(32));
        assert_eq!(decoded_len(32), Some(20));
        assert_eq!(decoded_len(1), None);
        assert_eq!(decoded_len(3), None);
    }

    #[test]
    fn known_vectors() {
        // Computed with Nix 2.8: `nix hash to-base32 --type sha256 <hex>` and `nix-store --add` path hashes.
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x00]), "00");
        assert_eq!(encode(&[0xff]), "7z");
        assert_eq!(encode(&[0x1f]), "0z");
        assert_eq!(encode(&[0x20]), "10");
    }

    #[test]
    fn round_trips_all_lengths() {
        for n in 0..70usize {
            let bytes: Vec<u8> = (0..n)
                .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
                .collect();
            let enc = encode(&bytes);
            assert_eq!(enc.len(), encoded_len(n));
            assert_eq!(decode(&enc).unwrap(), bytes, "n={n}");
        }
    }

    #[test]
    fn rejects_bad_characters() {
        for (s, pos, ch) in [
            ("e0", 0, 'e'),
            ("0o", 1, 'o'),
            ("0u", 1, 'u'),
            ("0t", 1, 't'),
            ("0A", 1, 'A'),
        ] {
            assert_eq!(
                decode(s),
                Err(HashError::InvalidCharacter {
                    encoding: Encoding::NixBase32,
                    position: pos,
                    character: ch
                }),
                "{s}"
            );
        }
        assert_eq!(
            decode("0é"),
            Err(HashError::InvalidNixBase32Length(3)),
            "length is checked on bytes first"
        );
        assert_eq!(
            decode("é"),
            Err(HashError::InvalidCharacter {
                encoding: Encoding::NixBase32,
                position: 0,
                character: 'é'
            })
        );
    }

    #[test]
    fn rejects_non_canonical() {
        // One byte is 2 characters carrying 10 bits: the first character may only use its 3 low bits.
        assert!(decode("7z").is_ok());
        assert_eq!(decode("8z"), Err(HashError::NonCanonicalNixBase32));
        assert_eq!(decode("zz"), Err(HashError::NonCanonicalNixBase32));
        // A 32-byte digest has 52 characters = 260 bits: the first character may only use its lowest bit.
        let ok = format!("1{}", "z".repeat(51));
        assert!(decode(&ok).is_ok());
        let bad = format!("2{}", "0".repeat(51));
        assert_eq!(decode(&bad), Err(HashError::NonCanonicalNixBase32));
    }

    #[test]
    fn rejects_bad_lengths() {
        for n in [1usize, 3, 6, 9, 11, 14, 51, 54] {
            let s = "0".repeat(n);
            assert_eq!(decode(&s), Err(HashError::InvalidNixBase32Length(n)));
        }
        let mut out = [0u8; 20];
        assert_eq!(
            decode_into(&"0".repeat(52), &mut out),
            Err(HashError::InvalidNixBase32Length(52))
        );
    }
}
