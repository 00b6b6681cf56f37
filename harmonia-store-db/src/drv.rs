//! The outputs section of a derivation file, which is all `DerivationOutputs` needs.
//!
//! Nix fills `DerivationOutputs` when a `.drv` becomes valid by reading the derivation. A full derivation
//! parser belongs with the other store types; the daemon only needs the first list of the ATerm
//! `Derive([("out","/nix/store/…-x","",""),…],…)` (Nix's `derivations.cc`, `parseDerivation`) to record the
//! same rows, so that is all this reads.

use harmonia_store_path::{StoreDir, StorePath};

use crate::DbError;
use crate::types::check_output_name;

/// The outputs `(name, path)` a derivation file declares, in file order (sorted by name, as Nix writes
/// them): the rows Nix records in `DerivationOutputs` when the `.drv` becomes valid. Outputs without a path
/// (floating content-addressed ones) are left out, as Nix leaves them out.
pub fn parse_derivation_outputs(
    store_dir: &StoreDir,
    drv: &[u8],
) -> Result<Vec<(String, StorePath)>, DbError> {
    let mut p = Parser { input: drv, pos: 0 };
    p.expect(b"Derive([")?;
    let mut outputs = Vec::new();
    if p.peek() == Some(b']') {
        return Ok(outputs);
    }
    loop {
        p.expect(b"(")?;
        let name = p.string()?;
        p.expect(b",")?;
        let path = p.string()?;
        p.expect(b",")?;
        p.string()?; // hash algorithm (fixed-output and CA derivations)
        p.expect(b",")?;
        p.string()?; // hash (fixed-output derivations)
        p.expect(b")")?;
        check_output_name(&name).map_err(|reason| p.error(reason))?;
        if !path.is_empty() {
            let path = store_dir
                .parse_path(&path)
                .map_err(|e| p.error(format!("output {name:?}: {e}")))?;
            outputs.push((name, path));
        }
        match p.next() {
            Some(b',') => {}
            Some(b']') => return Ok(outputs),
            _ => return Err(p.error("expected ',' or ']' after an output".into())),
        }
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, reason: String) -> DbError {
        DbError::InvalidDerivation {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, token: &[u8]) -> Result<(), DbError> {
        if self.input.get(self.pos..self.pos + token.len()) == Some(token) {
            self.pos += token.len();
            Ok(())
        } else {
            Err(self.error(format!("expected {:?}", String::from_utf8_lossy(token))))
        }
    }

    /// An ATerm string: `"…"` with `\"`, `\\`, `\n`, `\r`, `\t` escapes (any other escaped byte stands for
    /// itself, as in Nix). The result can never be longer than the input.
    fn string(&mut self) -> Result<String, DbError> {
        self.expect(b"\"")?;
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return Err(self.error("unterminated string".into())),
                Some(b'"') => break,
                Some(b'\\') => match self.next() {
                    None => return Err(self.error("unterminated string".into())),
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b't') => out.push(b'\t'),
                    Some(other) => out.push(other),
                },
                Some(b) => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<(String, String)>, DbError> {
        let dir = StoreDir::default();
        parse_derivation_outputs(&dir, s.as_bytes()).map(|outs| {
            outs.into_iter()
                .map(|(n, p)| (n, dir.display(&p)))
                .collect()
        })
    }

    #[test]
    fn outputs_are_read_and_floating_ones_skipped() {
        let top = "/nix/store/22w5lkzn6cmyhbm7m11x3cbzcaaf0n9a-top";
        let drv =
            format!(r#"Derive([("out","{top}","","")],[],[],"x86_64-linux","/bin/sh",[],[])"#);
        assert_eq!(
            parse(&drv).unwrap(),
            vec![("out".to_string(), top.to_string())]
        );
        let dev = "/nix/store/22w5lkzn6cmyhbm7m11x3cbzcaaf0n9a-top-dev";
        let two = format!(r#"Derive([("dev","{dev}","",""),("out","{top}","","")],[])"#);
        assert_eq!(parse(&two).unwrap().len(), 2);
        let floating = r#"Derive([("out","","r:sha256","")],[],[])"#;
        assert_eq!(parse(floating).unwrap(), vec![]);
        assert_eq!(parse("Derive([],[])").unwrap(), vec![]);
        let escaped = format!(r#"Derive([("o\ut","{top}","r:sha256","a\"b\\")])"#);
        assert_eq!(
            parse(&escaped).unwrap(),
            vec![("out".to_string(), top.to_string())]
        );
    }

    #[test]
    fn malformed_derivations_are_errors() {
        let top = "/nix/store/22w5lkzn6cmyhbm7m11x3cbzcaaf0n9a-top";
        let good = format!(r#"Derive([("out","{top}","","")],[])"#);
        // Every truncation of a good derivation is an error, never a panic.
        for end in 0..good.find("],").unwrap() + 1 {
            assert!(parse(&good[..end]).is_err(), "{:?}", &good[..end]);
        }
        for bad in [
            "",
            "Derive(",
            "derive([])",
            r#"Derive([("out","/tmp/x","","")])"#,
            r#"Derive([("","/nix/store/22w5lkzn6cmyhbm7m11x3cbzcaaf0n9a-top","","")])"#,
            r#"Derive([("out","/nix/store/22w5lkzn6cmyhbm7m11x3cbzcaaf0n9a-top","")])"#,
            r#"Derive([("out","/nix/store/22w5lkzn6cmyhbm7m11x3cbzcaaf0n9a-top","","")x"#,
        ] {
            assert!(
                matches!(parse(bad), Err(DbError::InvalidDerivation { .. })),
                "{bad:?}"
            );
        }
        let dir = StoreDir::default();
        assert!(parse_derivation_outputs(&dir, b"Derive([(\"\xff\",\"\",\"\",\"\")])").is_err());
    }
}
