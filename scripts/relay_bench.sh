#!/bin/bash
# Engine null relay vs the kernel-floor relay, same rate, same run, one after the other.
# usage: scripts/relay_bench.sh RATE SECS REPS [CONFIG...]
#   CONFIG: floor | floor-coN | mmsg | uring | mmsg-coN | uring-coN   (N: coalescing window, µs)
#   default configs: floor mmsg uring mmsg-co100 uring-co100
# Each run: a fresh loopback-only network namespace, the relay on 127.0.0.1:5060, udp_blast
# (benches/floor) sending RATE datagrams/s of 700 bytes for SECS s (bounded, stops by itself).
# Relay CPU = sum of /proc/PID/task/*/schedstat runtimes over the blast, per relayed datagram.
# Both processes float over the CPUs (the floor's "floating" placement).
set -euo pipefail
RATE=${1:?rate}; SECS=${2:?secs}; REPS=${3:-1}; shift 3 || true
CONFIGS=("$@"); [ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(floor mmsg uring mmsg-co100 uring-co100)
(( SECS <= 10 )) || { echo "SECS must be <= 10" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLOOR=${FLOOR:-$ROOT/benches/floor}
BIN=$ROOT/target/floor; mkdir -p "$BIN"
gcc -O2 -o "$BIN/udp_blast" "$FLOOR/udp_blast.c"
gcc -O2 -o "$BIN/udp_relay" "$FLOOR/udp_relay.c"
(cd "$ROOT" && cargo build --release --quiet --example relay)
RELAY=$ROOT/target/release/examples/relay
OUT=$(mktemp -d)
cpu() { cat /proc/$1/task/*/schedstat 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
run_one() {
  local cfg=$1 NS=rb$$ co=0
  ip netns add $NS; ip netns exec $NS ip link set lo up
  case $cfg in
    floor*) [[ $cfg == floor-co* ]] && co=${cfg#floor-co}
            ip netns exec $NS "$BIN/udp_relay" 127.0.0.1 5060 64 $((SECS + 3)) $co > "$OUT/relay.out" 2>&1 & ;;
    *)      local io=${cfg%%-*}; [[ $cfg == *-co* ]] && co=${cfg#*-co}
            ip netns exec $NS "$RELAY" 127.0.0.1:5060 $((SECS + 1)) --io $io --coalesce-us $co > "$OUT/relay.out" 2>&1 & ;;
  esac
  local RP=$!; sleep 0.5
  local t0; t0=$(cpu $RP)
  local N=$((RATE * SECS))
  ip netns exec $NS "$BIN/udp_blast" 127.0.0.1 $N 700 64 $((SECS + 2)) $RATE > "$OUT/blast.out" 2>&1
  local t1; t1=$(cpu $RP)
  [[ $cfg == floor* ]] && kill $RP 2>/dev/null; wait $RP 2>/dev/null || true; ip netns del $NS
  local us; us=$(python3 -c "print(round(($t1-$t0)/1000/$N,2))")
  echo "cfg=$cfg rate=$RATE relay_us_per_dgram=$us per_3way_call_us=$(python3 -c "print(round($us*13.5))") $(tail -1 "$OUT/blast.out") | $(grep -h DONE "$OUT/relay.out" | head -1)"
}
for rep in $(seq 1 "$REPS"); do
  for cfg in "${CONFIGS[@]}"; do run_one "$cfg"; done
done
rm -rf "$OUT"
