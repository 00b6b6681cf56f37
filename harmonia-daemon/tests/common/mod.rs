//! Starting the real harmonia-daemon binary on a fixture store, and pointing the real Nix client at it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use harmonia_test_support::{FixtureStore, KillOnDrop, wait_for_path};

/// A running daemon serving a fixture store; killed on drop.
pub struct Daemon {
    child: KillOnDrop,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The chroot store root the daemon serves.
    pub root: PathBuf,
    /// A directory holding a fake `ssh` that relays to the daemon (for `ssh-ng://`).
    pub ssh_bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon on `store`'s real store dir with `extra` TOML lines appended to the config.
    pub fn start(store: &FixtureStore, extra: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("harmonia-daemon-test-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("socket");
        let config = dir.path().join("daemon.toml");
        let text = format!(
            "socket_path = {:?}\nreal_store_dir = {:?}\ndb_path = {:?}\nlog_dir = {:?}\n{extra}\n",
            socket,
            store.store_dir(),
            store.db_path(),
            store.log_dir(),
        );
        std::fs::write(&config, text).expect("write config");
        // Nix 2.8 reads files of a `unix://` store from the local filesystem (its client is a LocalFSStore);
        // only `ssh-ng://` sends NarFromPath over the wire. This `ssh` ignores its arguments and relays the
        // session to our socket, like `nix-daemon --stdio` does.
        let ssh_bin = dir.path().join("bin");
        std::fs::create_dir_all(&ssh_bin).expect("mkdir");
        let ssh = ssh_bin.join("ssh");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\nexec {:?} --config {:?} --stdio\n",
                env!("CARGO_BIN_EXE_harmonia-daemon"),
                config
            ),
        )
        .expect("write ssh");
        std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod ssh");
        let child = KillOnDrop::spawn(
            Command::new(env!("CARGO_BIN_EXE_harmonia-daemon"))
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "harmonia_daemon=debug")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("daemon.log")).expect("log file")),
        );
        assert!(
            wait_for_path(&socket, Duration::from_secs(20)),
            "harmonia-daemon did not create its socket"
        );
        Daemon {
            child,
            socket,
            root: store.root().to_path_buf(),
            ssh_bin,
            _dir: dir,
        }
    }

    /// `unix://SOCKET`, for `--store`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon logged so far (debug level).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to 30 s) for the daemon to exit; returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        for _ in 0..300 {
            if let Ok(Some(st)) = self.child.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }
}

/// A Nix command from `store`'s environment (`NIX_CONF_DIR` etc.) with `--store unix://SOCKET?root=DIR`:
/// metadata and writes go through the daemon, while Nix 2.8 reads file contents (`.drv` files) from the
/// chroot itself, as its unix:// client always reads the local filesystem.
pub fn client(store: &FixtureStore, daemon: &Daemon, program: &str) -> Command {
    let mut cmd = store.nix(program);
    cmd.arg("--store")
        .arg(format!("{}?root={}", daemon.url(), daemon.root.display()));
    cmd
}

/// A Nix command talking to the daemon over `ssh-ng://` (through the relaying fake `ssh`), so that even
/// file contents (NarFromPath) come over the wire.
pub fn ssh_client(store: &FixtureStore, daemon: &Daemon, program: &str) -> Command {
    let mut cmd = store.nix(program);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![daemon.ssh_bin.clone()];
    paths.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(paths).expect("PATH"));
    cmd.args(["--store", "ssh-ng://harmonia-test"]);
    cmd
}

/// Runs `cmd`, asserts success and returns stdout.
pub fn ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `cmd`, asserts failure and returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        !out.status.success(),
        "{cmd:?} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stdout as trimmed lines.
pub fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses JSON stdout.
pub fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).expect("JSON output")
}

/// Sorted entries of the real store dir, without Nix's `.links` and lock files.
pub fn store_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read store dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".links")
        .collect();
    v.sort();
    v
}
