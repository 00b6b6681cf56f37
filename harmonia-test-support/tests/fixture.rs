//! Checks that the standard fixture really has every shape the other crates' tests rely on.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use harmonia_test_support::*;

fn info_of<'a>(infos: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    infos
        .as_array()
        .and_then(|a| a.iter().find(|o| o["path"] == path))
        .unwrap_or_else(|| panic!("{path} missing from path-info {infos}"))
}

#[test]
fn standard_fixture_has_every_shape() {
    let StandardFixture { store, paths } = standard_fixture();
    let all: Vec<&str> = paths.all.iter().map(String::as_str).collect();
    assert_eq!(all.len(), 8);

    // Every path is valid in the store's db and exists on disk.
    let infos = store.path_info(&all);
    for p in &all {
        let info = info_of(&infos, p);
        assert!(info["narSize"].as_u64().unwrap() > 0, "{info}");
        assert!(
            store.real_path(p).symlink_metadata().is_ok(),
            "{p} not on disk"
        );
        // The dump is what path-info says (size only; hashing is other crates' business).
        assert_eq!(
            store.dump(p).len() as u64,
            info["narSize"].as_u64().unwrap(),
            "{p}"
        );
    }

    // top references dep and was built by top_drv; dep has no references.
    let top = info_of(&infos, &paths.top);
    assert_eq!(top["references"], serde_json::json!([paths.dep.clone()]));
    assert_eq!(top["deriver"], paths.top_drv.as_str());
    let dep = info_of(&infos, &paths.dep);
    assert_eq!(dep["references"], serde_json::json!([]));
    assert_eq!(dep["deriver"], paths.dep_drv.as_str());
    assert!(paths.top_drv.ends_with("-fixture-top.drv"));
    assert!(store.real_path(&paths.top).is_dir());
    let dep_path_file =
        fs::read_to_string(store.real_path(&paths.top).join("share/dep-path")).unwrap();
    assert_eq!(dep_path_file.trim(), paths.dep);

    // top's build log exists, bzip2-compressed, where Nix keeps it.
    let log = store.log_path(&paths.top_drv);
    assert!(log.starts_with(store.log_dir()));
    let bytes = fs::read(&log).unwrap_or_else(|e| panic!("no build log at {}: {e}", log.display()));
    assert!(
        bytes.starts_with(b"BZh"),
        "not bzip2: {:?}",
        &bytes[..bytes.len().min(8)]
    );
    let out = run(store
        .nix("nix")
        .args(["log", "--store"])
        .arg(store.root())
        .arg(&paths.top_drv));
    assert!(String::from_utf8_lossy(&out.stdout).contains(TOP_BUILD_LOG_LINE));

    // The tree: symlinks, empty file/dir, exec bit, non-ASCII names, byte-ordered names.
    let tree = store.real_path(&paths.tree);
    assert_eq!(
        fs::read_link(tree.join(TREE_SYMLINK_OUTSIDE)).unwrap(),
        Path::new(TREE_SYMLINK_OUTSIDE_TARGET)
    );
    assert!(!TREE_SYMLINK_OUTSIDE_TARGET.starts_with(LOGICAL_STORE_DIR));
    assert_eq!(
        fs::read_link(tree.join(TREE_SYMLINK_RELATIVE)).unwrap(),
        Path::new(TREE_SYMLINK_RELATIVE_TARGET)
    );
    assert_eq!(fs::metadata(tree.join("empty-file")).unwrap().len(), 0);
    assert_eq!(fs::read_dir(tree.join("empty-dir")).unwrap().count(), 0);
    assert!(tree.join("ünïcödé").is_file());
    let mode = fs::metadata(tree.join("nested/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "exec bit lost");
    let ls = store.store_ls(&paths.tree);
    let order: Vec<&String> = ls["entries"]["order"]["entries"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(order.len(), 8, "{ls}");

    // The NAR lists "order" entries sorted by raw bytes ("B" before "a", "ä" last).
    let nar = store.dump(&paths.tree);
    let find = |hay: &[u8], name: &str| {
        let needle = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
        hay.windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap()
    };
    let order_dir = &nar[find(&nar, "order")..];
    let pos = |name: &str| find(order_dir, name);
    assert!(pos("B") < pos("a") && pos("Z") < pos("_x") && pos("z") < pos("ä"));

    // Executable and plain files.
    let exe_mode = fs::metadata(store.real_path(&paths.executable))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(exe_mode & 0o111, 0);
    assert_eq!(
        fs::metadata(store.real_path(&paths.big_file))
            .unwrap()
            .len(),
        BIG_FILE_SIZE as u64
    );
    assert_eq!(
        fs::read(store.real_path(&paths.big_file)).unwrap(),
        pseudo_random_bytes(0x6861_726d_6f6e_6961, BIG_FILE_SIZE)
    );
    assert!(
        fs::read_to_string(store.real_path(&paths.text_file))
            .unwrap()
            .starts_with("Hello")
    );
}

#[test]
fn empty_store_has_a_db_and_nothing_valid() {
    let store = FixtureStore::new();
    assert!(store.db_path().is_file());
    assert!(store.store_dir().is_dir());
    assert!(store.conf_dir().join("nix.conf").is_file());
    let added = store.add_text("x.txt", b"x");
    assert!(added.starts_with("/nix/store/") && added.ends_with("-x.txt"));
    assert_eq!(fs::read(store.real_path(&added)).unwrap(), b"x");
    assert_eq!(hash_part(&added).len(), 32);
}

#[test]
fn binary_cache_copy_and_signing_key() {
    let StandardFixture { store, paths } = standard_fixture();
    let cache = store.temp_root().join("cache");
    store.copy_to_binary_cache(&[&paths.top], &cache);
    // The closure is copied: top and dep each get a narinfo.
    for p in [&paths.top, &paths.dep] {
        let narinfo = fs::read_to_string(cache.join(format!("{}.narinfo", hash_part(p)))).unwrap();
        assert!(narinfo.contains(&format!("StorePath: {p}\n")), "{narinfo}");
        assert!(narinfo.contains("Compression: none"), "{narinfo}");
    }

    let keys = store.temp_root().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let (secret, public) = generate_signing_key(&keys, "test-cache-1");
    assert!(public.starts_with("test-cache-1:"), "{public}");
    assert!(
        fs::read_to_string(&secret)
            .unwrap()
            .starts_with("test-cache-1:")
    );
    let signed = store.temp_root().join("signed");
    store.copy_to_binary_cache_signed(&[&paths.dep], &signed, &secret);
    let narinfo =
        fs::read_to_string(signed.join(format!("{}.narinfo", hash_part(&paths.dep)))).unwrap();
    assert!(narinfo.contains("Sig: test-cache-1:"), "{narinfo}");
}

#[test]
fn failing_nix_command_panics_with_stderr() {
    let store = FixtureStore::new();
    let err = std::panic::catch_unwind(|| {
        store.dump("/nix/store/00000000000000000000000000000000-missing")
    })
    .expect_err("dump of a missing path must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("stderr") && msg.contains("missing"), "{msg}");
}

#[test]
fn network_and_path_helpers() {
    let port = free_port();
    assert!(!wait_for_tcp(port, Duration::from_millis(50)));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    assert!(wait_for_tcp(port, Duration::from_secs(5)));
    drop(listener);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("later");
    assert!(!wait_for_path(&file, Duration::from_millis(50)));
    fs::write(&file, b"").unwrap();
    assert!(wait_for_path(&file, Duration::from_secs(1)));

    assert_eq!(pseudo_random_bytes(1, 100), pseudo_random_bytes(1, 100));
    assert_ne!(pseudo_random_bytes(1, 100), pseudo_random_bytes(2, 100));
}
