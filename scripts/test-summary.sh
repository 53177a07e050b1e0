#!/usr/bin/env bash
# Sums deno test's per-run summaries ("ok | 12 passed (3 steps) | 0 failed") into the one closing
# line CI reads: "N passed, M failed".
set -euo pipefail
log=${1:?usage: test-summary.sh LOG}
sed -E 's/\x1b\[[0-9;]*m//g' "$log" | awk '
  /^(ok|FAILED) \| [0-9]+ passed/ {
    for (i = 1; i <= NF; i++) {
      if ($i == "passed") p += $(i-1)
      if ($i == "failed") f += $(i-1)
    }
    seen = 1
  }
  END {
    if (!seen) { print "0 passed, 1 failed"; exit }
    printf "%d passed, %d failed\n", p, f
  }'
