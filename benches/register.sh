#!/usr/bin/env bash
# REGISTER cost, sipfork against Kamailio, in one run (DECISIONS.md "Measuring"): SIPp
# re-registers 1000 extensions x 3 contacts in a loop (each SIPp call = 2 REGISTERs: "Contact: *"
# removal, then 3 contacts; no auth) at RATE calls/s for DURATION s, first against sipfork (once per
# shard count in SHARDS), then against Kamailio with its default allocator and with -x tlsf, on the
# same address 127.0.0.1:5060, one after the other. Prints proxy CPU µs per REGISTER (sum of every
# thread's /proc/PID/task/*/schedstat runtime) and Kamailio ÷ sipfork.
#
# usage: benches/register.sh [RATE=1000] [DURATION_S=20]
# env:   SHARDS="1 2"   sipfork shard counts to run (default: "1 2")
#        JOURNAL="1 0"  1: with data_dir (journal write per turn, fsync every 10 ms); 0: memory only,
#                       like the anchor Kamailio (usrloc db_mode 0)
#        IO=auto        sipfork backend (auto|uring|mmsg)
#        COALESCE_US=0  sipfork's batching window
#        KAMAILIO=1     0 skips the Kamailio runs
#        ANCHORS=…      the anchors directory (default: benches/anchors, vendored from the reference harness)
#        OUT=…          work directory (default: runs/register-<stamp>)
#
# Runs inside a fresh network namespace with only loopback (created here, removed at the end), so
# it neither collides with anything else on 127.0.0.1:5060 nor sends anywhere else. Every process
# is bounded (timeouts, SIPp -m/-timeout) and stopped by PID. Each run lasts DURATION + ~5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RATE=${1:-1000}
DUR=${2:-20}
[[ $RATE =~ ^[0-9]+$ && $RATE -ge 1 && $RATE -le 20000 ]] || { echo "RATE must be 1..20000" >&2; exit 2; }
[[ $DUR =~ ^[0-9]+$ && $DUR -ge 1 && $DUR -le 55 ]] || { echo "DURATION_S must be 1..55 (runs stay under 60 s)" >&2; exit 2; }

if [[ -z ${SIPFORK_BENCH_NETNS:-} ]]; then
  cargo build --release --bin sipfork >&2
  NS=sipfork-bench-$$
  ip netns add "$NS"
  trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
  ip netns exec "$NS" ip link set lo up
  ip netns exec "$NS" env SIPFORK_BENCH_NETNS=1 "$0" "$@"
  exit $?
fi

SHARDS=${SHARDS:-"1 2"}
JOURNAL=${JOURNAL:-"1 0"}
IO=${IO:-auto}
COALESCE_US=${COALESCE_US:-0}
KAMAILIO=${KAMAILIO:-1}
ANCHORS=${ANCHORS:-$REPO/benches/anchors}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$REPO/runs/register-$STAMP}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN=$REPO/target/release/sipfork
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 2; }
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"
trap cleanup EXIT

results=()

bench() { # LABEL PID -> appends "LABEL µs/REGISTER failed" to results
  local label=$1 pid=$2 line
  line=$(PROXY_PID=$pid OUT=$OUT/$label timeout $((DUR + 90)) "$ANCHORS/run_register_bench.sh" 127.0.0.1:5060 "$RATE" "$DUR" | grep '^RESULT' || true)
  echo "$label $line" >> "$OUT/results.txt"
  log "$label: ${line:-no result}"
  local us failed ok
  us=$(grep -o 'proxy_cpu_us_per_register=[0-9.]*' <<<"$line" | cut -d= -f2)
  failed=$(grep -o 'failed_calls=[0-9?]*' <<<"$line" | cut -d= -f2)
  ok=$(grep -o 'ok_calls=[0-9?]*' <<<"$line" | cut -d= -f2)
  results+=("$label ${us:-?} ${ok:-?} ${failed:-?}")
}

for shards in $SHARDS; do
for journal in $JOURNAL; do
  label=sipfork-s$shards-$([[ $journal == 1 ]] && echo journal || echo memory)
  mkdir -p "$OUT/$label"
  data_dir=""
  [[ $journal == 1 ]] && data_dir=$OUT/$label/data
  start_sipfork "$BIN" "$OUT/$label" "$shards" "$IO" "$COALESCE_US" "$data_dir" $((DUR + 120))
  pid=$SIPFORK_PID wrapper=$SIPFORK_WRAPPER
  bench "$label" "$pid"
  curl -sf http://127.0.0.1:8080/metrics > "$OUT/$label/metrics.txt" || true
  bindings=$(awk '/^sipfork_bindings\{/ { s += $2 } END { print s + 0 }' "$OUT/$label/metrics.txt")
  log "$label: $bindings bindings held at the end (expected 3000)"
  kill -TERM "$pid"
  wait "$wrapper" || log "$label: sipfork exited with $?"
done
done

if [[ $KAMAILIO == 1 ]]; then
  # A private copy of the anchor's Kamailio directory: its pid file and ctl socket stay here.
  cp -r "$ANCHORS/kamailio" "$OUT/kamailio"
  rm -rf "$OUT/kamailio/run"
  for mgr in qm tlsf; do
    label=kamailio-$mgr
    opt=""; [[ $mgr == tlsf ]] && opt=tlsf
    "$OUT/kamailio/stop_kamailio.sh" >/dev/null 2>&1 || true
    "$OUT/kamailio/start_kamailio.sh" 4 2048 "$opt" >&2
    pid=$(cat "$OUT/kamailio/run/kamailio.pid")
    PIDS+=("$pid")
    sleep 1
    bench "$label" "$pid"
    "$OUT/kamailio/stop_kamailio.sh" >&2
    cp "$OUT/kamailio/run/kamailio.log" "$OUT/$label.kamailio.log" 2>/dev/null || true
  done
fi

python3 - "$RATE" "$DUR" "${results[@]}" <<'PY'
import sys
rate, dur, rows = sys.argv[1], sys.argv[2], [r.split() for r in sys.argv[3:]]
print(f"REGISTER cost at {rate} SIPp calls/s ({2 * int(rate)} REGISTER/s) for {dur} s, 1000 x 3 contacts, no auth")
print(f"{'proxy':<24} {'CPU us/REGISTER':>16} {'ok calls':>9} {'failed':>7}")
for label, us, ok, failed in rows:
    print(f"{label:<24} {us:>16} {ok:>9} {failed:>7}")
def us(label):
    for r in rows:
        if r[0] == label:
            try: return float(r[1])
            except ValueError: return None
for s in [r[0] for r in rows if r[0].startswith("sipfork")]:
    for k in ("kamailio-qm", "kamailio-tlsf"):
        a, b = us(k), us(s)
        if a and b:
            print(f"{k} / {s} = {a / b:.2f}x less CPU per REGISTER")
PY
echo "details: $OUT" >&2
