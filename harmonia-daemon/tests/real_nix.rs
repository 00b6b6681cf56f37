//! The real Nix 2.8 client (protocol 1.34) against harmonia-daemon serving a fixture chroot store, with the
//! store's own answers (read directly by Nix from the chroot) as the oracle.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Daemon, client, fails, json, lines, ok, ssh_client, store_entries};
use harmonia_test_support::{FixtureStore, standard_fixture};
use serde_json::Value;

/// `nix path-info --json` through the daemon, `.drv` paths with `--derivation` like the oracle does.
fn daemon_path_info(store: &FixtureStore, d: &Daemon, paths: &[String]) -> Value {
    let mut items = Vec::new();
    for drv in [false, true] {
        let group: Vec<&String> = paths
            .iter()
            .filter(|p| p.ends_with(".drv") == drv)
            .collect();
        if group.is_empty() {
            continue;
        }
        let mut cmd = client(store, d, "nix");
        cmd.args(["path-info", "--json"]);
        if drv {
            cmd.arg("--derivation");
        }
        match json(&ok(cmd.args(group))) {
            Value::Array(v) => items.extend(v),
            other => panic!("not an array: {other}"),
        }
    }
    items.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Value::Array(items)
}

#[test]
fn path_info_json_equals_the_stores_own() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    let ours = daemon_path_info(&f.store, &d, &f.paths.all);
    let refs: Vec<&str> = f.paths.all.iter().map(String::as_str).collect();
    let theirs = f.store.path_info(&refs);
    assert_eq!(ours.as_array().map(Vec::len), Some(f.paths.all.len()));
    assert_eq!(ours, theirs);
}

#[test]
fn nix_store_queries_match() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    let direct = |args: &[&str]| {
        lines(&ok(f
            .store
            .nix("nix-store")
            .arg("--store")
            .arg(f.store.root())
            .args(args)))
    };
    let through = |args: &[&str]| lines(&ok(client(&f.store, &d, "nix-store").args(args)));
    let p = &f.paths;
    for args in [
        vec!["-q", "--references", &p.top],
        vec!["-q", "--referrers", &p.dep],
        vec!["-q", "--deriver", &p.top],
        vec!["-q", "-R", &p.top],
        vec!["-q", "-R", &p.top_drv],
        vec!["-q", "--hash", &p.big_file],
        vec!["-q", "--size", &p.tree],
        vec!["-q", "--references", &p.text_file],
    ] {
        let expected = direct(&args);
        assert_eq!(through(&args), expected, "nix-store {args:?}");
    }
    // Not vacuous: these answers carry real content.
    assert_eq!(
        through(&["-q", "--references", &p.top]),
        vec![p.dep.clone()]
    );
    assert_eq!(
        through(&["-q", "--deriver", &p.top]),
        vec![p.top_drv.clone()]
    );
}

#[test]
fn path_info_all_lists_every_path() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    let mut ours = lines(&ok(client(&f.store, &d, "nix").args(["path-info", "--all"])));
    let mut theirs = lines(&ok(f
        .store
        .nix("nix")
        .args(["path-info", "--all", "--store"])
        .arg(f.store.root())));
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    for p in &f.paths.all {
        assert!(ours.contains(p), "{p} missing from --all");
    }
}

#[test]
fn dump_path_equals_nix_store_dump() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    for p in [
        &f.paths.tree,
        &f.paths.big_file,
        &f.paths.executable,
        &f.paths.top,
    ] {
        let ours = ok(ssh_client(&f.store, &d, "nix").args(["store", "dump-path", p]));
        assert!(ours == f.store.dump(p), "NAR of {p} differs");
    }
}

#[test]
fn store_verify_passes_and_catches_corruption() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    ok(ssh_client(&f.store, &d, "nix").args(["store", "verify", "--all"]));
    // Corrupt one file behind the database's back: verify through the daemon must notice.
    let real = f.store.real_path(&f.paths.text_file);
    let mut perms = std::fs::metadata(&real).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&real, perms).unwrap();
    std::fs::write(&real, b"tampered\n").unwrap();
    let err = fails(ssh_client(&f.store, &d, "nix").args(["store", "verify", &f.paths.text_file]));
    assert!(err.contains("was modified"), "{err}");
}

#[test]
fn add_file_and_directory_with_symlink() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    let reference = FixtureStore::new();
    let src = f.store.scratch_dir().join("to-add");
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("file.txt"), b"added through harmonia-daemon\n").unwrap();
    std::fs::write(src.join("dir/sub/data"), vec![42u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("sub/data", src.join("dir/link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("dir/abs-link")).unwrap();

    for item in ["file.txt", "dir"] {
        let path = src.join(item);
        let ours = lines(&ok(client(&f.store, &d, "nix-store")
            .arg("--add")
            .arg(&path)));
        let expected = reference.add_path(&path);
        assert_eq!(ours, vec![expected.clone()], "store path of {item}");
        assert!(
            f.store.dump(&expected) == reference.dump(&expected),
            "content of {item}"
        );
        // The real Nix sees it in the chroot store, with the same metadata as its own add.
        let mut theirs = f.store.path_info(&[&expected]);
        let mut want = reference.path_info(&[&expected]);
        for v in [&mut theirs, &mut want] {
            v[0].as_object_mut().unwrap().remove("registrationTime");
        }
        assert_eq!(theirs, want);
    }
    // Flat and non-sha256 recursive content addressing (AddToStore's "fixed:sha256" / "fixed:r:sha1").
    for args in [
        vec!["--add-fixed", "sha256"],
        vec!["--add-fixed", "--recursive", "sha1"],
    ] {
        let path = src.join("file.txt");
        let ours = lines(&ok(client(&f.store, &d, "nix-store")
            .args(&args)
            .arg(&path)));
        let expected = lines(&ok(reference
            .nix("nix-store")
            .arg("--store")
            .arg(reference.root())
            .args(&args)
            .arg(&path)));
        assert_eq!(ours, expected, "{args:?}");
        let ca = |s: &FixtureStore| s.path_info(&[&expected[0]])[0]["ca"].clone();
        assert_eq!(ca(&f.store), ca(&reference), "{args:?}");
    }
    f.store
        .verify_contents()
        .expect("nix-store --verify --check-contents");
}

#[test]
fn nix_copy_closure_into_daemon() {
    let src = standard_fixture();
    let dst = FixtureStore::new();
    let d = Daemon::start(&dst, "");
    let p = &src.paths;
    ok(src
        .store
        .nix("nix")
        .args(["copy", "--no-check-sigs", "--store"])
        .arg(src.store.root())
        .args(["--to", &d.url(), &p.top, &p.tree, &p.big_file]));
    let closure = [&p.top, &p.dep, &p.tree, &p.big_file];
    for q in closure {
        assert!(dst.dump(q) == src.store.dump(q), "content of {q}");
    }
    let strip = |mut v: Value| {
        for item in v.as_array_mut().unwrap() {
            let o = item.as_object_mut().unwrap();
            o.remove("registrationTime");
            o.remove("ultimate");
        }
        v
    };
    let qs: Vec<&str> = closure.iter().map(|s| s.as_str()).collect();
    assert_eq!(strip(dst.path_info(&qs)), strip(src.store.path_info(&qs)));
    dst.verify_contents()
        .expect("nix-store --verify --check-contents");
    // Copying again is a no-op that still succeeds.
    ok(src
        .store
        .nix("nix")
        .args(["copy", "--no-check-sigs", "--store"])
        .arg(src.store.root())
        .args(["--to", &d.url(), &p.top]));
}

#[test]
fn sixteen_clients_at_once() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    let expected_dump = f.store.dump(&f.paths.tree);
    let expected_closure = lines(&ok(f
        .store
        .nix("nix-store")
        .arg("--store")
        .arg(f.store.root())
        .args(["-q", "-R", &f.paths.top_drv])));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (f, d) = (&f, &d);
                let (dump, closure) = (&expected_dump, &expected_closure);
                s.spawn(move || {
                    if i % 2 == 0 {
                        let out = ok(ssh_client(&f.store, d, "nix").args([
                            "store",
                            "dump-path",
                            &f.paths.tree,
                        ]));
                        assert!(out == *dump);
                    } else {
                        let out = lines(&ok(client(&f.store, d, "nix-store").args([
                            "-q",
                            "-R",
                            &f.paths.top_drv,
                        ])));
                        assert_eq!(&out, closure);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client thread");
        }
    });
}

#[test]
fn garbage_and_truncated_handshakes_do_not_hurt() {
    let f = standard_fixture();
    let mut d = Daemon::start(&f.store, "");
    let mut seed: u64 = 0x1234_5678_9abc_def0;
    for round in 0..20 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut junk = vec![0u8; 64 + round * 37];
        for b in junk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        if round % 4 == 0 {
            // A truncated handshake: half of WORKER_MAGIC_1.
            junk = 0x6e697863u64.to_le_bytes()[..4].to_vec();
        } else if round % 4 == 1 {
            // Magic, then an absurd client version and nothing else.
            junk = [0x6e697863u64.to_le_bytes(), u64::MAX.to_le_bytes()].concat();
        }
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // The daemon answers (maybe) and hangs up; it must not hang.
        let mut sink = Vec::new();
        let r = s.read_to_end(&mut sink);
        assert!(
            r.is_ok(),
            "daemon did not close a garbage connection: {r:?}"
        );
    }
    // A connection that never says anything does not block others.
    let _idle = UnixStream::connect(&d.socket).unwrap();
    assert!(d.is_running());
    let out = lines(&ok(client(&f.store, &d, "nix-store").args([
        "-q",
        "--references",
        &f.paths.top,
    ])));
    assert_eq!(out, vec![f.paths.dep.clone()]);
}

#[test]
fn nar_with_wrong_hash_is_refused_and_leaves_nothing() {
    let src = standard_fixture();
    let dst = FixtureStore::new();
    let d = Daemon::start(&dst, "");
    // Corrupt the source behind its database's back: nix copy then sends a NAR that does not match the
    // hash it claims for it.
    let real = src.store.real_path(&src.paths.text_file);
    let mut perms = std::fs::metadata(&real).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&real, perms).unwrap();
    std::fs::write(&real, b"not what the database says\n").unwrap();
    let before = store_entries(&dst.store_dir());
    let err = fails(
        src.store
            .nix("nix")
            .args(["copy", "--store"])
            .arg(src.store.root())
            .args(["--to", &d.url(), &src.paths.text_file]),
    );
    assert!(err.contains("mismatch"), "{err}");
    assert_eq!(store_entries(&dst.store_dir()), before);
    let all = lines(&ok(client(&dst, &d, "nix").args(["path-info", "--all"])));
    assert!(all.is_empty(), "{all:?}");
    // And the daemon still serves: a good path goes through.
    ok(src
        .store
        .nix("nix")
        .args(["copy", "--store"])
        .arg(src.store.root())
        .args(["--to", &d.url(), &src.paths.executable]));
    assert_eq!(
        lines(&ok(client(&dst, &d, "nix").args(["path-info", "--all"]))),
        vec![src.paths.executable.clone()]
    );
}

#[test]
fn untrusted_users_need_signatures_or_content_addresses() {
    let src = standard_fixture();
    let dst = FixtureStore::new();
    // Nobody is trusted (we run as root in CI, which would otherwise be).
    let d = Daemon::start(&dst, "trusted_users = []");
    let err = fails(
        src.store
            .nix("nix")
            .args(["copy", "--store"])
            .arg(src.store.root())
            .args(["--to", &d.url(), &src.paths.dep]),
    );
    assert!(err.contains("lacks a signature by a trusted key"), "{err}");
    // Content-addressed adds are fine.
    let file = dst.scratch_dir().join("ca.txt");
    std::fs::write(&file, b"content addressed\n").unwrap();
    let added = lines(&ok(client(&dst, &d, "nix-store").arg("--add").arg(&file)));
    assert_eq!(added.len(), 1);
    // Signed by a key the daemon trusts: accepted.
    let (secret, public) =
        harmonia_test_support::generate_signing_key(dst.scratch_dir(), "test-key-1");
    ok(src
        .store
        .nix("nix")
        .args(["store", "sign", "--store"])
        .arg(src.store.root())
        .arg("--key-file")
        .arg(&secret)
        .arg(&src.paths.dep));
    drop(d);
    let d = Daemon::start(
        &dst,
        &format!("trusted_users = []\ntrusted_public_keys = [{public:?}]"),
    );
    ok(src
        .store
        .nix("nix")
        .args(["copy", "--store"])
        .arg(src.store.root())
        .args(["--to", &d.url(), &src.paths.dep]));
    assert!(dst.dump(&src.paths.dep) == src.store.dump(&src.paths.dep));
}

#[test]
fn builds_are_refused_by_name_and_the_daemon_keeps_serving() {
    let f = standard_fixture();
    let d = Daemon::start(&f.store, "");
    // Realising what is already valid needs no build.
    let out = lines(&ok(
        client(&f.store, &d, "nix-store").args(["-r", &f.paths.top_drv])
    ));
    assert_eq!(out, vec![f.paths.top.clone()]);
    let err = fails(client(&f.store, &d, "nix-store").args(["--gc", "--print-dead"]));
    assert!(err.contains("CollectGarbage"), "{err}");
    let out = lines(&ok(client(&f.store, &d, "nix-store").args([
        "-q",
        "--hash",
        &f.paths.tree,
    ])));
    assert_eq!(out.len(), 1);
}
