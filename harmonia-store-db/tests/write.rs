//! What we register, the real Nix accepts: path-info, queries and `--verify --check-contents`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use harmonia_store_db::{DbError, DrvOutput, Realisation, StoreDb, ValidPathInfo};
use harmonia_store_path::StoreDir;
use harmonia_test_support::{FixtureStore, StandardFixture, standard_fixture};
use rusqlite::Connection;

/// A derivation whose output refers to itself and to `top` (built into the standard fixture; `storePath`
/// gives the string the context that makes `top` an input, so Nix's scanner records the reference).
const SELF_REF_NIX: &str = r#"
derivation {
  name = "self-ref";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "mkdir $out; echo $out > $out/me; echo ${builtins.storePath "@TOP@"} > $out/top" ];
}
"#;

/// The standard fixture plus a self-referencing output; returns it, that output's path and its deriver (which
/// refers to `top` as an input source).
fn fixture_with_self_ref() -> (StandardFixture, String, String) {
    let fx = standard_fixture();
    let file = write_nix(
        &fx.store,
        "self-ref.nix",
        &SELF_REF_NIX.replace("@TOP@", &fx.paths.top),
    );
    let outs = fx.store.build(&file);
    let [out] = outs.as_slice() else {
        panic!("{outs:?}")
    };
    let drv = fx.store.deriver(out).expect("self-ref has a deriver");
    (fx, out.clone(), drv)
}

fn info_of(db: &StoreDb, path: &str) -> ValidPathInfo {
    db.query_path_info(&sp(path))
        .unwrap()
        .unwrap_or_else(|| panic!("{path} not valid"))
}

#[test]
fn registered_copies_are_accepted_by_real_nix() {
    let (fx, self_ref, self_ref_drv) = fixture_with_self_ref();
    let src_db = open_ro(&fx.store);
    let dst = FixtureStore::new();
    let mut paths = fx.paths.all.clone();
    paths.push(self_ref.clone());
    paths.push(self_ref_drv.clone());
    let mut infos: Vec<ValidPathInfo> = paths.iter().map(|p| info_of(&src_db, p)).collect();
    assert!(
        infos.iter().any(|i| i.references.contains(&i.path)),
        "no self-reference in the batch"
    );
    // Signatures are stored and listed like Nix's (a sorted set).
    for info in &mut infos {
        info.signatures = vec![
            "test-2:bbbb".into(),
            "test-1:aaaa".into(),
            "test-2:bbbb".into(),
        ];
    }
    // References among the batch: register dependents before their dependencies.
    infos.reverse();
    for p in &paths {
        copy_store_files(&fx.store, &dst, p);
    }
    // DerivationOutputs rows, as Nix records them when a .drv becomes valid: read from the drv files.
    let mut outputs = Vec::new();
    for drv in paths.iter().filter(|p| p.ends_with(".drv")) {
        let text = std::fs::read(fx.store.real_path(drv)).unwrap();
        for (name, out) in
            harmonia_store_db::parse_derivation_outputs(&StoreDir::default(), &text).unwrap()
        {
            outputs.push((sp(drv), name, out));
        }
    }
    assert_eq!(outputs.len(), 3, "{outputs:?}");
    let mut db = open_rw(&dst);
    db.register_valid_paths_and_outputs(&infos, &outputs)
        .expect("register");

    // nix path-info --json: identical to the source store, apart from the signatures we added.
    let all: Vec<&str> = paths.iter().map(String::as_str).collect();
    let expected = fx.store.path_info(&all);
    let got = dst.path_info(&all);
    for (e, g) in expected
        .as_array()
        .unwrap()
        .iter()
        .zip(got.as_array().unwrap())
    {
        let mut e = normalise(e);
        e.insert(
            "signatures".into(),
            serde_json::json!(["test-1:aaaa", "test-2:bbbb"]),
        );
        assert_eq!(normalise(g), e);
    }
    for p in &paths {
        for q in ["--references", "--referrers", "--deriver"] {
            assert_eq!(
                nix_lines(&dst, "nix-store", &["-q", q, p]),
                nix_lines(&fx.store, "nix-store", &["-q", q, p]),
                "{q} {p}"
            );
        }
        if p.ends_with(".drv") {
            assert_eq!(
                nix_lines(&dst, "nix-store", &["-q", "--outputs", p]),
                nix_lines(&fx.store, "nix-store", &["-q", "--outputs", p])
            );
        }
    }
    dst.verify_contents()
        .expect("nix-store --verify --check-contents refused our registration");
    // Nix keeps working on the database we wrote to.
    let added = dst.add_text("after.txt", b"added by nix after our registration\n");
    assert!(db.is_valid_path(&sp(&added)).unwrap());
    dst.verify_contents()
        .expect("verify after nix added a path");
}

#[test]
fn verify_catches_a_wrong_nar_hash() {
    // The oracle can fail: register a path with another path's hash and Nix must complain.
    let fx = standard_fixture();
    let src_db = open_ro(&fx.store);
    let dst = FixtureStore::new();
    copy_store_files(&fx.store, &dst, &fx.paths.executable);
    let mut info = info_of(&src_db, &fx.paths.executable);
    info.nar_hash = info_of(&src_db, &fx.paths.text_file).nar_hash;
    open_rw(&dst)
        .register_valid_paths(&[info])
        .expect("register");
    let err = dst
        .verify_contents()
        .expect_err("Nix accepted a wrong nar hash");
    assert!(err.contains(&fx.paths.executable), "{err}");
}

#[test]
fn failed_batches_register_nothing() {
    let fx = standard_fixture();
    let src_db = open_ro(&fx.store);
    let dst = FixtureStore::new();
    let dep = info_of(&src_db, &fx.paths.dep);
    let top = info_of(&src_db, &fx.paths.top);
    let text = info_of(&src_db, &fx.paths.text_file);
    let mut db = open_rw(&dst);

    // `top` refers to `dep`, which is neither valid nor in the batch.
    match db.register_valid_paths(&[text.clone(), top.clone()]) {
        Err(DbError::ReferenceNotValid { path, reference }) => {
            assert_eq!(
                (path, reference),
                (fx.paths.top.clone(), fx.paths.dep.clone())
            )
        }
        other => panic!("{other:?}"),
    }
    // A cycle between two paths of the batch.
    let mut dep_cyclic = dep.clone();
    dep_cyclic.references.push(top.path.clone());
    assert!(matches!(
        db.register_valid_paths(&[dep_cyclic, top.clone()]),
        Err(DbError::ReferenceCycle(_))
    ));
    // A content address that does not give the path.
    let mut bad_ca = text.clone();
    bad_ca.ca = info_of(&src_db, &fx.paths.executable).ca;
    assert!(matches!(
        db.register_valid_paths(&[bad_ca]),
        Err(DbError::CaMismatch { .. })
    ));
    let mut bad_sig = text.clone();
    bad_sig.signatures = vec!["two words".into()];
    assert!(matches!(
        db.register_valid_paths(&[bad_sig]),
        Err(DbError::InvalidInput { .. })
    ));

    assert!(
        db.query_all_valid_paths().unwrap().is_empty(),
        "a failed batch left rows behind"
    );
    assert!(nix_all_paths(&dst).is_empty());

    // The same paths in a correct batch go through, and the CA of `text` is accepted as Nix's own.
    db.register_valid_paths(&[top, dep, text])
        .expect("register");
    assert_eq!(nix_all_paths(&dst).len(), 3);
}

#[test]
fn updates_and_signatures_behave_like_nix() {
    let fx = standard_fixture();
    let src_db = open_ro(&fx.store);
    let dst = FixtureStore::new();
    for p in [&fx.paths.dep, &fx.paths.top] {
        copy_store_files(&fx.store, &dst, p);
    }
    let dep = info_of(&src_db, &fx.paths.dep);
    let top = info_of(&src_db, &fx.paths.top);
    let mut db = open_rw(&dst);
    db.register_valid_paths(&[dep.clone(), top.clone()])
        .unwrap();

    db.add_signatures(&top.path, &["b-key:BBBB".into(), "a-key:AAAA".into()])
        .unwrap();
    db.add_signatures(&top.path, &["a-key:AAAA".into(), "c-key:CCCC".into()])
        .unwrap();
    let info = dst.path_info(&[&fx.paths.top]);
    assert_eq!(
        info[0]["signatures"],
        serde_json::json!(["a-key:AAAA", "b-key:BBBB", "c-key:CCCC"])
    );
    assert!(matches!(
        db.add_signatures(&sp(&fx.paths.text_file), &["k:AAAA".into()]),
        Err(DbError::InvalidPath(_))
    ));

    // Re-registering a valid path updates it in place: references (and the referrer's row id) survive,
    // deriver and registration time are kept, as Nix's updatePathInfo does.
    let mut again = dep.clone();
    again.ultimate = false;
    again.registration_time = 12345;
    again.deriver = None;
    again.signatures = vec!["z-key:ZZZZ".into()];
    db.register_valid_paths(&[again]).unwrap();
    let now = info_of(&db, &fx.paths.dep);
    assert!(!now.ultimate);
    assert_eq!(now.signatures, vec!["z-key:ZZZZ".to_string()]);
    assert_eq!(now.registration_time, dep.registration_time);
    assert_eq!(now.deriver, dep.deriver);
    assert_eq!(
        db.query_referrers(&dep.path).unwrap(),
        vec![top.path.clone()]
    );
    dst.verify_contents().expect("verify");
}

#[test]
fn fresh_database_gets_nix_schema_and_nix_accepts_it() {
    // The daemon may start on an empty state directory: we create the database, Nix then uses it.
    let fx = standard_fixture();
    let src_db = open_ro(&fx.store);
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("nix/var/nix/db/db.sqlite");
    let mut db = StoreDb::open_read_write(&db_path, StoreDir::default()).expect("create");
    assert_eq!(
        std::fs::read_to_string(db_path.with_file_name("schema")).unwrap(),
        "10"
    );
    std::fs::create_dir_all(dir.path().join("nix/store")).unwrap();
    let text = fx.paths.text_file.clone();
    harmonia_test_support::run(
        Command::new("cp")
            .arg("-a")
            .arg(fx.store.real_path(&text))
            .arg(dir.path().join(text.trim_start_matches('/'))),
    );
    db.register_valid_paths(&[info_of(&src_db, &text)]).unwrap();
    drop(db);

    // The same tables, columns, indexes and triggers as a database Nix 2.8 created itself.
    let ours = schema_of(&db_path);
    let nix_store = FixtureStore::new();
    assert_eq!(ours, schema_of(&nix_store.db_path()));

    // Real Nix reads it (a FixtureStore-like environment pointed at our directory).
    let out = nix_store
        .nix("nix")
        .args(["path-info", "--json", "--store"])
        .arg(dir.path())
        .arg(&text)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        normalise(&got[0]),
        normalise(&fx.store.path_info(&[&text])[0])
    );
    let out = nix_store
        .nix("nix-store")
        .arg("--store")
        .arg(dir.path())
        .args(["--verify", "--check-contents"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tables, indexes and triggers with their columns, as a comparable value.
fn schema_of(db_path: &std::path::Path) -> BTreeMap<(String, String), Vec<String>> {
    let conn = Connection::open(db_path).unwrap();
    let mut stmt = conn
        .prepare(
            "select type, name from sqlite_master where name not like 'sqlite_%' order by name",
        )
        .unwrap();
    let objects: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    objects
        .into_iter()
        .map(|(ty, name)| {
            let cols = if ty == "trigger" {
                Vec::new()
            } else {
                let pragma = if ty == "table" {
                    "table_info"
                } else {
                    "index_info"
                };
                let mut stmt = conn.prepare(&format!("pragma {pragma}('{name}')")).unwrap();
                stmt.query_map([], |r| {
                    if ty == "table" {
                        let (name, ty): (String, String) = (r.get(1)?, r.get(2)?);
                        Ok(format!(
                            "{name} {ty} notnull={} pk={}",
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(5)?
                        ))
                    } else {
                        Ok(r.get::<_, Option<String>>(2)?.unwrap_or_default())
                    }
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            };
            ((ty, name), cols)
        })
        .collect()
}

#[test]
fn realisations_registered_by_us_are_read_by_nix() {
    let src = ca_store();
    let file = write_nix(&src, "ca.nix", CA_NIX);
    src.run(
        src.nix("nix-build")
            .arg("--store")
            .arg(src.root())
            .arg("--no-out-link")
            .arg(&file),
    );
    let src_db = open_ro(&src);
    let drvs: Vec<String> = ["a", "b"]
        .iter()
        .map(|a| instantiate(&src, &file, a))
        .collect();

    // Copy every path (drvs, their sources, outputs) into a fresh store with ca-derivations on.
    let dst = ca_store();
    let all: Vec<String> = src_db
        .query_all_valid_paths()
        .unwrap()
        .iter()
        .map(full)
        .collect();
    for p in &all {
        copy_store_files(&src, &dst, p);
    }
    let infos: Vec<ValidPathInfo> = all.iter().map(|p| info_of(&src_db, p)).collect();
    let mut db = open_rw(&dst);
    db.register_valid_paths(&infos).unwrap();

    let mut realisations = Vec::new();
    for drv in &drvs {
        for r in nix_realisations(&src, drv) {
            realisations.push(
                src_db
                    .query_realisation(r["id"].as_str().unwrap())
                    .unwrap()
                    .unwrap(),
            );
        }
    }
    // ca-b's realisation depends on ca-a's: registering it first must fail and change nothing.
    realisations.sort_by_key(|r| r.dependent_realisations.len());
    let [a, b] = realisations.as_slice() else {
        panic!("{realisations:?}")
    };
    assert!(matches!(
        db.register_realisation(b),
        Err(DbError::RealisationDependency { .. })
    ));
    assert_eq!(db.query_realisation_by_id(&b.id).unwrap(), None);
    db.register_realisation(a).unwrap();
    let mut b_signed = b.clone();
    b_signed.signatures = vec!["k:SIG".into()];
    db.register_realisation(&b_signed).unwrap();
    db.register_realisation(b).unwrap(); // idempotent; signatures merge
    for drv in &drvs {
        let mut expected = nix_realisations(&src, drv);
        if expected[0]["id"].as_str() == Some(&b.id.to_string()) {
            expected[0]["signatures"] = serde_json::json!(["k:SIG"]);
        }
        assert_eq!(
            nix_realisations(&dst, drv),
            expected,
            "realisations of {drv}"
        );
    }
    // A different output path for an existing id is a conflict.
    let mut conflicting = a.clone();
    conflicting.out_path = b.out_path.clone();
    assert!(matches!(
        db.register_realisation(&conflicting),
        Err(DbError::RealisationConflict { .. })
    ));
    // An output path that is not valid is refused.
    let unknown: DrvOutput = format!("sha256:{}!out", "ab".repeat(32)).parse().unwrap();
    let missing = Realisation {
        id: unknown,
        out_path: sp("/nix/store/00000000000000000000000000000000-missing"),
        signatures: vec![],
        dependent_realisations: BTreeMap::new(),
    };
    assert!(matches!(
        db.register_realisation(&missing),
        Err(DbError::InvalidPath(_))
    ));
}

#[test]
fn realisations_table_is_created_on_demand() {
    // A store Nix made without ca-derivations has no Realisations table; registering one creates it.
    let fx = standard_fixture();
    let mut db = open_rw(&fx.store);
    let r = Realisation {
        id: format!("sha256:{}!out", "cd".repeat(32)).parse().unwrap(),
        out_path: sp(&fx.paths.top),
        signatures: vec!["k:SIG".into()],
        dependent_realisations: BTreeMap::new(),
    };
    let reader = open_ro(&fx.store);
    assert_eq!(db.query_realisation_by_id(&r.id).unwrap(), None);
    assert_eq!(reader.query_realisation_by_id(&r.id).unwrap(), None);
    db.register_realisation(&r).unwrap();
    assert_eq!(db.query_realisation_by_id(&r.id).unwrap(), Some(r.clone()));
    // A reader that was open before the tables existed sees them now.
    assert_eq!(
        reader.query_realisation_by_id(&r.id).unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        std::fs::read_to_string(fx.store.db_path().with_file_name("ca-schema")).unwrap(),
        "3"
    );
    // Nix with ca-derivations accepts the schema we made.
    let out = fx
        .store
        .nix("nix")
        .args([
            "--extra-experimental-features",
            "ca-derivations",
            "path-info",
            "--store",
        ])
        .arg(fx.store.root())
        .arg(&fx.paths.top)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn registration_interleaves_with_nix_writing_the_same_database() {
    // Our writer and a real nix-store process write at the same time; SQLite's locking (our immediate
    // transactions with a busy timeout, Nix's retries) must serialise them without losing either side.
    let src = FixtureStore::new();
    let dst = FixtureStore::new();
    let ours: Vec<String> = (0..15)
        .map(|i| src.add_text(&format!("ours-{i}"), format!("ours {i}\n").as_bytes()))
        .collect();
    let src_db = open_ro(&src);
    for p in &ours {
        copy_store_files(&src, &dst, p);
    }
    let infos: Vec<ValidPathInfo> = ours.iter().map(|p| info_of(&src_db, p)).collect();
    let mut db = open_rw(&dst);
    // Keep registering (inserts first, then in-place updates) for as long as Nix is adding paths, so that
    // our transactions overlap every one of Nix's.
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut rounds = 0;
    let theirs = std::thread::scope(|s| {
        let nix = s.spawn(|| {
            let added: Vec<String> = (0..15)
                .map(|i| dst.add_text(&format!("theirs-{i}"), format!("theirs {i}\n").as_bytes()))
                .collect();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            added
        });
        while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds == 0 {
            for info in &infos {
                db.register_valid_paths(std::slice::from_ref(info))
                    .expect("register while nix writes");
            }
            rounds += 1;
        }
        nix.join().expect("nix thread")
    });
    assert!(
        rounds > 1,
        "Nix finished before our first round: no overlap was tested"
    );
    let mut expected: Vec<String> = ours.iter().chain(&theirs).cloned().collect();
    expected.sort();
    assert_eq!(nix_all_paths(&dst), expected);
    assert_eq!(
        db.query_all_valid_paths()
            .unwrap()
            .iter()
            .map(full)
            .collect::<Vec<_>>(),
        expected
    );
    dst.verify_contents()
        .expect("verify after concurrent writes");
}

#[test]
fn content_addresses_are_stored_as_nix_renders_them() {
    // A client may send the CA hash in base16; Nix parses it and stores its canonical (nix-base32) form.
    let fx = standard_fixture();
    let src_db = open_ro(&fx.store);
    let dst = FixtureStore::new();
    copy_store_files(&fx.store, &dst, &fx.paths.text_file);
    let mut info = info_of(&src_db, &fx.paths.text_file);
    let canonical = info.ca.clone().expect("fixture text file has a CA");
    let ca: harmonia_store_path::ContentAddress = canonical.parse().unwrap();
    let base16 = format!("fixed:r:{}", ca.hash().to_typed_base16());
    assert_ne!(base16, canonical);
    info.ca = Some(base16);
    open_rw(&dst).register_valid_paths(&[info]).unwrap();
    assert_eq!(
        dst.path_info(&[&fx.paths.text_file])[0]["ca"],
        serde_json::json!(canonical)
    );
    dst.verify_contents().expect("verify");
}

#[test]
fn invalidated_paths_are_gone_for_nix_too() {
    let (fx, self_ref, self_ref_drv) = fixture_with_self_ref();
    let mut db = open_rw(&fx.store);
    let before = nix_all_paths(&fx.store);

    // `dep` is still referenced by `top` (and `top` by `self-ref`): refused, nothing changes.
    match db.invalidate_paths(&[sp(&fx.paths.dep)]) {
        Err(DbError::PathInUse { path, referrer }) => assert_eq!(
            (path, referrer),
            (fx.paths.dep.clone(), fx.paths.top.clone())
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        db.invalidate_paths(&[sp(&fx.paths.dep), sp(&fx.paths.top)]),
        Err(DbError::PathInUse { .. })
    ));
    assert_eq!(nix_all_paths(&fx.store), before);

    // The whole chain at once, in any order; the self-reference goes with its path.
    let gone = [&fx.paths.dep, &self_ref_drv, &self_ref, &fx.paths.top];
    db.invalidate_paths(&gone.map(|p| sp(p)))
        .expect("invalidate");
    let mut expected: Vec<String> = before.into_iter().filter(|p| !gone.contains(&p)).collect();
    expected.sort();
    assert_eq!(nix_all_paths(&fx.store), expected);
    assert!(db.query_referrers(&sp(&fx.paths.dep)).unwrap().is_empty());
    assert!(
        db.query_valid_derivers(&sp(&fx.paths.top))
            .unwrap()
            .contains(&sp(&fx.paths.top_drv)),
        "the drv's output rows stay"
    );
    // Not valid any more: ignored.
    db.invalidate_paths(&[sp(&fx.paths.dep)])
        .expect("invalidating an invalid path");
    // Nix agrees the database is consistent, and can register the path again itself.
    let out = fx
        .store
        .nix("nix-store")
        .arg("--store")
        .arg(fx.store.root())
        .arg("--verify")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
