//! Configuration: a TOML file named by `CONFIG_FILE`, plus `SIGN_KEY_PATHS`.
//!
//! Every key of the product description is accepted, unknown keys are refused, and values that
//! the server derives (database, log directory) are resolved here once, so request handlers never
//! look at the raw file again.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use harmonia_utils_signature::SecretKey;
use serde::Deserialize;

/// The configuration file as written by the user; every field has the documented default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    bind: String,
    workers: usize,
    max_connection_rate: usize,
    priority: u32,
    virtual_nix_store: String,
    real_nix_store: Option<PathBuf>,
    nix_db_path: Option<PathBuf>,
    sign_key_paths: Vec<PathBuf>,
    tls_cert_path: Option<PathBuf>,
    tls_key_path: Option<PathBuf>,
    enable_compression: bool,
    zstd_level: i32,
    nar_cache_dir: Option<PathBuf>,
    nar_cache_max_size: u64,
}

impl Default for ConfigFile {
    fn default() -> Self {
        ConfigFile {
            bind: "[::]:5000".to_owned(),
            workers: 4,
            max_connection_rate: 256,
            priority: 30,
            virtual_nix_store: "/nix/store".to_owned(),
            real_nix_store: None,
            nix_db_path: None,
            sign_key_paths: Vec::new(),
            tls_cert_path: None,
            tls_key_path: None,
            enable_compression: false,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            nar_cache_dir: None,
            nar_cache_max_size: DEFAULT_NAR_CACHE_MAX_SIZE,
        }
    }
}

/// Default limit of the NAR cache: 10 GiB.
pub const DEFAULT_NAR_CACHE_MAX_SIZE: u64 = 10 << 30;

/// zstd's own default level: a good ratio at several hundred MiB/s per core.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// A TCP address such as `[::]:5000`.
    Tcp(SocketAddr),
    /// A unix socket path (`unix:/run/harmonia/socket`).
    Unix(PathBuf),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp(addr) => write!(f, "{addr}"),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM; PKCS#8, RSA or SEC1).
    pub key: PathBuf,
}

/// The resolved configuration the server runs with.
#[derive(Debug)]
pub struct Config {
    /// Listening address.
    pub bind: Bind,
    /// Tokio worker threads.
    pub workers: usize,
    /// Maximum concurrent connections per worker.
    pub max_connection_rate: usize,
    /// Priority advertised in `/nix-cache-info`.
    pub priority: u32,
    /// The logical store directory (what paths are called), e.g. `/nix/store`.
    pub virtual_nix_store: String,
    /// Where the store's files really are on disk.
    pub real_nix_store: PathBuf,
    /// Nix's SQLite database.
    pub nix_db_path: PathBuf,
    /// Nix's build log directory (`.../var/log/nix/drvs`).
    pub log_dir: PathBuf,
    /// Keys every narinfo is signed with.
    pub sign_keys: Vec<SecretKey>,
    /// TLS certificate and key, when HTTPS is on.
    pub tls: Option<TlsPaths>,
    /// zstd level when transparent compression is enabled.
    pub compression_level: Option<i32>,
    /// The NAR cache, unless `nar_cache_max_size = 0` turned it off (or no default place exists).
    pub nar_cache: Option<NarCacheConfig>,
}

/// Where the NAR cache lives and how big it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarCacheConfig {
    /// The cache directory.
    pub dir: PathBuf,
    /// Most bytes of NARs kept.
    pub max_bytes: u64,
    /// Whether `nar_cache_dir` named the directory: then a directory that cannot be used stops
    /// start-up; the default place only earns a warning, and the server runs without the cache.
    pub explicit: bool,
}

/// Where the NAR cache lives when `nar_cache_dir` is not set: `nar` under systemd's
/// `CACHE_DIRECTORY` (which `CacheDirectory=` sets), else `harmonia/nar` under `$XDG_CACHE_HOME` or
/// `~/.cache`. `var` reads the environment; relative values are ignored, as the XDG spec asks.
pub fn default_nar_cache_dir(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let absolute = |name: &str| {
        var(name)
            .and_then(|v| std::env::split_paths(&v).next())
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = absolute("CACHE_DIRECTORY") {
        return Some(dir.join("nar"));
    }
    let cache_home =
        absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".cache")));
    cache_home.map(|d| d.join("harmonia/nar"))
}

impl Config {
    /// Loads the configuration from `CONFIG_FILE` (or defaults) and `SIGN_KEY_PATHS`.
    pub fn load_from_env() -> Result<Config> {
        let file = match std::env::var_os("CONFIG_FILE") {
            Some(path) if !path.is_empty() => {
                let path = PathBuf::from(path);
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "cannot read the configuration file {} (named by CONFIG_FILE)",
                        path.display()
                    )
                })?;
                parse_file(&text)
                    .with_context(|| format!("invalid configuration file {}", path.display()))?
            }
            _ => ConfigFile::default(),
        };
        let env_keys = std::env::var("SIGN_KEY_PATHS").unwrap_or_default();
        let default_cache = default_nar_cache_dir(|name| std::env::var_os(name));
        resolve(file, &env_keys, default_cache)
    }

    /// Parses `text` as a configuration file and resolves it, with `/var/cache/harmonia/nar` as the
    /// default NAR cache directory.
    #[cfg(test)]
    pub fn from_toml(text: &str, sign_key_paths_env: &str) -> Result<Config> {
        let default_cache = Some(PathBuf::from("/var/cache/harmonia/nar"));
        resolve(parse_file(text)?, sign_key_paths_env, default_cache)
    }
}

fn parse_file(text: &str) -> Result<ConfigFile> {
    // toml's message already names the offending key and shows the line it is on.
    toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))
}

fn resolve(
    file: ConfigFile,
    sign_key_paths_env: &str,
    default_nar_cache_dir: Option<PathBuf>,
) -> Result<Config> {
    let bind = parse_bind(&file.bind)?;
    if file.workers == 0 || file.workers > 1024 {
        bail!("`workers` must be between 1 and 1024, got {}", file.workers);
    }
    if file.max_connection_rate == 0 || file.max_connection_rate > 1_000_000 {
        bail!(
            "`max_connection_rate` must be between 1 and 1000000, got {}",
            file.max_connection_rate
        );
    }
    if !(1..=22).contains(&file.zstd_level) {
        bail!(
            "`zstd_level` must be between 1 and 22, got {}",
            file.zstd_level
        );
    }
    let nar_cache = match file.nar_cache_dir {
        Some(dir) if !dir.is_absolute() => bail!(
            "`nar_cache_dir` must be an absolute path, got {}",
            dir.display()
        ),
        _ if file.nar_cache_max_size == 0 => None,
        Some(dir) => Some(NarCacheConfig {
            dir,
            max_bytes: file.nar_cache_max_size,
            explicit: true,
        }),
        None => default_nar_cache_dir.map(|dir| NarCacheConfig {
            dir,
            max_bytes: file.nar_cache_max_size,
            explicit: false,
        }),
    };
    let virtual_nix_store = file.virtual_nix_store.trim_end_matches('/').to_owned();
    if !virtual_nix_store.starts_with('/') || virtual_nix_store.len() < 2 {
        bail!(
            "`virtual_nix_store` must be an absolute directory such as \"/nix/store\", got {:?}",
            file.virtual_nix_store
        );
    }
    let real_nix_store = file
        .real_nix_store
        .unwrap_or_else(|| PathBuf::from(&virtual_nix_store));
    if !real_nix_store.is_absolute() {
        bail!(
            "`real_nix_store` must be an absolute path, got {}",
            real_nix_store.display()
        );
    }
    if !real_nix_store.is_dir() {
        bail!(
            "the store directory {} does not exist: set `real_nix_store` (or `virtual_nix_store`) to the store to serve",
            real_nix_store.display()
        );
    }
    let state_root = real_nix_store.parent().unwrap_or(Path::new("/"));
    let nix_db_path = file
        .nix_db_path
        .unwrap_or_else(|| state_root.join("var/nix/db/db.sqlite"));
    if !nix_db_path.is_file() {
        bail!(
            "no Nix database at {}: set `nix_db_path` (or `real_nix_store`) or install Nix",
            nix_db_path.display()
        );
    }
    let log_dir = state_root.join("var/log/nix/drvs");

    let mut key_paths = file.sign_key_paths;
    key_paths.extend(sign_key_paths_env.split_whitespace().map(PathBuf::from));
    let mut sign_keys = Vec::with_capacity(key_paths.len());
    for path in &key_paths {
        sign_keys.push(load_secret_key(path)?);
    }

    let tls = match (file.tls_cert_path, file.tls_key_path) {
        (Some(cert), Some(key)) => Some(TlsPaths { cert, key }),
        (None, None) => None,
        (Some(_), None) => bail!("`tls_cert_path` is set but `tls_key_path` is not: set both"),
        (None, Some(_)) => bail!("`tls_key_path` is set but `tls_cert_path` is not: set both"),
    };

    Ok(Config {
        bind,
        workers: file.workers,
        max_connection_rate: file.max_connection_rate,
        priority: file.priority,
        virtual_nix_store,
        real_nix_store,
        nix_db_path,
        log_dir,
        sign_keys,
        tls,
        compression_level: file.enable_compression.then_some(file.zstd_level),
        nar_cache,
    })
}

fn parse_bind(bind: &str) -> Result<Bind> {
    if let Some(path) = bind.strip_prefix("unix:") {
        if path.is_empty() {
            bail!("`bind` = \"unix:\" needs a socket path, e.g. \"unix:/run/harmonia/socket\"");
        }
        return Ok(Bind::Unix(PathBuf::from(path)));
    }
    if let Ok(addr) = bind.parse::<SocketAddr>() {
        return Ok(Bind::Tcp(addr));
    }
    let mut addrs = bind.to_socket_addrs().with_context(|| {
        format!("`bind` = {bind:?} is not an address like \"[::]:5000\" or \"unix:/path\"")
    })?;
    addrs
        .next()
        .map(Bind::Tcp)
        .ok_or_else(|| anyhow!("`bind` = {bind:?} resolves to no address"))
}

fn load_secret_key(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the signing key {}: fix `sign_key_paths` / SIGN_KEY_PATHS or create it with `nix-store --generate-binary-cache-key`",
            path.display()
        )
    })?;
    SecretKey::parse(text.trim()).map_err(|e| {
        anyhow!(
            "the signing key {} is not a Nix secret key ({e}): create one with `nix-store --generate-binary-cache-key NAME SECRET PUBLIC`",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_db() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nix/store")).unwrap();
        std::fs::create_dir_all(dir.path().join("nix/var/nix/db")).unwrap();
        std::fs::write(dir.path().join("nix/var/nix/db/db.sqlite"), b"").unwrap();
        dir
    }

    #[test]
    fn defaults_derive_db_and_log_dir_from_real_store() {
        let dir = store_with_db();
        let store = dir.path().join("nix/store");
        let cfg = Config::from_toml(&format!("real_nix_store = {:?}", store), "").unwrap();
        assert_eq!(cfg.bind, Bind::Tcp("[::]:5000".parse().unwrap()));
        assert_eq!(cfg.priority, 30);
        assert_eq!(cfg.virtual_nix_store, "/nix/store");
        assert_eq!(cfg.nix_db_path, dir.path().join("nix/var/nix/db/db.sqlite"));
        assert_eq!(cfg.log_dir, dir.path().join("nix/var/log/nix/drvs"));
        assert!(cfg.compression_level.is_none());
        assert!(cfg.tls.is_none());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("bind = \"[::]:1\"\nfrobnicate = 1\n", "").unwrap_err();
        assert!(format!("{err:#}").contains("frobnicate"), "{err:#}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::from_toml("workers = \"many\"\n", "").unwrap_err();
        assert!(format!("{err:#}").contains("workers"), "{err:#}");
        let dir = store_with_db();
        let store = dir.path().join("nix/store");
        let err = Config::from_toml(
            &format!("real_nix_store = {store:?}\nzstd_level = 99\n"),
            "",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("zstd_level"), "{err:#}");
        for bad in [
            "nar_cache_dir = \"relative\"\n",
            "nar_cache_max_size = -1\n",
        ] {
            let err =
                Config::from_toml(&format!("real_nix_store = {store:?}\n{bad}"), "").unwrap_err();
            assert!(format!("{err:#}").contains("nar_cache"), "{bad}: {err:#}");
        }
        let cfg = Config::from_toml(
            &format!("real_nix_store = {store:?}\nnar_cache_dir = \"/var/cache/h\"\n"),
            "",
        )
        .unwrap();
        assert_eq!(
            cfg.nar_cache,
            Some(NarCacheConfig {
                dir: PathBuf::from("/var/cache/h"),
                max_bytes: DEFAULT_NAR_CACHE_MAX_SIZE,
                explicit: true
            })
        );
    }

    #[test]
    fn nar_cache_is_on_by_default_and_off_at_size_zero() {
        let dir = store_with_db();
        let store = dir.path().join("nix/store");
        let cfg = Config::from_toml(&format!("real_nix_store = {store:?}\n"), "").unwrap();
        assert_eq!(
            cfg.nar_cache,
            Some(NarCacheConfig {
                dir: PathBuf::from("/var/cache/harmonia/nar"),
                max_bytes: DEFAULT_NAR_CACHE_MAX_SIZE,
                explicit: false
            })
        );
        for off in ["", "nar_cache_dir = \"/var/cache/h\"\n"] {
            let cfg = Config::from_toml(
                &format!("real_nix_store = {store:?}\n{off}nar_cache_max_size = 0\n"),
                "",
            )
            .unwrap();
            assert_eq!(cfg.nar_cache, None, "{off}");
        }
    }

    #[test]
    fn default_nar_cache_dir_follows_systemd_then_xdg_then_home() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        const ALL: [(&str, &str); 3] = [
            ("CACHE_DIRECTORY", "/var/cache/harmonia:/var/cache/other"),
            ("XDG_CACHE_HOME", "/home/u/.xdg-cache"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            default_nar_cache_dir(env(&ALL)),
            Some(PathBuf::from("/var/cache/harmonia/nar"))
        );
        assert_eq!(
            default_nar_cache_dir(env(&ALL[1..])),
            Some(PathBuf::from("/home/u/.xdg-cache/harmonia/nar"))
        );
        assert_eq!(
            default_nar_cache_dir(env(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.cache/harmonia/nar"))
        );
        assert_eq!(default_nar_cache_dir(env(&[("HOME", "")])), None);
        assert_eq!(default_nar_cache_dir(env(&[])), None);
    }

    #[test]
    fn missing_db_names_path_and_setting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nix/store")).unwrap();
        let store = dir.path().join("nix/store");
        let err = Config::from_toml(&format!("real_nix_store = {store:?}"), "").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("db.sqlite") && msg.contains("nix_db_path"),
            "{msg}"
        );
    }

    #[test]
    fn missing_key_file_names_path() {
        let dir = store_with_db();
        let store = dir.path().join("nix/store");
        let err = Config::from_toml(
            &format!("real_nix_store = {store:?}"),
            "/nonexistent/cache.secret",
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("/nonexistent/cache.secret") && msg.contains("sign_key_paths"),
            "{msg}"
        );
    }

    #[test]
    fn bind_forms() {
        assert_eq!(
            parse_bind("unix:/run/x.sock").unwrap(),
            Bind::Unix("/run/x.sock".into())
        );
        assert_eq!(
            parse_bind("127.0.0.1:8080").unwrap(),
            Bind::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        assert!(parse_bind("unix:").is_err());
        assert!(parse_bind("not an address").is_err());
    }

    #[test]
    fn tls_needs_both_paths() {
        let dir = store_with_db();
        let store = dir.path().join("nix/store");
        let err = Config::from_toml(
            &format!("real_nix_store = {store:?}\ntls_cert_path = \"/x.pem\""),
            "",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("tls_key_path"));
    }
}
