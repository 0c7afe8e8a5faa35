#!/usr/bin/env bash
# Clean release build of each minimal program, one after the other, on a quiet machine:
# wall time, crates compiled, binary size (as built and stripped). Appends to results/buildtime.txt.
set -euo pipefail
cd "$(dirname "$0")"
out=${OUT:-results}
mkdir -p "$out"
cargo fetch --locked >/dev/null
for crate in ${CRATES:-min-str0m min-webrtc}; do
  dir=$(mktemp -d /tmp/buildtime.XXXX)
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(date +%s.%N)
  CARGO_TARGET_DIR=$dir cargo build --locked --release -j "${JOBS:-2}" -p "$crate" 2> "$dir/log"
  t1=$(date +%s.%N)
  compiled=$(grep -c '^ *Compiling' "$dir/log")
  bin=$dir/release/$crate
  size=$(stat -c %s "$bin")
  strip -o "$dir/stripped" "$bin"
  stripped=$(stat -c %s "$dir/stripped")
  c_build=$(grep -o 'Compiling [a-z0-9_-]*-sys' "$dir/log" | awk '{print $2}' | paste -sd, || true)
  echo "crate=$crate jobs=${JOBS:-2} wall_s=$(echo "$t1 - $t0" | bc) compiled=$compiled bin=$size stripped=$stripped sys_crates=$c_build load_before=[$load0]" | tee -a "$out/buildtime.txt"
  rm -rf "$dir"
done
