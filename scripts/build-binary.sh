#!/usr/bin/env bash
# Builds dist/ingest-agent: esbuild bundles src/main.ts to one CommonJS file, then Node's
# single-executable support (`node --build-sea`) embeds it in the official Node binary.
# --optimize-for-size: a log storm makes short-lived garbage at 100+ MB/s; this V8 mode grows the
# heap reluctantly, keeping the agent's peak memory flat (anon +7 MiB for 200 MiB of output).
set -euo pipefail
esbuild=${1:?esbuild}; node=${2:?node binary}; out=${3:?output path}
dir=$(dirname "$out"); mkdir -p "$dir"
"$esbuild" src/main.ts --bundle --platform=node --format=cjs --target=node26 \
  --legal-comments=none --log-level=warning --outfile="$dir/ingest-agent.cjs"
cat > "$dir/sea-config.json" <<JSON
{ "main": "$dir/ingest-agent.cjs", "output": "$out", "disableExperimentalSEAWarning": true,
  "useCodeCache": true, "useSnapshot": false, "execArgv": ["--optimize-for-size"] }
JSON
"$node" --build-sea "$dir/sea-config.json" >/dev/null
chmod 0755 "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
