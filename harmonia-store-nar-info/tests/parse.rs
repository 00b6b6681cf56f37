//! Parsing, rendering, signing and bad input, without Nix (see real_nix.rs for the Nix oracle).

use std::str::FromStr;

use harmonia_store_nar_info::{Field, MAX_NARINFO_LEN, NarInfo, NarInfoError, fingerprint};
use harmonia_store_path::{StoreDir, StorePath};
use harmonia_utils_hash::{Algorithm, Hash, NarHash};
use harmonia_utils_signature::{SecretKey, Signature};

const H1: &str = "0c0ac8zfjigi3a1kydsj5g7b6y1jx3w5";
const H2: &str = "1lbwgfyy7qhqb5vmrbhgng8y6s0ibsyl";
const H3: &str = "7n9xz1g0pf6gmb7n9zzmbxp3l5kz3d1y";

fn nar_hash() -> NarHash {
    NarHash::digest_of(b"a nar")
}

/// A narinfo laid out as `nix copy --to file://` writes it.
fn sample() -> String {
    format!(
        "StorePath: /nix/store/{H1}-hello-2.12\n\
         URL: nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz\n\
         Compression: xz\n\
         FileHash: sha256:1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3\n\
         FileSize: 50088\n\
         NarHash: {}\n\
         NarSize: 226488\n\
         References: {H2}-glibc-2.35 {H1}-hello-2.12\n\
         Deriver: {H3}-hello-2.12.drv\n\
         Sig: cache.example.org-1:{}\n",
        nar_hash(),
        "A".repeat(86) + "==",
    )
}

fn sd() -> StoreDir {
    StoreDir::default()
}

fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
    NarInfo::parse(&sd(), text)
}

fn path(base: &str) -> StorePath {
    StorePath::from_str(base).unwrap()
}

#[test]
fn parses_nix_layout_and_renders_it_back() {
    let text = sample();
    let ni = parse(&text).unwrap();
    assert_eq!(ni.store_path, path(&format!("{H1}-hello-2.12")));
    assert_eq!(ni.compression, "xz");
    assert_eq!(ni.file_size, Some(50088));
    assert_eq!(ni.nar_hash, nar_hash());
    assert_eq!(ni.nar_size, 226488);
    assert_eq!(
        ni.references,
        vec![
            path(&format!("{H1}-hello-2.12")),
            path(&format!("{H2}-glibc-2.35"))
        ]
    );
    assert_eq!(ni.deriver, Some(path(&format!("{H3}-hello-2.12.drv"))));
    assert_eq!(ni.signatures.len(), 1);
    assert_eq!(ni.signatures[0].key_name(), "cache.example.org-1");
    // References are rendered sorted, as Nix does.
    let rendered = ni.render(&sd());
    let expected = text.replace(
        &format!("{H2}-glibc-2.35 {H1}-hello-2.12"),
        &format!("{H1}-hello-2.12 {H2}-glibc-2.35"),
    );
    assert_eq!(rendered, expected);
    assert_eq!(parse(&rendered).unwrap(), ni);
}

#[test]
fn optional_fields_and_nix_defaults() {
    let minimal = format!(
        "StorePath: /nix/store/{H1}-x\nURL: nar/x.nar\nNarHash: {}\nNarSize: 8\n",
        nar_hash()
    );
    let ni = parse(&minimal).unwrap();
    assert_eq!(ni.compression, "bzip2", "Nix's default");
    assert_eq!(ni.file_hash, None);
    assert_eq!(ni.file_size, None);
    assert!(ni.references.is_empty());
    assert_eq!(ni.deriver, None);
    assert_eq!(ni.system, None);
    assert!(ni.signatures.is_empty());
    assert_eq!(ni.ca, None);
    // The References line is always written, even when empty ("References: ").
    let rendered = ni.render(&sd());
    assert!(rendered.contains("\nReferences: \n"), "{rendered}");
    assert!(!rendered.contains("FileHash"));
    assert_eq!(parse(&rendered).unwrap(), ni);

    // Deriver: unknown-deriver, empty System/CA, unknown keys, no final newline, "Key:" without
    // a space, a blank line: all accepted.
    let lenient = format!(
        "{minimal}Deriver: unknown-deriver\nSystem: \nCA: \nReferences:\nX-Future: 1\n\nSystem2: y"
    );
    let ni2 = parse(&lenient).unwrap();
    assert_eq!(ni2, ni);

    let with_system = format!(
        "{minimal}System: x86_64-linux\nCA: fixed:r:sha256:{}\n",
        harmonia_utils_hash::nix_base32::encode(&[7u8; 32])
    );
    let ni3 = parse(&with_system).unwrap();
    assert_eq!(ni3.system.as_deref(), Some("x86_64-linux"));
    assert!(ni3.ca.is_some());
    let r = ni3.render(&sd());
    assert!(r.ends_with(&format!(
        "References: \nSystem: x86_64-linux\nCA: fixed:r:sha256:{}\n",
        harmonia_utils_hash::nix_base32::encode(&[7u8; 32])
    )));
    assert_eq!(parse(&r).unwrap(), ni3);
}

#[test]
fn nar_hash_in_any_encoding_is_rendered_as_nix32() {
    let h = nar_hash();
    for form in [h.to_string(), h.to_sri(), h.to_typed_base16()] {
        let text = format!("StorePath: /nix/store/{H1}-x\nURL: u\nNarHash: {form}\nNarSize: 1\n");
        let ni = parse(&text).unwrap();
        assert_eq!(ni.nar_hash, h);
        assert!(ni.render(&sd()).contains(&format!("NarHash: {h}\n")));
    }
}

#[test]
fn fingerprint_follows_nix() {
    let ni = parse(&sample()).unwrap();
    let fp = ni.fingerprint(&sd());
    assert_eq!(
        fp,
        format!(
            "1;/nix/store/{H1}-hello-2.12;{};226488;/nix/store/{H1}-hello-2.12,/nix/store/{H2}-glibc-2.35",
            nar_hash()
        )
    );
    assert!(fp.contains(";sha256:"));
    // Reference order and duplicates do not matter (Nix uses a sorted set).
    let refs = vec![
        path(&format!("{H2}-glibc-2.35")),
        path(&format!("{H1}-hello-2.12")),
        path(&format!("{H2}-glibc-2.35")),
    ];
    assert_eq!(
        fingerprint(&sd(), &ni.store_path, &ni.nar_hash, ni.nar_size, &refs),
        fp
    );
    // No references: the fingerprint ends with ';'.
    assert!(fingerprint(&sd(), &ni.store_path, &ni.nar_hash, 1, &[]).ends_with(";1;"));
}

#[test]
fn sign_and_verify() {
    let a = SecretKey::from_seed("a-1", &[1; 32]).unwrap();
    let b = SecretKey::from_seed("b-1", &[2; 32]).unwrap();
    let a_imposter = SecretKey::from_seed("a-1", &[3; 32]).unwrap();
    let mut ni = parse(&sample()).unwrap();
    ni.signatures.clear();
    assert!(!ni.verify(&sd(), &[a.to_public_key()]));

    ni.sign(&sd(), &b);
    ni.sign(&sd(), &a);
    ni.sign(&sd(), &a); // no duplicate
    let names: Vec<&str> = ni.signatures.iter().map(Signature::key_name).collect();
    assert_eq!(names, ["a-1", "b-1"]);
    assert!(ni.verify(&sd(), &[a.to_public_key()]));
    assert!(ni.verify(&sd(), &[b.to_public_key()]));
    assert!(!ni.verify(&sd(), &[a_imposter.to_public_key()]));
    assert!(!ni.verify(&sd(), &[]));

    // Re-signing under the same name replaces the old signature.
    ni.sign(&sd(), &a_imposter);
    assert_eq!(ni.signatures.len(), 2);
    assert!(!ni.verify(&sd(), &[a.to_public_key()]));
    assert!(ni.verify(&sd(), &[a_imposter.to_public_key()]));

    // sign_all with several keys; signatures survive a render/parse round trip.
    let mut ni2 = parse(&sample()).unwrap();
    ni2.signatures.clear();
    ni2.sign_all(&sd(), &[a, b]);
    let back = parse(&ni2.render(&sd())).unwrap();
    assert_eq!(back, ni2);

    // Any change to a fingerprinted field invalidates the signature; other fields do not.
    let key = SecretKey::from_seed("k", &[9; 32]).unwrap();
    let pk = [key.to_public_key()];
    let mut signed = parse(&sample()).unwrap();
    signed.sign(&sd(), &key);
    let mut t = signed.clone();
    t.nar_size += 1;
    assert!(!t.verify(&sd(), &pk));
    let mut t = signed.clone();
    t.references.pop();
    assert!(!t.verify(&sd(), &pk));
    let mut t = signed.clone();
    t.nar_hash = NarHash::digest_of(b"other");
    assert!(!t.verify(&sd(), &pk));
    let mut t = signed.clone();
    t.url = "nar/elsewhere.nar".into();
    t.compression = "none".into();
    assert!(t.verify(&sd(), &pk));
}

#[test]
fn duplicate_signatures_are_merged_and_several_kept() {
    let key1 = SecretKey::from_seed("k1", &[1; 32]).unwrap();
    let key2 = SecretKey::from_seed("k2", &[2; 32]).unwrap();
    let s1 = key1.sign(b"x");
    let s2 = key2.sign(b"x");
    let base = format!(
        "StorePath: /nix/store/{H1}-x\nURL: u\nNarHash: {}\nNarSize: 1\n",
        nar_hash()
    );
    let ni = parse(&format!("{base}Sig: {s1}\nSig: {s2}\nSig: {s1}\n")).unwrap();
    assert_eq!(ni.signatures, vec![s1, s2]);
}

fn err(text: &str) -> NarInfoError {
    parse(text).unwrap_err()
}

fn replace_line(prefix: &str, new: &str) -> String {
    sample()
        .lines()
        .map(|l| {
            if l.starts_with(prefix) {
                new.to_owned()
            } else {
                l.to_owned()
            }
        })
        .filter(|l| !l.is_empty())
        .map(|l| l + "\n")
        .collect()
}

#[test]
fn missing_required_fields() {
    for (prefix, field) in [
        ("StorePath:", Field::StorePath),
        ("URL:", Field::Url),
        ("NarHash:", Field::NarHash),
        ("NarSize:", Field::NarSize),
    ] {
        assert_eq!(
            err(&replace_line(prefix, "")),
            NarInfoError::MissingField { field },
            "{prefix}"
        );
    }
    assert_eq!(
        err(&replace_line("URL:", "URL: ")),
        NarInfoError::MissingField { field: Field::Url }
    );
    assert_eq!(err(""), NarInfoError::MissingField { field: Field::Url });
}

#[test]
fn bad_values_give_typed_errors_with_line_numbers() {
    use NarInfoError as E;
    assert!(matches!(
        err(&replace_line("NarHash:", "NarHash: sha256:nothash")),
        E::InvalidHash {
            field: Field::NarHash,
            line: 6,
            ..
        }
    ));
    // A NarHash must be sha256.
    let sha1 = Hash::digest_of(Algorithm::Sha1, b"x");
    assert!(matches!(
        err(&replace_line("NarHash:", &format!("NarHash: {sha1}"))),
        E::InvalidHash {
            field: Field::NarHash,
            ..
        }
    ));
    assert!(matches!(
        err(&replace_line("FileHash:", "FileHash: 1234")),
        E::InvalidHash {
            field: Field::FileHash,
            line: 4,
            ..
        }
    ));
    for bad in [
        "abc",
        "-1",
        "+1",
        "1 ",
        "",
        "99999999999999999999999",
        "0x10",
    ] {
        assert!(
            matches!(
                err(&replace_line("NarSize:", &format!("NarSize: {bad}"))),
                E::InvalidSize {
                    field: Field::NarSize,
                    line: 7,
                    ..
                }
            ),
            "{bad:?}"
        );
        assert!(
            matches!(
                err(&replace_line("FileSize:", &format!("FileSize: {bad}"))),
                E::InvalidSize {
                    field: Field::FileSize,
                    line: 5,
                    ..
                }
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        err(&replace_line("NarSize:", "NarSize: 0")),
        E::ZeroNarSize { line: 7 }
    );
    for bad in [
        format!("StorePath: /gnu/store/{H1}-x"),
        format!("StorePath: {H1}-x"),
        format!("StorePath: /nix/store/{}-x", &H1[..31]),
        "StorePath: /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x".to_owned(),
        format!("StorePath: /nix/store/{H1}-bad/name"),
        format!("StorePath: /nix/store/{H1}-"),
    ] {
        assert!(
            matches!(
                err(&replace_line("StorePath:", &bad)),
                E::InvalidStorePath {
                    field: Field::StorePath,
                    line: 1,
                    ..
                }
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        err(&replace_line(
            "References:",
            &format!("References: {H1}-ok /nix/store/{H2}-full")
        )),
        E::InvalidStorePath {
            field: Field::References,
            line: 8,
            ..
        }
    ));
    assert!(matches!(
        err(&replace_line("Deriver:", "Deriver: not-a-path")),
        E::InvalidStorePath {
            field: Field::Deriver,
            line: 9,
            ..
        }
    ));
    assert!(matches!(
        err(&replace_line("Deriver:", "Deriver: ")),
        E::InvalidStorePath {
            field: Field::Deriver,
            ..
        }
    ));
    assert!(matches!(
        err(&replace_line("Sig:", "Sig: nocolon")),
        E::InvalidSignature { line: 10, .. }
    ));
    assert!(matches!(
        err(&replace_line("Sig:", "Sig: k:AAAA")),
        E::InvalidSignature { line: 10, .. }
    ));
    assert!(matches!(
        err(&format!("{}CA: nonsense:abc\n", sample())),
        E::InvalidContentAddress { line: 11, .. }
    ));
}

#[test]
fn malformed_lines_and_duplicates() {
    use NarInfoError as E;
    assert_eq!(
        err(&format!("{}no separator here\n", sample())),
        E::MalformedLine {
            line: 11,
            text: "no separator here".into()
        }
    );
    assert!(matches!(
        err(&format!("{}NarSize:5\n", sample())),
        E::MalformedLine { line: 11, .. }
    ));
    assert!(matches!(
        err(&format!(": value\n{}", sample())),
        E::MalformedLine { line: 1, .. }
    ));
    for (dup, field, first) in [
        (format!("StorePath: /nix/store/{H2}-y"), Field::StorePath, 1),
        ("URL: other".to_owned(), Field::Url, 2),
        ("NarSize: 5".to_owned(), Field::NarSize, 7),
        ("References: ".to_owned(), Field::References, 8),
        ("Deriver: unknown-deriver".to_owned(), Field::Deriver, 9),
    ] {
        assert_eq!(
            err(&format!("{}{dup}\n", sample())),
            E::DuplicateField {
                field,
                line: 11,
                first_line: first
            },
            "{dup}"
        );
    }
    // Unknown keys may repeat.
    assert!(parse(&format!("{}X: 1\nX: 2\n", sample())).is_ok());
}

#[test]
fn huge_inputs_are_bounded() {
    use NarInfoError as E;
    let huge = "A".repeat(MAX_NARINFO_LEN + 1);
    assert_eq!(
        err(&huge),
        E::TooLarge {
            len: MAX_NARINFO_LEN + 1,
            max: MAX_NARINFO_LEN
        }
    );
    // Just under the limit: one enormous line. The error quotes only a bounded snippet.
    let long_line = "B".repeat(MAX_NARINFO_LEN - 10);
    match err(&long_line) {
        E::MalformedLine { line: 1, text } => assert!(text.len() < 200, "{}", text.len()),
        other => panic!("{other:?}"),
    }
    let long_value = format!("StorePath: /nix/store/{H1}-{}\n", "x".repeat(100_000));
    match err(&long_value) {
        e @ E::InvalidStorePath { .. } => assert!(e.to_string().len() < 1000),
        other => panic!("{other:?}"),
    }
    // Many references (a big closure) parse fine.
    let refs: Vec<String> = (0..5000).map(|i| format!("{H2}-dep-{i:05}")).collect();
    let text = replace_line("References:", &format!("References: {}", refs.join(" ")));
    let ni = parse(&text).unwrap();
    assert_eq!(ni.references.len(), 5000);
    assert_eq!(parse(&ni.render(&sd())).unwrap(), ni);
}

#[test]
fn non_utf8_safe_garbage_never_panics() {
    for text in [
        "\u{0}",
        ":",
        "::::",
        "StorePath: ",
        "StorePath: /nix/store/",
        "NarSize: 18446744073709551615\n",
        "NarSize: 18446744073709551616\n",
        "Sig: :\n",
        "CA: fixed:\n",
        "CA: text:sha256:\n",
        "FileHash: sha256-\n",
        "ünïcödé: ✓\n",
        "\n\n\n",
        "\r\n",
    ] {
        let _ = parse(text);
    }
}

#[test]
fn other_store_dirs_are_respected() {
    let gnu = StoreDir::new("/gnu/store").unwrap();
    let ni = parse(&sample()).unwrap();
    let text = ni.render(&gnu);
    assert!(text.starts_with(&format!("StorePath: /gnu/store/{H1}-hello-2.12\n")));
    // References and Deriver stay base names whatever the store dir.
    assert!(text.contains(&format!("\nReferences: {H1}-hello-2.12 {H2}-glibc-2.35\n")));
    assert_eq!(NarInfo::parse(&gnu, &text).unwrap(), ni);
    assert!(matches!(
        NarInfo::parse(&gnu, &sample()).unwrap_err(),
        NarInfoError::InvalidStorePath {
            field: Field::StorePath,
            line: 1,
            ..
        }
    ));
    let fp = ni.fingerprint(&gnu);
    assert!(fp.starts_with(&format!("1;/gnu/store/{H1}-hello-2.12;")));
    assert!(fp.ends_with(&format!(
        ";/gnu/store/{H1}-hello-2.12,/gnu/store/{H2}-glibc-2.35"
    )));
    // A signature made for one store dir does not verify for another.
    let key = SecretKey::from_seed("k", &[4; 32]).unwrap();
    let mut signed = ni.clone();
    signed.sign(&gnu, &key);
    assert!(signed.verify(&gnu, &[key.to_public_key()]));
    assert!(!signed.verify(&sd(), &[key.to_public_key()]));
}

#[test]
fn signatures_are_kept_in_nix_order() {
    // Nix keeps the strings `name:base64` in a sorted set: `cache-1:...` sorts before `cache:...`
    // because '-' < ':', although the name "cache" sorts before "cache-1".
    let plain = SecretKey::from_seed("cache", &[1; 32]).unwrap();
    let dashed = SecretKey::from_seed("cache-1", &[2; 32]).unwrap();
    let mut ni = parse(&sample()).unwrap();
    ni.signatures.clear();
    ni.sign_all(&sd(), &[plain, dashed]);
    let names: Vec<&str> = ni.signatures.iter().map(Signature::key_name).collect();
    assert_eq!(names, ["cache-1", "cache"]);
    let text = ni.render(&sd());
    assert!(text.find("Sig: cache-1:").unwrap() < text.find("Sig: cache:").unwrap());

    // Sig lines in another order parse to the same list and render in Nix's order.
    let mut lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| l.starts_with("Sig: ")).unwrap();
    lines.swap(first, first + 1);
    let swapped = lines.join("\n") + "\n";
    assert_ne!(swapped, text);
    let back = parse(&swapped).unwrap();
    assert_eq!(back.signatures, ni.signatures);
    assert_eq!(back.render(&sd()), text);
}

#[test]
fn signing_replaces_every_signature_under_the_key_name() {
    // Nix keeps every Sig line, so a narinfo can carry two signatures under one name (say a stale one
    // from a rotated key); signing with that name must leave exactly the new one.
    let old1 = SecretKey::from_seed("k", &[1; 32]).unwrap();
    let old2 = SecretKey::from_seed("k", &[2; 32]).unwrap();
    let other = SecretKey::from_seed("j", &[3; 32]).unwrap();
    let current = SecretKey::from_seed("k", &[4; 32]).unwrap();
    let mut ni = parse(&sample()).unwrap();
    ni.signatures.clear();
    let fp = ni.fingerprint(&sd());
    let text = format!(
        "{}Sig: {}\nSig: {}\nSig: {}\n",
        ni.render(&sd()),
        old1.sign(fp.as_bytes()),
        old2.sign(fp.as_bytes()),
        other.sign(fp.as_bytes())
    );
    let mut ni = parse(&text).unwrap();
    assert_eq!(ni.signatures.len(), 3);
    ni.sign(&sd(), &current);
    let names: Vec<&str> = ni.signatures.iter().map(Signature::key_name).collect();
    assert_eq!(names, ["j", "k"]);
    assert!(ni.verify(&sd(), &[current.to_public_key()]));
    assert!(!ni.verify(&sd(), &[old1.to_public_key()]));
    assert!(!ni.verify(&sd(), &[old2.to_public_key()]));
}
