#!/bin/bash
# One short run per backend (xdp, uring, mmsg) of 3-way forked calls over a veth pair between two
# network namespaces: the sipfork binary in one, sipfork-load in the other. Reports, per backend,
# the proxy's CPU per call (sipfork-load's /proc accounting of the proxy PID) and per datagram
# (that CPU over the datagrams the proxy received and sent, from its /metrics). Then the same
# calls against the null reflector (`sipfork-load reflect`, the same engine and backend with no SIP
# work) on each backend: rows `refl-<io>`, its datagrams from the counts it prints at the stop.
#
# usage: loadtest/scripts/xdp_bench.sh [RATE] [DURATION_S]      (defaults 400 calls/s, 5 s)
# Environment: SHARDS (1)  BACKENDS ("xdp uring mmsg")  XDP_MODE (generic)  OUT (loadtest/runs/xdp-<stamp>)
#              REFLECTOR (1; 0: no reflector rows)
# Needs root. Every run is bounded (the harness stops after DURATION + its drain; the proxy is
# stopped by PID); the namespaces are deleted on exit. veth has no AF_XDP zero-copy: copy mode.
set -euo pipefail
RATE=${1:-400}; DUR=${2:-5}
SHARDS=${SHARDS:-1}; BACKENDS=${BACKENDS:-"xdp uring mmsg"}; XDP_MODE=${XDP_MODE:-generic}
REFLECTOR=${REFLECTOR:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/loadtest/runs/xdp-$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT"
(cd "$ROOT" && cargo build --profile ci --quiet -p sipfork -p sipfork-load)
SF=$ROOT/target/ci/sipfork; LT=$ROOT/target/ci/sipfork-load
P=xb$$p; H=xb$$h; A=xb$$a; B=xb$$b
cleanup() { [[ -n ${PID:-} ]] && kill "$PID" 2>/dev/null; ip netns del "$P" 2>/dev/null; ip netns del "$H" 2>/dev/null; true; }
trap cleanup EXIT
ip netns add "$P"; ip netns add "$H"
ip link add "$A" numtxqueues "$SHARDS" numrxqueues "$SHARDS" type veth peer name "$B" numtxqueues "$SHARDS" numrxqueues "$SHARDS"
ip link set "$A" netns "$P"; ip link set "$B" netns "$H"
ip -n "$P" addr add 10.215.0.1/24 dev "$A"; ip -n "$H" addr add 10.215.0.2/24 dev "$B"
for n in "$P" "$H"; do ip -n "$n" link set lo up; done
ip -n "$P" link set "$A" up; ip -n "$H" link set "$B" up
TARGET=10.215.0.1:5060
# One result row: JSON, label, datagrams, of them received through AF_XDP, the target's CPU (ns).
row() {
  python3 - "$@" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
io, dg, xrx, cpu_ns = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
v, cpu = r["verdicts"], r["cpu"]
# per call: the harness's accounting of the target PID over the call window;
# per datagram: the target's whole-life CPU (registration phase included) over every datagram
# it received and sent (/metrics, or the reflector's counts), so both count the same work.
print(f"{io:<10} {v['ok']:>4}/{v['calls']:<5} {cpu['proxy_us_per_call']:14.1f} {dg:>10} "
      f"{cpu_ns / 1000 / max(dg, 1):12.2f} {cpu['other_pct']:10.1f}  passed={r['passed']} xdp_rx={xrx}")
PY
}
printf '%-10s %10s %14s %10s %12s %10s\n' io ok/calls proxy_us/call datagrams us/datagram other_pct
for IO in $BACKENDS; do
  CFG=$OUT/$IO.toml
  "$LT" proxy-config --preset fork3 --rate "$RATE" --duration "$DUR" --target "$TARGET" --shards "$SHARDS" > "$CFG.base"
  awk -v io="$IO" -v dev="$A" -v mode="$XDP_MODE" '{print} /^\[server\]/{print "io = \"" io "\""; print "admin = \"127.0.0.1:18080\""; if (io=="xdp") {print "interface = \"" dev "\""; print "xdp_mode = \"" mode "\""}}' "$CFG.base" > "$CFG"
  ip netns exec "$P" timeout $((DUR + 60)) "$SF" --config "$CFG" > "$OUT/$IO.proxy.log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do ip netns exec "$P" curl -sf 127.0.0.1:18080/health >/dev/null 2>&1 && break; sleep 0.1; done
  SPID=$(pgrep -P "$PID" -x sipfork || echo "$PID")
  metric() { ip netns exec "$P" curl -sf 127.0.0.1:18080/metrics | awk -v m="$1" '$1 ~ "^"m"\\{" {s+=$2} END {printf "%.0f", s}'; }
  ip netns exec "$H" timeout $((DUR + 60)) "$LT" run --preset fork3 --rate "$RATE" --duration "$DUR" \
    --target "$TARGET" --local-ip 10.215.0.2 --proxy-pid "$SPID" --quiet --label "$IO" --out "$OUT" > "$OUT/$IO.harness.log" 2>&1 || echo "$IO: harness failed (see $OUT/$IO.harness.log)"
  DG=$(( $(metric sipfork_io_rx_datagrams_total) + $(metric sipfork_io_tx_datagrams_total) ))
  XDPRX=$(metric sipfork_io_xdp_rx_total)
  # The proxy's whole-life CPU (ns, every thread), for CPU per datagram over the whole run.
  CPU_NS=$(cat /proc/"$SPID"/task/*/schedstat | awk '{s+=$1} END {printf "%.0f", s}')
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  row "$OUT/$IO.json" "$IO" "$DG" "$XDPRX" "$CPU_NS"
done
for IO in $BACKENDS; do
  [[ $REFLECTOR == 1 ]] || break
  L=refl-$IO
  if [[ $IO == xdp ]]; then BACKEND=(--xdp "$A" --xdp-mode "$XDP_MODE"); else BACKEND=(--io "$IO"); fi
  ip netns exec "$P" timeout $((DUR + 60)) "$LT" reflect --listen "$TARGET" "${BACKEND[@]}" \
    --shards "$SHARDS" --secs $((DUR + 55)) > "$OUT/$L.reflector.log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do grep -q "reflector listening" "$OUT/$L.reflector.log" && break; sleep 0.1; done
  SPID=$(pgrep -P "$PID" -x sipfork-load || echo "$PID")
  ip netns exec "$H" timeout $((DUR + 60)) "$LT" run --reflector --preset fork3 --rate "$RATE" --duration "$DUR" \
    --target "$TARGET" --local-ip 10.215.0.2 --proxy-pid "$SPID" --quiet --label "$L" --out "$OUT" > "$OUT/$L.harness.log" 2>&1 || echo "$L: harness failed (see $OUT/$L.harness.log)"
  CPU_NS=$(cat /proc/"$SPID"/task/*/schedstat | awk '{s+=$1} END {printf "%.0f", s}')
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  # The reflector's DONE lines (one per shard): received + sent, and what came through AF_XDP.
  count() { awk -v f="$1" '/^DONE /{for(i=1;i<=NF;i++){split($i,kv,"="); if(kv[1]==f) s+=kv[2]}} END {printf "%.0f", s}' "$OUT/$L.reflector.log"; }
  row "$OUT/$L.json" "$L" $(( $(count received) + $(count sent) )) "$(count xdp_rx)" "$CPU_NS"
done
echo "results: $OUT"
