//! narinfo against real Nix: files written by `nix copy --to file://` parse and render back
//! byte-identically, our signatures equal Nix's, and Nix accepts what we sign (and refuses others).

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use harmonia_store_nar_info::NarInfo;
use harmonia_store_path::{ContentAddress, StoreDir, StorePath};
use harmonia_test_support::{FixtureStore, base_name, generate_signing_key, standard_fixture};
use harmonia_utils_hash::{Algorithm, Hash, NarHash};
use harmonia_utils_signature::{PublicKey, SecretKey};

/// Every `*.narinfo` in a binary cache directory, with its text.
fn narinfos(cache: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    out
}

fn secret_key(path: &Path) -> SecretKey {
    SecretKey::parse(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn nix_written_narinfo_parses_and_renders_back_identically() {
    let fx = standard_fixture();
    let store_dir = StoreDir::default();
    let keys = tempfile::tempdir().unwrap();
    let (secret_path, public_text) = generate_signing_key(keys.path(), "nix-signer-1");
    let public = PublicKey::parse(&public_text).unwrap();
    let secret = secret_key(&secret_path);
    let all: Vec<&str> = fx.paths.all.iter().map(String::as_str).collect();
    let infos = fx.store.path_info(&all);

    for compression in ["none", "xz"] {
        let cache = tempfile::tempdir().unwrap();
        let params = format!(
            "compression={compression}&secret-key={}",
            secret_path.display()
        );
        fx.store
            .copy_to_binary_cache_with(&all, cache.path(), &params);
        let files = narinfos(cache.path());
        assert_eq!(files.len(), all.len(), "one narinfo per fixture path");
        // The fixture exercises every optional field Nix 2.8 writes.
        let has = |needle: &str| files.iter().filter(|(_, t)| t.contains(needle)).count();
        assert!(
            has("\nCA: fixed:r:sha256:") >= 4,
            "nix-store --add paths have a CA"
        );
        assert!(has("\nCA: text:sha256:") >= 2, "derivations have a CA");
        assert!(has("\nDeriver: ") >= 2, "built paths have a deriver");
        assert!(has("\nReferences: \n") >= 1 && has("\nReferences: \n") < files.len());

        for (file, text) in &files {
            let ni = NarInfo::parse(&store_dir, text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", file.display()));
            // Byte-identical rendering: Nix's own output is canonical.
            assert_eq!(ni.render(&store_dir), *text, "{}", file.display());

            // Fields agree with `nix path-info --json`.
            let full = store_dir.display(&ni.store_path);
            let info = infos
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["path"] == full.as_str())
                .unwrap_or_else(|| panic!("{full} not in path-info"));
            assert_eq!(
                ni.nar_hash,
                NarHash::from_str(info["narHash"].as_str().unwrap()).unwrap()
            );
            assert_eq!(ni.nar_size, info["narSize"].as_u64().unwrap());
            let mut refs: Vec<StorePath> = info["references"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| store_dir.parse_path(r.as_str().unwrap()).unwrap())
                .collect();
            refs.sort();
            assert_eq!(ni.references, refs, "{full}");
            match info.get("deriver").and_then(|d| d.as_str()) {
                Some(d) => assert_eq!(ni.deriver.as_ref().unwrap().to_string(), base_name(d)),
                None => assert_eq!(ni.deriver, None),
            }
            match info.get("ca").and_then(|c| c.as_str()) {
                Some(ca) => assert_eq!(ni.ca, Some(ContentAddress::from_str(ca).unwrap())),
                None => assert_eq!(ni.ca, None),
            }
            assert_eq!(ni.compression, compression);

            // FileHash/FileSize describe the file at URL.
            let nar_file = fs::read(cache.path().join(&ni.url)).unwrap();
            assert_eq!(ni.file_size, Some(nar_file.len() as u64));
            assert_eq!(
                ni.file_hash,
                Some(Hash::digest_of(Algorithm::Sha256, &nar_file))
            );

            // Nix's signature verifies with its public key, and ours (ed25519 is deterministic, so
            // an equal fingerprint gives an equal signature) is byte-identical to it.
            assert_eq!(ni.signatures.len(), 1);
            assert!(ni.verify(&store_dir, std::slice::from_ref(&public)));
            let mut ours = ni.clone();
            ours.signatures.clear();
            ours.sign(&store_dir, &secret);
            assert_eq!(ours.signatures, ni.signatures, "{full}");
            assert_eq!(ours.render(&store_dir), *text);
        }
    }
}

/// Copies a `nix copy --to file://` cache, replacing every narinfo's signatures by one from `key`.
fn resign_cache(src: &Path, dst: &Path, key: &SecretKey) {
    let store_dir = StoreDir::default();
    fs::create_dir_all(dst.join("nar")).unwrap();
    fs::copy(src.join("nix-cache-info"), dst.join("nix-cache-info")).unwrap();
    for entry in fs::read_dir(src.join("nar")).unwrap() {
        let p = entry.unwrap().path();
        fs::copy(&p, dst.join("nar").join(p.file_name().unwrap())).unwrap();
    }
    for (file, text) in narinfos(src) {
        let mut ni = NarInfo::parse(&store_dir, &text).unwrap();
        ni.signatures.clear();
        ni.sign(&store_dir, key);
        fs::write(dst.join(file.file_name().unwrap()), ni.render(&store_dir)).unwrap();
    }
}

/// `nix copy --from file://CACHE --to <fresh store> PATHS` in a store that trusts only `trusted`.
fn nix_copy_from(
    cache: &Path,
    trusted: &str,
    paths: &[&str],
) -> (FixtureStore, std::process::Output) {
    let target = FixtureStore::with_config(&format!(
        "require-sigs = true\ntrusted-public-keys = {trusted}"
    ));
    let out = target
        .nix("nix")
        .args(["copy", "--from"])
        .arg(format!("file://{}", cache.display()))
        .arg("--to")
        .arg(target.root())
        .args(paths)
        .output()
        .unwrap();
    (target, out)
}

#[test]
fn nix_accepts_narinfo_signed_by_us_and_refuses_another_key() {
    let fx = standard_fixture();
    let keys = tempfile::tempdir().unwrap();
    let (secret_a, public_a) = generate_signing_key(keys.path(), "harmonia-test-a");
    let (secret_b, _public_b) = generate_signing_key(keys.path(), "harmonia-test-b");
    let key_a = secret_key(&secret_a);
    let key_b = secret_key(&secret_b);
    assert_eq!(key_a.to_public_key().to_string(), public_a);

    let plain = tempfile::tempdir().unwrap();
    let outputs: Vec<&str> = [
        &fx.paths.text_file,
        &fx.paths.executable,
        &fx.paths.tree,
        &fx.paths.big_file,
        &fx.paths.top,
    ]
    .into_iter()
    .map(String::as_str)
    .collect();
    fx.store.copy_to_binary_cache(&outputs, plain.path());
    let signed_a = tempfile::tempdir().unwrap();
    resign_cache(plain.path(), signed_a.path(), &key_a);
    let signed_b = tempfile::tempdir().unwrap();
    resign_cache(plain.path(), signed_b.path(), &key_b);

    // Trusted key: everything (including `top` and `dep`, which are input-addressed and so need a
    // signature) is accepted.
    let (target, ok) = nix_copy_from(signed_a.path(), &public_a, &outputs);
    assert!(
        ok.status.success(),
        "nix refused our signatures: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The copied paths carry our signature.
    let store_dir = StoreDir::default();
    let infos = target.path_info(&[&fx.paths.top, &fx.paths.dep]);
    for info in infos.as_array().unwrap() {
        let mut ni = NarInfo::parse(
            &store_dir,
            &fs::read_to_string(signed_a.path().join(format!(
                "{}.narinfo",
                harmonia_test_support::hash_part(info["path"].as_str().unwrap())
            )))
            .unwrap(),
        )
        .unwrap();
        let sigs: Vec<&str> = info["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(sigs, [ni.signatures[0].to_string()]);
        ni.signatures.clear();
        ni.sign(&store_dir, &key_a);
        assert_eq!(sigs, [ni.signatures[0].to_string()]);
    }

    // Another key: Nix refuses the input-addressed path. (Content-addressed paths from
    // `nix-store --add` need no signature in Nix, so only `top` is a meaningful check.)
    let (_target, refused) = nix_copy_from(signed_b.path(), &public_a, &[&fx.paths.top]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "nix accepted a foreign signature"
    );
    assert!(
        stderr.contains("lacks a valid signature"),
        "unexpected error: {stderr}"
    );

    // `nix store verify` on the cache itself agrees.
    let verify = |cache: &Path| {
        fx.store
            .nix("nix")
            .args(["store", "verify", "--no-contents", "--sigs-needed", "1"])
            .arg("--store")
            .arg(format!("file://{}", cache.display()))
            .args(["--trusted-public-keys", &public_a])
            .args([&fx.paths.top, &fx.paths.dep])
            .output()
            .unwrap()
    };
    let good = verify(signed_a.path());
    assert!(
        good.status.success(),
        "nix store verify failed on our signatures: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    let bad = verify(signed_b.path());
    assert!(
        !bad.status.success(),
        "nix store verify accepted a foreign signature"
    );
}

/// A binary cache built from scratch the way harmonia-cache serves one: narinfo made from
/// `nix path-info --json`, uncompressed NARs from `nix-store --dump`, no FileHash/FileSize, signed
/// by us. Nix must accept every path (with their closure) when our key is trusted.
#[test]
fn nix_accepts_a_cache_whose_narinfo_we_wrote_from_scratch() {
    let fx = standard_fixture();
    let store_dir = StoreDir::default();
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = generate_signing_key(keys.path(), "harmonia-scratch-1");
    let key = secret_key(&secret);

    let cache = tempfile::tempdir().unwrap();
    fs::create_dir_all(cache.path().join("nar")).unwrap();
    fs::write(
        cache.path().join("nix-cache-info"),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n",
    )
    .unwrap();
    let outputs: Vec<&str> = fx
        .paths
        .all
        .iter()
        .map(String::as_str)
        .filter(|p| !p.ends_with(".drv"))
        .collect();
    let infos = fx.store.path_info(&outputs);
    for info in infos.as_array().unwrap() {
        let full = info["path"].as_str().unwrap();
        let store_path = store_dir.parse_path(full).unwrap();
        let nar = fx.store.dump(full);
        let nar_hash = NarHash::from_str(info["narHash"].as_str().unwrap()).unwrap();
        let url = format!("nar/{}.nar", store_path.hash());
        fs::write(cache.path().join(&url), &nar).unwrap();
        let mut references: Vec<StorePath> = info["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| store_dir.parse_path(r.as_str().unwrap()).unwrap())
            .collect();
        references.sort();
        let mut ni = NarInfo {
            store_path: store_path.clone(),
            url,
            compression: "none".into(),
            file_hash: None,
            file_size: None,
            nar_hash,
            nar_size: nar.len() as u64,
            references,
            deriver: info
                .get("deriver")
                .and_then(|d| d.as_str())
                .map(|d| store_dir.parse_path(d).unwrap()),
            system: None,
            signatures: Vec::new(),
            ca: info
                .get("ca")
                .and_then(|c| c.as_str())
                .map(|c| ContentAddress::from_str(c).unwrap()),
        };
        assert_eq!(ni.nar_size, info["narSize"].as_u64().unwrap());
        ni.sign(&store_dir, &key);
        fs::write(
            cache.path().join(format!("{}.narinfo", store_path.hash())),
            ni.render(&store_dir),
        )
        .unwrap();
    }

    let (target, out) = nix_copy_from(cache.path(), &public, &outputs);
    assert!(
        out.status.success(),
        "nix refused our cache: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What Nix registered equals the source store's metadata.
    let copied = target.path_info(&outputs);
    for (a, b) in copied
        .as_array()
        .unwrap()
        .iter()
        .zip(infos.as_array().unwrap())
    {
        for field in ["path", "narHash", "narSize", "references", "deriver", "ca"] {
            assert_eq!(a.get(field), b.get(field), "{field} of {}", b["path"]);
        }
    }
    assert_eq!(copied.as_array().unwrap().len(), outputs.len());
}

/// A path that refers to itself (and to another path): the fingerprint lists it among its own
/// references, exactly as Nix signs it, and Nix accepts our signature on it.
#[test]
fn self_referencing_path_is_signed_like_nix() {
    let store = FixtureStore::new();
    let nix_file = store.scratch_dir().join("self-ref.nix");
    fs::write(
        &nix_file,
        r#"
let
  other = derivation {
    name = "zzz-other";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo other > $out" ];
  };
in derivation {
  name = "self-ref";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "mkdir $out; echo $out > $out/me; echo ${other} > $out/other" ];
}
"#,
    )
    .unwrap();
    let out = store.build(&nix_file);
    let path = out[0].as_str();
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = generate_signing_key(keys.path(), "self-ref-1");
    let key = secret_key(&secret);
    let cache = tempfile::tempdir().unwrap();
    store.copy_to_binary_cache_signed(&[path], cache.path(), &secret);

    let store_dir = StoreDir::default();
    let text = fs::read_to_string(cache.path().join(format!(
        "{}.narinfo",
        harmonia_test_support::hash_part(path)
    )))
    .unwrap();
    let ni = NarInfo::parse(&store_dir, &text).unwrap();
    assert_eq!(ni.render(&store_dir), text);
    let self_path = store_dir.parse_path(path).unwrap();
    assert_eq!(ni.references.len(), 2);
    assert!(ni.references.contains(&self_path), "{text}");
    let mut full_refs: Vec<String> = ni.references.iter().map(|r| store_dir.display(r)).collect();
    full_refs.sort();
    assert!(
        ni.fingerprint(&store_dir)
            .ends_with(&format!(";{}", full_refs.join(","))),
        "{}",
        ni.fingerprint(&store_dir)
    );

    let mut ours = ni.clone();
    ours.signatures.clear();
    ours.sign(&store_dir, &key);
    assert_eq!(ours.signatures, ni.signatures);

    let resigned = tempfile::tempdir().unwrap();
    resign_cache(cache.path(), resigned.path(), &key);
    let (_target, copied) = nix_copy_from(resigned.path(), &public, &[path]);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
}

/// With two keys whose names differ only by a suffix, Nix writes the `Sig:` lines sorted by their
/// text; our parse/render and our own signing give the same bytes.
#[test]
fn signatures_by_several_keys_are_ordered_like_nix() {
    let store = FixtureStore::new();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("signed-twice.txt");
    fs::write(&file, "signed by two keys\n").unwrap();
    let path = store.add_path(&file);
    let keys = tempfile::tempdir().unwrap();
    let (secret_plain, _) = generate_signing_key(keys.path(), "order");
    let (secret_dashed, _) = generate_signing_key(keys.path(), "order-1");
    for key in [&secret_plain, &secret_dashed] {
        let out = store
            .nix("nix")
            .args(["store", "sign", "--store"])
            .arg(store.root())
            .arg("--key-file")
            .arg(key)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nix store sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cache = tempfile::tempdir().unwrap();
    store.copy_to_binary_cache_with(&[&path], cache.path(), "compression=none");
    let files = narinfos(cache.path());
    assert_eq!(files.len(), 1);
    let text = &files[0].1;
    let store_dir = StoreDir::default();
    let ni = NarInfo::parse(&store_dir, text).unwrap();
    let names: Vec<&str> = ni.signatures.iter().map(|s| s.key_name()).collect();
    assert_eq!(names, ["order-1", "order"], "{text}");
    assert_eq!(ni.render(&store_dir), *text);

    let mut ours = ni.clone();
    ours.signatures.clear();
    ours.sign_all(
        &store_dir,
        &[secret_key(&secret_plain), secret_key(&secret_dashed)],
    );
    assert_eq!(ours.render(&store_dir), *text);
}
