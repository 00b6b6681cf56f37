//! Our client against the real `nix-daemon` (Nix 2.8, protocol 1.34) serving a chroot
//! fixture store: handshake at several versions, read operations compared with
//! `nix path-info --json`, and writes (AddToStoreNar framed and tunnelled,
//! AddMultipleToStore) checked with `nix path-info` and `nix-store --verify`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::{cat, s};
use harmonia_protocol::client::UnixClient;
use harmonia_protocol::handshake::TrustLevel;
use harmonia_protocol::request::{AddToStoreNarRequest, SetOptionsRequest};
use harmonia_protocol::types::{UnkeyedValidPathInfo, ValidPathInfo};
use harmonia_protocol::{ProtocolError, ProtocolVersion};
use harmonia_store_path::{StoreDir, StorePath};
use harmonia_test_support::{FixtureStore, StandardFixture, standard_fixture, wait_for_path};
use harmonia_utils_hash::NarHash;

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nix_available() -> bool {
    Command::new("nix-daemon")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn start_daemon(store: &FixtureStore) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("daemon.sock");
    let child = store
        .nix("nix-daemon")
        .arg("--store")
        .arg(store.root())
        .env("NIX_DAEMON_SOCKET_PATH", &socket)
        .spawn()
        .expect("start nix-daemon");
    assert!(
        wait_for_path(&socket, Duration::from_secs(20)),
        "nix-daemon did not create its socket"
    );
    Daemon {
        child,
        socket,
        _dir: dir,
    }
}

fn sp(full: &str) -> StorePath {
    StoreDir::default().parse_path(full).unwrap()
}

async fn connect(socket: &Path, minor: u8) -> UnixClient {
    let mut c = UnixClient::connect(socket, StoreDir::default(), ProtocolVersion::new(1, minor))
        .await
        .unwrap();
    c.set_options(&SetOptionsRequest {
        verbosity: 0,
        use_build_hook: 1,
        use_substitutes: false,
        ..Default::default()
    })
    .await
    .unwrap();
    c
}

fn setup() -> Option<(StandardFixture, Daemon)> {
    if !nix_available() {
        eprintln!("SKIPPED: nix-daemon is not installed");
        return None;
    }
    let fx = standard_fixture();
    let d = start_daemon(&fx.store);
    Some((fx, d))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_operations_match_nix() {
    let Some((fx, daemon)) = setup() else { return };
    for minor in [21u8, 25, 34] {
        let mut c = connect(&daemon.socket, minor).await;
        assert_eq!(c.version(), ProtocolVersion::new(1, minor));
        if minor >= 33 {
            assert!(
                c.negotiated()
                    .daemon_nix_version
                    .as_deref()
                    .is_some_and(|v| v.starts_with("2.8"))
            );
        }
        assert_eq!(c.negotiated().trust, TrustLevel::Unknown); // 1.34 < 1.35

        // QueryPathInfo against `nix path-info --json`.
        let json = fx.store.path_info(&[&fx.paths.top]);
        let j = &json[0];
        let info = c
            .query_path_info(&sp(&fx.paths.top))
            .await
            .unwrap()
            .expect("top is valid");
        assert_eq!(info.nar_size, j["narSize"].as_u64().unwrap());
        let nar_hash: NarHash = j["narHash"].as_str().unwrap().parse().unwrap();
        assert_eq!(info.nar_hash, nar_hash);
        let refs: BTreeSet<StorePath> = j["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| sp(r.as_str().unwrap()))
            .collect();
        assert_eq!(info.references, refs);
        assert!(info.references.contains(&sp(&fx.paths.dep)));
        assert_eq!(info.deriver, Some(sp(&fx.paths.top_drv)));
        assert_eq!(
            info.registration_time,
            j["registrationTime"].as_u64().unwrap()
        );
        assert!(info.ultimate);

        // A plain added path is content-addressed.
        let text = c
            .query_path_info(&sp(&fx.paths.text_file))
            .await
            .unwrap()
            .unwrap();
        let tj = &fx.store.path_info(&[&fx.paths.text_file])[0];
        assert_eq!(
            text.ca.map(|ca| ca.to_string()).as_deref(),
            tj["ca"].as_str()
        );

        // Invalid path: None (not an error) since 1.17.
        let bogus = sp("/nix/store/00000000000000000000000000000000-nope");
        assert_eq!(c.query_path_info(&bogus).await.unwrap(), None);
        assert!(!c.is_valid_path(&bogus).await.unwrap());
        assert!(c.is_valid_path(&sp(&fx.paths.big_file)).await.unwrap());

        let all = c.query_all_valid_paths().await.unwrap();
        for p in &fx.paths.all {
            assert!(all.contains(&sp(p)), "{p} missing from QueryAllValidPaths");
        }
        let want: BTreeSet<StorePath> = [sp(&fx.paths.dep), bogus.clone()].into();
        assert_eq!(
            c.query_valid_paths(&want).await.unwrap(),
            [sp(&fx.paths.dep)].into()
        );

        let top = sp(&fx.paths.top);
        assert_eq!(
            c.query_path_from_hash_part(&top.hash().to_string())
                .await
                .unwrap(),
            Some(top.clone())
        );
        assert_eq!(
            c.query_path_from_hash_part("00000000000000000000000000000000")
                .await
                .unwrap(),
            None
        );
        assert!(
            c.query_referrers(&sp(&fx.paths.dep))
                .await
                .unwrap()
                .contains(&top)
        );
        assert_eq!(
            c.query_valid_derivers(&top).await.unwrap(),
            [sp(&fx.paths.top_drv)].into()
        );
        let outputs = c
            .query_derivation_output_map(&sp(&fx.paths.top_drv))
            .await
            .unwrap();
        assert_eq!(outputs.get("out"), Some(&Some(top.clone())));

        // An error from the daemon is typed and the connection stays usable.
        let err = c.query_referrers(&bogus).await;
        if let Err(e) = &err {
            assert!(matches!(e, ProtocolError::Remote(_)), "{e}");
        }
        assert!(c.is_valid_path(&top).await.unwrap());
    }
}

/// A NAR holding one regular file.
fn file_nar(contents: &[u8]) -> Vec<u8> {
    cat(&[
        s("nix-archive-1"),
        s("("),
        s("type"),
        s("regular"),
        s("contents"),
        s(contents),
        s(")"),
    ])
}

fn fake_path(tag: &str) -> StorePath {
    // Any valid hash part works for an input-addressed path added by a trusted client.
    let alphabet = "0123456789abcdfghijklmnpqrsvwxyz";
    let hash: String = tag
        .bytes()
        .cycle()
        .take(32)
        .map(|b| alphabet.as_bytes()[(b as usize) % 32] as char)
        .collect();
    format!("{hash}-{tag}").parse().unwrap()
}

fn info_for(path: &StorePath, nar: &[u8], references: BTreeSet<StorePath>) -> ValidPathInfo {
    ValidPathInfo {
        path: path.clone(),
        info: UnkeyedValidPathInfo {
            deriver: None,
            nar_hash: NarHash::digest_of(nar),
            references,
            registration_time: 0,
            nar_size: nar.len() as u64,
            ultimate: false,
            signatures: BTreeSet::new(),
            ca: None,
        },
    }
}

fn verify(store: &FixtureStore, paths: &[&str]) {
    let json = store.path_info(paths);
    assert_eq!(json.as_array().unwrap().len(), paths.len());
    for p in paths {
        store.run(
            store
                .nix("nix-store")
                .arg("--store")
                .arg(store.root())
                .args(["--verify-path", p]),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_accepted_by_nix() {
    let Some((fx, daemon)) = setup() else { return };
    let mut added = Vec::new();
    // 1.21/1.22: NAR pulled through STDERR_READ; 1.23+: framed.
    for minor in [21u8, 22, 23, 34] {
        let mut c = connect(&daemon.socket, minor).await;
        let tag = format!("harmonia-proto-nar-{minor}");
        let contents = format!("written at 1.{minor}\n").repeat(5000);
        let nar = file_nar(contents.as_bytes());
        let path = fake_path(&tag);
        let req = AddToStoreNarRequest {
            info: info_for(&path, &nar, [sp(&fx.paths.dep)].into()),
            repair: false,
            dont_check_sigs: true,
        };
        c.add_to_store_nar(&req, &mut &nar[..]).await.unwrap();
        let got = c
            .query_path_info(&path)
            .await
            .unwrap()
            .expect("added path is valid");
        assert_eq!(got.nar_hash, NarHash::digest_of(&nar));
        assert_eq!(got.references, [sp(&fx.paths.dep)].into());
        added.push(StoreDir::default().display(&path));

        // A NAR whose hash does not match is refused with a typed error; the connection
        // keeps working.
        let bad_path = fake_path(&format!("harmonia-bad-{minor}"));
        let mut bad_req = AddToStoreNarRequest {
            info: info_for(&bad_path, &nar, BTreeSet::new()),
            repair: false,
            dont_check_sigs: true,
        };
        bad_req.info.info.nar_hash = NarHash::digest_of(b"something else");
        let err = c
            .add_to_store_nar(&bad_req, &mut &nar[..])
            .await
            .unwrap_err();
        assert!(matches!(err, ProtocolError::Remote(_)), "{err}");
        assert!(c.is_valid_path(&sp(&fx.paths.dep)).await.unwrap());
        assert!(!c.is_valid_path(&bad_path).await.unwrap());
    }

    // AddMultipleToStore (1.32+): two paths, one referring to the other.
    let mut c = connect(&daemon.socket, 34).await;
    let a = fake_path("harmonia-multi-a");
    let b = fake_path("harmonia-multi-b");
    let nar_a = file_nar(b"a");
    let nar_b = file_nar(format!("see {}", StoreDir::default().display(&a)).as_bytes());
    let mut items = vec![
        (info_for(&a, &nar_a, BTreeSet::new()), &nar_a[..]),
        (info_for(&b, &nar_b, [a.clone()].into()), &nar_b[..]),
    ];
    c.add_multiple_to_store(false, true, &mut items)
        .await
        .unwrap();
    assert!(c.is_valid_path(&a).await.unwrap());
    assert_eq!(
        c.query_path_info(&b).await.unwrap().unwrap().references,
        [a.clone()].into()
    );
    added.push(StoreDir::default().display(&a));
    added.push(StoreDir::default().display(&b));

    let refs: Vec<&str> = added.iter().map(String::as_str).collect();
    verify(&fx.store, &refs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_to_store_forms_and_build_logs() {
    use harmonia_protocol::request::{AddToStoreRequest, AddToStoreResponse};
    use harmonia_store_path::ContentAddress;
    use harmonia_utils_hash::{Algorithm, Hash};

    let Some((fx, daemon)) = setup() else { return };
    let contents = b"added through harmonia-protocol\n";
    let nar = file_nar(contents);
    let nar_sha = Hash::digest_of(Algorithm::Sha256, &nar);

    // 1.25+: the CA form, data framed, reply a path info.
    let mut c = connect(&daemon.socket, 34).await;
    let req = AddToStoreRequest::Ca {
        name: "ca-recursive".into(),
        method_algo: "fixed:r:sha256".into(),
        references: BTreeSet::new(),
        repair: false,
    };
    let AddToStoreResponse::Info(info) = c.add_to_store(&req, &mut &nar[..]).await.unwrap() else {
        panic!("1.34 replies with a path info")
    };
    assert_eq!(info.info.ca, Some(ContentAddress::Recursive(nar_sha)));
    assert_eq!(info.info.nar_hash, NarHash::digest_of(&nar));
    let expected = StoreDir::default()
        .make_fixed_output_path(
            &ContentAddress::Recursive(nar_sha),
            &[],
            false,
            "ca-recursive",
        )
        .unwrap();
    assert_eq!(info.path, expected);

    // Text: the data is the file's contents.
    let req = AddToStoreRequest::Ca {
        name: "ca-text".into(),
        method_algo: "text:sha256".into(),
        references: [sp(&fx.paths.dep)].into(),
        repair: false,
    };
    let AddToStoreResponse::Info(text) = c.add_to_store(&req, &mut &contents[..]).await.unwrap()
    else {
        panic!("1.34 replies with a path info")
    };
    let text_hash = Hash::digest_of(Algorithm::Sha256, contents);
    assert_eq!(text.info.ca, Some(ContentAddress::Text(text_hash)));
    assert_eq!(text.info.references, [sp(&fx.paths.dep)].into());

    // Before 1.25: the legacy form, an unframed NAR, reply the path.
    let mut old = connect(&daemon.socket, 24).await;
    let req = AddToStoreRequest::Legacy {
        name: "ca-flat".into(),
        fixed: true,
        recursive: 0,
        hash_algo: "sha256".into(),
    };
    let AddToStoreResponse::Path(flat) = old.add_to_store(&req, &mut &nar[..]).await.unwrap()
    else {
        panic!("1.24 replies with a path")
    };
    let flat_ca = ContentAddress::Flat(Hash::digest_of(Algorithm::Sha256, contents));
    assert_eq!(
        flat,
        StoreDir::default()
            .make_fixed_output_path(&flat_ca, &[], false, "ca-flat")
            .unwrap()
    );
    // The connection is in sync after the unframed NAR.
    assert_eq!(
        old.query_path_info(&flat).await.unwrap().unwrap().ca,
        Some(flat_ca)
    );

    // AddBuildLog (framed): the log lands where Nix keeps logs.
    let drv = sp(&format!("/nix/store/{}-harmonia-log.drv", "0".repeat(32)));
    c.add_build_log(&drv, &mut &b"log line\n"[..])
        .await
        .unwrap();
    assert!(
        fx.store
            .log_path(&StoreDir::default().display(&drv))
            .exists()
    );
    assert!(c.is_valid_path(&info.path).await.unwrap());

    let shown: Vec<String> = [&info.path, &text.path, &flat]
        .iter()
        .map(|p| StoreDir::default().display(p))
        .collect();
    let refs: Vec<&str> = shown.iter().map(String::as_str).collect();
    verify(&fx.store, &refs);
}
