#!/usr/bin/env bash
# Regenerates the seed corpora under fuzz/corpus/ from real Nix (a throwaway chroot store, as in
# harmonia-test-support), so every seed is an input Nix itself produced.
set -euo pipefail

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/conf" "$tmp/home" "$tmp/src"
cat >"$tmp/conf/nix.conf" <<'CONF'
sandbox = true
sandbox-paths = /bin/sh=/bin/busybox
substituters =
build-users-group =
experimental-features = nix-command
CONF
for v in $(env | sed -n 's/^\(NIX_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export NIX_CONF_DIR=$tmp/conf NIX_USER_CONF_FILES=$tmp/conf/none HOME=$tmp/home XDG_CACHE_HOME=$tmp/home/.cache
store=$tmp/store
seed() { # seed TARGET NAME < data
  mkdir -p "$fuzz_dir/corpus/$1"
  cat >"$fuzz_dir/corpus/$1/$2"
}

# Inputs: a text file, an executable, a small tree with the tricky shapes, a derivation.
printf 'hello\n' >"$tmp/src/hello.txt"
printf '#!/bin/sh\necho hi\n' >"$tmp/src/run.sh" && chmod +x "$tmp/src/run.sh"
mkdir -p "$tmp/src/tree/sub/empty" "$tmp/src/tree/order"
: >"$tmp/src/tree/empty-file"
printf 'x' >"$tmp/src/tree/sub/ünïcödé"
printf 'B' >"$tmp/src/tree/order/B" && printf 'a' >"$tmp/src/tree/order/a"
ln -s ../empty-file "$tmp/src/tree/sub/rel-link"
ln -s /etc/hostname "$tmp/src/tree/abs-link"
cat >"$tmp/src/drv.nix" <<'NIX'
let dep = derivation { name = "dep"; system = builtins.currentSystem; builder = "/bin/sh";
                       args = [ "-c" "echo dep > $out" ]; };
in derivation { name = "top"; system = builtins.currentSystem; builder = "/bin/sh";
                args = [ "-c" "mkdir $out; echo ${dep} > $out/dep" ]; }
NIX
text=$(nix-store --store "$store" --add "$tmp/src/hello.txt")
exe=$(nix-store --store "$store" --add "$tmp/src/run.sh")
tree=$(nix-store --store "$store" --add "$tmp/src/tree")
top=$(nix-build --store "$store" --no-out-link "$tmp/src/drv.nix" 2>/dev/null)
drv=$(nix-store --store "$store" -q --deriver "$top")
dep=$(nix-store --store "$store" -q --references "$top")

# nar_decode: real NARs from nix-store --dump.
nix-store --dump "$store$text" | seed nar_decode file.nar
nix-store --dump "$store$exe" | seed nar_decode executable.nar
nix-store --dump "$store$tree" | seed nar_decode tree.nar
nix-store --dump "$store$top" | seed nar_decode derivation-output.nar
nix-store --dump "$store$tree/abs-link" | seed nar_decode symlink.nar

# narinfo_parse: narinfos written by nix copy --to file://, unsigned, signed, compressed.
nix-store --store "$store" --generate-binary-cache-key fuzz-seed-1 "$tmp/secret" "$tmp/public"
nix copy --store "$store" --to "file://$tmp/plain?compression=none" "$top" "$text" 2>/dev/null
nix copy --store "$store" --to "file://$tmp/signed?compression=xz&secret-key=$tmp/secret" "$top" "$tree" 2>/dev/null
nix copy --store "$store" --derivation --to "file://$tmp/drv?compression=zstd" "$drv" 2>/dev/null
hash_of() { basename "$1" | cut -c1-32; }
seed narinfo_parse plain-top.narinfo <"$tmp/plain/$(hash_of "$top").narinfo"
seed narinfo_parse plain-dep.narinfo <"$tmp/plain/$(hash_of "$dep").narinfo"
seed narinfo_parse plain-text.narinfo <"$tmp/plain/$(hash_of "$text").narinfo"
seed narinfo_parse signed-xz-top.narinfo <"$tmp/signed/$(hash_of "$top").narinfo"
seed narinfo_parse signed-xz-tree.narinfo <"$tmp/signed/$(hash_of "$tree").narinfo"
seed narinfo_parse zstd-drv.narinfo <"$tmp/drv/$(hash_of "$drv").narinfo"

# store_path_parse: full paths, with a sub-path, and base names (the target takes either).
i=0
for p in "$text" "$exe" "$tree" "$top" "$dep" "$drv" "$tree/sub/rel-link"; do
  printf '%s' "$p" | seed store_path_parse "path-$i"
  printf '%s' "${p#/nix/store/}" | seed store_path_parse "base-$i"
  i=$((i + 1))
done

# hash_parse: every algorithm in every encoding Nix prints, plus nix-base32 digests alone.
for algo in md5 sha1 sha256 sha512; do
  for fmt in base16 base32 base64 sri; do
    h=$(nix hash file --type "$algo" "--$fmt" "$tmp/src/hello.txt")
    case $fmt in sri) ;; *) h="$algo:$h" ;; esac
    printf '%s' "$h" | seed hash_parse "$algo-$fmt"
  done
done
nix path-info --store "$store" --json "$top" | sed -n 's/.*"narHash":"\([^"]*\)".*/\1/p' | tr -d '\n' |
  seed hash_parse narhash-sri
hash_of "$top" | tr -d '\n' | seed hash_parse store-path-hash-part
echo "seeds written under $fuzz_dir/corpus/"
