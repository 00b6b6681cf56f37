//! The narinfo parser (grammar: Nix's `NarInfo::NarInfo` in `libstore/nar-info.cc`).

use std::str::FromStr;

use harmonia_store_path::{ContentAddress, StoreDir, StorePath};
use harmonia_utils_hash::{Hash, NarHash};
use harmonia_utils_signature::Signature;

use crate::error::{Field, NarInfoError, snippet};
use crate::{MAX_NARINFO_LEN, NarInfo, UNKNOWN_DERIVER};

/// Number of single-valued fields tracked for duplicate detection (every [`Field`] but `Sig`).
const TRACKED: usize = 11;

fn slot(field: Field) -> Option<usize> {
    Some(match field {
        Field::StorePath => 0,
        Field::Url => 1,
        Field::Compression => 2,
        Field::FileHash => 3,
        Field::FileSize => 4,
        Field::NarHash => 5,
        Field::NarSize => 6,
        Field::References => 7,
        Field::Deriver => 8,
        Field::System => 9,
        Field::Ca => 10,
        Field::Sig => return None,
    })
}

pub(crate) fn parse(store_dir: &StoreDir, text: &str) -> Result<NarInfo, NarInfoError> {
    if text.len() > MAX_NARINFO_LEN {
        return Err(NarInfoError::TooLarge {
            len: text.len(),
            max: MAX_NARINFO_LEN,
        });
    }

    let mut seen = [0usize; TRACKED]; // line where each field was first seen, 0 = not yet
    let mut store_path = None;
    let mut url = None;
    let mut compression = None;
    let mut file_hash = None;
    let mut file_size = None;
    let mut nar_hash = None;
    let mut nar_size = None;
    let mut references = Vec::new();
    let mut deriver = None;
    let mut system = None;
    let mut signatures: Vec<Signature> = Vec::new();
    let mut ca = None;

    for (idx, raw) in text.split('\n').enumerate() {
        let line = idx + 1;
        if raw.is_empty() {
            continue;
        }
        let (key, value) = split_line(raw).ok_or_else(|| NarInfoError::MalformedLine {
            line,
            text: snippet(raw),
        })?;
        let Some(field) = Field::from_key(key) else {
            // Unknown keys are ignored, as Nix does, so newer fields do not break us.
            continue;
        };
        if let Some(s) = slot(field) {
            if seen[s] != 0 {
                return Err(NarInfoError::DuplicateField {
                    field,
                    line,
                    first_line: seen[s],
                });
            }
            seen[s] = line;
        }
        match field {
            Field::StorePath => {
                store_path = Some(store_dir.parse_path(value).map_err(|source| {
                    NarInfoError::InvalidStorePath {
                        field,
                        line,
                        value: snippet(value),
                        source,
                    }
                })?);
            }
            Field::Url => url = Some(value),
            Field::Compression => compression = Some(value),
            Field::FileHash => {
                file_hash =
                    Some(
                        Hash::parse(value).map_err(|source| NarInfoError::InvalidHash {
                            field,
                            line,
                            source,
                        })?,
                    );
            }
            Field::FileSize => file_size = Some(parse_size(field, line, value)?),
            Field::NarHash => {
                nar_hash =
                    Some(
                        NarHash::from_str(value).map_err(|source| NarInfoError::InvalidHash {
                            field,
                            line,
                            source,
                        })?,
                    );
            }
            Field::NarSize => {
                let n = parse_size(field, line, value)?;
                if n == 0 {
                    return Err(NarInfoError::ZeroNarSize { line });
                }
                nar_size = Some(n);
            }
            Field::References => {
                for r in value.split(' ').filter(|r| !r.is_empty()) {
                    references.push(base_name(field, line, r)?);
                }
                references.sort_unstable();
                references.dedup();
            }
            Field::Deriver => {
                if value != UNKNOWN_DERIVER {
                    deriver = Some(base_name(field, line, value)?);
                }
            }
            Field::System => {
                if !value.is_empty() {
                    system = Some(value);
                }
            }
            Field::Sig => {
                let sig = Signature::parse(value)
                    .map_err(|source| NarInfoError::InvalidSignature { line, source })?;
                // Nix keeps signatures in a set: an exact repeat adds nothing.
                if !signatures.contains(&sig) {
                    signatures.push(sig);
                }
            }
            Field::Ca => {
                if !value.is_empty() {
                    ca = Some(ContentAddress::from_str(value).map_err(|e| {
                        NarInfoError::InvalidContentAddress {
                            line,
                            value: snippet(value),
                            reason: e.to_string(),
                        }
                    })?);
                }
            }
        }
    }

    // Nix holds signatures in a set of strings and writes them in that order.
    signatures.sort_by(crate::nix_signature_order);
    let missing = |field| NarInfoError::MissingField { field };
    let url = url.filter(|u| !u.is_empty()).ok_or(missing(Field::Url))?;
    Ok(NarInfo {
        store_path: store_path.ok_or(missing(Field::StorePath))?,
        url: url.to_owned(),
        // Nix's default when the field is missing or empty.
        compression: compression
            .filter(|c| !c.is_empty())
            .unwrap_or("bzip2")
            .to_owned(),
        file_hash,
        file_size,
        nar_hash: nar_hash.ok_or(missing(Field::NarHash))?,
        nar_size: nar_size.ok_or(missing(Field::NarSize))?,
        references,
        deriver,
        system: system.map(str::to_owned),
        signatures,
        ca,
    })
}

/// Splits `Key: value`. `Key:` with nothing after it is read as an empty value (tools that strip
/// trailing spaces turn Nix's `References: ` into that).
fn split_line(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = line.split_once(':')?;
    if key.is_empty() {
        return None;
    }
    if rest.is_empty() {
        return Some((key, rest));
    }
    rest.strip_prefix(' ').map(|value| (key, value))
}

fn parse_size(field: Field, line: usize, value: &str) -> Result<u64, NarInfoError> {
    let invalid = || NarInfoError::InvalidSize {
        field,
        line,
        value: snippet(value),
    };
    // Digits only: `u64::from_str` would also take a leading '+'.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

fn base_name(field: Field, line: usize, value: &str) -> Result<StorePath, NarInfoError> {
    StorePath::from_str(value).map_err(|source| NarInfoError::InvalidStorePath {
        field,
        line,
        value: snippet(value),
        source,
    })
}
