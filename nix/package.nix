# The harmonia workspace built with nixpkgs' rustPlatform; installs harmonia-cache and harmonia-daemon.
{ lib, rustPlatform, nix, busybox }:
rustPlatform.buildRustPackage {
  pname = "harmonia";
  version = (lib.importTOML ../Cargo.toml).workspace.package.version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      (lib.fileset.fileFilter (f: f.hasExt "rs" || f.name == "Cargo.toml") ../.)
      (lib.fileset.maybeMissing ../harmonia-cache/assets)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "harmonia-cache" "-p" "harmonia-daemon" ];

  # The integration tests drive the real Nix inside throwaway chroot stores, which needs a sandbox shell.
  nativeCheckInputs = [ nix busybox ];
  doCheck = false;

  meta = {
    description = "Nix binary cache and nix-daemon replacement";
    homepage = "https://github.com/harmonia-rs/harmonia";
    license = lib.licenses.mit;
    mainProgram = "harmonia-cache";
  };
}
