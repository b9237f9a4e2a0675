#!/bin/bash
# Scale-out cost (issue 18, docs/cluster.md): two sipfork nodes sharing a directory on a Redis
# Cluster (3 masters + 3 replicas), all in a fresh loopback-only network namespace; the harness
# calls node n1 (127.0.0.1:5060) with the fork3 preset and places each extension's devices
#   local   all three on n1                                   (no cluster branch)
#   split   device 0 (the one that answers) and 2 on n2, 1 on n1 (n1 rings 1 local device + 1
#           cluster branch; n2 rings 2 devices; the answer comes across)
#   remote  all three on n2                                   (n1 sends only the cluster branch:
#           INVITE→180 is the cross-node path)
# and reports, per point: calls, success, INVITE→180 p50/p99 (harness), CPU per call of each
# node (schedstat of every thread over the measured run, load and drain, less the node's idle
# CPU rate measured for 3 s just before: the directory thread's 100 ms ticks). Then a registration storm (register-storm preset, devices split over
# both nodes): Redis commands/s on the masters (INFO commandstats) and the nodes' own
# sipfork_cluster_directory_writes_total, for the first registrations (every extension appears
# on both nodes) and for the re-registration storm.
# The nodes are restarted (SIGTERM) and Redis flushed between points, so no binding of one point
# rings in the next.
#
# usage: loadtest/scripts/cluster_bench.sh [RATE=200] [DURATION_S=15] [STORM_RATE=1000] [STORM_S=10]
# Environment: PROFILE (release) cargo profile of the binaries; OUT (loadtest/runs/cluster-<stamp>)
# Needs root (ip netns), redis-server and redis-cli. Everything it starts is stopped by PID.
set -euo pipefail
RATE=${1:-200}; DUR=${2:-15}; STORM_RATE=${3:-1000}; STORM_S=${4:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROFILE=${PROFILE:-release}
OUT=${OUT:-$ROOT/loadtest/runs/cluster-$(date +%Y%m%d_%H%M%S)}
for c in redis-server redis-cli ip python3; do
  command -v "$c" > /dev/null || { echo "cluster_bench: $c is missing (scripts/install-deps.sh)" >&2; exit 2; }
done
(( DUR <= 20 && STORM_S <= 20 )) || { echo "cluster_bench: points are at most 20 s" >&2; exit 2; }
mkdir -p "$OUT"
(cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p sipfork -p sipfork-load)
DIR=$ROOT/target/$PROFILE; [[ $PROFILE == dev ]] && DIR=$ROOT/target/debug
SF=$DIR/sipfork; LT=$DIR/sipfork-load
NS=clb$$; PORTS=(7000 7001 7002 7003 7004 7005)
A=127.0.0.1:5060; B=127.0.0.2:5060
REDIS_PIDS=(); NODE_PIDS=()
log() { echo "[$(date +%T)] $*" >&2; }
nsx() { ip netns exec "$NS" "$@"; }
cleanup() {
  local p
  for p in "${NODE_PIDS[@]}" "${REDIS_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}" "${REDIS_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"; nsx ip link set lo up

# The Redis Cluster.
for port in "${PORTS[@]}"; do
  mkdir -p "$OUT/redis-$port"
  # `ip netns exec` execs the command: $! is the server's own PID (nsx would fork a subshell).
  ip netns exec "$NS" redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 1000 --appendonly no --save "" \
    --dir "$OUT/redis-$port" --daemonize no > "$OUT/redis-$port.log" 2>&1 &
  REDIS_PIDS+=($!)
done
for port in "${PORTS[@]}"; do
  for _ in $(seq 100); do nsx redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
done
nsx redis-cli --cluster create $(printf '127.0.0.1:%s ' "${PORTS[@]}") --cluster-replicas 1 \
  --cluster-yes > "$OUT/redis-create.log"
for _ in $(seq 200); do
  nsx redis-cli -p 7000 cluster info | grep -q cluster_state:ok && break; sleep 0.1
done
masters() {  # the ports whose server is a master now
  local p
  for p in "${PORTS[@]}"; do
    nsx redis-cli -p "$p" info replication | grep -q role:master && echo "$p"
  done
}
redis_calls() {  # commands executed by the masters so far, as "cmd=calls" lines (summed)
  local p
  for p in $(masters); do nsx redis-cli -p "$p" info commandstats; done |
    python3 -c '
import re, sys, collections
c = collections.Counter()
for line in sys.stdin:
    m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
    if m and m.group(1) not in ("info", "ping", "cluster|info", "cluster|nodes", "cluster|slots", "cluster|shards", "command", "config|get", "client|setname", "replconf"):
        c[m.group(1)] += int(m.group(2))
print(" ".join(f"{k}={v}" for k, v in sorted(c.items())))'
}

# The nodes: the harness's proxy configuration for fork3, plus [cluster].
"$LT" proxy-config --preset fork3 --io mmsg > "$OUT/base.toml"
node_config() {  # NAME SIP_ADDR PEER_IP
  local ip=${2%:*}
  sed -e "s|^listen = .*|listen = \"$2\"\nadmin = \"$ip:8080\"\npin_cores = false|" "$OUT/base.toml"
  cat <<TOML

[cluster]
node = "$1"
advertise = "$2"
redis = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]
peers = ["$3/32"]
secret = "cluster-bench-secret-0123456789"
ttl = 30
TOML
}
node_config n1 "$A" 127.0.0.2 > "$OUT/n1.toml"
node_config n2 "$B" 127.0.0.1 > "$OUT/n2.toml"
start_nodes() {
  NODE_PIDS=()
  local n
  for n in n1 n2; do
    ip netns exec "$NS" "$SF" --config "$OUT/$n.toml" >> "$OUT/$n.log" 2>&1 &
    NODE_PIDS+=($!)
  done
  for ip in 127.0.0.1 127.0.0.2; do
    for _ in $(seq 150); do
      nsx python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$ip:8080/health', timeout=1)" 2>/dev/null && break
      sleep 0.1
    done
  done
  sleep 0.5 # the directory threads' first exchange
  local p
  for p in "${NODE_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || { log "a node did not start: see $OUT/n1.log, $OUT/n2.log"; exit 1; }
  done
}
stop_nodes() {
  local p
  for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  NODE_PIDS=()
  local m
  for m in $(masters); do nsx redis-cli -p "$m" flushall > /dev/null; done
}
cpu_ns() {  # sum_exec_runtime of every thread of PID
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'  # %d clamps at 2^31 in mawk
}
metric() {  # IP NAME: the sum of a metric on a node
  nsx python3 -c "
import urllib.request
page = urllib.request.urlopen('http://$1:8080/metrics', timeout=2).read().decode()
print(sum(float(l.split()[-1]) for l in page.splitlines() if l.startswith('$2') and not l.startswith('#')))"
}

RESULTS=$OUT/results.txt
: > "$RESULTS"
point() {  # LABEL REGISTER_AT
  local label=$1 at=$2
  start_nodes
  local p1=${NODE_PIDS[0]} p2=${NODE_PIDS[1]}
  # Register every device first (its own harness run, not measured), then the calls.
  nsx "$LT" run --preset fork3 --register-at "$at" --no-clear --rate 1 --max 1 --duration 1 \
    --drain 2 --quiet --label "$label-reg" --out "$OUT" > "$OUT/$label-reg.txt" 2>&1 || true
  sleep 0.5 # presence changes reach the directory and the other node's cache
  # Idle baseline (the directory thread's ticks, timers): subtracted below.
  local i1 i2 c1 c2 t0 t1
  i1=$(cpu_ns "$p1"); i2=$(cpu_ns "$p2"); t0=$(date +%s%N)
  sleep 3
  c1=$(cpu_ns "$p1"); c2=$(cpu_ns "$p2"); t1=$(date +%s%N)
  i1=$(( (c1 - i1) * 1000 / ((t1 - t0) / 1000000) )); i2=$(( (c2 - i2) * 1000 / ((t1 - t0) / 1000000) ))
  t0=$(date +%s%N)
  set +e
  nsx "$LT" run --preset fork3 --no-registration --rate "$RATE" --duration "$DUR" --drain 3 \
    --io mmsg --quiet --label "$label" --target-name "sipfork n1 (+ n2)" --out "$OUT" \
    > "$OUT/$label.summary.txt" 2>&1
  set -e
  c1=$(( $(cpu_ns "$p1") - c1 )); c2=$(( $(cpu_ns "$p2") - c2 )); t1=$(date +%s%N)
  local branches
  branches=$(metric 127.0.0.1 sipfork_cluster_branches_total)
  python3 - "$OUT/$label.json" "$label" "$c1" "$c2" "$branches" "$i1" "$i2" "$t0" "$t1" >> "$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
label, c1, c2, branches = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
idle1, idle2 = int(sys.argv[6]), int(sys.argv[7])  # ns of CPU per s while idle
wall = (int(sys.argv[9]) - int(sys.argv[8])) / 1e9
calls = r["load"]["started"] or 1
l = r["latency_us"].get("invite_to_180", {})
net1, net2 = c1 - idle1 * wall, c2 - idle2 * wall
busy = r.get("cpu", {}).get("machine_busy_pct", 0)
print(f"{label:7} calls={calls} success={r['success_pct']:.1f}% cluster_branches={branches:.0f} "
      f"machine_busy={busy:.0f}% "
      f"invite_to_180_us p50={l.get('p50')} p99={l.get('p99')} "
      f"cpu_us_per_call n1={net1 / 1e3 / calls:.1f} n2={net2 / 1e3 / calls:.1f} "
      f"total={(net1 + net2) / 1e3 / calls:.1f} (idle subtracted: n1 {idle1 / 1e6:.2f} ms/s, "
      f"n2 {idle2 / 1e6:.2f} ms/s over {wall:.1f} s; raw n1={c1 / 1e3 / calls:.1f} n2={c2 / 1e3 / calls:.1f})")
PY
  tail -n 1 "$RESULTS" >&2
  stop_nodes
}

log "namespace $NS, results in $OUT"
point local "$A"
point split "$B,$A"
point remote "$B"

# Registration storm, devices split over both nodes.
start_nodes
r0=$(redis_calls); w0=$(( $(metric 127.0.0.1 sipfork_cluster_directory_writes_total | cut -d. -f1) + $(metric 127.0.0.2 sipfork_cluster_directory_writes_total | cut -d. -f1) ))
t0=$(date +%s.%N)
nsx "$LT" run --preset register-storm --register-at "$A,$B" --no-clear --rate 1 --max 1 \
  --duration 1 --quiet --label storm-first --out "$OUT" > "$OUT/storm-first.txt" 2>&1 || true
sleep 0.5
r1=$(redis_calls); t1=$(date +%s.%N)
w1=$(( $(metric 127.0.0.1 sipfork_cluster_directory_writes_total | cut -d. -f1) + $(metric 127.0.0.2 sipfork_cluster_directory_writes_total | cut -d. -f1) ))
# (its registration phase re-registers the same 3000 bindings first: a storm run needs it)
nsx "$LT" run --preset register-storm --register-at "$A,$B" --no-clear --rate "$STORM_RATE" \
  --duration "$STORM_S" --quiet --label storm --out "$OUT" > "$OUT/storm.summary.txt" 2>&1 || true
r2=$(redis_calls); t2=$(date +%s.%N)
w2=$(( $(metric 127.0.0.1 sipfork_cluster_directory_writes_total | cut -d. -f1) + $(metric 127.0.0.2 sipfork_cluster_directory_writes_total | cut -d. -f1) ))
python3 - "$r0" "$r1" "$r2" "$t0" "$t1" "$t2" "$w0" "$w1" "$w2" "$OUT/storm.json" "$OUT/storm-first.json" >> "$RESULTS" <<'PY'
import json, sys
def parse(s):
    return {k: int(v) for k, v in (kv.split("=") for kv in s.split())}
r0, r1, r2 = (parse(s) for s in sys.argv[1:4])
t0, t1, t2 = (float(t) for t in sys.argv[4:7])
w0, w1, w2 = (int(w) for w in sys.argv[7:10])
storm = json.load(open(sys.argv[10]))
first = json.load(open(sys.argv[11]))
def delta(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in b if b.get(k, 0) - a.get(k, 0) > 0}
for name, a, b, ta, tb, wa, wb, regs in (
    ("first-registrations", r0, r1, t0, t1, w0, w1, first["registration"]["registered"]),
    ("re-register-storm", r1, r2, t1, t2, w1, w2,
     storm["registration"]["registered"] + storm["registration"]["storm_ok"]),
):
    d = delta(a, b)
    secs = tb - ta
    writes = sum(v for k, v in d.items() if k not in ("xread", "hgetall", "smembers", "zrange", "hget", "get", "exists"))
    print(f"{name:19} {secs:.1f}s registers={regs} redis_cmds={sum(d.values())} ({sum(d.values()) / secs:.0f}/s) "
          f"redis_writes={writes} ({writes / secs:.0f}/s) node_directory_writes={wb - wa} by_cmd={d}")
PY
tail -n 2 "$RESULTS" >&2
stop_nodes
echo "results: $RESULTS"
cat "$RESULTS"
