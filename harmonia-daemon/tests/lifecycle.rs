//! Start-up, shutdown, configuration errors, access control and interrupted adds, with the real binary.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, client, fails, lines, ok, store_entries};
use harmonia_test_support::{FixtureStore, standard_fixture};

fn run_with_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("daemon.toml");
    std::fs::write(&config, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_harmonia-daemon"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configs_say_what_to_change() {
    let (ok, err) = run_with_config("sokcet_path = \"/tmp/x\"\n");
    assert!(!ok);
    assert!(err.contains("sokcet_path"), "{err}");
    let store = FixtureStore::new();
    let (ok, err) = run_with_config(&format!(
        "socket_path = \"/tmp/never-created\"\nreal_store_dir = {:?}\ndb_path = \"/nonexistent/db.sqlite\"\n",
        store.store_dir()
    ));
    assert!(!ok);
    assert!(err.contains("db_path"), "{err}");
    let (ok, err) = run_with_config("real_store_dir = \"/nonexistent/nix/store\"\n");
    assert!(!ok);
    assert!(err.contains("real_store_dir"), "{err}");
}

#[test]
fn start_up_removes_leftovers_and_sigterm_shuts_down_cleanly() {
    let store = FixtureStore::new();
    let leftover = store.store_dir().join(".harmonia-tmp-1-1");
    std::fs::create_dir_all(leftover.join("sub")).expect("mkdir");
    std::fs::write(leftover.join("sub/file"), b"half a NAR").expect("write");
    std::fs::set_permissions(leftover.join("sub"), std::fs::Permissions::from_mode(0o555))
        .expect("chmod");
    let mut d = Daemon::start(&store, "");
    assert!(!leftover.exists(), "start-up left {}", leftover.display());
    // An idle client does not keep the daemon alive past its grace period.
    let _idle = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    let status = d.terminate().expect("daemon did not exit after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
fn users_outside_allowed_users_are_refused_with_a_reason() {
    let f = standard_fixture();
    let d = Daemon::start(
        &f.store,
        "trusted_users = []\nallowed_users = [\"nobody-harmonia-test\"]",
    );
    let err = fails(client(&f.store, &d, "nix").args(["path-info", &f.paths.top]));
    assert!(err.contains("not allowed to connect"), "{err}");
}

#[test]
fn an_interrupted_add_leaves_nothing_behind() {
    let src = standard_fixture();
    let dst = FixtureStore::new();
    let d = Daemon::start(&dst, "");
    let before = store_entries(&dst.store_dir());
    let nar = src.store.dump(&src.paths.big_file);
    let info = src.store.path_info(&[&src.paths.big_file]);
    let info = &info[0];
    // Handshake at 1.34, AddToStoreNar, half the NAR in one frame, then hang up.
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    let mut w = Vec::new();
    let put_u64 = |w: &mut Vec<u8>, v: u64| w.extend_from_slice(&v.to_le_bytes());
    let put_str = |w: &mut Vec<u8>, v: &str| {
        w.extend_from_slice(&(v.len() as u64).to_le_bytes());
        w.extend_from_slice(v.as_bytes());
        w.resize(w.len() + (8 - v.len() % 8) % 8, 0);
    };
    put_u64(&mut w, 0x6e69_7863);
    put_u64(&mut w, 0x122);
    put_u64(&mut w, 0);
    put_u64(&mut w, 0);
    put_u64(&mut w, 39);
    put_str(&mut w, &src.paths.big_file);
    put_str(&mut w, "");
    let hash = info["narHash"].as_str().expect("narHash");
    put_str(&mut w, hash);
    put_u64(&mut w, 0); // references
    put_u64(&mut w, 0); // registration time
    put_u64(&mut w, info["narSize"].as_u64().expect("narSize"));
    put_u64(&mut w, 0); // ultimate
    put_u64(&mut w, 0); // signatures
    put_str(&mut w, info["ca"].as_str().unwrap_or(""));
    put_u64(&mut w, 0); // repair
    put_u64(&mut w, 1); // dontCheckSigs
    let half = &nar[..nar.len() / 2];
    put_u64(&mut w, half.len() as u64);
    w.extend_from_slice(half);
    s.write_all(&w).expect("write");
    drop(s);
    // The daemon notices the hang-up and removes the partial tree.
    let mut clean = false;
    for _ in 0..200 {
        if store_entries(&dst.store_dir()) == before {
            clean = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        clean,
        "left behind: {:?}\n{}",
        store_entries(&dst.store_dir()),
        d.log()
    );
    let all = lines(&ok(client(&dst, &d, "nix").args(["path-info", "--all"])));
    assert!(all.is_empty(), "{all:?}");
}
