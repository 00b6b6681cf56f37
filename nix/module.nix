# NixOS module for harmonia: the binary cache (services.harmonia-dev.cache) and the
# nix-daemon replacement (services.harmonia-dev.daemon).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.harmonia-dev;
  format = pkgs.formats.toml { };
  cacheConfigFile = format.generate "harmonia.toml" cfg.cache.settings;
  daemonConfigFile = format.generate "harmonia-daemon.toml" cfg.daemon.settings;
  credentials = lib.imap0 (i: path: "sign-key-${toString i}:${path}") cfg.cache.signKeyPaths;
in
{
  options.services.harmonia-dev = {
    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The harmonia package providing harmonia-cache and harmonia-daemon.";
    };

    cache = {
      enable = lib.mkEnableOption "harmonia-cache, a Nix binary cache serving the local /nix/store";

      signKeyPaths = lib.mkOption {
        type = lib.types.listOf lib.types.path;
        default = [ ];
        description = ''
          Secret keys (made by `nix-store --generate-binary-cache-key`) used to sign narinfo files on the fly.
          They are passed to the service as systemd credentials, so they need not be readable by its user.
        '';
      };

      settings = lib.mkOption {
        inherit (format) type;
        default = { };
        example = { bind = "[::]:5000"; priority = 50; enable_compression = true; };
        description = ''
          harmonia-cache configuration (see the README for every key). `sign_key_paths` is filled from
          `signKeyPaths`.
        '';
      };
    };

    daemon = {
      enable = lib.mkEnableOption "harmonia-daemon, a nix-daemon replacement on a unix socket";

      settings = lib.mkOption {
        inherit (format) type;
        default = { };
        example = { socket_path = "/run/harmonia-daemon/socket"; trusted_users = [ "root" "@wheel" ]; };
        description = "harmonia-daemon configuration (see the README for every key).";
      };
    };
  };

  config = lib.mkMerge [
    (lib.mkIf cfg.cache.enable {
      services.harmonia-dev.cache.settings = {
        bind = lib.mkDefault "[::]:5000";
        priority = lib.mkDefault 30;
      };

      systemd.services.harmonia-cache = {
        description = "harmonia binary cache";
        after = [ "network.target" ];
        wantedBy = [ "multi-user.target" ];
        environment = {
          CONFIG_FILE = cacheConfigFile;
          SIGN_KEY_PATHS = lib.concatMapStringsSep " "
            (i: "%d/sign-key-${toString i}") (lib.range 0 (lib.length cfg.cache.signKeyPaths - 1));
          RUST_LOG = lib.mkDefault "info";
        };
        serviceConfig = {
          ExecStart = "${cfg.package}/bin/harmonia-cache";
          LoadCredential = credentials;
          DynamicUser = true;
          User = "harmonia";
          Restart = "on-failure";
          PrivateUsers = true;
          DeviceAllow = [ "" ];
          UMask = "0066";
          RuntimeDirectory = "harmonia";
          # Home of the NAR cache: systemd sets CACHE_DIRECTORY, and the server keeps NARs in its `nar`.
          CacheDirectory = "harmonia";
          # Lets responses in flight finish on stop (the server drains for up to 30 s).
          TimeoutStopSec = 35;
          CapabilityBoundingSet = "";
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectControlGroups = true;
          NoNewPrivileges = true;
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
          RestrictNamespaces = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          SystemCallArchitectures = "native";
          LimitNOFILE = 65536;
        };
      };
    })

    (lib.mkIf cfg.daemon.enable {
      services.harmonia-dev.daemon.settings.socket_path = lib.mkDefault "/run/harmonia-daemon/socket";

      systemd.services.harmonia-daemon = {
        description = "harmonia nix-daemon replacement";
        wantedBy = [ "multi-user.target" ];
        environment = {
          HARMONIA_DAEMON_CONFIG = daemonConfigFile;
          RUST_LOG = lib.mkDefault "info";
        };
        serviceConfig = {
          ExecStart = "${cfg.package}/bin/harmonia-daemon";
          RuntimeDirectory = "harmonia-daemon";
          Restart = "on-failure";
        };
      };
    })
  ];
}
