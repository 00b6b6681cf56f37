//! Helpers shared by this crate's integration tests: turning our values into what real Nix prints.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::Path;

use harmonia_store_db::{StoreDb, ValidPathInfo};
use harmonia_store_path::{StoreDir, StorePath};
use harmonia_test_support::FixtureStore;
use serde_json::{Value, json};

/// Parse a logical `/nix/store/...` path.
pub fn sp(full: &str) -> StorePath {
    StoreDir::default()
        .parse_path(full)
        .unwrap_or_else(|e| panic!("bad store path {full:?}: {e}"))
}

/// Render a path as Nix prints it.
pub fn full(p: &StorePath) -> String {
    StoreDir::default().display(p)
}

/// Our path info in the shape of one element of `nix path-info --json` (Nix 2.8 omits empty/false fields).
pub fn info_json(info: &ValidPathInfo) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("path".into(), json!(full(&info.path)));
    o.insert("narHash".into(), json!(info.nar_hash.to_sri()));
    o.insert("narSize".into(), json!(info.nar_size));
    o.insert(
        "references".into(),
        json!(info.references.iter().map(full).collect::<Vec<_>>()),
    );
    if let Some(ca) = &info.ca {
        o.insert("ca".into(), json!(ca));
    }
    if let Some(d) = &info.deriver {
        o.insert("deriver".into(), json!(full(d)));
    }
    o.insert("registrationTime".into(), json!(info.registration_time));
    if info.ultimate {
        o.insert("ultimate".into(), json!(true));
    }
    if !info.signatures.is_empty() {
        o.insert("signatures".into(), json!(info.signatures));
    }
    Value::Object(o)
}

/// Nix's JSON with keys sorted, so two objects compare field by field regardless of order.
pub fn normalise(v: &Value) -> BTreeMap<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Lines printed by a Nix command, sorted.
pub fn nix_lines(store: &FixtureStore, program: &str, args: &[&str]) -> Vec<String> {
    let out = store.run(
        store
            .nix(program)
            .arg("--store")
            .arg(store.root())
            .args(args),
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// Every path of the store according to `nix path-info --all`.
pub fn nix_all_paths(store: &FixtureStore) -> Vec<String> {
    nix_lines(store, "nix", &["path-info", "--all"])
}

/// Open the fixture's database read-only.
pub fn open_ro(store: &FixtureStore) -> StoreDb {
    StoreDb::open_read_only(store.db_path(), StoreDir::default())
        .unwrap_or_else(|e| panic!("open read-only: {e}"))
}

/// Open the fixture's database read-write.
pub fn open_rw(store: &FixtureStore) -> StoreDb {
    StoreDb::open_read_write(store.db_path(), StoreDir::default())
        .unwrap_or_else(|e| panic!("open read-write: {e}"))
}

/// `cp -a` of a store path's files from one chroot store to another (what a substituter would unpack).
pub fn copy_store_files(from: &FixtureStore, to: &FixtureStore, path: &str) {
    let src = from.real_path(path);
    let dst = to.real_path(path);
    harmonia_test_support::run(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&dst),
    );
    assert!(
        Path::new(&dst).symlink_metadata().is_ok(),
        "copy of {path} missing"
    );
}

/// A store with the ca-derivations feature on, so Nix creates and fills the Realisations tables.
pub fn ca_store() -> FixtureStore {
    FixtureStore::with_config("extra-experimental-features = ca-derivations")
}

/// Two content-addressed derivations, `ca-b` built from `ca-a` (so its realisation has a dependency).
pub const CA_NIX: &str = r#"
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    __contentAddressed = true;
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
  };
  a = mk "ca-a" "echo a > $out";
in {
  a = a;
  b = mk "ca-b" "echo ${a} > $out";
}
"#;

/// `nix-instantiate` of an attribute of a Nix file in the fixture store: the `.drv` path.
pub fn instantiate(store: &FixtureStore, file: &Path, attr: &str) -> String {
    let lines = nix_lines_unsorted(
        store,
        "nix-instantiate",
        &[&file.display().to_string(), "-A", attr],
    );
    match lines.as_slice() {
        [drv] => drv.clone(),
        other => panic!("nix-instantiate printed {other:?}"),
    }
}

fn nix_lines_unsorted(store: &FixtureStore, program: &str, args: &[&str]) -> Vec<String> {
    let out = store.run(
        store
            .nix(program)
            .arg("--store")
            .arg(store.root())
            .args(args),
    );
    String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// `nix realisation info --json DRV`: Nix's realisations of the derivation's outputs.
pub fn nix_realisations(store: &FixtureStore, drv: &str) -> Vec<Value> {
    let out = store.run(
        store
            .nix("nix")
            .args(["realisation", "info", "--json", "--store"])
            .arg(store.root())
            .arg(drv),
    );
    match serde_json::from_slice(&out) {
        Ok(Value::Array(items)) => items,
        other => panic!("nix realisation info printed {other:?}"),
    }
}

/// Write a Nix file into the fixture's scratch dir.
pub fn write_nix(store: &FixtureStore, name: &str, text: &str) -> std::path::PathBuf {
    let file = store.scratch_dir().join(name);
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    file
}
