//! The values stored in Nix's database.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use harmonia_store_path::StorePath;
use harmonia_utils_hash::{Algorithm, Hash, NarHash};

use crate::DbError;

/// Metadata of a valid store path: one `ValidPaths` row plus its `Refs` (Nix's `ValidPathInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPathInfo {
    /// The store path.
    pub path: StorePath,
    /// sha256 of the path's NAR serialisation (`ValidPaths.hash`, stored as `sha256:<base16>`).
    pub nar_hash: NarHash,
    /// Size of the NAR in bytes (`ValidPaths.narSize`; NULL, i.e. unknown, reads as 0).
    pub nar_size: u64,
    /// Seconds since the epoch when the path became valid; 0 on registration means "now".
    pub registration_time: i64,
    /// The derivation that produced the path, if known.
    pub deriver: Option<StorePath>,
    /// Whether the path was built locally and is therefore trusted without signatures.
    pub ultimate: bool,
    /// Signatures (`name:base64`), sorted and without duplicates as Nix keeps them.
    pub signatures: Vec<String>,
    /// Content address assertion (`text:sha256:…`, `fixed:r:sha256:…`, `fixed:sha256:…`), if any.
    pub ca: Option<String>,
    /// Paths this path refers to (possibly itself), sorted by base name.
    pub references: Vec<StorePath>,
}

/// The id of one output of a derivation, `<hash modulo of the drv>!<output name>` (Nix's `DrvOutput`).
///
/// In the database the hash is the `Realisations.drvPath` column (as `sha256:<base16>`) and the output name the
/// `outputName` column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DrvOutput {
    drv_hash: Hash,
    output_name: String,
}

impl DrvOutput {
    /// Build from the derivation's hash modulo and an output name (non-empty, without `!` or whitespace).
    pub fn new(drv_hash: Hash, output_name: &str) -> Result<DrvOutput, DbError> {
        check_output_name(output_name).map_err(|reason| DbError::InvalidDrvOutput {
            id: format!("{}!{output_name}", drv_hash.to_typed_base16()),
            reason,
        })?;
        Ok(DrvOutput {
            drv_hash,
            output_name: output_name.to_owned(),
        })
    }

    /// The derivation's hash modulo.
    pub fn drv_hash(&self) -> &Hash {
        &self.drv_hash
    }

    /// The output name, e.g. `out`.
    pub fn output_name(&self) -> &str {
        &self.output_name
    }

    /// The hash as the database stores it: `sha256:<base16>`.
    pub fn db_hash(&self) -> String {
        self.drv_hash.to_typed_base16()
    }
}

/// Output names as Nix accepts them in a derivation output id.
pub(crate) fn check_output_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty output name".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '!' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("output name contains {c:?}"));
    }
    Ok(())
}

impl fmt::Display for DrvOutput {
    /// `sha256:<base16>!<output>`, as in Nix's realisation JSON and `.doi` URLs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}!{}",
            self.drv_hash.to_typed_base16(),
            self.output_name
        )
    }
}

impl FromStr for DrvOutput {
    type Err = DbError;

    /// Parse `<algo>:<digest>!<output>`; the digest may be in any encoding Nix accepts.
    fn from_str(s: &str) -> Result<DrvOutput, DbError> {
        let bad = |reason: String| DbError::InvalidDrvOutput {
            id: s.chars().take(200).collect(),
            reason,
        };
        let (hash, output) = s.split_once('!').ok_or_else(|| bad("missing '!'".into()))?;
        let hash = Hash::parse(hash).map_err(|e| bad(e.to_string()))?;
        if hash.algorithm() != Algorithm::Sha256 {
            return Err(bad(format!(
                "derivation hashes are sha256, not {}",
                hash.algorithm()
            )));
        }
        check_output_name(output).map_err(bad)?;
        Ok(DrvOutput {
            drv_hash: hash,
            output_name: output.to_owned(),
        })
    }
}

/// A realised output of a derivation: `Realisations` row plus `RealisationsRefs` (Nix's `Realisation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realisation {
    /// Which derivation output this realises.
    pub id: DrvOutput,
    /// The store path the output was realised to.
    pub out_path: StorePath,
    /// Signatures over the realisation, sorted and without duplicates.
    pub signatures: Vec<String>,
    /// The realisations of other derivation outputs this one was built from, with their output paths.
    pub dependent_realisations: BTreeMap<DrvOutput, StorePath>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drv_output_ids_round_trip_in_base16() {
        let hex = "51ba97a3f60b9b69ed39d2f0e862fee13442f678777013bb3e379f033a1dcbc2";
        let id: DrvOutput = format!("sha256:{hex}!out").parse().unwrap();
        assert_eq!(id.output_name(), "out");
        assert_eq!(id.db_hash(), format!("sha256:{hex}"));
        assert_eq!(id.to_string(), format!("sha256:{hex}!out"));
        // Other encodings of the same hash give the same id.
        let nix32 = id.drv_hash().to_nix_base32();
        assert_eq!(
            format!("sha256:{nix32}!out").parse::<DrvOutput>().unwrap(),
            id
        );
        assert_eq!(DrvOutput::new(*id.drv_hash(), "out").unwrap(), id);
        assert!(DrvOutput::new(*id.drv_hash(), "a!b").is_err());
        for bad in [
            "",
            "!out",
            "sha256:!out",
            &format!("sha256:{hex}"),
            &format!("sha256:{hex}!"),
            &format!("sha256:{hex}!o ut"),
            &format!("sha1:{}!out", &hex[..40]),
            &format!("sha256:{hex}x!out"),
        ] {
            assert!(
                matches!(
                    bad.parse::<DrvOutput>(),
                    Err(DbError::InvalidDrvOutput { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
