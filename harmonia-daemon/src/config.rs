//! Daemon configuration: a TOML file named by `--config PATH` or `HARMONIA_DAEMON_CONFIG`.
//!
//! Every key is optional; defaults follow Nix's layout for the store the daemon serves, so that pointing
//! `real_store_dir` at a chroot store (`DIR/nix/store`) is enough to serve it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The file as written by the user; unknown keys are an error so that typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    socket_path: Option<PathBuf>,
    store_dir: Option<String>,
    real_store_dir: Option<PathBuf>,
    db_path: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    trusted_users: Option<Vec<String>>,
    allowed_users: Option<Vec<String>>,
    trusted_public_keys: Option<Vec<String>>,
}

/// The resolved configuration, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the daemon listens (Nix's `NIX_DAEMON_SOCKET_PATH`).
    pub socket_path: PathBuf,
    /// The logical store directory that store paths are spelled with, e.g. `/nix/store`.
    pub store_dir: String,
    /// The directory the files really live in (differs from `store_dir` for chroot stores).
    pub real_store_dir: PathBuf,
    /// Nix's SQLite database.
    pub db_path: PathBuf,
    /// Where build logs live (`.../var/log/nix/drvs`).
    pub log_dir: PathBuf,
    /// Users (or `@group`s, or `*`) whose connections are trusted, as Nix's `trusted-users`.
    pub trusted_users: Vec<String>,
    /// Users (or `@group`s, or `*`) that may connect at all, as Nix's `allowed-users`.
    pub allowed_users: Vec<String>,
    /// Public keys (`name:base64`) whose signatures let untrusted users add input-addressed paths.
    pub trusted_public_keys: Vec<String>,
}

impl Config {
    /// Reads and resolves the config file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and resolves config text; an empty text gives the defaults for `/nix/store`.
    pub fn parse(text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text)?;
        Self::resolve(raw)
    }

    fn resolve(raw: RawConfig) -> Result<Config> {
        let store_dir = raw.store_dir.unwrap_or_else(|| "/nix/store".to_owned());
        check_store_dir(&store_dir, "store_dir")?;
        let real_store_dir = raw
            .real_store_dir
            .unwrap_or_else(|| PathBuf::from(&store_dir));
        if !real_store_dir.is_absolute() {
            bail!(
                "`real_store_dir` must be an absolute path, got {}",
                real_store_dir.display()
            );
        }
        // Nix keeps its state next to the store: `/nix/store` -> `/nix/var/nix`, and a chroot store
        // `DIR/nix/store` -> `DIR/nix/var/nix`.
        let prefix = real_store_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let state_dir = prefix.join("var/nix");
        let db_path = raw
            .db_path
            .unwrap_or_else(|| state_dir.join("db/db.sqlite"));
        let socket_path = raw
            .socket_path
            .unwrap_or_else(|| state_dir.join("daemon-socket/socket"));
        let log_dir = raw
            .log_dir
            .unwrap_or_else(|| prefix.join("var/log/nix/drvs"));
        for (key, users) in [
            ("trusted_users", &raw.trusted_users),
            ("allowed_users", &raw.allowed_users),
        ] {
            for u in users.iter().flatten() {
                if u.is_empty() || u == "@" {
                    bail!("`{key}` contains an empty user or group name");
                }
            }
        }
        Ok(Config {
            socket_path,
            store_dir,
            real_store_dir,
            db_path,
            log_dir,
            trusted_users: raw.trusted_users.unwrap_or_else(|| vec!["root".to_owned()]),
            allowed_users: raw.allowed_users.unwrap_or_else(|| vec!["*".to_owned()]),
            trusted_public_keys: raw.trusted_public_keys.unwrap_or_default(),
        })
    }
}

fn check_store_dir(dir: &str, key: &str) -> Result<()> {
    if !dir.starts_with('/') || dir.len() < 2 || dir.ends_with('/') {
        bail!("`{key}` must be an absolute path without a trailing slash, got {dir:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_nix_layout() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.store_dir, "/nix/store");
        assert_eq!(c.real_store_dir, PathBuf::from("/nix/store"));
        assert_eq!(c.db_path, PathBuf::from("/nix/var/nix/db/db.sqlite"));
        assert_eq!(
            c.socket_path,
            PathBuf::from("/nix/var/nix/daemon-socket/socket")
        );
        assert_eq!(c.log_dir, PathBuf::from("/nix/var/log/nix/drvs"));
        assert_eq!(c.trusted_users, vec!["root"]);
        assert_eq!(c.allowed_users, vec!["*"]);
    }

    #[test]
    fn chroot_store_derives_state_paths() {
        let c = Config::parse("real_store_dir = \"/tmp/x/nix/store\"\n").unwrap();
        assert_eq!(c.store_dir, "/nix/store");
        assert_eq!(c.db_path, PathBuf::from("/tmp/x/nix/var/nix/db/db.sqlite"));
        assert_eq!(c.log_dir, PathBuf::from("/tmp/x/nix/var/log/nix/drvs"));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("sokcet_path = \"/x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("sokcet_path"), "{err:#}");
    }

    #[test]
    fn relative_store_dir_is_refused() {
        let err = Config::parse("store_dir = \"nix/store\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("store_dir"), "{err:#}");
        assert!(Config::parse("real_store_dir = \"rel\"\n").is_err());
        assert!(Config::parse("trusted_users = [\"@\"]\n").is_err());
    }

    #[test]
    fn wrong_type_is_an_error() {
        assert!(Config::parse("trusted_users = \"root\"\n").is_err());
    }
}
