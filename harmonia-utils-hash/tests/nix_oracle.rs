//! Real Nix 2.8 is the oracle: our digests and encodings must equal what `nix-hash` and `nix hash` print for
//! random inputs, and we must accept exactly the nix-base32 digests Nix accepts.

use std::path::PathBuf;
use std::process::Command;

use harmonia_test_support::{FixtureStore, pseudo_random_bytes};
use harmonia_utils_hash::{Algorithm, Hash, HashError, nix_base32};
use rand::Rng;

/// A fresh random seed, printed so a failure can be replayed by hand.
fn seed(test: &str) -> u64 {
    let seed: u64 = rand::thread_rng().r#gen();
    eprintln!("{test}: seed {seed}");
    seed
}

/// Runs a Nix command and returns its stdout lines; panics with stderr on failure.
fn lines(mut cmd: Command) -> Vec<String> {
    let out = cmd.output().expect("cannot run nix");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("nix printed non-UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs `nix hash ARGS...` and returns whether it succeeded, and its stdout.
fn try_nix_hash(store: &FixtureStore, args: &[&str]) -> Result<String, String> {
    let out = store
        .nix("nix")
        .arg("hash")
        .args(args)
        .output()
        .expect("cannot run nix");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn file_hashes_match_nix() {
    let store = FixtureStore::new();
    let seed = seed("file_hashes_match_nix");
    let mut rng_sizes = pseudo_random_bytes(seed, 16).into_iter();
    // Block-boundary sizes of md5/sha1/sha256 (64-byte blocks) and sha512 (128), plus random ones.
    let mut sizes = vec![
        0usize, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 4096, 65_537,
    ];
    for _ in 0..6 {
        let hi = rng_sizes.next().unwrap_or(0) as usize;
        let lo = rng_sizes.next().unwrap_or(0) as usize;
        sizes.push(hi * 1024 + lo);
    }
    let files: Vec<(PathBuf, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let data = pseudo_random_bytes(seed.wrapping_add(i as u64), len);
            let path = store.scratch_dir().join(format!("f{i}"));
            std::fs::write(&path, &data).expect("write input");
            (path, data)
        })
        .collect();
    for algo in Algorithm::ALL {
        let ours: Vec<Hash> = files
            .iter()
            .map(|(_, d)| Hash::digest_of(algo, d))
            .collect();
        let paths = files.iter().map(|(p, _)| p.as_os_str());

        let mut cmd = store.nix("nix-hash");
        cmd.args(["--type", algo.name(), "--flat"])
            .args(paths.clone());
        let base16 = lines(cmd);
        let ours16: Vec<String> = ours.iter().map(Hash::to_base16).collect();
        assert_eq!(base16, ours16, "nix-hash --type {algo} --flat");

        for (flag, render) in [
            ("--base32", Hash::to_nix_base32 as fn(&Hash) -> String),
            ("--base64", Hash::to_base64),
            ("--sri", Hash::to_sri),
        ] {
            let mut cmd = store.nix("nix");
            cmd.args(["hash", "file", "--type", algo.name(), flag])
                .args(paths.clone());
            let theirs = lines(cmd);
            let ours_text: Vec<String> = ours.iter().map(render).collect();
            assert_eq!(theirs, ours_text, "nix hash file --type {algo} {flag}");
            // And what Nix prints parses back to the same hash.
            for (text, h) in theirs.iter().zip(&ours) {
                let parsed = if flag == "--sri" {
                    Hash::parse(text)
                } else {
                    Hash::parse_digest(algo, text)
                };
                assert_eq!(parsed.as_ref(), Ok(h), "{text}");
            }
        }
    }
}

#[test]
fn conversions_match_nix() {
    let store = FixtureStore::new();
    let seed = seed("conversions_match_nix");
    for algo in Algorithm::ALL {
        let hashes: Vec<Hash> = (0..16u64)
            .map(|i| {
                let digest = pseudo_random_bytes(
                    seed ^ (i << 8) ^ algo.digest_len() as u64,
                    algo.digest_len(),
                );
                Hash::new(algo, &digest).expect("right length")
            })
            .chain([
                Hash::new(algo, &vec![0u8; algo.digest_len()]).expect("right length"),
                Hash::new(algo, &vec![0xffu8; algo.digest_len()]).expect("right length"),
            ])
            .collect();
        let hex: Vec<String> = hashes.iter().map(Hash::to_base16).collect();
        let nix32: Vec<String> = hashes.iter().map(Hash::to_nix_base32).collect();

        let mut cmd = store.nix("nix");
        cmd.args(["hash", "to-base32", "--type", algo.name()])
            .args(&hex);
        assert_eq!(lines(cmd), nix32, "to-base32 {algo}");

        let mut cmd = store.nix("nix");
        cmd.args(["hash", "to-base16", "--type", algo.name()])
            .args(&nix32);
        assert_eq!(lines(cmd), hex, "to-base16 {algo}");

        let mut cmd = store.nix("nix");
        cmd.args(["hash", "to-base64", "--type", algo.name()])
            .args(&hex);
        let b64: Vec<String> = hashes.iter().map(Hash::to_base64).collect();
        assert_eq!(lines(cmd), b64, "to-base64 {algo}");

        // Typed inputs in every encoding, no --type: Nix and we read them the same way.
        let typed: Vec<String> = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| match i % 3 {
                0 => h.to_typed_nix_base32(),
                1 => h.to_typed_base16(),
                _ => format!("{algo}:{}", h.to_base64()),
            })
            .collect();
        let mut cmd = store.nix("nix");
        cmd.args(["hash", "to-sri"]).args(&typed);
        let sri = lines(cmd);
        let ours_sri: Vec<String> = typed
            .iter()
            .map(|t| Hash::parse(t).expect("parse").to_sri())
            .collect();
        assert_eq!(sri, ours_sri, "to-sri {algo}");
    }
}

#[test]
fn nix_base32_validity_agrees_with_nix() {
    let store = FixtureStore::new();
    let seed = seed("nix_base32_validity_agrees_with_nix");
    let random = pseudo_random_bytes(seed, 64 * 52);
    let mut cases: Vec<(Algorithm, String)> = Vec::new();
    for (i, chunk) in random.chunks(52).enumerate().take(24) {
        let algo = if i % 2 == 0 {
            Algorithm::Sha256
        } else {
            Algorithm::Md5
        };
        let len = algo.nix_base32_len();
        let mut s: String = chunk[..len]
            .iter()
            .map(|b| char::from(nix_base32::ALPHABET[usize::from(b % 32)]))
            .collect();
        // Every few cases, force a first character with bits beyond the digest, or a foreign character.
        if i % 4 == 0 {
            // The first character carries only the top `8 * n - 5 * (len - 1)` bits of the digest.
            let top_bits = 8 * algo.digest_len() - 5 * (len - 1);
            let c = char::from(nix_base32::ALPHABET[usize::from(chunk[0]) % (1 << top_bits)]);
            s.replace_range(0..1, &c.to_string());
        } else if i % 4 == 1 {
            s.replace_range(0..1, "z");
        } else if i % 8 == 2 {
            s.replace_range(len / 2..len / 2 + 1, "e");
        }
        cases.push((algo, s));
    }
    let (mut accepted, mut rejected) = (0, 0);
    for (algo, s) in cases {
        let theirs = try_nix_hash(&store, &["to-base16", "--type", algo.name(), &s]);
        let ours = Hash::parse_digest(algo, &s);
        match (&theirs, &ours) {
            (Ok(hex), Ok(h)) => {
                assert_eq!(hex, &h.to_base16(), "{s}");
                accepted += 1;
            }
            (
                Err(_),
                Err(HashError::NonCanonicalNixBase32 | HashError::InvalidCharacter { .. }),
            ) => rejected += 1,
            _ => panic!("Nix and we disagree on {algo} {s:?}: nix {theirs:?}, ours {ours:?}"),
        }
    }
    assert!(
        accepted >= 6 && rejected >= 6,
        "too one-sided: {accepted} accepted, {rejected} rejected"
    );
}
