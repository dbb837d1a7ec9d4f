#!/usr/bin/env bash
# vigil's benchmark harness: `make bench`, or
#   bench/run.sh [BUILD_DIR] [--only NAME[,NAME...]] [--no-doc]
# Parts: overhead bpfcost footprint events aggregator wire cli. BENCH_QUICK=1 shortens every
# part for a smoke run. Prints one table and rewrites docs/performance.md (unless --only or
# --no-doc is given: a partial run writes BUILD_DIR/performance.partial.md instead, so a single part
# never replaces the full report). Exits 0 unless the harness itself breaks.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec python3 "$here/harness.py" "$@"
