//! Lower-case hexadecimal, the way Nix prints base16 (`printHash16`); upper case is accepted on input.

use crate::error::{Encoding, HashError};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Encodes `bytes` as lower-case hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn digit(s: &str, pos: usize) -> Result<u8, HashError> {
    let c = s.as_bytes()[pos];
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(HashError::InvalidCharacter {
            encoding: Encoding::Base16,
            position: pos,
            character: s
                .get(pos..)
                .and_then(|r| r.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER),
        }),
    }
}

/// Decodes exactly `2 * out.len()` hex characters into `out`; the caller checked the length.
pub(crate) fn decode_into(s: &str, out: &mut [u8]) -> Result<(), HashError> {
    debug_assert_eq!(s.len(), out.len() * 2);
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (digit(s, 2 * i)? << 4) | digit(s, 2 * i + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_case() {
        assert_eq!(encode(&[0x00, 0xab, 0xff]), "00abff");
        let mut out = [0u8; 3];
        decode_into("00ABfF", &mut out).unwrap();
        assert_eq!(out, [0x00, 0xab, 0xff]);
    }

    #[test]
    fn rejects_bad_characters() {
        let mut out = [0u8; 2];
        assert_eq!(
            decode_into("0g00", &mut out),
            Err(HashError::InvalidCharacter {
                encoding: Encoding::Base16,
                position: 1,
                character: 'g'
            })
        );
        let mut out = [0u8; 1];
        assert_eq!(
            decode_into("é", &mut out),
            Err(HashError::InvalidCharacter {
                encoding: Encoding::Base16,
                position: 0,
                character: 'é'
            })
        );
    }
}
