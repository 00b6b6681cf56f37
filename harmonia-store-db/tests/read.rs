//! Every read query against what the real Nix 2.8 reports for the same store.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use harmonia_store_db::{StoreDb, StoreDbPool};
use harmonia_store_path::{StoreDir, StorePathHash};
use harmonia_test_support::{FixtureStore, hash_part, standard_fixture};

#[test]
fn path_info_matches_nix_path_info_for_every_fixture_path() {
    let fx = standard_fixture();
    let db = open_ro(&fx.store);
    let all: Vec<&str> = fx.paths.all.iter().map(String::as_str).collect();
    let nix = fx.store.path_info(&all);
    let nix = nix.as_array().expect("array");
    assert_eq!(nix.len(), all.len());
    for expected in nix {
        let path = expected["path"].as_str().expect("path");
        let info = db
            .query_path_info(&sp(path))
            .expect("query")
            .unwrap_or_else(|| panic!("{path} not found"));
        assert_eq!(
            normalise(&info_json(&info)),
            normalise(expected),
            "path info of {path}"
        );

        // The hash-part lookups give the same answer.
        let h: StorePathHash = hash_part(path).parse().expect("hash part");
        assert_eq!(
            db.query_path_info_by_hash_part(&h)
                .expect("by hash part")
                .as_ref(),
            Some(&info)
        );
        assert_eq!(
            db.query_path_from_hash_part(&h).expect("from hash part"),
            Some(info.path.clone())
        );
        assert!(db.is_valid_path(&info.path).expect("valid"));
    }
    // Batch validity keeps the valid ones, in order.
    let unknown = sp(&format!("/nix/store/{}-unknown", "0".repeat(32)));
    let asked = vec![
        sp(&fx.paths.top),
        unknown.clone(),
        sp(&fx.paths.dep),
        unknown,
    ];
    assert_eq!(
        db.query_valid_paths(&asked).expect("valid paths"),
        vec![sp(&fx.paths.top), sp(&fx.paths.dep)]
    );
    assert_eq!(db.query_valid_paths(&[]).expect("valid paths"), vec![]);
    // The fixture covers the interesting columns: a deriver, ultimate, CA, references.
    let top = db.query_path_info(&sp(&fx.paths.top)).unwrap().unwrap();
    assert_eq!(
        top.deriver.as_ref().map(full),
        Some(fx.paths.top_drv.clone())
    );
    assert!(top.ultimate);
    assert_eq!(
        top.references.iter().map(full).collect::<Vec<_>>(),
        vec![fx.paths.dep.clone()]
    );
    let text = db
        .query_path_info(&sp(&fx.paths.text_file))
        .unwrap()
        .unwrap();
    assert!(
        text.ca
            .as_deref()
            .is_some_and(|ca| ca.starts_with("fixed:r:sha256:")),
        "{:?}",
        text.ca
    );
}

#[test]
fn references_referrers_derivers_and_outputs_match_nix_store_query() {
    let fx = standard_fixture();
    let db = open_ro(&fx.store);
    let all_paths = db.query_all_valid_paths().expect("all paths");
    assert_eq!(
        all_paths.iter().map(full).collect::<Vec<_>>(),
        nix_all_paths(&fx.store)
    );

    // Nix 2.8's nix-store has no --valid-derivers: invert its --outputs of every derivation instead.
    let mut derivers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &all_paths {
        let path = full(p);
        let refs = nix_lines(&fx.store, "nix-store", &["-q", "--references", &path]);
        let ours: Vec<String> = db
            .query_references(p)
            .expect("references")
            .iter()
            .map(full)
            .collect();
        assert_eq!(ours, refs, "references of {path}");

        let referrers = nix_lines(&fx.store, "nix-store", &["-q", "--referrers", &path]);
        let ours: Vec<String> = db
            .query_referrers(p)
            .expect("referrers")
            .iter()
            .map(full)
            .collect();
        assert_eq!(ours, referrers, "referrers of {path}");

        let deriver = nix_lines(&fx.store, "nix-store", &["-q", "--deriver", &path]);
        let info = db.query_path_info(p).unwrap().unwrap();
        let ours = info
            .deriver
            .as_ref()
            .map(full)
            .unwrap_or_else(|| "unknown-deriver".into());
        assert_eq!(vec![ours], deriver, "deriver of {path}");

        if path.ends_with(".drv") {
            let outputs = nix_lines(&fx.store, "nix-store", &["-q", "--outputs", &path]);
            let ours = db.query_derivation_outputs(p).expect("outputs");
            assert_eq!(
                ours.iter().map(|(_, o)| full(o)).collect::<Vec<_>>(),
                outputs,
                "outputs of {path}"
            );
            assert!(ours.iter().all(|(name, _)| name == "out"), "{ours:?}");
            for o in outputs {
                derivers.entry(o).or_default().insert(path.clone());
            }
        } else {
            assert!(db.query_derivation_outputs(p).expect("outputs").is_empty());
        }
    }
    assert!(
        derivers.contains_key(&fx.paths.top),
        "fixture top has no deriver in --outputs"
    );
    for p in &all_paths {
        let path = full(p);
        let ours: BTreeSet<String> = db
            .query_valid_derivers(p)
            .expect("derivers")
            .iter()
            .map(full)
            .collect();
        assert_eq!(
            ours,
            derivers.get(&path).cloned().unwrap_or_default(),
            "valid derivers of {path}"
        );
    }
}

#[test]
fn unknown_paths_and_hash_parts_are_absent() {
    let fx = standard_fixture();
    let db = open_ro(&fx.store);
    let existing = sp(&fx.paths.text_file);
    // Same hash part, other name: not valid.
    let other_name = sp(&format!(
        "/nix/store/{}-other-name",
        hash_part(&fx.paths.text_file)
    ));
    assert_eq!(db.query_path_info(&other_name).unwrap(), None);
    assert!(!db.is_valid_path(&other_name).unwrap());
    assert!(db.query_references(&other_name).unwrap().is_empty());
    assert!(db.query_derivation_outputs(&other_name).unwrap().is_empty());

    // A hash part that sorts just before an existing path: the range query finds the existing path, which
    // must not be mistaken for a match. Decrement the last nix-base32 character of an existing hash.
    const ALPHABET: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    let mut found_neighbour = false;
    for path in &fx.paths.all {
        let h = hash_part(path);
        let last = h.chars().last().unwrap();
        let pos = ALPHABET.find(last).unwrap();
        if pos == 0 {
            continue;
        }
        let prev = format!("{}{}", &h[..31], ALPHABET.as_bytes()[pos - 1] as char);
        let Ok(prev) = prev.parse::<StorePathHash>() else {
            continue;
        };
        if fx
            .paths
            .all
            .iter()
            .any(|p| hash_part(p) == prev.to_string())
        {
            continue;
        }
        found_neighbour = true;
        assert_eq!(
            db.query_path_from_hash_part(&prev).unwrap(),
            None,
            "neighbour of {path}"
        );
        assert_eq!(
            db.query_path_info_by_hash_part(&prev).unwrap(),
            None,
            "neighbour of {path}"
        );
    }
    assert!(found_neighbour, "no path had a usable neighbour hash");
    // A hash after every path in the store.
    let last: StorePathHash = "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz".parse().unwrap();
    assert_eq!(db.query_path_from_hash_part(&last).unwrap(), None);
    assert!(db.is_valid_path(&existing).unwrap());
}

#[test]
fn read_only_connection_sees_paths_nix_adds_while_it_is_open() {
    let store = FixtureStore::new();
    let before = store.add_text("before.txt", b"added before opening\n");
    let db = open_ro(&store);
    let pool = StoreDbPool::new(store.db_path(), StoreDir::default(), 2).expect("pool");
    assert_eq!(
        db.query_all_valid_paths()
            .unwrap()
            .iter()
            .map(full)
            .collect::<Vec<_>>(),
        vec![before.clone()]
    );

    // A second, independent Nix process writes while our connections stay open.
    let after = store.add_text(
        "after.txt",
        b"added while our read-only connection is open\n",
    );
    let info = db
        .query_path_info(&sp(&after))
        .expect("query")
        .expect("new path visible");
    let nix = store.path_info(&[&after]);
    assert_eq!(normalise(&info_json(&info)), normalise(&nix[0]));
    let mut expected = vec![before, after.clone()];
    expected.sort();
    assert_eq!(
        db.query_all_valid_paths()
            .unwrap()
            .iter()
            .map(full)
            .collect::<Vec<_>>(),
        expected
    );
    let from_pool = pool
        .with_conn(|db| db.query_path_info(&sp(&after)))
        .expect("pool query");
    assert_eq!(from_pool, Some(info));

    // Nix deletes paths through the same database: the deletion is visible too.
    store.run(
        store
            .nix("nix-store")
            .arg("--store")
            .arg(store.root())
            .args(["--delete", &after]),
    );
    assert_eq!(db.query_path_info(&sp(&after)).unwrap(), None);
    assert!(!pool.with_conn(|db| db.is_valid_path(&sp(&after))).unwrap());
}

#[test]
fn pool_serves_many_threads_with_bounded_connections() {
    let fx = standard_fixture();
    let pool =
        Arc::new(StoreDbPool::new(fx.store.db_path(), StoreDir::default(), 3).expect("pool"));
    assert_eq!(pool.max_connections(), 3);
    let expected: Vec<_> = {
        let db = open_ro(&fx.store);
        fx.paths
            .all
            .iter()
            .map(|p| db.query_path_info(&sp(p)).unwrap())
            .collect()
    };
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let pool = Arc::clone(&pool);
            let paths = fx.paths.all.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                for round in 0..20 {
                    let k = (i + round) % paths.len();
                    let got = pool
                        .with_conn(|db| db.query_path_info(&sp(&paths[k])))
                        .expect("query");
                    assert_eq!(got, expected[k]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread panicked");
    }
    // An error inside the closure is passed through and the connection stays usable.
    let err = pool
        .with_conn(|db| db.query_realisation("not-an-id"))
        .unwrap_err();
    assert!(
        matches!(err, harmonia_store_db::DbError::InvalidDrvOutput { .. }),
        "{err}"
    );
    assert!(
        pool.with_conn(|db| db.is_valid_path(&sp(&fx.paths.top)))
            .unwrap()
    );
}

#[test]
fn realisations_match_nix_realisation_info() {
    let store = ca_store();
    let file = write_nix(&store, "ca.nix", CA_NIX);
    store.run(
        store
            .nix("nix-build")
            .arg("--store")
            .arg(store.root())
            .arg("--no-out-link")
            .arg(&file),
    );
    let db = open_ro(&store);
    let mut checked = 0;
    let mut with_dependency = 0;
    for attr in ["a", "b"] {
        let drv = instantiate(&store, &file, attr);
        let nix = nix_realisations(&store, &drv);
        assert_eq!(nix.len(), 1, "{nix:?}");
        for expected in nix {
            let id = expected["id"].as_str().expect("id");
            let r = db
                .query_realisation(id)
                .expect("query")
                .unwrap_or_else(|| panic!("{id} not found"));
            assert_eq!(r.id.to_string(), id);
            assert_eq!(
                r.out_path.to_string(),
                expected["outPath"].as_str().unwrap()
            );
            let sigs: Vec<&str> = expected["signatures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            assert_eq!(r.signatures, sigs);
            let deps: BTreeMap<String, String> = expected["dependentRealisations"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let ours: BTreeMap<String, String> = r
                .dependent_realisations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(ours, deps, "dependent realisations of {id}");
            with_dependency += usize::from(!deps.is_empty());
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
    assert_eq!(
        with_dependency, 1,
        "ca-b should depend on ca-a's realisation"
    );
    // Unknown ids are absent.
    let unknown = format!("sha256:{}!out", "0".repeat(64));
    assert_eq!(db.query_realisation(&unknown).unwrap(), None);
}

#[test]
fn realisation_query_without_ca_tables_is_none() {
    let fx = standard_fixture();
    let db: StoreDb = open_ro(&fx.store);
    let id = format!("sha256:{}!out", "1".repeat(64));
    assert_eq!(db.query_realisation(&id).unwrap(), None);
}

#[test]
fn derivation_outputs_parsed_from_drv_files_match_the_rows_nix_wrote() {
    let store = ca_store();
    let ca = write_nix(&store, "ca.nix", CA_NIX);
    store.run(
        store
            .nix("nix-build")
            .arg("--store")
            .arg(store.root())
            .arg("--no-out-link")
            .arg(&ca),
    );
    let multi = write_nix(
        &store,
        "multi.nix",
        r#"derivation {
          name = "multi";
          system = builtins.currentSystem;
          builder = "/bin/sh";
          outputs = [ "out" "dev" "lib" ];
          args = [ "-c" "echo \"quote\" > $out; echo > $dev; echo > $lib" ];
        }"#,
    );
    instantiate(&store, &multi, "");
    let db = open_ro(&store);
    let drvs: Vec<_> = db
        .query_all_valid_paths()
        .unwrap()
        .into_iter()
        .filter(|p| full(p).ends_with(".drv"))
        .collect();
    assert!(drvs.len() >= 4, "{drvs:?}");
    let (mut with_outputs, mut floating) = (0, 0);
    for drv in &drvs {
        let text = std::fs::read(store.real_path(&full(drv))).unwrap();
        let parsed = harmonia_store_db::parse_derivation_outputs(&StoreDir::default(), &text)
            .expect("parse");
        assert_eq!(
            parsed,
            db.query_derivation_outputs(drv).unwrap(),
            "outputs of {drv}"
        );
        if parsed.is_empty() {
            floating += 1
        } else {
            with_outputs += 1
        }
        if full(drv).ends_with("-multi.drv") {
            assert_eq!(
                parsed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                ["dev", "lib", "out"]
            );
        }
    }
    assert!(
        with_outputs >= 1 && floating >= 2,
        "{with_outputs} with outputs, {floating} floating"
    );
}

#[test]
fn read_only_connection_sees_what_a_running_nix_daemon_commits() {
    let store = FixtureStore::new();
    let socket = store.temp_root().join("daemon.sock");
    let mut daemon_cmd = store.nix("nix-daemon");
    daemon_cmd
        .arg("--store")
        .arg(store.root())
        .env("NIX_DAEMON_SOCKET_PATH", &socket);
    let _daemon = harmonia_test_support::KillOnDrop::spawn(&mut daemon_cmd);
    assert!(
        harmonia_test_support::wait_for_path(&socket, std::time::Duration::from_secs(30)),
        "nix-daemon did not create its socket"
    );
    let db = open_ro(&store);
    let pool = StoreDbPool::new(store.db_path(), StoreDir::default(), 2).expect("pool");
    let url = format!("unix://{}", socket.display());
    for i in 0..3 {
        let src = store.scratch_dir().join(format!("via-daemon-{i}.txt"));
        std::fs::write(&src, format!("added through nix-daemon {i}\n")).unwrap();
        let out = store.run(
            store
                .nix("nix-store")
                .args(["--store", &url, "--add"])
                .arg(&src),
        );
        let path = String::from_utf8(out).unwrap().trim().to_string();
        let info = db
            .query_path_info(&sp(&path))
            .expect("query")
            .expect("visible to our reader");
        let nix = store.run(
            store
                .nix("nix")
                .args(["path-info", "--json", "--store", &url, &path]),
        );
        let nix: serde_json::Value = serde_json::from_slice(&nix).unwrap();
        assert_eq!(normalise(&info_json(&info)), normalise(&nix[0]));
        assert_eq!(
            pool.with_conn(|db| db.query_path_info(&sp(&path))).unwrap(),
            Some(info)
        );
    }
    assert_eq!(db.query_all_valid_paths().unwrap().len(), 3);
}
