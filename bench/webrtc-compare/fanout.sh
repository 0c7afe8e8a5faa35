#!/usr/bin/env bash
# The fan-out runs of README.md, one after the other on a quiet machine; RESULT lines go to
# results/fanout.txt. FANOUT=path/to/fanout (default: this workspace's release build).
set -euo pipefail
cd "$(dirname "$0")"
F=${FANOUT:-${CARGO_TARGET_DIR:-target}/release/fanout}
S=${SECONDS_WINDOW:-20}
for n in ${NS:-500 1000}; do
  for run in "str0m $n" "webrtc $n" "webrtc $n --threads 2"; do
    $F $run --seconds "$S" 2>/dev/null | tee -a results/fanout.log | grep '^RESULT' >> results/fanout.txt
    sleep 3
  done
done
