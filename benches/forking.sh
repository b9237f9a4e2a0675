#!/usr/bin/env bash
# 3-way forked calls, sipfork against Kamailio, in one run (DECISIONS.md "Measuring"): the anchor
# harness `shared/anchors/run_forking_bench.sh 127.0.0.1:5060 RATE DURATION_S` (SIPp registers
# 1000 extensions x 3 devices, then a caller places RATE calls/s for DURATION_S s; device 1
# answers after 100 ms, devices 2 and 3 ring and are cancelled; the caller holds 500 ms and hangs
# up) first against sipfork (once per configuration below), then against Kamailio with its default
# allocator and with -x tlsf, on the same address, one after the other. Prints proxy CPU ms per
# call (sum of every thread's /proc/PID/task/*/schedstat runtime over the call window), call
# success, INVITE->180/200 latency, Kamailio ÷ sipfork, and sipfork's loop counters per call.
#
# usage: benches/forking.sh [RATE=1000] [DURATION_S=20]
# env:   SHARDS="1 2"      sipfork shard counts (" " skips sipfork)
#        COALESCE="0 100"  sipfork coalesce_us values (0 = the configuration default: off)
#        JOURNAL="0"       0: no data_dir (memory only, like the anchor Kamailio); 1: with the
#                          journal; "0 1": both
#        IO=auto           sipfork backend (auto|uring|mmsg)
#        BINS=…            sipfork binaries to compare in this run, as NAME=PATH words (default:
#                          target/release/sipfork); each runs every configuration, labelled
#                          sipfork-NAME-…, e.g. BINS="before=/tmp/old/sipfork after=target/release/sipfork"
#        KAMAILIO="qm tlsf"  Kamailio allocators to run after sipfork ("" skips Kamailio)
#        UAC=anchor        anchor: the anchor's caller scenario as it is; fixed: tests/sipp/uac.xml,
#                          whose ACK and BYE carry the answering device's To tag (the anchor's
#                          mostly carry a loser's, so sipfork's dialog records are not released)
#        PERF=0            1: `perf record -g` on sipfork during each sipfork run (perf.data and a
#                          report in the run's directory; the CPU figure of such a run includes
#                          perf's own sampling cost: do not quote it); dwarf: with DWARF call
#                          graphs (the release build has no frame pointers, so only these attribute
#                          user-space time to callers; large perf.data, keep DURATION short)
#        FLOOR_RUN=1       1: after the proxies, the kernel floor (shared/floor's C relay) and
#                          the engine's null relay at RATE x 13.5 datagrams/s (scripts/relay_bench.sh)
#        QUIET_WAIT=0      seconds to wait, before each proxy's run, for the box to be quiet (other
#                          processes below 25 % of one CPU over 2 s; on a shared machine another
#                          job's load decides the saturation rate); the run starts anyway after that
#        ANCHORS=…         the shared anchors directory (default: ../shared/anchors next to the repo)
#        OUT=…             work directory (default: runs/forking-<stamp>)
#
# Runs inside a fresh network namespace with only loopback (created here, removed at the end), so
# it neither collides with anything else on 127.0.0.1:5060 nor sends anywhere else. The anchors
# directory is copied into OUT and run from there (the harness writes runs/ and Kamailio its pid
# file next to itself; the shared copy stays untouched). Every process is bounded (timeouts, SIPp
# -m/-timeout) and stopped by PID. Each run takes about DURATION + 15 s.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RATE=${1:-1000}
DUR=${2:-20}
[[ $RATE =~ ^[0-9]+$ && $RATE -ge 1 && $RATE -le 10000 ]] || { echo "RATE must be 1..10000" >&2; exit 2; }
[[ $DUR =~ ^[0-9]+$ && $DUR -ge 1 && $DUR -le 45 ]] || { echo "DURATION_S must be 1..45 (runs stay under 60 s)" >&2; exit 2; }
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$REPO/runs/forking-$STAMP}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT

if [[ -z ${SIPFORK_BENCH_NETNS:-} ]]; then
  cargo build --release --bin sipfork >&2
  NS=sipfork-fork-$$
  ip netns add "$NS"
  trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
  ip netns exec "$NS" ip link set lo up
  rc=0
  ip netns exec "$NS" env SIPFORK_BENCH_NETNS=1 "$0" "$@" || rc=$?
  if [[ ${FLOOR_RUN:-1} == 1 ]]; then
    # The do-nothing relays at the datagram rate of these calls (12 in + 15 out per call at the
    # proxy = 13.5 relayed datagrams), in their own namespaces, same placement (floating).
    DGRAMS=$((RATE * 27 / 2))
    echo "floor at $DGRAMS datagrams/s (= $RATE calls/s):" >&2
    env -u FLOOR scripts/relay_bench.sh "$DGRAMS" 5 1 floor uring mmsg | tee "$OUT/floor.txt" >&2 || true
    python3 - "$OUT" <<'PY'
import os, re, sys
out = sys.argv[1]
rows = {}
for line in open(os.path.join(out, "floor.txt")):
    m = re.search(r"cfg=(\S+) .*per_3way_call_us=([0-9.]+)", line)
    if m:
        rows[m.group(1)] = float(m.group(2))
res = {}
for line in open(os.path.join(out, "results.txt")):
    p = line.split()
    m = re.search(r"proxy_cpu_ms_per_call=([0-9.]+)", line)
    if p and m:
        res[p[0]] = float(m.group(1)) * 1000
if rows and res:
    print("\nproxy CPU per call ÷ floor (µs per call's worth of datagrams, same run):")
    for relay, us in rows.items():
        print(f"  {relay:<8} {us:7.0f} µs/call: " + ", ".join(f"{k} {v / us:.2f}x" for k, v in res.items()))
PY
  fi
  echo "details: $OUT" >&2
  exit $rc
fi

SHARDS=${SHARDS:-"1 2"}
COALESCE=${COALESCE:-"0 100"}
JOURNAL=${JOURNAL:-"0"}
IO=${IO:-auto}
KAMAILIO=${KAMAILIO-"qm tlsf"}
UAC=${UAC:-anchor}
PERF=${PERF:-0}
ANCHORS=${ANCHORS:-$(cd "$REPO/../shared/anchors" && pwd)}
BINS=${BINS:-"=$REPO/target/release/sipfork"}
for entry in $BINS; do
  [[ -x ${entry#*=} ]] || { echo "${entry#*=}: not an executable (build first: cargo build --release)" >&2; exit 2; }
done
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

# A private copy of the anchors (without earlier runs).
rm -rf "$OUT/anchors"
mkdir -p "$OUT/anchors"
(cd "$ANCHORS" && tar cf - --exclude=./runs --exclude=./kamailio/run .) | tar xf - -C "$OUT/anchors"
chmod -R u+w "$OUT/anchors"
mkdir -p "$OUT/anchors/runs"
case $UAC in
  anchor) ;;
  fixed) cp "$REPO/tests/sipp/uac.xml" "$OUT/anchors/sipp/uac.xml" ;;
  *) echo "UAC must be anchor or fixed" >&2; exit 2 ;;
esac
HARNESS=$OUT/anchors/run_forking_bench.sh

trap cleanup EXIT

sched_snap() { # PID: "runtime_ns runqueue_wait_ns timeslices" summed over the threads of PID and its children
  local p
  for p in "$1" $(pgrep -P "$1"); do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done \
    | awk '{r += $1; w += $2; n += $3} END {printf "%.0f %.0f %.0f\n", r, w, n}'
}

bench() { # LABEL PID: runs the harness against the proxy PID, appends its RESULT line and a SCHED
  local label=$1 pid=$2 line before after
  wait_quiet 25 "${QUIET_WAIT:-0}"
  before=$(sched_snap "$pid")
  line=$(PROXY_PID=$pid OUT=$OUT/$label/run timeout $((DUR + 120)) "$HARNESS" 127.0.0.1:5060 "$RATE" "$DUR" | grep '^RESULT' || true)
  after=$(sched_snap "$pid")
  echo "$label ${line:-RESULT none}" >> "$OUT/results.txt"
  # Over the whole harness run (registration included): CPU time, time spent runnable but
  # waiting for a CPU, and timeslices (≈ wake-ups) of the proxy's threads.
  read -r r0 w0 n0 <<<"$before"; read -r r1 w1 n1 <<<"$after"
  echo "$label SCHED run_ms=$(((r1 - r0) / 1000000)) runq_wait_ms=$(((w1 - w0) / 1000000)) slices=$((n1 - n0))" >> "$OUT/results.txt"
  log "$label: ${line:-no result}"
}

for entry in $BINS; do
name=${entry%%=*} BIN=${entry#*=}
for shards in $SHARDS; do
for co in $COALESCE; do
for journal in $JOURNAL; do
  label=sipfork${name:+-$name}-s$shards-co$co$([[ $journal == 1 ]] && echo -journal || true)
  mkdir -p "$OUT/$label"
  data_dir=""
  [[ $journal == 1 ]] && data_dir=$OUT/$label/data
  start_sipfork "$BIN" "$OUT/$label" "$shards" "$IO" "$co" "$data_dir" $((DUR + 150 + ${QUIET_WAIT:-0}))
  pid=$SIPFORK_PID wrapper=$SIPFORK_WRAPPER
  perf_pid=""
  if [[ $PERF == 1 || $PERF == dwarf ]]; then
    graph=(-g -F 2000)
    [[ $PERF == dwarf ]] && graph=(--call-graph dwarf,16384 -F 499)
    timeout $((DUR + 60 + ${QUIET_WAIT:-0})) perf record "${graph[@]}" -p "$pid" -o "$OUT/$label/perf.data" -- sleep $((DUR + 40 + ${QUIET_WAIT:-0})) \
      > "$OUT/$label/perf.out" 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
  fi
  bench "$label" "$pid"
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf report -i "$OUT/$label/perf.data" --no-children --sort comm,dso,symbol --stdio 2>/dev/null \
      | grep -v '^$' | head -400 > "$OUT/$label/perf-report.txt" || true
  fi
  curl -sf http://127.0.0.1:8080/metrics > "$OUT/$label/metrics.txt" || true
  # sipfork's engine counters over the whole run (registration included), summed over shards.
  awk -v label="$label" '
    /^#/ { next }
    { name = $1; sub(/\{.*/, "", name); v[name] += $NF }
    END {
      printf "%s ENGINE", label
      n = split("sipfork_loop_turns_total sipfork_loop_busy_turns_total sipfork_loop_datagrams_total sipfork_loop_letters_total sipfork_io_waits_total sipfork_io_coalesce_waits_total sipfork_io_mailbox_wakes_total sipfork_io_empty_waits_total sipfork_mailbox_sent_total sipfork_mailbox_wakes_sent_total sipfork_io_rx_datagrams_total sipfork_io_tx_datagrams_total sipfork_io_batches_total sipfork_proxy_calls sipfork_proxy_dialogs sipfork_bindings", k, " ")
      for (i = 1; i <= n; i++) { s = k[i]; sub(/^sipfork_/, "", s); sub(/_total$/, "", s); printf " %s=%d", s, v[k[i]] }
      printf "\n"
    }' "$OUT/$label/metrics.txt" >> "$OUT/results.txt"
  kill -TERM "$pid"
  wait "$wrapper" || log "$label: sipfork exited with $?"
done
done
done
done

for mgr in $KAMAILIO; do
  label=kamailio-$mgr
  opt=""; [[ $mgr == tlsf ]] && opt=tlsf
  "$OUT/anchors/kamailio/stop_kamailio.sh" >/dev/null 2>&1 || true
  "$OUT/anchors/kamailio/start_kamailio.sh" 4 2048 "$opt" >&2
  pid=$(cat "$OUT/anchors/kamailio/run/kamailio.pid")
  PIDS+=("$pid")
  sleep 1
  bench "$label" "$pid"
  "$OUT/anchors/kamailio/stop_kamailio.sh" >&2
  mkdir -p "$OUT/$label"
  cp "$OUT/anchors/kamailio/run/kamailio.log" "$OUT/$label/kamailio.log" 2>/dev/null || true
done

python3 - "$OUT/results.txt" "$RATE" "$DUR" "$UAC" <<'PY'
import sys
path, rate, dur, uac = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
runs, engine, sched, order = {}, {}, {}, []
for line in open(path):
    p = line.split()
    if len(p) < 2:
        continue
    kv = dict(x.split("=", 1) for x in p[2:] if "=" in x)
    if p[1] == "RESULT":
        runs[p[0]] = kv
        order.append(p[0])
    elif p[1] == "ENGINE":
        engine[p[0]] = {k: int(v) for k, v in kv.items()}
    elif p[1] == "SCHED":
        sched[p[0]] = {k: int(v) for k, v in kv.items()}
def f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
print(f"\n3-way forked calls at {rate} calls/s for {dur} s (caller scenario: {uac}), 1000 extensions x 3 devices, no auth")
print(f"{'proxy':<26} {'ms/call':>8} {'CPU %':>6} {'created':>8} {'failed':>6} {'retrans':>7} {'180 p50/p99':>11} {'200 p50/p99/max':>16} {'others %':>8} {'drops':>6}")
for label in order:
    r = runs[label]
    print(f"{label:<26} {r.get('proxy_cpu_ms_per_call', '?'):>8} {r.get('proxy_cpu_pct', '?'):>6} {r.get('created', '?'):>8} "
          f"{r.get('failed', '?'):>6} {r.get('uac_retrans', '?') + '/' + r.get('dev_retrans', '?'):>7} "
          f"{r.get('inv180_p50', '?') + '/' + r.get('inv180_p99', '?'):>11} "
          f"{r.get('inv200_p50', '?') + '/' + r.get('inv200_p99', '?') + '/' + r.get('inv200_max', '?'):>16} "
          f"{r.get('other_cpu_pct', '?'):>8} {r.get('udp_rcvbuf_drops', '?'):>6}")
for k in ("kamailio-qm", "kamailio-tlsf"):
    kam = f(runs.get(k, {}).get("proxy_cpu_ms_per_call"))
    if not kam:
        continue
    for label in order:
        s = f(runs[label].get("proxy_cpu_ms_per_call"))
        if label.startswith("sipfork") and s:
            print(f"{k} / {label} = {kam / s:.2f}x less CPU per forked call")
if sched:
    print("\nscheduler, whole harness run (registration included), all threads of the proxy:")
    print(f"{'proxy':<26} {'CPU ms':>8} {'runq wait ms':>12} {'timeslices':>10} {'slices/call':>11} {'µs CPU/slice':>12} {'µs wait/slice':>13}")
    for label in order:
        s = sched.get(label)
        if not s:
            continue
        calls = f(runs[label].get("created")) or float("nan")
        n = s["slices"] or float("nan")
        print(f"{label:<26} {s['run_ms']:>8} {s['runq_wait_ms']:>12} {s['slices']:>10} {s['slices'] / calls:>11.2f} "
              f"{s['run_ms'] * 1000 / n:>12.1f} {s['runq_wait_ms'] * 1000 / n:>13.1f}")
if engine:
    print("\nsipfork loop counters per call (whole run, registration included) and per turn:")
    print(f"{'proxy':<26} {'turns/call':>10} {'dgrams/turn':>11} {'coal.waits/call':>15} {'handoffs/call':>13} {'mbox wakes/call':>15} {'rx+tx/call':>10} {'calls left':>10} {'dialogs left':>12}")
    for label, e in engine.items():
        calls = f(runs.get(label, {}).get("created")) or float("nan")
        turns = e.get("loop_turns", 0) or float("nan")
        print(f"{label:<26} {e['loop_turns'] / calls:>10.2f} {e['loop_datagrams'] / turns:>11.2f} {e['io_coalesce_waits'] / calls:>15.2f} "
              f"{e['mailbox_sent'] / calls:>13.2f} {e['mailbox_wakes_sent'] / calls:>15.2f} {(e['io_rx_datagrams'] + e['io_tx_datagrams']) / calls:>10.1f} "
              f"{e['proxy_calls']:>10} {e['proxy_dialogs']:>12}")
PY
