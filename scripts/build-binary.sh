#!/usr/bin/env bash
# Builds dist/ingest-agent: esbuild bundles src/main.ts to one CommonJS file, then Node's
# single-executable support (`node --build-sea`) embeds it in the official Node binary.
# A 4th argument builds on another Node binary of the same version instead (another platform's:
# --build-sea injects into ELF, Mach-O and PE alike; see scripts/build-dist.sh).
set -euo pipefail
esbuild=${1:?esbuild}; node=${2:?node binary}; out=${3:?output path}; base=${4:-$node}
dir=$(dirname "$out"); mkdir -p "$dir"
# V8's code cache loads only on the platform that made it: none when building for another one.
code_cache=true; [ "$base" -ef "$node" ] || code_cache=false
# V8 flags the executable starts with (sea-config execArgv), traded for idle memory (issue 15,
# BENCHMARKS.md): without the optimizing compilers (TurboFan, Maglev) their code is never paged in
# and compiled (idle RSS -3 MiB, less CPU per trivial run; more CPU per MiB of a log storm), and a
# 1 MiB young generation. The code cache is made under the same flags, or V8 rejects it.
v8_flags=(--no-turbofan --no-maglev --max-semi-space-size=1)
exec_argv=$(printf '"%s",' "${v8_flags[@]}"); exec_argv="[${exec_argv%,}]"
"$esbuild" src/main.ts --bundle --platform=node --format=cjs --target=node26 \
  --legal-comments=none --log-level=warning --outfile="$dir/ingest-agent.cjs"
# Built to a temporary file and moved into place: a running executable is never overwritten.
cat > "$dir/sea-config.json" <<JSON
{ "main": "$dir/ingest-agent.cjs", "executable": "$base", "output": "$out.tmp",
  "disableExperimentalSEAWarning": true, "useCodeCache": $code_cache, "useSnapshot": false,
  "execArgv": $exec_argv }
JSON
"$node" "${v8_flags[@]}" --build-sea "$dir/sea-config.json" >/dev/null
chmod 0755 "$out.tmp"
mv -f "$out.tmp" "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
