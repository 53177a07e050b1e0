#!/usr/bin/env bash
# Builds dist/ingest-agent: esbuild bundles src/main.ts to one CommonJS file, then Node's
# single-executable support (`node --build-sea`) embeds it in the official Node binary.
set -euo pipefail
esbuild=${1:?esbuild}; node=${2:?node binary}; out=${3:?output path}
dir=$(dirname "$out"); mkdir -p "$dir"
"$esbuild" src/main.ts --bundle --platform=node --format=cjs --target=node26 \
  --legal-comments=none --log-level=warning --outfile="$dir/ingest-agent.cjs"
# Built to a temporary file and moved into place: a running executable is never overwritten.
cat > "$dir/sea-config.json" <<JSON
{ "main": "$dir/ingest-agent.cjs", "output": "$out.tmp", "disableExperimentalSEAWarning": true,
  "useCodeCache": true, "useSnapshot": false }
JSON
"$node" --build-sea "$dir/sea-config.json" >/dev/null
chmod 0755 "$out.tmp"
mv -f "$out.tmp" "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
