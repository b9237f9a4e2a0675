#!/bin/bash
# Overload evidence (issue 12, point 2): sipfork held to a fixed CPU share by a cgroup, its
# zero-failure rate found with the harness, then 1.5x, 2x and 3x that rate offered; records
# goodput (calls passing the harness's verdicts per second), 503s per second and whether /health
# answered, and checks that the CPU cap took effect.
#
# usage: loadtest/scripts/overload.sh [DURATION_S (20)]
# Environment:
#   QUOTA_US (10000) PERIOD_US (100000)   the cap: a tenth of a CPU
#   RAMP (100:1000:100)  the knee search (FROM:TO:STEP calls/s, stops at the first failing rate)
#   KNEE (none)          skip the search and take this zero-failure rate
#   MULTS ("1.5 2 3")    the multiples of the knee offered
#   PRESET (fork3)  PROFILE (ci: release without LTO)  OUT (loadtest/runs/overload-<stamp>)
# Everything runs in a fresh loopback-only network namespace; every run is bounded by its
# duration and drain; the proxy is stopped by PID and the cgroup removed at the end.
set -euo pipefail
DUR=${1:-20}
TARGET=sipfork
QUOTA_US=${QUOTA_US:-10000}; PERIOD_US=${PERIOD_US:-100000}
RAMP=${RAMP:-100:1000:100}; MULTS=${MULTS:-1.5 2 3}
PRESET=${PRESET:-fork3}; PROFILE=${PROFILE:-ci}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/loadtest/runs/overload-$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT"
(cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p sipfork -p sipfork-load)
SF=$ROOT/target/$PROFILE/sipfork
LT=$ROOT/target/$PROFILE/sipfork-load
NS=ovl$$
CG=""
PID=""

log() { echo "[$(date +%T)] $*" >&2; }

cleanup() {
  [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null || true
  sleep 0.5
  ip netns del $NS 2>/dev/null || true
  [[ -n $CG ]] && rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT

# The cgroup: v2 (cpu.max) where the unified hierarchy is mounted at /sys/fs/cgroup, else the v1
# cpu controller (cpu.cfs_quota_us).
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  CG=/sys/fs/cgroup/sipfork-ovl$$
  grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
  mkdir "$CG"; echo "$QUOTA_US $PERIOD_US" > "$CG/cpu.max"
  CAP="cgroup v2 cpu.max = $(cat "$CG/cpu.max")"
else
  CG=/sys/fs/cgroup/cpu/sipfork-ovl$$
  mkdir "$CG"; echo "$PERIOD_US" > "$CG/cpu.cfs_period_us"; echo "$QUOTA_US" > "$CG/cpu.cfs_quota_us"
  CAP="cgroup v1 cpu.cfs_quota_us/cfs_period_us = $(cat "$CG/cpu.cfs_quota_us")/$(cat "$CG/cpu.cfs_period_us")"
fi
log "cap: $CAP"
throttled() {  # nr_throttled of the cgroup
  awk '$1 == "nr_throttled" { print $2 }' "$CG/cpu.stat"
}
cpu_us() {  # CPU time of every thread of $PID, µs (schedstat: DECISIONS.md "Measuring")
  local total=0 t
  for t in /proc/"$PID"/task/*/schedstat; do total=$(( total + $(awk '{ print $1 }' "$t" 2>/dev/null || echo 0) )); done
  echo $(( total / 1000 ))
}

ip netns add $NS; ip netns exec $NS ip link set lo up
"$LT" proxy-config --preset "$PRESET" > "$OUT/sipfork.toml"
sed -i '0,/^\[server\]/s//[server]\nadmin = "127.0.0.1:8080"/' "$OUT/sipfork.toml"
# The shell joins the cgroup, then becomes the proxy (every thread it starts is in it).
SIPFORK_LOG=warn setsid bash -c "echo \$\$ > $CG/cgroup.procs; exec ip netns exec $NS $SF --config $OUT/sipfork.toml" \
  > "$OUT/sipfork.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  ip netns exec $NS curl -sf --max-time 1 http://127.0.0.1:8080/health >/dev/null 2>&1 && break
  sleep 0.1
done
grep -qx "$PID" "$CG/cgroup.procs" || { log "the proxy is not in the cgroup"; exit 1; }

if [[ -z ${KNEE:-} ]]; then
  log "knee search $RAMP (${DUR} s each)"
  ip netns exec $NS "$LT" sweep --preset "$PRESET" --ramp "$RAMP" --duration "$DUR" \
    --max 1000000 --label "$TARGET-knee" --out "$OUT" --quiet > "$OUT/knee.txt" || true
  KNEE=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['knee'] or 0))" "$OUT/$TARGET-knee-sweep.json")
fi
(( KNEE > 0 )) || { log "no rate passed under the cap"; exit 1; }
log "zero-failure rate under the cap: $KNEE calls/s"

ROWS=$OUT/table.md
{
  echo "Cap: $CAP; $TARGET; preset $PRESET; ${DUR} s per run; zero-failure rate $KNEE calls/s"
  echo
  echo "| offered | calls/s | goodput/s | goodput / zero-failure rate | 503/s | other failed/s | /health answered | proxy CPU (of one core) | cgroup throttled periods |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
} > "$ROWS"
for m in 1 $MULTS; do
  rate=$(python3 -c "print(round($KNEE * $m))")
  label="$TARGET-x$m-r$rate"
  log "offering ${m}x = $rate calls/s"
  th0=$(throttled); cpu0=$(cpu_us); t0=$(date +%s%N)
  ip netns exec $NS "$LT" run --preset "$PRESET" --rate "$rate" --duration "$DUR" --max $((rate * DUR)) \
    --label "$label" --out "$OUT" --quiet > "$OUT/$label.summary.txt" 2>&1 &
  run=$!
  ok=0; asked=0
  while kill -0 $run 2>/dev/null; do
    if [[ $TARGET == sipfork ]]; then
      asked=$((asked + 1))
      code=$(ip netns exec $NS curl -s -o /dev/null -w '%{http_code}' --max-time 1 http://127.0.0.1:8080/health || true)
      [[ $code == 200 ]] && ok=$((ok + 1))
      # The proxy's own view, once a second: load level, busy %, backlog, 503s sent.
      { echo "t=$(date +%T.%N | cut -c1-12) health=$code"
        ip netns exec $NS curl -s --max-time 1 http://127.0.0.1:8080/metrics \
          | grep -E '^sipfork_(overload_(reduction|busy_pct|backlog)|overload_shed_total|rate_limited_total)' || true
      } >> "$OUT/$label.overload.txt"
    fi
    sleep 1
  done
  wait $run || true
  t1=$(date +%s%N); cpu1=$(cpu_us); th1=$(throttled)
  python3 - "$OUT/$label.json" "$m" "$rate" "$KNEE" "$DUR" "$ok" "$asked" \
    "$(( (cpu1 - cpu0) * 100000 / ((t1 - t0) / 1000) ))" "$((th1 - th0))" >> "$ROWS" <<'PY'
import json, sys
path, m, rate, knee, dur, ok, asked, cpu_milli, thr = sys.argv[1:]
r = json.load(open(path))
v = r["verdicts"]
# The load phase: calls started at the offered rate (the preset's `max` could end it early).
dur = r["counters"]["started"] / float(rate)
refused = sum(s["counts"].get("refused_503", 0) for s in r["timeline"])
good = v["ok"] / dur
other = (v["failed"] - refused) / dur
health = f"{ok}/{asked}" if int(asked) else "n/a"
print(f"| {m}x | {rate} | {good:.0f} | {100 * good / float(knee):.0f} % | {refused / dur:.0f} | {max(other, 0):.0f} | {health} | {int(cpu_milli) / 1000:.1f} % | {thr} |")
PY
done
cat "$ROWS"
