//! Helpers shared by the integration tests: start the real binary on a fixture store, talk to it.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use harmonia_test_support::{
    FixtureStore, KillOnDrop, StandardFixture, clean_up_after_exit, free_port,
    generate_signing_key, standard_fixture, wait_for_path, wait_for_tcp,
};
use tempfile::TempDir;

/// A running harmonia-cache serving a fixture store.
pub struct Server {
    /// TCP port on 127.0.0.1 (0 for unix-socket servers).
    pub port: u16,
    /// `http://127.0.0.1:PORT` (or `https://...`).
    pub url: String,
    /// The unix socket, for `bind = "unix:..."` servers.
    pub socket: Option<PathBuf>,
    /// The public key of the server's signing key (`name:base64`).
    pub public_key: String,
    /// Where config, keys and logs live.
    pub dir: TempDir,
    child: KillOnDrop,
}

/// How to start a server.
#[derive(Default)]
pub struct Options<'a> {
    /// Extra TOML lines.
    pub extra_config: &'a str,
    /// Serve on a unix socket instead of TCP.
    pub unix: bool,
    /// `(cert, key)` for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Environment variables for the server, set after the defaults (which put `XDG_CACHE_HOME`, and
    /// so the default NAR cache, under the server's temp dir).
    pub env: &'a [(&'a str, &'a str)],
}

impl Server {
    /// Starts the binary on `store` with a fresh signing key (given through SIGN_KEY_PATHS).
    pub fn start(store: &FixtureStore, opts: Options<'_>) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("harmonia-cache-test-")
            .tempdir()
            .expect("temp dir");
        let (secret, public_key) = generate_signing_key(dir.path(), "cache.test-1");
        let (port, bind, socket) = if opts.unix {
            let sock = dir.path().join("cache.sock");
            (0, format!("unix:{}", sock.display()), Some(sock))
        } else {
            let port = free_port();
            (port, format!("127.0.0.1:{port}"), None)
        };
        let mut config = format!(
            "bind = {bind:?}\nreal_nix_store = {:?}\nworkers = 2\n{}\n",
            store.store_dir(),
            opts.extra_config
        );
        if let Some((cert, key)) = &opts.tls {
            config.push_str(&format!(
                "tls_cert_path = {cert:?}\ntls_key_path = {key:?}\n"
            ));
        }
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_harmonia-cache"));
        cmd.env("CONFIG_FILE", &config_path)
            .env("SIGN_KEY_PATHS", &secret)
            .env("RUST_LOG", "info")
            .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
            .env_remove("CACHE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (k, v) in opts.env {
            cmd.env(k, v);
        }
        let child = KillOnDrop::spawn(&mut cmd);
        let up = match &socket {
            Some(sock) => wait_for_path(sock, Duration::from_secs(30)),
            None => wait_for_tcp(port, Duration::from_secs(30)),
        };
        let server = Server {
            port,
            url: format!(
                "{}://127.0.0.1:{port}",
                if opts.tls.is_some() { "https" } else { "http" }
            ),
            socket,
            public_key,
            dir,
            child,
        };
        assert!(up, "server did not start; log:\n{}", server.log());
        server
    }

    /// Like [`Server::start`], for a server kept in a `static` (never dropped): it is killed and its
    /// temp dir removed once the test process has exited.
    pub fn start_static(store: &FixtureStore, opts: Options<'_>) -> Server {
        let server = Server::start(store, opts);
        clean_up_after_exit(Some(server.pid()), &[server.dir.path()]);
        server
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Where the server keeps its NAR cache by default (under the `XDG_CACHE_HOME` it was given).
    pub fn default_nar_cache(&self) -> PathBuf {
        self.dir.path().join("xdg-cache/harmonia/nar")
    }
}

/// The standard fixture, for a `static` (never dropped): removed once the test process has exited.
pub fn static_fixture() -> StandardFixture {
    let fixture = standard_fixture();
    fixture.store.remove_after_exit();
    fixture
}

/// A parsed HTTP response (from curl or a raw socket).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl against `server` with `args` (the last one is usually the path), raw bytes, no decoding.
pub fn curl(server: &Server, path: &str, args: &[&str]) -> Response {
    let dir = tempfile::tempdir().expect("temp dir");
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.arg("-s")
        .arg("--max-time")
        .arg("60")
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(args);
    let url = match &server.socket {
        Some(sock) => {
            cmd.arg("--unix-socket").arg(sock);
            format!("http://localhost{path}")
        }
        None => format!("{}{path}", server.url),
    };
    cmd.arg("--path-as-is").arg(url);
    let out = cmd.output().expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let head = std::fs::read_to_string(&headers).expect("headers");
    parse_head(&head, std::fs::read(&body).unwrap_or_default())
}

fn parse_head(head: &str, body: Vec<u8>) -> Response {
    // With redirects or 100-continue there may be several heads; keep the last.
    let last = head
        .split("\r\n\r\n")
        .filter(|h| h.starts_with("HTTP/"))
        .last()
        .unwrap_or("");
    let mut lines = last.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body,
    }
}

/// GET `path`.
pub fn get(server: &Server, path: &str) -> Response {
    curl(server, path, &[])
}

/// Sends raw bytes on a TCP connection and reads until the server closes (or 3 s of silence).
pub fn raw_request(port: u16, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("set timeout");
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The hash part of the narinfo URL field and the URL itself.
pub fn narinfo_field<'a>(narinfo: &'a str, key: &str) -> Option<&'a str> {
    narinfo
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
}

/// Runs a command, returning its output without asserting success.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("spawn command")
}

/// A self-signed certificate and key (PEM) made with the openssl CLI.
pub fn self_signed_cert(dir: &Path, key_kind: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("cert-{key_kind}.pem"));
    let key = dir.join(format!("key-{key_kind}.pem"));
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-x509",
        "-days",
        "2",
        "-nodes",
        "-subj",
        "/CN=localhost",
    ])
    .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]);
    // "rsa" and "ec" give PKCS#8 keys; the others re-encode them in the traditional forms.
    let (newkey, convert): (&[&str], Option<&[&str]>) = match key_kind {
        "rsa" => (&["-newkey", "rsa:2048"], None),
        "rsa-pkcs1" => (&["-newkey", "rsa:2048"], Some(&["rsa", "-traditional"])),
        "ec" => (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
            None,
        ),
        "ec-sec1" => (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
            Some(&["ec"]),
        ),
        other => panic!("unknown key kind {other}"),
    };
    cmd.args(newkey);
    cmd.arg("-keyout").arg(&key).arg("-out").arg(&cert);
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(convert) = convert {
        let converted = dir.join(format!("key-{key_kind}-converted.pem"));
        let out = output(
            Command::new("openssl")
                .args(convert)
                .arg("-in")
                .arg(&key)
                .arg("-out")
                .arg(&converted),
        );
        assert!(out.status.success(), "openssl conversion failed");
        let pem = std::fs::read_to_string(&converted).expect("converted key");
        let want = if key_kind == "rsa-pkcs1" {
            "BEGIN RSA PRIVATE KEY"
        } else {
            "BEGIN EC PRIVATE KEY"
        };
        assert!(pem.contains(want), "expected {want} in {pem}");
        return (cert, converted);
    }
    (cert, key)
}
