//! A store path that changes or vanishes on disk after registration must never produce a silently
//! wrong 200 body: the transfer fails (or the path is a 404).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{Options, Server, get, narinfo_field, output};
use harmonia_test_support::{FixtureStore, hash_part};

fn nar_url(server: &Server, path: &str) -> String {
    let text = get(server, &format!("/{}.narinfo", hash_part(path))).text();
    format!(
        "{}/{}",
        server.url,
        narinfo_field(&text, "URL").expect("URL field")
    )
}

fn make_writable(p: &std::path::Path) {
    let mut perm = std::fs::metadata(p).expect("metadata").permissions();
    perm.set_mode(0o644);
    std::fs::set_permissions(p, perm).expect("chmod");
}

#[test]
fn changed_or_vanished_paths_fail_loudly() {
    let store = FixtureStore::new();
    let grown = store.add_text("grown.txt", b"original contents\n");
    let shrunk = store.add_text("shrunk.txt", &vec![b'x'; 300_000]);
    let vanished = store.add_text("vanished.txt", b"here today\n");
    // A directory whose NAR spans several chunks, changed near its end: the head and the first
    // chunks are already sent when the change shows.
    let dir_src = store.scratch_dir().join("late-change");
    std::fs::create_dir_all(&dir_src).expect("mkdir");
    std::fs::write(dir_src.join("a-big"), vec![7u8; 2 << 20]).expect("write");
    std::fs::write(dir_src.join("z-small"), b"small\n").expect("write");
    let late = store.add_path(&dir_src);
    let server = Server::start(&store, Options::default());
    let urls: Vec<String> = [&grown, &shrunk, &late, &vanished]
        .iter()
        .map(|p| nar_url(&server, p))
        .collect();

    let grown_file = store.real_path(&grown);
    make_writable(&grown_file);
    std::fs::write(&grown_file, b"original contents, and then some more\n").expect("write");
    let shrunk_file = store.real_path(&shrunk);
    make_writable(&shrunk_file);
    std::fs::write(&shrunk_file, b"short\n").expect("write");
    std::fs::remove_file(store.real_path(&vanished)).expect("remove");
    let late_file = store.real_path(&late).join("z-small");
    make_writable(&late_file);
    std::fs::write(&late_file, b"small, but not any more\n").expect("write");

    for url in &urls[..3] {
        let out = output(Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
            url,
        ]));
        // The change shows only while streaming, after the status was decided: the server must
        // cut the connection, before the head (curl: empty reply, 52) or inside the body
        // (curl: partial file, 18).
        let code = out.status.code();
        assert!(
            code == Some(52) || (code == Some(18) && out.stdout == b"200"),
            "{url}: a changed path was not cut short: curl exit {code:?}, status {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let res = get(&server, urls[3].trim_start_matches(&server.url));
    assert_eq!(res.status, 404, "vanished path: {}", res.text());
    // The server is fine afterwards.
    assert_eq!(get(&server, "/nix-cache-info").status, 200);
}
