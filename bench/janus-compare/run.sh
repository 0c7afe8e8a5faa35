#!/usr/bin/env bash
# Janus and the bridge side by side (README.md): installs Debian's janus and the test peers if
# missing, builds the release bridge and the load tool, then runs the same str0m listeners
# against each server, alternating, at each listener count. Every run's output goes to
# results/run.log; the summary lines to results/summary.txt.
#   NS="100 1000 3000"  listener counts      ROUNDS=2  runs of each, alternating
#   WINDOW=15           seconds measured     MIXED_MAX=1000  largest AudioBridge run
#   REMOTE=50           all listeners but 50 "on other machines": their RTP dropped at lo's
#                       egress (meeting_load --remote; needs root and nftables, installed here)
set -euo pipefail
cd "$(dirname "$0")/../.."
NS=${NS:-100 1000 3000}
ROUNDS=${ROUNDS:-2}
WINDOW=${WINDOW:-15}
MIXED_MAX=${MIXED_MAX:-1000}
REMOTE=${REMOTE:-}
if ! command -v janus >/dev/null; then
  echo "== installing Debian's janus (apt-get install janus)"
  apt-get install -y --no-install-recommends janus
fi
[ -x .venv/bin/python ] || scripts/setup
if [ -n "$REMOTE" ] && ! command -v nft >/dev/null; then
  echo "== installing nftables (REMOTE drops the remote listeners' RTP at lo's egress)"
  apt-get install -y --no-install-recommends nftables
fi
echo "== building the release bridge and the load tool"
cargo build --release --bin pttbridge --example meeting_load
T=${CARGO_TARGET_DIR:-target}/release/examples/meeting_load
out=bench/janus-compare/results
mkdir -p "$out"
echo "== $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), janus $(dpkg-query -W -f '${Version}' janus), bridge $(git rev-parse --short HEAD)${REMOTE:+, all but $REMOTE listeners remote}" | tee -a "$out/summary.txt"
run() { # label, args...
  local label=$1; shift
  [ -z "$REMOTE" ] || set -- "$@" --remote "$REMOTE"
  echo "-- $label: meeting_load $*" | tee -a "$out/run.log"
  "$T" "$@" --seconds "$WINDOW" 2>&1 | tee -a "$out/run.log" \
    | grep -E 'listeners connected|memory|CPU|loss|latency' | sed "s/^/$label | /" | tee -a "$out/summary.txt"
  sleep 3
}
for n in $NS; do
  for r in $(seq "$ROUNDS"); do
    run "bridge pass-through 1 talker n=$n r=$r" "$n"
    run "janus streaming 1 talker    n=$n r=$r" "$n" --target janus-streaming
    if [ "$n" -le "$MIXED_MAX" ]; then
      run "janus audiobridge 1 talker  n=$n r=$r" "$n" --target janus-audiobridge
      run "bridge mixed 2 talkers      n=$n r=$r" "$n" --talkers 2
      run "janus audiobridge 2 talkers n=$n r=$r" "$n" --target janus-audiobridge --talkers 2
    fi
  done
done
