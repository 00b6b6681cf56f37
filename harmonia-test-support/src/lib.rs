//! Test helpers: throwaway chroot Nix stores built by the real Nix, and helpers to drive our binaries.
//!
//! Every store lives in its own temporary directory with its own `NIX_CONF_DIR`, `HOME` and XDG
//! directories, so the real Nix used as an oracle never touches the machine's `/nix` or `~/.cache`.
//! All helpers panic with a clear message (including Nix's stderr) when a command fails: this is
//! test code, and a failing oracle is a failing test.
//!
//! ```
//! use harmonia_test_support::standard_fixture;
//!
//! let fx = standard_fixture();
//! // Real Nix's NAR of a store path, and its metadata from Nix's db.
//! let nar = fx.store.dump(&fx.paths.text_file);
//! assert!(nar.starts_with(b"\x0d\0\0\0\0\0\0\0nix-archive-1"));
//! let info = fx.store.path_info(&[&fx.paths.top]);
//! assert_eq!(info[0]["deriver"], fx.paths.top_drv.as_str());
//! ```

use std::ffi::OsStr;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The logical store directory every fixture store uses (the real files live under `root()`).
pub const LOGICAL_STORE_DIR: &str = "/nix/store";

/// The nix.conf every fixture store starts with (the chroot-store recipe from the team brief).
const BASE_NIX_CONF: &str = "\
sandbox = true
sandbox-paths = /bin/sh=/bin/busybox
substituters =
build-users-group =
experimental-features = nix-command
fsync-metadata = false
";

/// A throwaway chroot Nix store (`--store DIR`) plus its own Nix configuration, removed on drop.
pub struct FixtureStore {
    tmp: TempDir,
    root: PathBuf,
    conf_dir: PathBuf,
    home: PathBuf,
    scratch: PathBuf,
}

impl FixtureStore {
    /// An empty, initialised chroot store (with `db.sqlite`) and a nix.conf in a fresh temp dir.
    pub fn new() -> FixtureStore {
        Self::with_config("")
    }

    /// Like [`FixtureStore::new`], with `extra` lines appended to the store's nix.conf.
    pub fn with_config(extra: &str) -> FixtureStore {
        let tmp = tempfile::Builder::new()
            .prefix("harmonia-fixture-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for a fixture store: {e}"));
        let base = tmp.path().to_path_buf();
        let root = base.join("store");
        let conf_dir = base.join("conf");
        let home = base.join("home");
        let scratch = base.join("src");
        for dir in [&root, &conf_dir, &home, &scratch, &base.join("tmp")] {
            fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        let mut conf = BASE_NIX_CONF.to_string();
        conf.push_str(extra);
        conf.push('\n');
        write_file(&conf_dir.join("nix.conf"), conf.as_bytes());
        write_file(&conf_dir.join("user.conf"), b"");
        let store = FixtureStore {
            tmp,
            root,
            conf_dir,
            home,
            scratch,
        };
        store.run(
            store
                .nix("nix-store")
                .arg("--store")
                .arg(&store.root)
                .arg("--init"),
        );
        store
    }

    /// The chroot store root `DIR` (pass it as `--store DIR`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes this store's temp dir once the test process has exited: for a store kept in a `static`
    /// (see [`clean_up_after_exit`]).
    pub fn remove_after_exit(&self) {
        clean_up_after_exit(None, &[self.tmp.path()]);
    }

    /// The real store directory, `DIR/nix/store` (the logical one is `/nix/store`).
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("nix/store")
    }

    /// Nix's SQLite database, `DIR/nix/var/nix/db/db.sqlite`.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("nix/var/nix/db/db.sqlite")
    }

    /// Where Nix keeps build logs, `DIR/nix/var/log/nix/drvs`.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("nix/var/log/nix/drvs")
    }

    /// The build log of a derivation (`/nix/store/<hash>-x.drv`), `log_dir()/<2 chars>/<rest>.bz2`.
    pub fn log_path(&self, drv_path: &str) -> PathBuf {
        let base = base_name(drv_path);
        assert!(base.len() > 2, "not a store path: {drv_path:?}");
        self.log_dir()
            .join(&base[..2])
            .join(format!("{}.bz2", &base[2..]))
    }

    /// The `NIX_CONF_DIR` of this store (contains `nix.conf`).
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// A scratch directory for test inputs, inside the fixture's temp dir (not in the store).
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch
    }

    /// The fixture's temp dir (holds the store, the config, a HOME and scratch space).
    pub fn temp_root(&self) -> &Path {
        self.tmp.path()
    }

    /// `nix-store --verify --check-contents` on this store: `Ok(stderr)` if Nix found nothing wrong,
    /// else `Err(stderr)`.
    pub fn verify_contents(&self) -> Result<String, String> {
        let out = self
            .nix("nix-store")
            .arg("--store")
            .arg(&self.root)
            .args(["--verify", "--check-contents"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run nix-store --verify: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() && !stderr.contains("error") {
            Ok(stderr)
        } else {
            Err(stderr)
        }
    }

    /// A command for a Nix program (`nix`, `nix-store`, `nix-build`, ...) with an environment
    /// isolated from the machine: our `NIX_CONF_DIR`, a private HOME and XDG dirs, no `NIX_*`
    /// variables inherited. The store is not implied: pass `--store` (see [`FixtureStore::root`]).
    pub fn nix(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("NIX_") {
                cmd.env_remove(key);
            }
        }
        let tmp = self.tmp.path().join("tmp");
        // The default store is this fixture's own chroot store, so a command that forgets `--store` (or one
        // that opens a store although it needs none, like Nix 2.8's `nix-store --generate-binary-cache-key`)
        // can never open the machine's /nix.
        cmd.env("NIX_REMOTE", &self.root)
            .env("NIX_CONF_DIR", &self.conf_dir)
            .env("NIX_USER_CONF_FILES", self.conf_dir.join("user.conf"))
            .env("HOME", &self.home)
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_CONFIG_DIRS", self.home.join(".config-dirs"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("TMPDIR", tmp)
            .env("NIX_PATH", "")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a prepared command (e.g. from [`FixtureStore::nix`]) and returns its stdout; panics
    /// with the command line, status and stderr if it fails.
    pub fn run(&self, cmd: &mut Command) -> Vec<u8> {
        run(cmd).stdout
    }

    /// `nix-store --store DIR --add SRC`: adds a file or directory, returns its `/nix/store/...` path.
    pub fn add_path(&self, src: &Path) -> String {
        let out = self.run(
            self.nix("nix-store")
                .arg("--store")
                .arg(&self.root)
                .arg("--add")
                .arg(src),
        );
        single_line(&out, "nix-store --add")
    }

    /// Writes `contents` to a scratch file called `name` and adds it to the store.
    pub fn add_text(&self, name: &str, contents: &[u8]) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let src = self.scratch.join(format!("add-{n}")).join(name);
        write_file(&src, contents);
        self.add_path(&src)
    }

    /// `nix-build --store DIR --no-out-link FILE`: builds a Nix expression, returns the output paths.
    pub fn build(&self, nix_file: &Path) -> Vec<String> {
        let out = self.run(
            self.nix("nix-build")
                .arg("--store")
                .arg(&self.root)
                .arg("--no-out-link")
                .arg(nix_file),
        );
        lines(&out)
    }

    /// `nix-store --store DIR --query --deriver PATH` (the `.drv` path), `None` if Nix knows none.
    pub fn deriver(&self, store_path: &str) -> Option<String> {
        let out = self.run(self.nix("nix-store").arg("--store").arg(&self.root).args([
            "--query",
            "--deriver",
            store_path,
        ]));
        let line = single_line(&out, "nix-store --query --deriver");
        (line != "unknown-deriver").then_some(line)
    }

    /// The real location of a logical store path (or a path below one): `DIR` + `store_path`.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        assert!(
            store_path.starts_with(LOGICAL_STORE_DIR),
            "not a path under {LOGICAL_STORE_DIR}: {store_path:?}"
        );
        self.root.join(store_path.trim_start_matches('/'))
    }

    /// `nix-store --dump` of the real path of `store_path`: the NAR bytes Nix serves for it.
    pub fn dump(&self, store_path: &str) -> Vec<u8> {
        self.run(
            self.nix("nix-store")
                .arg("--dump")
                .arg(self.real_path(store_path)),
        )
    }

    /// `nix path-info --store DIR --json PATHS` (a JSON array, one object per path, sorted by path).
    ///
    /// `.drv` paths are queried with `--derivation`: without it Nix 2.8 reports their outputs.
    pub fn path_info(&self, store_paths: &[&str]) -> serde_json::Value {
        let mut infos = Vec::new();
        for (derivation, group) in split_drvs(store_paths) {
            let mut cmd = self.nix("nix");
            cmd.args(["path-info", "--json", "--store"]).arg(&self.root);
            if derivation {
                cmd.arg("--derivation");
            }
            match parse_json(&self.run(cmd.args(group)), "nix path-info --json") {
                serde_json::Value::Array(items) => infos.extend(items),
                other => panic!("nix path-info --json printed a non-array: {other}"),
            }
        }
        infos.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        serde_json::Value::Array(infos)
    }

    /// `nix store ls --store DIR -R --json PATH` (the `.ls` listing Nix computes for a path).
    pub fn store_ls(&self, store_path: &str) -> serde_json::Value {
        let out = self.run(
            self.nix("nix")
                .args(["store", "ls", "-R", "--json", "--store"])
                .arg(&self.root)
                .arg(store_path),
        );
        parse_json(&out, "nix store ls --json")
    }

    /// `nix copy --to file://CACHE_DIR?compression=none PATHS` (with their closure).
    pub fn copy_to_binary_cache(&self, paths: &[&str], cache_dir: &Path) {
        self.copy_to_binary_cache_with(paths, cache_dir, "compression=none");
    }

    /// Like [`FixtureStore::copy_to_binary_cache`], signing the narinfos with the secret key file.
    pub fn copy_to_binary_cache_signed(&self, paths: &[&str], cache_dir: &Path, secret_key: &Path) {
        let params = format!("compression=none&secret-key={}", secret_key.display());
        self.copy_to_binary_cache_with(paths, cache_dir, &params);
    }

    /// `nix copy --to file://CACHE_DIR?PARAMS PATHS`, e.g. `params = "compression=xz"`
    /// (`.drv` paths are copied themselves, with `--derivation`, not their outputs).
    pub fn copy_to_binary_cache_with(&self, paths: &[&str], cache_dir: &Path, params: &str) {
        let url = format!("file://{}?{params}", cache_dir.display());
        for (derivation, group) in split_drvs(paths) {
            let mut cmd = self.nix("nix");
            cmd.args(["copy", "--store"])
                .arg(&self.root)
                .arg("--to")
                .arg(&url);
            if derivation {
                cmd.arg("--derivation");
            }
            self.run(cmd.args(group));
        }
    }
}

impl Default for FixtureStore {
    fn default() -> Self {
        Self::new()
    }
}

/// The standard fixture: one store with every shape we care about, built by real Nix per call.
pub struct StandardFixture {
    /// The store holding every path in `paths`.
    pub store: FixtureStore,
    /// The logical store paths (`/nix/store/...`) of each shape.
    pub paths: FixturePaths,
}

/// The store paths of the standard fixture, all logical (`/nix/store/<hash>-<name>`).
#[derive(Debug, Clone)]
pub struct FixturePaths {
    /// A plain text file (`nix-store --add`), size not a multiple of 8.
    pub text_file: String,
    /// An executable file (`nix-store --add`).
    pub executable: String,
    /// A directory: nested dirs, an empty file, an empty dir, an executable, a relative symlink,
    /// an absolute symlink pointing outside the store, non-ASCII names and names whose raw byte
    /// order differs from locale order (see [`TREE_SYMLINK_OUTSIDE`] and friends).
    pub tree: String,
    /// A 3 MB file of deterministic pseudo-random bytes (see [`pseudo_random_bytes`]).
    pub big_file: String,
    /// A derivation output (a regular file) without references.
    pub dep: String,
    /// The deriver of `dep`.
    pub dep_drv: String,
    /// A derivation output (a directory) referencing `dep`.
    pub top: String,
    /// The deriver of `top` (a `.drv` store path); it has a build log.
    pub top_drv: String,
    /// Every path above.
    pub all: Vec<String>,
}

/// Relative path, inside `tree`, of the absolute symlink that points outside the store.
pub const TREE_SYMLINK_OUTSIDE: &str = "links/outside";
/// Target of [`TREE_SYMLINK_OUTSIDE`].
pub const TREE_SYMLINK_OUTSIDE_TARGET: &str = "/etc/hostname";
/// Relative path, inside `tree`, of the relative symlink pointing inside the tree.
pub const TREE_SYMLINK_RELATIVE: &str = "links/relative";
/// Target of [`TREE_SYMLINK_RELATIVE`].
pub const TREE_SYMLINK_RELATIVE_TARGET: &str = "../nested/deeper/file.txt";
/// Size of the standard fixture's `big_file`.
pub const BIG_FILE_SIZE: usize = 3 * 1024 * 1024;
/// Line the `top` derivation prints while building (so its build log is not empty).
pub const TOP_BUILD_LOG_LINE: &str = "building harmonia fixture top";

/// The Nix expression of the standard fixture's derivations (`dep`, and `top` referencing it).
const DERIVATIONS_NIX: &str = r#"
let
  dep = derivation {
    name = "fixture-dep";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo 'dependency contents' > $out" ];
  };
in
derivation {
  name = "fixture-top";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    echo '@LOG@'
    echo 'to stderr' >&2
    mkdir -p $out/bin $out/share
    echo ${dep} > $out/share/dep-path
    ln -s ${dep} $out/dep-link
    printf '#!/bin/sh\necho top\n' > $out/bin/top
    chmod +x $out/bin/top
  '' ];
}
"#;

/// Builds the standard fixture: every path shape we care about, added and built by real Nix.
pub fn standard_fixture() -> StandardFixture {
    let store = FixtureStore::new();
    let src = store.scratch_dir().join("standard");
    mkdir(&src);

    let text = src.join("hello.txt");
    write_file(&text, b"Hello from the harmonia fixture.\n");

    let exe = src.join("hello.sh");
    write_file(&exe, b"#!/bin/sh\necho hello\n");
    set_mode(&exe, 0o755);

    let tree = src.join("tree");
    build_tree(&tree);

    let big = src.join("big.bin");
    write_file(
        &big,
        &pseudo_random_bytes(0x6861_726d_6f6e_6961, BIG_FILE_SIZE),
    );

    let text_file = store.add_path(&text);
    let executable = store.add_path(&exe);
    let tree = store.add_path(&tree);
    let big_file = store.add_path(&big);

    let nix_file = src.join("derivations.nix");
    write_file(
        &nix_file,
        DERIVATIONS_NIX
            .replace("@LOG@", TOP_BUILD_LOG_LINE)
            .as_bytes(),
    );
    let outs = store.build(&nix_file);
    let top = match outs.as_slice() {
        [top] => top.clone(),
        other => panic!("nix-build of the fixture derivations gave {other:?}, expected one path"),
    };
    let top_drv = store.deriver(&top).expect("fixture top has no deriver");
    let dep = path_info_field(&store, &top, "references")
        .as_array()
        .and_then(|refs| refs.first())
        .and_then(|r| r.as_str())
        .unwrap_or_else(|| panic!("fixture top {top} has no reference"))
        .to_string();
    let dep_drv = store.deriver(&dep).expect("fixture dep has no deriver");

    let all = vec![
        text_file.clone(),
        executable.clone(),
        tree.clone(),
        big_file.clone(),
        dep.clone(),
        dep_drv.clone(),
        top.clone(),
        top_drv.clone(),
    ];
    StandardFixture {
        store,
        paths: FixturePaths {
            text_file,
            executable,
            tree,
            big_file,
            dep,
            dep_drv,
            top,
            top_drv,
            all,
        },
    }
}

fn path_info_field(store: &FixtureStore, path: &str, field: &str) -> serde_json::Value {
    let info = store.path_info(&[path]);
    info.get(0)
        .and_then(|o| o.get(field))
        .cloned()
        .unwrap_or_else(|| panic!("nix path-info of {path} lacks {field:?}: {info}"))
}

/// Writes the `tree` shape into `dir` (which must not exist yet).
fn build_tree(dir: &Path) {
    mkdir(dir);
    for sub in ["nested/deeper/deepest", "empty-dir", "links", "ünïcödé-dir"] {
        mkdir(&dir.join(sub));
    }
    write_file(&dir.join("README"), b"a tree with every shape\n");
    write_file(&dir.join("empty-file"), b"");
    write_file(&dir.join("nested/deeper/file.txt"), b"nested file\n");
    write_file(&dir.join("nested/deeper/deepest/eight-byte"), b"12345678");
    write_file(&dir.join("nested/a"), b"a");
    write_file(&dir.join("ünïcödé"), "non-ASCII name: ünïcödé\n".as_bytes());
    write_file(
        &dir.join("ünïcödé-dir/日本語.txt"),
        "こんにちは\n".as_bytes(),
    );
    write_file(&dir.join("with space"), b"name with a space\n");
    // Raw byte order: "10" < "9" < "B" < "Z" < "_x" < "a" < "z" < "ä" (UTF-8 0xC3);
    // locale order would give "10", "9", "_x", "a", "ä", "B", "z", "Z" (or similar).
    for name in ["B", "a", "Z", "z", "ä", "_x", "9", "10"] {
        write_file(&dir.join("order").join(name), name.as_bytes());
    }
    let exe = dir.join("nested/run.sh");
    write_file(&exe, b"#!/bin/sh\nexit 0\n");
    set_mode(&exe, 0o755);
    symlink(
        TREE_SYMLINK_RELATIVE_TARGET,
        dir.join(TREE_SYMLINK_RELATIVE),
    )
    .unwrap_or_else(|e| panic!("cannot create a symlink: {e}"));
    symlink(TREE_SYMLINK_OUTSIDE_TARGET, dir.join(TREE_SYMLINK_OUTSIDE))
        .unwrap_or_else(|e| panic!("cannot create a symlink: {e}"));
    symlink("../nested", dir.join("links/to-dir"))
        .unwrap_or_else(|e| panic!("cannot create a symlink: {e}"));
}

/// `len` deterministic pseudo-random bytes from `seed` (splitmix64), the same on every machine.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `nix-store --generate-binary-cache-key NAME DIR/NAME.secret DIR/NAME.public` (in a
/// throwaway store so the machine's Nix is untouched); returns the secret key file and the public
/// key text (`name:base64`).
pub fn generate_signing_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let store = FixtureStore::new();
    let secret = dir.join(format!("{name}.secret"));
    let public = dir.join(format!("{name}.public"));
    store.run(
        store
            .nix("nix-store")
            .arg("--store")
            .arg(store.root())
            .arg("--generate-binary-cache-key")
            .arg(name)
            .arg(&secret)
            .arg(&public),
    );
    let text = fs::read_to_string(&public)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", public.display()));
    (secret, text.trim().to_string())
}

/// Runs a command to completion; panics with the command, status and stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is Nix installed? run scripts/test)"));
    if !out.status.success() {
        panic!(
            "command failed ({}): {cmd:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
        );
    }
    out
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .unwrap_or_else(|e| panic!("cannot bind a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the bound address: {e}"))
        .port()
}

/// Polls until something accepts TCP connections on 127.0.0.1:`port`; false on timeout.
pub fn wait_for_tcp(port: u16, timeout: Duration) -> bool {
    poll_until(timeout, || TcpStream::connect(("127.0.0.1", port)).is_ok())
}

/// Polls until `path` exists; false on timeout. For a unix socket, polls until it accepts a
/// connection (opened and closed at once): a daemon creates its socket file at `bind`, before it
/// `listen`s, and connecting in between is refused.
pub fn wait_for_path(path: &Path, timeout: Duration) -> bool {
    poll_until(timeout, || match path.symlink_metadata() {
        Ok(meta) if meta.file_type().is_socket() => UnixStream::connect(path).is_ok(),
        Ok(_) => true,
        Err(_) => false,
    })
}

fn poll_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills process `pid` (if given) and removes `paths` once this test process has exited, however it
/// exits. For servers and fixtures kept in `static`s, which are never dropped: without this they outlive
/// every test run. Only for a child that lives as long as the test process: a PID killed and reaped
/// earlier could belong to another process by then.
pub fn clean_up_after_exit(pid: Option<u32>, paths: &[&Path]) {
    // Never waited for: it outlives this process, and init reaps it. Its stdin pipe's write end stays
    // open, unused, until this process exits; then the watchdog acts.
    std::mem::forget(exit_watchdog(pid, paths));
}

/// A `sh` that waits until its stdin (a pipe only the caller holds) closes, then kills `pid` and removes
/// `paths` (made writable first, as store paths are not).
fn exit_watchdog(pid: Option<u32>, paths: &[&Path]) -> Child {
    const SCRIPT: &str = r#"cat >/dev/null
[ -n "$1" ] && kill -9 "$1" 2>/dev/null
shift
[ "$#" -gt 0 ] && chmod -R u+w -- "$@" 2>/dev/null
[ "$#" -gt 0 ] && rm -rf -- "$@""#;
    Command::new("sh")
        .args(["-c", SCRIPT, "sh"])
        .arg(pid.map(|p| p.to_string()).unwrap_or_default())
        .args(paths)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the clean-up watchdog: {e}"))
}

/// A child process killed (and reaped) when dropped, so a failing test never leaks a server.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Spawns `cmd` and wraps the child; panics if it cannot be started.
    pub fn spawn(cmd: &mut Command) -> KillOnDrop {
        KillOnDrop(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}")),
        )
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The base name of a store path: `/nix/store/<hash>-<name>` -> `<hash>-<name>`.
pub fn base_name(store_path: &str) -> &str {
    Path::new(store_path)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or_else(|| panic!("not a store path: {store_path:?}"))
}

/// The 32-character hash part of a store path (`/nix/store/<hash>-<name>` -> `<hash>`).
pub fn hash_part(store_path: &str) -> &str {
    let base = base_name(store_path);
    base.get(..32)
        .unwrap_or_else(|| panic!("not a store path: {store_path:?}"))
}

fn write_file(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        mkdir(parent);
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// Splits store paths into (is_drv, paths) groups, omitting empty groups.
fn split_drvs<'a>(paths: &[&'a str]) -> Vec<(bool, Vec<&'a str>)> {
    let (drvs, others): (Vec<&str>, Vec<&str>) = paths.iter().partition(|p| p.ends_with(".drv"));
    [(false, others), (true, drvs)]
        .into_iter()
        .filter(|(_, g)| !g.is_empty())
        .collect()
}

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn single_line(out: &[u8], what: &str) -> String {
    match lines(out).as_slice() {
        [one] => one.clone(),
        other => panic!("{what} printed {other:?}, expected one line"),
    }
}

fn parse_json(out: &[u8], what: &str) -> serde_json::Value {
    serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!(
            "{what} printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(out)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_watchdog_kills_and_removes_once_its_pipe_closes() {
        let mut victim = Command::new("sleep").arg("1000").spawn().unwrap();
        let dir = tempfile::tempdir().unwrap().keep();
        fs::create_dir(dir.join("read-only")).unwrap();
        fs::write(dir.join("read-only/f"), b"x").unwrap();
        fs::set_permissions(dir.join("read-only"), fs::Permissions::from_mode(0o555)).unwrap();
        let mut watchdog = exit_watchdog(Some(victim.id()), &[&dir]);

        // Nothing happens while the pipe is open.
        std::thread::sleep(Duration::from_millis(200));
        assert!(victim.try_wait().unwrap().is_none());
        assert!(dir.exists());

        // The process exiting closes the pipe; here it is closed by hand.
        drop(watchdog.stdin.take());
        assert!(watchdog.wait().unwrap().success());
        let status = victim.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(!dir.exists());
    }
}
