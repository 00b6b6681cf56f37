{
  description = "harmonia: a Nix binary cache and nix-daemon replacement in Rust";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        harmonia = pkgs.callPackage ./nix/package.nix { };
        default = harmonia;
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.system}.harmonia ];
          packages = with pkgs; [ cargo clippy rustfmt rust-analyzer nix busybox nginx wrk hyperfine ];
        };
      });

      nixosModules = rec {
        harmonia = { pkgs, ... }: {
          imports = [ ./nix/module.nix ];
          services.harmonia-dev.package = nixpkgs.lib.mkDefault self.packages.${pkgs.system}.harmonia;
        };
        default = harmonia;
      };

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.system}.harmonia;
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
