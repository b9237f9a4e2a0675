#!/usr/bin/env bash
# Where a forked call's CPU goes, sipfork against the null reflector: runs sipfork-load's fork3
# preset (PRESET, e.g. register-storm) at 1,000 calls/s (RATE) for 20 s through
# loadtest/scripts/bench.sh (2 shards + journal for
# sipfork; the reflector as bench.sh runs it), attaches `perf record -g` to the proxy for 10 s,
# and reads each thread's voluntary/non-voluntary context switches before and after. perf
# inflates the CPU figures: read shares and ratios, not µs. Loopback in bench.sh's own network
# namespace; bounded (one run each). Root.
# Usage: benches/profile_shipped.sh OUT   (then e.g. perf report -i OUT/sipfork/perf.data
#        --no-children -g none --sort dso,sym; --sort comm,dso,sym splits it by thread)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: profile_shipped.sh OUT}
PRESET=${PRESET:-fork3}; RATE=${RATE:-1000}
for target in sipfork reflector; do
  d=$OUT/$target; rm -rf "$d"; mkdir -p "$d"
  OUT=$d/out PROFILE=ci PRESET=$PRESET SHARDS=2 JOURNAL=1 QUIET_BUSY=0 RETRIES=0 \
    "$root/loadtest/scripts/bench.sh" "$target" "$RATE" 20 >"$d/bench.out" 2>&1 &
  bench=$!
  if [[ $target == sipfork ]]; then pat="sipfork --config $d/out"; else pat="sipfork-load reflect"; fi
  pid=""
  # bench.sh may first wait for a quiet box (minutes).
  for _ in $(seq 1500); do pid=$(pgrep -f "$pat" | head -1 || true); [[ -n $pid ]] && break; sleep 0.2; done
  [[ -n $pid ]] || { echo "no $target process" >&2; wait $bench; exit 1; }
  sleep 5
  grep -hE '^(Name|voluntary|nonvoluntary)' /proc/$pid/task/*/status >"$d/switches0"
  perf record -F 2000 -g -p "$pid" -o "$d/perf.data" -- sleep 10 2>"$d/perf.err"
  grep -hE '^(Name|voluntary|nonvoluntary)' /proc/$pid/task/*/status >"$d/switches1"
  wait $bench
  grep -h proxy_us_per_ "$d/bench.out" || true
done
