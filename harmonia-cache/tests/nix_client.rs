//! Real Nix as the client: `nix copy`, `nix store ls`, `nix log` against the running binary.

mod common;

use std::sync::OnceLock;

use common::{Options, Server, output};
use harmonia_test_support::{FixtureStore, StandardFixture, TOP_BUILD_LOG_LINE};

fn fixture() -> &'static StandardFixture {
    static FIXTURE: OnceLock<StandardFixture> = OnceLock::new();
    FIXTURE.get_or_init(common::static_fixture)
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start_static(&fixture().store, Options::default()))
}

fn copy_from_cache(trusted_key: &str) -> (FixtureStore, std::process::Output) {
    let dest = FixtureStore::with_config(&format!(
        "trusted-public-keys = {trusted_key}\nrequire-sigs = true\n"
    ));
    let fx = fixture();
    // `nix copy` reads a .drv argument as "its outputs" unless told `--derivation`.
    let (drvs, outs): (Vec<&String>, Vec<&String>) =
        fx.paths.all.iter().partition(|p| p.ends_with(".drv"));
    let mut last = None;
    for (paths, extra) in [(outs, None), (drvs, Some("--derivation"))] {
        let out = output(
            dest.nix("nix")
                .args(["copy", "--from", &server().url, "--to"])
                .arg(dest.root())
                .args(extra)
                .args(paths),
        );
        if !out.status.success() {
            return (dest, out);
        }
        last = Some(out);
    }
    (dest, last.expect("two copies ran"))
}

#[test]
fn nix_copy_with_trusted_key_then_verify_contents() {
    let (dest, out) = copy_from_cache(&server().public_key);
    assert!(
        out.status.success(),
        "nix copy failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server().log()
    );
    dest.verify_contents()
        .expect("nix-store --verify --check-contents after nix copy");
    // Every path arrived with the metadata the source has.
    let fx = fixture();
    let paths: Vec<&str> = fx.paths.all.iter().map(String::as_str).collect();
    let src = fx.store.path_info(&paths);
    let got = dest.path_info(&paths);
    for (a, b) in src
        .as_array()
        .expect("array")
        .iter()
        .zip(got.as_array().expect("array"))
    {
        for field in ["path", "narHash", "narSize", "references"] {
            assert_eq!(a.get(field), b.get(field), "{field} differs for {a}");
        }
    }
    for p in &fx.paths.all {
        assert_eq!(fx.store.dump(p), dest.dump(p), "NAR of {p} differs");
    }
}

#[test]
fn nix_copy_refuses_an_untrusted_key() {
    let other = FixtureStore::new();
    let keydir = tempfile::tempdir().expect("tempdir");
    let (_, other_key) = harmonia_test_support::generate_signing_key(keydir.path(), "other-1");
    drop(other);
    let (_dest, out) = copy_from_cache(&other_key);
    assert!(
        !out.status.success(),
        "nix copy accepted paths signed by a key it does not trust"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("signature") || stderr.contains("trusted"),
        "unexpected failure: {stderr}"
    );
}

#[test]
fn nix_store_ls_matches_local_listing() {
    let fx = fixture();
    for p in [&fx.paths.tree, &fx.paths.top, &fx.paths.big_file] {
        let out = output(fx.store.nix("nix").args([
            "store",
            "ls",
            "--store",
            &server().url,
            "-R",
            "--json",
            p,
        ]));
        assert!(
            out.status.success(),
            "nix store ls failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut remote: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        // Remote listings carry NAR offsets, local ones do not.
        strip_nar_offsets(&mut remote);
        let local = fx.store.store_ls(p);
        assert_eq!(remote, local, "listing of {p}");
    }
}

#[test]
fn nix_log_fetches_the_build_log() {
    let fx = fixture();
    let out =
        output(
            fx.store
                .nix("nix")
                .args(["log", "--store", &server().url, &fx.paths.top_drv]),
        );
    assert!(
        out.status.success(),
        "nix log failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(TOP_BUILD_LOG_LINE), "log was {text:?}");
}

fn strip_nar_offsets(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.remove("narOffset");
            map.values_mut().for_each(strip_nar_offsets);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nar_offsets),
        _ => {}
    }
}

/// A content-addressed derivation (Nix 2.8's experimental `ca-derivations`) registers a realisation;
/// `nix realisation info` against our server must return what the local store says.
#[test]
fn realisations_of_content_addressed_derivations() {
    let store = FixtureStore::with_config("experimental-features = nix-command ca-derivations\n");
    let nix_file = store.scratch_dir().join("ca.nix");
    std::fs::write(
        &nix_file,
        r#"derivation {
  name = "harmonia-ca";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo content-addressed > $out" ];
  __contentAddressed = true;
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
}
"#,
    )
    .expect("write ca.nix");
    store.build(&nix_file);
    let drv = String::from_utf8(
        store.run(
            store
                .nix("nix-instantiate")
                .arg("--store")
                .arg(store.root())
                .arg(&nix_file),
        ),
    )
    .expect("utf-8")
    .trim()
    .to_owned();
    let realisation_info = |store_url: &str| -> serde_json::Value {
        let out = output(store.nix("nix").args([
            "realisation",
            "info",
            "--json",
            "--store",
            store_url,
            &drv,
        ]));
        assert!(
            out.status.success(),
            "nix realisation info --store {store_url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let local = realisation_info(&store.root().display().to_string());
    let id = local[0]["id"].as_str().expect("realisation id").to_owned();
    let server = Server::start(&store, Options::default());
    let res = common::get(&server, &format!("/realisations/{id}.doi"));
    assert_eq!(res.status, 200, "{}", res.text());
    let served: serde_json::Value = serde_json::from_slice(&res.body).expect("json");
    assert_eq!(served, local[0]);
    assert_eq!(realisation_info(&server.url), local);
}
