//! Listeners and start-up: unix sockets, TLS (RSA and EC keys), configuration errors.

mod common;

use std::process::Command;
use std::sync::OnceLock;

use common::{Options, Server, curl, get, narinfo_field, output, self_signed_cert};
use harmonia_test_support::{FixtureStore, StandardFixture, hash_part};

fn fixture() -> &'static StandardFixture {
    static FIXTURE: OnceLock<StandardFixture> = OnceLock::new();
    FIXTURE.get_or_init(common::static_fixture)
}

/// SIGTERM stops accepting connections but lets a download in flight finish, then exits.
#[test]
fn sigterm_drains_downloads_in_flight() {
    // Far bigger than what the kernel's socket buffers can absorb, so the server is still sending when
    // the signal arrives.
    let store = FixtureStore::new();
    let src = tempfile::tempdir().expect("temp dir");
    let big = src.path().join("big");
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&big, block.repeat(64)).expect("write");
    let path = store.add_path(&big);
    let mut server = Server::start(&store, Options::default());
    let ni = get(&server, &format!("/{}.narinfo", hash_part(&path)));
    let url = narinfo_field(&ni.text(), "URL").expect("URL").to_owned();
    let size: usize = narinfo_field(&ni.text(), "NarSize")
        .expect("NarSize")
        .parse()
        .expect("NarSize");
    // About 3 s at 24 MB/s: the signal arrives while the body is being sent.
    let nar_url = format!("{}/{url}", server.url);
    let slow = std::thread::spawn(move || {
        Command::new("curl")
            .args(["-s", "--limit-rate", "24M", "-o", "-", "-w", "%{http_code}"])
            .arg(nar_url)
            .output()
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    let killed = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // No new connections once the signal arrived.
    let refused = std::net::TcpStream::connect(("127.0.0.1", server.port));
    assert!(refused.is_err(), "still accepting after SIGTERM");
    let out = slow.join().expect("download thread").expect("curl");
    let body = &out.stdout[..out.stdout.len().saturating_sub(3)];
    assert_eq!(&out.stdout[body.len()..], b"200", "{}", server.log());
    assert_eq!(
        body.len(),
        size,
        "the download was cut short; log:\n{}",
        server.log()
    );
    assert!(
        body == &store.dump(&path)[..],
        "the NAR differs from nix-store --dump"
    );
    for _ in 0..100 {
        if !server.alive() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!server.alive(), "the server did not exit after draining");
}

#[test]
fn unix_socket() {
    let f = fixture();
    let server = Server::start(
        &f.store,
        Options {
            unix: true,
            ..Options::default()
        },
    );
    let res = get(&server, "/nix-cache-info");
    assert_eq!(res.status, 200);
    assert!(res.text().starts_with("StoreDir: /nix/store\n"));
    let ni = get(&server, &format!("/{}.narinfo", hash_part(&f.paths.top)));
    assert_eq!(ni.status, 200);
}

#[test]
fn tls_with_pkcs8_rsa_and_sec1_keys() {
    let f = fixture();
    let certs = tempfile::tempdir().expect("tempdir");
    for kind in ["rsa", "rsa-pkcs1", "ec", "ec-sec1"] {
        let (cert, key) = self_signed_cert(certs.path(), kind);
        let cert_arg = cert.display().to_string();
        let server = Server::start(
            &f.store,
            Options {
                tls: Some((cert.clone(), key)),
                ..Options::default()
            },
        );
        let res = curl(&server, "/nix-cache-info", &["--cacert", &cert_arg]);
        assert_eq!(res.status, 200, "{kind}");
        // HTTP/2 over ALPN as well.
        let h2 = curl(
            &server,
            &format!("/{}.narinfo", hash_part(&f.paths.top)),
            &["--cacert", &cert_arg, "--http2"],
        );
        assert_eq!(h2.status, 200, "{kind} h2");
        // Plain HTTP on the TLS port is refused (no response).
        let raw = common::raw_request(
            server.port,
            b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(
            !String::from_utf8_lossy(&raw).contains("StoreDir"),
            "{kind}"
        );
        // Real Nix over HTTPS.
        let dest = FixtureStore::with_config(&format!(
            "trusted-public-keys = {}\nrequire-sigs = true\n",
            server.public_key
        ));
        let out = output(
            dest.nix("nix")
                .env("NIX_SSL_CERT_FILE", &cert)
                .args(["copy", "--from", &server.url, "--to"])
                .arg(dest.root())
                .arg(&f.paths.top),
        );
        assert!(
            out.status.success(),
            "nix copy over TLS ({kind}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn start_with_config(config: &str, env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harmonia-cache"));
    cmd.env("CONFIG_FILE", &path)
        .env_remove("SIGN_KEY_PATHS")
        .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
        .env_remove("CACHE_DIRECTORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(&mut cmd)
}

/// A configuration, extra environment, and the words its error must contain.
type StartCase = (String, Vec<(&'static str, &'static str)>, Vec<&'static str>);

#[test]
fn start_up_errors_name_the_key_or_path() {
    let f = fixture();
    let store = format!("real_nix_store = {:?}\n", f.store.store_dir());
    let cases: Vec<StartCase> = vec![
        (format!("{store}bogus_key = 1\n"), vec![], vec!["bogus_key"]),
        (
            format!("{store}priority = \"high\"\n"),
            vec![],
            vec!["priority"],
        ),
        (
            format!("{store}bind = \"nonsense\"\n"),
            vec![],
            vec!["bind"],
        ),
        (
            format!("{store}nix_db_path = \"/nonexistent/db.sqlite\"\n"),
            vec![],
            vec!["/nonexistent/db.sqlite", "nix_db_path"],
        ),
        (
            "real_nix_store = \"/nonexistent/nix/store\"\n".to_owned(),
            vec![],
            vec!["/nonexistent/nix/store", "real_nix_store"],
        ),
        (
            store.clone(),
            vec![("SIGN_KEY_PATHS", "/nonexistent/key.secret")],
            vec!["/nonexistent/key.secret", "sign_key_paths"],
        ),
        (
            format!(
                "{store}tls_cert_path = \"/nonexistent/c.pem\"\ntls_key_path = \"/nonexistent/k.pem\"\nbind = \"127.0.0.1:0\"\n"
            ),
            vec![],
            vec!["/nonexistent/c.pem", "tls_cert_path"],
        ),
        (
            format!(
                "{store}nar_cache_dir = \"/proc/self/harmonia-nars\"\nbind = \"127.0.0.1:0\"\n"
            ),
            vec![],
            vec!["/proc/self/harmonia-nars", "nar_cache_dir"],
        ),
    ];
    for (config, env, needles) in cases {
        let out = start_with_config(&config, &env);
        assert!(!out.status.success(), "started with {config:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(stderr.contains(needle), "{config:?}: {stderr}");
        }
    }
}

#[test]
fn bad_signing_key_file_is_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("bad.secret");
    std::fs::write(&key, "not-a-key").expect("write");
    let out = start_with_config(
        &format!(
            "real_nix_store = {:?}\nsign_key_paths = [{key:?}]\n",
            f.store.store_dir()
        ),
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.secret"), "{stderr}");
    assert!(
        !stderr.contains("not-a-key"),
        "secret material echoed: {stderr}"
    );
}
