#!/usr/bin/env bash
# Every benchmark of the project, one after the other, in one sitting (about an hour on 2 cores).
# Each prints its own figures; the full output is kept in bench/results/<UTC time>.log for docs/benchmarks.md.
# Run it on a quiet machine: the benchmarks measure throughput and latency on shared cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
mkdir -p bench/results
LOG="bench/results/$(date -u +%Y%m%dT%H%M%SZ).log"
run() {
  echo "=== $* ($(date -u +%H:%M:%S))" | tee -a "$LOG"
  "$@" 2>&1 | tee -a "$LOG"
}
run "$PY" bench/upsert.py --rounds 5
run "$PY" bench/client.py
run "$PY" bench/pipeline.py --instruments 3000 --bars 1s,1m --intervals 0.2 --step-seconds 300
run "$PY" bench/api.py
run "$PY" bench/stream.py
run "$PY" bench/rules.py
run "$PY" bench/status_cost.py
run "$PY" bench/chaos.py --minutes 10
run "$PY" bench/firehose.py --minutes 10
run "$PY" bench/storage.py --reuse
echo "all figures in $LOG"
