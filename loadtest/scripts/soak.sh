#!/bin/bash
# Soak: sipfork in its shipped shape (SHARDS shards, journal on) held to a fixed CPU share by a
# cgroup, the zero-failure rate found there by a short ramp, then DURATION seconds of fork3 at half
# that rate; resident memory and the leak gauges sampled every SAMPLE_S seconds, and the gauges read
# again after the drain (they must be back to zero: no call, dialog or call timer left behind).
#
# usage: loadtest/scripts/soak.sh [DURATION_S (3600)]
# Environment:
#   CPU_PCT (25)        the proxy's CPU cap in % of one CPU (cgroup v2 cpu.max, or v1 cfs quota)
#   SHARDS (2) IO (uring)   sipfork engine settings (data_dir is always set: the journal is on)
#   RAMP (400:1600:200) the ramp that finds the zero-failure rate under the cap (10 s per step)
#   RATE (none)         skip the ramp and soak at this rate
#   EXPIRES (3600)      the Expires the devices register with; they refresh every EXPIRES/2 s
#                       (a short one brings the refresh rounds of an hour into minutes)
#   CALL_BASE (0)       the number call 0 carries in its identifiers: at 500/s, 910000 brings the
#                       moment every Call-ID, branch and tag grows a digit (call 1,000,000: an
#                       hour's soak at 2,000 s) to 180 s
#   SAMPLE_S (30)       sampling period for RSS and gauges
#   SMAPS (unset)       1: also write each sample's resident kB per mapping to OUT/smaps/<s>.tsv
#   NICE (-10)          proxy and harness niceness: on a shared box, other jobs must not take the
#                       capped proxy's share (the cap, not the neighbours, is what limits it)
#   OUT (loadtest/runs/soak-<stamp>)
# Writes OUT/samples.tsv (seconds, VmRSS kB, calls, dialogs, timers, bindings, RssAnon kB, heap in
# use kB, journal compactions so far), OUT/soak.json
# (the harness's result), OUT/soak.stats.jsonl, OUT/after-drain.txt, and prints a summary.
# Everything runs in a fresh loopback-only network namespace and stops by itself.
set -euo pipefail
DUR=${1:-3600}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CPU_PCT=${CPU_PCT:-25}; SHARDS=${SHARDS:-2}; IO=${IO:-uring}; RAMP=${RAMP:-400:1600:200}
SAMPLE_S=${SAMPLE_S:-30}; NICE=${NICE:--10}; PROFILE=${PROFILE:-release}; EXPIRES=${EXPIRES:-3600}
CALL_BASE=${CALL_BASE:-0}
OUT=${OUT:-$ROOT/loadtest/runs/soak-$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT"; [[ -n ${SMAPS:-} ]] && mkdir -p "$OUT/smaps"
(cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p sipfork -p sipfork-load)
SF=$ROOT/target/$PROFILE/sipfork
LT=$ROOT/target/$PROFILE/sipfork-load
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

NS=soak$$ CG="" DATA=$OUT/data
cleanup_soak() {
  cleanup
  ip netns del $NS 2>/dev/null || true
  # The stopped proxy leaves the cgroup only once it has exited: retry for a few seconds.
  if [[ -n $CG ]]; then
    for _ in $(seq 50); do rmdir "$CG" 2>/dev/null && break; sleep 0.1; done
  fi
}
trap cleanup_soak EXIT
ip netns add $NS; ip netns exec $NS ip link set lo up

# The cgroup: v2 where mounted as the unified hierarchy, else the v1 cpu controller. Its weight is
# the largest the controller takes: the group competes as one entity with every task of the root
# group (a nice level inside it does not count there), and a build's dozen compiler threads would
# otherwise leave it less than its cap.
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  CG=/sys/fs/cgroup/sipfork-soak$$; mkdir "$CG"
  echo "$((CPU_PCT * 1000)) 100000" > "$CG/cpu.max"
  echo 10000 > "$CG/cpu.weight"
else
  CG=/sys/fs/cgroup/cpu/sipfork-soak$$; mkdir "$CG"
  echo 100000 > "$CG/cpu.cfs_period_us"; echo $((CPU_PCT * 1000)) > "$CG/cpu.cfs_quota_us"
  echo 262144 > "$CG/cpu.shares"
fi
throttled() { grep -E '^(nr_throttled|throttled_usec|throttled_time)' "$CG/cpu.stat" | tr '\n' ' '; }

"$LT" proxy-config --preset fork3 --shards "$SHARDS" --io "$IO" > "$OUT/sipfork.toml"
sed -i "/^\[server\]/a admin = \"127.0.0.1:8080\"\ndata_dir = \"$DATA\"" "$OUT/sipfork.toml"
start_proxy() {
  rm -rf "$DATA"; mkdir -p "$DATA"
  ip netns exec $NS nice -n "$NICE" timeout $((DUR + 900)) "$SF" --config "$OUT/sipfork.toml" >> "$OUT/proxy.log" 2>&1 &
  PIDS+=($!)
  sleep 1
  SFPID=$(pgrep -n -f "^$SF --config $OUT/sipfork.toml")
  echo "$SFPID" > "$CG/cgroup.procs" 2>/dev/null || echo "$SFPID" > "$CG/tasks"
  # threads started before the move follow on v2; on v1 move each thread
  [[ -f $CG/tasks ]] && for t in /proc/$SFPID/task/*; do echo "${t##*/}" > "$CG/tasks"; done
  log "sipfork $SFPID in $CG ($CPU_PCT % of a CPU), $(throttled)"
}
metric() {  # the sum over shards of a gauge
  ip netns exec $NS curl -s 127.0.0.1:8080/metrics | awk -v m="$1" '$1 ~ "^"m"({|$)" { s += $2 } END { printf "%.0f\n", s }'
}

if [[ -z ${RATE:-} ]]; then
  start_proxy
  ip netns exec $NS nice -n "$NICE" "$LT" run --preset fork3 --ramp "$RAMP" --duration 10 --out "$OUT" \
    --label knee --quiet --proxy-pid "$SFPID" > "$OUT/knee.txt" 2>&1 || true
  KNEE=$(grep -o 'knee=[0-9]*' "$OUT/knee.txt" | tail -1 | cut -d= -f2)
  [[ -n $KNEE && $KNEE != 0 ]] || { cat "$OUT/knee.txt"; log "no rate of the ramp passed"; exit 1; }
  log "zero-failure rate under the cap: $KNEE calls/s ($(throttled))"
  kill "$SFPID"; wait 2>/dev/null || true; PIDS=()
  RATE=$((KNEE / 2))
fi
start_proxy
log "soak: $DUR s at $RATE calls/s"
printf 's\trss_kb\tcalls\tdialogs\ttimers\tbindings\trss_anon_kb\theap_kb\tcompactions\n' > "$OUT/samples.tsv"
( t0=$SECONDS
  while kill -0 "$SFPID" 2>/dev/null && (( SECONDS - t0 < DUR + 120 )); do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $((SECONDS - t0)) "$(awk '/^VmRSS/ {print $2}' /proc/$SFPID/status)" \
      "$(metric sipfork_proxy_calls)" "$(metric sipfork_proxy_dialogs)" "$(metric sipfork_timers)" \
      "$(metric sipfork_bindings)" "$(awk '/^RssAnon/ {print $2}' /proc/$SFPID/status)" \
      "$(( $(metric sipfork_heap_in_use_bytes) / 1024 ))" \
      "$(metric sipfork_journal_compactions_total)" >> "$OUT/samples.tsv"
    # SMAPS=1: every mapping's resident kB at this sample (which one grows: [heap], a thread's
    # malloc arena, an anonymous mmap, the journal's file mapping)
    [[ -n ${SMAPS:-} ]] && awk '/^[0-9a-f]+-[0-9a-f]+ / { m = $0 } /^Rss:/ && $2 > 0 { print $2 "\t" m }' \
      /proc/$SFPID/smaps > "$OUT/smaps/$((SECONDS - t0)).tsv"
    sleep "$SAMPLE_S"
  done ) &
SAMPLER=$!
rc=0
ip netns exec $NS nice -n "$NICE" "$LT" run --preset fork3 --rate "$RATE" --duration "$DUR" --max $((RATE * DUR)) --expires "$EXPIRES" --call-base "$CALL_BASE" \
  --stats-every 10s --out "$OUT" --label soak --quiet --proxy-pid "$SFPID" > "$OUT/soak.txt" 2>&1 || rc=$?
sleep 40   # Timer J/K and the drain
kill $SAMPLER 2>/dev/null || true
{ echo "after the drain:"
  for g in sipfork_proxy_calls sipfork_proxy_dialogs sipfork_timers sipfork_bindings sipfork_registered_extensions; do
    echo "$g $(metric $g)"; done
  echo "VmRSS_kB $(awk '/^VmRSS/ {print $2}' /proc/$SFPID/status)"
  echo "cgroup $(throttled)"; } > "$OUT/after-drain.txt"
cat "$OUT/soak.txt" | tail -5
cat "$OUT/after-drain.txt"
# Growth after warm-up: the first sample at or after 300 s against the last one during the load.
# VmRSS counts the journal's mapped pages (file-backed) and the allocator's freed pages not yet
# purged (jemalloc purges them within its 10-s decay; docs/memory.md); RssAnon leaves the mapping
# out, and the heap in use (jemalloc stats.allocated, sipfork_heap_in_use_bytes) is the live state
# itself: a leak grows all three.
growth() {
  awk -F'\t' -v dur="$DUR" -v col="$1" -v what="$2" 'NR > 1 && $1 >= 300 && !w { w = $col } NR > 1 && $1 <= dur { last = $col }
    END { if (w) printf "%s after warm-up %d kB, at the end %d kB: %+.2f %%\n", what, w, last, 100 * (last - w) / w }' "$OUT/samples.tsv"
}
growth 2 "RSS"; growth 7 "RssAnon"; growth 8 "heap in use"
exit $rc
