//! Protocol versions the Nix 2.8 client does not speak (1.21 to 1.38 around its 1.34), and bad input, driven
//! through harmonia-protocol's own client against the real daemon binary on a fixture store.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use common::{Daemon, lines, ok};
use harmonia_protocol::client::UnixClient;
use harmonia_protocol::handshake::TrustLevel;
use harmonia_protocol::request::{
    AddToStoreNarRequest, BuildPathsRequest, SetOptionsRequest, typed,
};
use harmonia_protocol::{ProtocolError, ProtocolVersion, UnkeyedValidPathInfo, ValidPathInfo};
use harmonia_store_path::{StoreDir, StorePath};
use harmonia_test_support::{FixtureStore, standard_fixture};
use harmonia_utils_hash::NarHash;

const VERSIONS: [(u8, u8); 8] = [
    (1, 21),
    (1, 22),
    (1, 23),
    (1, 25),
    (1, 34),
    (1, 35),
    (1, 37),
    (1, 38),
];

fn sp(full: &str) -> StorePath {
    StoreDir::default().parse_path(full).expect("store path")
}

/// The path's info as the store's own `nix path-info --json` reports it, in wire form.
fn wire_info(store: &FixtureStore, path: &str) -> ValidPathInfo {
    let json = store.path_info(&[path]);
    let j = &json[0];
    let refs: BTreeSet<StorePath> = j["references"]
        .as_array()
        .expect("references")
        .iter()
        .map(|r| sp(r.as_str().expect("ref")))
        .collect();
    ValidPathInfo {
        path: sp(path),
        info: UnkeyedValidPathInfo {
            deriver: j["deriver"].as_str().map(sp),
            nar_hash: j["narHash"]
                .as_str()
                .expect("narHash")
                .parse::<NarHash>()
                .expect("hash"),
            references: refs,
            registration_time: 0,
            nar_size: j["narSize"].as_u64().expect("narSize"),
            ultimate: false,
            signatures: BTreeSet::new(),
            ca: j["ca"].as_str().map(|c| c.parse().expect("ca")),
        },
    }
}

async fn connect(d: &Daemon, v: (u8, u8)) -> UnixClient {
    let mut c = UnixClient::connect(
        &d.socket,
        StoreDir::default(),
        ProtocolVersion::new(v.0, v.1),
    )
    .await
    .expect("connect");
    c.set_options(&SetOptionsRequest::default())
        .await
        .expect("SetOptions");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_every_version() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    let tree_nar = f.store.dump(&f.paths.tree);
    let expected = wire_info(&f.store, &f.paths.top);
    for v in VERSIONS {
        let mut c = connect(&d, v).await;
        assert_eq!(c.version(), ProtocolVersion::new(v.0, v.1));
        if v >= (1, 35) {
            assert_eq!(c.negotiated().trust, TrustLevel::Trusted, "{v:?}");
        }
        let info = c
            .query_path_info(&sp(&f.paths.top))
            .await
            .expect("info")
            .expect("valid");
        assert_eq!(info.nar_hash, expected.info.nar_hash, "{v:?}");
        assert_eq!(info.nar_size, expected.info.nar_size);
        assert_eq!(info.references, expected.info.references);
        assert_eq!(info.deriver, expected.info.deriver);
        assert!(info.registration_time > 0);
        let all = c.query_all_valid_paths().await.expect("all");
        assert_eq!(all.len(), f.paths.all.len(), "{v:?}");
        let mut nar = Vec::new();
        c.nar_from_path(&sp(&f.paths.tree), &mut nar)
            .await
            .expect("nar");
        assert!(nar == tree_nar, "NarFromPath at {v:?}");
        // The connection is still in step after the raw NAR.
        assert!(c.is_valid_path(&sp(&f.paths.dep)).await.expect("valid"));
        let hash_part = &f.paths.dep["/nix/store/".len().."/nix/store/".len() + 32];
        assert_eq!(
            c.query_path_from_hash_part(hash_part)
                .await
                .expect("hash part"),
            Some(sp(&f.paths.dep))
        );
        let outs = c
            .query_derivation_output_map(&sp(&f.paths.top_drv))
            .await
            .expect("outputs");
        assert_eq!(outs.get("out"), Some(&Some(sp(&f.paths.top))), "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_clients_are_told_so() {
    let f = FixtureStore::new();
    let d = Daemon::start(&f, "trusted_users = []");
    let c = connect(&d, (1, 38)).await;
    assert_eq!(c.negotiated().trust, TrustLevel::NotTrusted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_to_store_nar_at_old_and_new_versions() {
    let src = standard_fixture();
    for v in [(1, 21), (1, 22), (1, 23), (1, 38)] {
        let dst = FixtureStore::new();
        let d = Daemon::start(&dst, "");
        let mut c = connect(&d, v).await;
        for p in [&src.paths.dep, &src.paths.top] {
            let nar = src.store.dump(p);
            let req = AddToStoreNarRequest {
                info: wire_info(&src.store, p),
                repair: false,
                dont_check_sigs: true,
            };
            c.add_to_store_nar(&req, &mut &nar[..])
                .await
                .unwrap_or_else(|e| panic!("{v:?}: {e}"));
        }
        assert!(c.is_valid_path(&sp(&src.paths.top)).await.expect("valid"));
        assert!(dst.dump(&src.paths.top) == src.store.dump(&src.paths.top));
        dst.verify_contents()
            .expect("nix-store --verify --check-contents");
        let refs = lines(&ok(dst
            .nix("nix-store")
            .arg("--store")
            .arg(dst.root())
            .args(["-q", "--references", &src.paths.top])));
        assert_eq!(refs, vec![src.paths.dep.clone()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_multiple_to_store_registers_a_closure() {
    let src = standard_fixture();
    let dst = FixtureStore::new();
    let d = Daemon::start(&dst, "");
    let mut c = connect(&d, (1, 34)).await;
    let paths = [&src.paths.dep, &src.paths.top, &src.paths.tree];
    let nars: Vec<Vec<u8>> = paths.iter().map(|p| src.store.dump(p)).collect();
    let mut items: Vec<(ValidPathInfo, &[u8])> = paths
        .iter()
        .zip(&nars)
        .map(|(p, n)| (wire_info(&src.store, p), &n[..]))
        .collect();
    c.add_multiple_to_store(false, true, &mut items)
        .await
        .expect("AddMultipleToStore");
    dst.verify_contents()
        .expect("nix-store --verify --check-contents");
    let all = lines(&ok(dst
        .nix("nix")
        .args(["path-info", "--all", "--store"])
        .arg(dst.root())));
    assert_eq!(all.len(), 3, "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_nar_hash_is_refused_leaves_nothing_and_keeps_the_connection() {
    let src = standard_fixture();
    let dst = FixtureStore::new();
    let d = Daemon::start(&dst, "");
    let before = common::store_entries(&dst.store_dir());
    for v in [(1, 22), (1, 34)] {
        let mut c = connect(&d, v).await;
        let mut info = wire_info(&src.store, &src.paths.tree);
        info.info.nar_hash = wire_info(&src.store, &src.paths.text_file).info.nar_hash;
        let nar = src.store.dump(&src.paths.tree);
        let req = AddToStoreNarRequest {
            info,
            repair: false,
            dont_check_sigs: true,
        };
        let err = c
            .add_to_store_nar(&req, &mut &nar[..])
            .await
            .expect_err("must be refused");
        assert!(
            matches!(&err, ProtocolError::Remote(e) if e.msg.contains("hash mismatch")),
            "{err}"
        );
        // Same connection, next request.
        assert!(
            !c.is_valid_path(&sp(&src.paths.tree))
                .await
                .expect("still usable")
        );
        // A claimed size smaller than the NAR is refused too.
        let mut info = wire_info(&src.store, &src.paths.big_file);
        info.info.nar_size = 1000;
        let nar = src.store.dump(&src.paths.big_file);
        let req = AddToStoreNarRequest {
            info,
            repair: false,
            dont_check_sigs: true,
        };
        let err = c
            .add_to_store_nar(&req, &mut &nar[..])
            .await
            .expect_err("must be refused");
        assert!(matches!(err, ProtocolError::Remote(_)), "{err}");
        assert!(
            !c.is_valid_path(&sp(&src.paths.big_file))
                .await
                .expect("still usable")
        );
    }
    assert_eq!(common::store_entries(&dst.store_dir()), before);
    let all = lines(&ok(dst
        .nix("nix")
        .args(["path-info", "--all", "--store"])
        .arg(dst.root())));
    assert!(all.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_are_refused_by_name_and_the_connection_stays_usable() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    let mut c = connect(&d, (1, 38)).await;
    // Valid outputs need no build: a no-op success.
    c.call(&typed::BuildPaths(BuildPathsRequest {
        paths: vec![format!("{}!out", f.paths.top_drv), f.paths.tree.clone()],
        mode: 0,
    }))
    .await
    .expect("nothing to build");
    let err = c
        .call(&typed::BuildPaths(BuildPathsRequest {
            paths: vec!["/nix/store/00000000000000000000000000000000-not-here".into()],
            mode: 0,
        }))
        .await
        .expect_err("builds are not supported");
    assert!(
        matches!(&err, ProtocolError::Remote(e) if e.msg.contains("BuildPaths")),
        "{err}"
    );
    assert!(c.is_valid_path(&sp(&f.paths.top)).await.expect("usable"));
}

/// Handshake at 1.34, then raw bytes; returns what the daemon answered until it closed or went quiet.
fn raw_session(socket: &std::path::Path, after_handshake: &[u8]) -> Vec<u8> {
    let mut s = StdUnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut hello = Vec::new();
    hello.extend_from_slice(&0x6e69_7863u64.to_le_bytes());
    hello.extend_from_slice(&0x122u64.to_le_bytes());
    hello.extend_from_slice(&0u64.to_le_bytes()); // no CPU affinity
    hello.extend_from_slice(&0u64.to_le_bytes()); // reserveSpace
    hello.extend_from_slice(after_handshake);
    s.write_all(&hello).expect("write");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_an_error_and_others_are_unaffected() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    let error_code = 0x6378_7470u64.to_le_bytes();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // An unknown op code.
    cases.push(999u64.to_le_bytes().to_vec());
    // QueryPathInfo with an absurd string length.
    cases.push([26u64.to_le_bytes(), (1u64 << 60).to_le_bytes()].concat());
    // QueryPathInfo of a path outside the store.
    let mut outside = 26u64.to_le_bytes().to_vec();
    outside.extend_from_slice(&11u64.to_le_bytes());
    outside.extend_from_slice(b"/etc/passwd\0\0\0\0\0");
    cases.push(outside);
    // AddToStoreNar whose framed NAR is garbage.
    let info = wire_info(&f.store, &f.paths.text_file);
    let mut enc = harmonia_protocol::Encoder::new(ProtocolVersion::new(1, 34), StoreDir::default());
    enc.write_u64(39);
    enc.write(&AddToStoreNarRequest {
        info,
        repair: false,
        dont_check_sigs: true,
    });
    let mut garbage_nar = enc.take_buffer();
    garbage_nar.extend_from_slice(&16u64.to_le_bytes());
    garbage_nar.extend_from_slice(b"this is no NAR!!");
    garbage_nar.extend_from_slice(&0u64.to_le_bytes());
    cases.push(garbage_nar);
    for (i, case) in cases.iter().enumerate() {
        let out = raw_session(&d.socket, case);
        assert!(
            out.windows(8).any(|w| w == error_code),
            "case {i}: no STDERR_ERROR in the daemon's answer"
        );
    }
    let mut c = connect(&d, (1, 34)).await;
    assert!(
        c.is_valid_path(&sp(&f.paths.top))
            .await
            .expect("daemon still serves")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_derivations_get_their_outputs_registered() {
    let src = standard_fixture();
    let dst = FixtureStore::new();
    let d = Daemon::start(&dst, "");
    ok(src
        .store
        .nix("nix")
        .args(["copy", "--no-check-sigs", "--derivation", "--store"])
        .arg(src.store.root())
        .args(["--to", &d.url(), &src.paths.top_drv]));
    let mut c = connect(&d, (1, 34)).await;
    let outs = c
        .query_derivation_output_map(&sp(&src.paths.top_drv))
        .await
        .expect("outputs");
    assert_eq!(outs.get("out"), Some(&Some(sp(&src.paths.top))));
    assert_eq!(outs.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_multiple_stops_at_a_bad_path_and_keeps_the_good_ones() {
    let src = standard_fixture();
    let dst = FixtureStore::new();
    let d = Daemon::start(&dst, "");
    let mut c = connect(&d, (1, 34)).await;
    let paths = [&src.paths.dep, &src.paths.tree, &src.paths.text_file];
    let nars: Vec<Vec<u8>> = paths.iter().map(|p| src.store.dump(p)).collect();
    let mut items: Vec<(ValidPathInfo, &[u8])> = paths
        .iter()
        .zip(&nars)
        .map(|(p, n)| (wire_info(&src.store, p), &n[..]))
        .collect();
    // The second path claims the wrong hash.
    items[1].0.info.nar_hash = items[2].0.info.nar_hash;
    let err = c
        .add_multiple_to_store(false, true, &mut items)
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ProtocolError::Remote(e) if e.msg.contains("hash mismatch")),
        "{err}"
    );
    assert!(c.is_valid_path(&sp(&src.paths.dep)).await.expect("usable"));
    assert!(!c.is_valid_path(&sp(&src.paths.tree)).await.expect("usable"));
    assert!(
        !c.is_valid_path(&sp(&src.paths.text_file))
            .await
            .expect("usable")
    );
    let entries = common::store_entries(&dst.store_dir());
    assert_eq!(
        entries,
        vec![harmonia_test_support::base_name(&src.paths.dep).to_owned()]
    );
    dst.verify_contents()
        .expect("nix-store --verify --check-contents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_signatures_realisations_logs_and_verify() {
    use harmonia_protocol::request::{
        AddBuildLogRequest, AddIndirectRootRequest, AddPermRootRequest, AddSignaturesRequest,
        QueryMissingRequest, QueryRealisationRequest, QueryRealisationResponse,
        RegisterDrvOutputRequest, VerifyStoreRequest,
    };
    use harmonia_protocol::types::StorePathBase;
    use harmonia_protocol::{NixSerialize, Operation};
    use tokio::io::AsyncWriteExt;

    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    let mut c = connect(&d, (1, 34)).await;
    let top = sp(&f.paths.top);

    // Permanent and indirect GC roots show up in FindRoots.
    let root = f.store.scratch_dir().join("result");
    let root_s = root.to_str().expect("utf-8").to_owned();
    let made = c
        .call(&AddPermRootRequest {
            path: top.clone(),
            gc_root: root_s.clone(),
        })
        .await
        .expect("AddPermRoot");
    assert_eq!(made, root_s);
    assert_eq!(
        std::fs::read_link(&root).expect("root link").to_str(),
        Some(f.paths.top.as_str())
    );
    c.call(&AddIndirectRootRequest {
        path: root_s.clone(),
    })
    .await
    .expect("AddIndirectRoot");
    c.call(&typed::AddTempRoot(sp(&f.paths.dep)))
        .await
        .expect("AddTempRoot");
    let roots = c.call(&typed::FindRoots).await.expect("FindRoots");
    assert!(
        roots.iter().any(|(l, p)| *l == root_s && *p == top),
        "{roots:?}"
    );
    // A GC root inside the store is refused, and the connection goes on.
    let err = c
        .call(&AddPermRootRequest {
            path: top.clone(),
            gc_root: format!("{}-x", f.paths.top),
        })
        .await
        .expect_err("root in the store");
    assert!(matches!(err, ProtocolError::Remote(_)));
    c.call(&typed::EnsurePath(top.clone()))
        .await
        .expect("EnsurePath of a valid path");

    // Signatures are stored and reported; the real Nix sees them in the database too.
    let (secret, public) =
        harmonia_test_support::generate_signing_key(f.store.scratch_dir(), "test-1");
    ok(f.store
        .nix("nix")
        .args(["store", "sign", "--store"])
        .arg(f.store.root())
        .arg("--key-file")
        .arg(&secret)
        .arg(&f.paths.dep));
    let sig = f.store.path_info(&[&f.paths.dep])[0]["signatures"][0]
        .as_str()
        .expect("sig")
        .to_owned();
    assert!(sig.starts_with("test-1:"), "{sig} / {public}");
    c.call(&AddSignaturesRequest {
        path: top.clone(),
        signatures: [sig.clone()].into(),
    })
    .await
    .expect("AddSignatures");
    let info = c.query_path_info(&top).await.expect("info").expect("valid");
    assert!(info.signatures.contains(&sig));
    assert_eq!(
        f.store.path_info(&[&f.paths.top])[0]["signatures"][0].as_str(),
        Some(sig.as_str())
    );

    // QueryMissing: everything here is valid; an unknown path is unknown.
    let missing = c
        .call(&QueryMissingRequest {
            targets: vec![format!("{}!out", f.paths.top_drv), f.paths.tree.clone()],
        })
        .await
        .expect("QueryMissing");
    assert!(
        missing.will_build.is_empty() && missing.unknown.is_empty(),
        "{missing:?}"
    );

    // Realisations round-trip.
    let id = format!("sha256:{}!out", "ab".repeat(32));
    let json = serde_json::json!({
        "id": id,
        "outPath": harmonia_test_support::base_name(&f.paths.top),
        "signatures": [],
        "dependentRealisations": {},
    });
    c.call(&RegisterDrvOutputRequest::Realisation(json.to_string()))
        .await
        .expect("RegisterDrvOutput");
    match c
        .call(&QueryRealisationRequest {
            id: id.as_str().into(),
        })
        .await
        .expect("QueryRealisation")
    {
        QueryRealisationResponse::Realisations(set) => {
            let got: serde_json::Value =
                serde_json::from_str(set.iter().next().expect("one")).expect("json");
            assert_eq!(got["outPath"], json["outPath"]);
            assert_eq!(got["id"], json["id"]);
        }
        other => panic!("{other:?}"),
    }

    // AddBuildLog: the real `nix log` reads what we stored.
    let log_text = b"a build log sent through harmonia-daemon\n";
    let req = AddBuildLogRequest {
        drv_path: StorePathBase(sp(&f.paths.dep_drv)),
    };
    {
        let w = c.writer();
        w.write_u64(AddBuildLogRequest::OP as u64);
        req.serialize(w);
        w.flush().await.expect("send");
        let mut framed = harmonia_protocol::framed::FramedWriter::new(w.inner_mut());
        framed.write_all(log_text).await.expect("log");
        framed.shutdown().await.expect("end");
    }
    c.process_stderr(None).await.expect("AddBuildLog");
    c.reader().read_u64().await.expect("done");
    let shown = ok(f
        .store
        .nix("nix")
        .args(["log", "--store"])
        .arg(f.store.root())
        .arg(&f.paths.dep_drv));
    assert_eq!(shown, log_text);

    // VerifyStore with contents: clean, then a modified file is reported.
    assert!(
        !c.call(&VerifyStoreRequest {
            check_contents: true,
            repair: false
        })
        .await
        .expect("verify")
    );
    let real = f.store.real_path(&f.paths.executable);
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(&real, b"#!/bin/sh\necho changed\n").expect("tamper");
    assert!(
        c.call(&VerifyStoreRequest {
            check_contents: true,
            repair: false
        })
        .await
        .expect("verify")
    );
    let said: Vec<String> = c
        .take_messages()
        .into_iter()
        .filter_map(|m| match m {
            harmonia_protocol::StderrMsg::Next(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(said.iter().any(|s| s.contains("was modified")), "{said:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_of_the_same_path_are_safe() {
    let src = standard_fixture();
    let dst = FixtureStore::new();
    let d = Daemon::start(&dst, "");
    let nar = std::sync::Arc::new(src.store.dump(&src.paths.big_file));
    let info = wire_info(&src.store, &src.paths.big_file);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = connect(&d, (1, 34)).await;
        let (nar, info) = (nar.clone(), info.clone());
        tasks.push(tokio::spawn(async move {
            let req = AddToStoreNarRequest {
                info,
                repair: false,
                dont_check_sigs: true,
            };
            c.add_to_store_nar(&req, &mut &nar[..]).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("every add succeeds");
    }
    assert!(dst.dump(&src.paths.big_file) == *nar);
    let entries = common::store_entries(&dst.store_dir());
    assert_eq!(
        entries,
        vec![harmonia_test_support::base_name(&src.paths.big_file).to_owned()]
    );
    dst.verify_contents()
        .expect("nix-store --verify --check-contents");
}

/// Sends AddToStore in its pre-1.25 form with `nar` following raw; returns the daemon's answer.
async fn legacy_add(
    c: &mut UnixClient,
    name: &str,
    recursive: bool,
    nar: &[u8],
) -> Result<StorePath, ProtocolError> {
    use harmonia_protocol::request::{AddToStoreRequest, AddToStoreResponse};
    use harmonia_protocol::{NixSerialize, Operation};
    let req = AddToStoreRequest::Legacy {
        name: name.into(),
        fixed: true,
        recursive: u64::from(recursive),
        hash_algo: "sha256".into(),
    };
    let w = c.writer();
    w.write_u64(AddToStoreRequest::OP as u64);
    req.serialize(w);
    w.write_raw_now(nar).await?;
    w.flush().await?;
    c.process_stderr(None).await?;
    match c.reader().read::<AddToStoreResponse>().await? {
        AddToStoreResponse::Path(p) => Ok(p),
        AddToStoreResponse::Info(i) => Ok(i.path),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_add_to_store_matches_nix_store_add() {
    let reference = FixtureStore::new();
    let dst = FixtureStore::new();
    let d = Daemon::start(&dst, "");
    let dir = reference.scratch_dir().join("legacy");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("sub/a"), b"legacy add\n").expect("write");
    std::os::unix::fs::symlink("sub/a", dir.join("link")).expect("symlink");
    let file = reference.scratch_dir().join("flat.txt");
    std::fs::write(&file, b"a flat file\n").expect("write");
    let recursive = reference.add_path(&dir);
    let flat = lines(&ok(reference
        .nix("nix-store")
        .arg("--store")
        .arg(reference.root())
        .args(["--add-fixed", "sha256"])
        .arg(&file)));
    let mut c = connect(&d, (1, 24)).await;
    let got = legacy_add(&mut c, "legacy", true, &reference.dump(&recursive))
        .await
        .expect("recursive add");
    assert_eq!(StoreDir::default().display(&got), recursive);
    let got = legacy_add(&mut c, "flat.txt", false, &reference.dump(&flat[0]))
        .await
        .expect("flat add");
    assert_eq!(vec![StoreDir::default().display(&got)], flat);
    // A flat add of a directory is refused, and the stream stays in step.
    let err = legacy_add(&mut c, "bad", false, &reference.dump(&recursive))
        .await
        .expect_err("not a file");
    assert!(matches!(err, ProtocolError::Remote(_)), "{err}");
    assert!(c.is_valid_path(&got).await.expect("usable"));
    dst.verify_contents()
        .expect("nix-store --verify --check-contents");
    assert_eq!(
        dst.path_info(&[&recursive])[0]["ca"],
        reference.path_info(&[&recursive])[0]["ca"]
    );
}
