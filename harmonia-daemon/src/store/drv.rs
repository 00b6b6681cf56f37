//! Just enough of the derivation ATerm (`Derive([("out","/nix/store/..","",""),...],...)`) to register a
//! `.drv`'s outputs in `DerivationOutputs` when it becomes valid, as Nix's `registerValidPaths` does.

/// Largest `.drv` file we read to find its outputs.
pub const MAX_DRV_SIZE: u64 = 64 << 20;

/// The (output name, output path) pairs of a derivation's ATerm; outputs without a path (content-addressed
/// or deferred) are skipped. `None` if the text does not start like a derivation.
pub fn outputs(text: &str) -> Option<Vec<(String, String)>> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.expect(b"Derive([")?;
    let mut out = Vec::new();
    if p.peek() == Some(b']') {
        return Some(out);
    }
    loop {
        p.expect(b"(")?;
        let name = p.string()?;
        p.expect(b",")?;
        let path = p.string()?;
        p.expect(b",")?;
        p.string()?;
        p.expect(b",")?;
        p.string()?;
        p.expect(b")")?;
        if !path.is_empty() {
            out.push((name, path));
        }
        match p.next()? {
            b',' => continue,
            b']' => return Some(out),
            _ => return None,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, lit: &[u8]) -> Option<()> {
        if self.s.get(self.i..self.i + lit.len())? == lit {
            self.i += lit.len();
            Some(())
        } else {
            None
        }
    }

    /// A quoted string with Nix's escapes (`\"`, `\\`, `\n`, `\r`, `\t`).
    fn string(&mut self) -> Option<String> {
        self.expect(b"\"")?;
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => out.push(match self.next()? {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    c => c,
                }),
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outputs() {
        let drv = r#"Derive([("dev","/nix/store/aaa-x-dev","",""),("out","/nix/store/bbb-x","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo \"hi\""],[("out","/nix/store/bbb-x")])"#;
        assert_eq!(
            outputs(drv),
            Some(vec![
                ("dev".into(), "/nix/store/aaa-x-dev".into()),
                ("out".into(), "/nix/store/bbb-x".into())
            ])
        );
        let ca = r#"Derive([("out","","r:sha256","")],[],[],"x","/bin/sh",[],[])"#;
        assert_eq!(outputs(ca), Some(vec![]));
        assert_eq!(outputs("not a drv"), None);
        assert_eq!(outputs("Derive([(\"out\",\"/nix"), None);
    }
}
