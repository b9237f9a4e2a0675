#!/usr/bin/env bash
# Shard wake-ups per second under forked calls: sipfork (SHARDS shards, journal on) in a fresh
# loopback-only network namespace, sipfork-load's fork3 preset at RATE calls/s for 15 s, and
# the shards' loop counters read from /metrics 6 s and 11 s into the run: per-second deltas of
# turns, busy turns, timeouts (handle_timeout calls), datagrams. Idle turns = turns - busy
# turns: wake-ups with no datagram (timers). Short and bounded; root (network namespace).
# Usage: benches/wakeups.sh [BIN] (default target/ci/sipfork; the harness from target/ci)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$root/target/ci/sipfork}
LT=${LT:-$root/target/ci/sipfork-load}
SHARDS=${SHARDS:-2}; RATE=${RATE:-1000}
work=$(mktemp -d); ns=wake$$
ip netns add $ns; ip netns exec $ns ip link set lo up
trap 'kill $(jobs -p) 2>/dev/null || true; ip netns del $ns 2>/dev/null || true; rm -rf "$work"' EXIT
"$LT" proxy-config --preset fork3 --shards "$SHARDS" --io uring --coalesce-us 0 >"$work/c.toml"
sed -i "/^\[server\]/a admin = \"127.0.0.1:8080\"\ndata_dir = \"$work/data\"" "$work/c.toml"
ip netns exec $ns "$BIN" --config "$work/c.toml" >"$work/proxy.log" 2>&1 &
for _ in $(seq 50); do ip netns exec $ns curl -sf http://127.0.0.1:8080/health >/dev/null && break; sleep 0.1; done
ip netns exec $ns "$LT" run --preset fork3 --rate "$RATE" --duration 15 --io uring --label w \
  --out "$work" --quiet >"$work/run.out" 2>&1 &
harness=$!
counters() {
  ip netns exec $ns curl -sf http://127.0.0.1:8080/metrics |
    grep -E '^sipfork_loop_(turns|busy_turns|datagrams|timeouts)_total' |
    awk '{sub(/\{.*/, "", $1); s[$1] += $NF} END {for (k in s) print k, s[k]}'
}
sleep 6; counters >"$work/m0"; sleep 5; counters >"$work/m1"
wait $harness || true
grep -E '^RESULT' "$work/run.out" | sed 's/ started=.*success_pct/ success_pct/'
join "$work/m0" "$work/m1" | awk '{printf "%s %.0f/s\n", $1, ($3 - $2) / 5; d[$1] = ($3 - $2) / 5}
  END {printf "idle_turns %.0f/s\n", d["sipfork_loop_turns_total"] - d["sipfork_loop_busy_turns_total"]}'
