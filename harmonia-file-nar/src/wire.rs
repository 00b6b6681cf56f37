//! Low-level pieces of the NAR grammar shared by the encoder, decoder and listing.
//!
//! A NAR is a sequence of strings; each is a little-endian u64 length, the bytes, then zero padding to a
//! multiple of 8. The grammar (Nix's `archive.cc`, Eelco Dolstra's thesis, section 5.2.1):
//!
//! ```text
//! nar       = str("nix-archive-1") node
//! node      = str("(") str("type") type str(")")
//! type      = str("regular") [str("executable") str("")] str("contents") contents
//!           | str("symlink") str("target") str(target)
//!           | str("directory") { str("entry") str("(") str("name") str(name) str("node") node str(")") }
//! ```

/// The magic string every NAR starts with.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Zero bytes used for padding.
pub(crate) const ZEROS: [u8; 8] = [0; 8];

/// Number of padding bytes after `len` bytes of data.
#[inline]
pub(crate) const fn padding(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

/// Size on the wire of a string of `len` bytes (length field, data, padding).
#[inline]
pub(crate) const fn str_size(len: u64) -> u64 {
    8 + len + padding(len) as u64
}

/// Append the wire form of `s` to `out`.
#[cfg(test)]
pub(crate) fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(&ZEROS[..padding(s.len() as u64)]);
}

/// Check a directory entry name; returns why it is refused, if it is.
pub(crate) fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty name")
    } else if name == b"." || name == b".." {
        Err("\".\" and \"..\" are not allowed")
    } else if name.contains(&b'/') {
        Err("names cannot contain '/'")
    } else if name.contains(&0) {
        Err("names cannot contain NUL")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_rounds_to_eight() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 7);
        assert_eq!(padding(8), 0);
        assert_eq!(padding(13), 3);
        assert_eq!(str_size(13), 24);
        let mut v = Vec::new();
        put_str(&mut v, MAGIC);
        assert_eq!(v.len(), 24);
        assert_eq!(&v[..8], &13u64.to_le_bytes());
        assert_eq!(&v[21..], &[0, 0, 0]);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name(b"a").is_ok());
        assert!(check_name(b"..a").is_ok());
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
