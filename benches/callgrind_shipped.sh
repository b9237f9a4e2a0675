#!/usr/bin/env bash
# Instructions per forked call in the whole sipfork process (2 shards + journal: the shipped
# shape, engine and ownership included, which the core bench's one shard does not see):
# sipfork under `valgrind --tool=callgrind` in a fresh loopback-only network namespace,
# sipfork-load's fork3 preset at RATE (40) calls/s for DUR (15) s to 100 extensions, then
# `callgrind_annotate --inclusive=yes OUT/cg.*` (divide by the run's calls; every call must pass:
# a busy box can make valgrind too slow for the calls' timers).
# IO defaults to mmsg: valgrind serialises threads and does not know io_uring_enter blocks, so
# one io_uring shard waiting in it starves the other (and the process may not stop on SIGTERM).
# Usage: benches/callgrind_shipped.sh OUT [BIN]   (BIN default target/ci/sipfork). Root.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
W=${1:?usage: callgrind_shipped.sh OUT [BIN]}; SF=${2:-$root/target/ci/sipfork}
LT=${LT:-$root/target/ci/sipfork-load}; IO=${IO:-mmsg}
mkdir -p "$W"; rm -f "$W"/cg.*; rm -rf "$W/data"
ns=cgs$$
ip netns add $ns; ip netns exec $ns ip link set lo up
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; ip netns del $ns 2>/dev/null || true' EXIT
"$LT" proxy-config --preset fork3 --shards 2 --io "$IO" --coalesce-us 0 >"$W/c.toml"
sed -i "/^\[server\]/a data_dir = \"$W/data\"" "$W/c.toml"
ip netns exec $ns valgrind --tool=callgrind --callgrind-out-file="$W/cg.%p" "$SF" --config "$W/c.toml" \
  >"$W/proxy.log" 2>&1 &
vg=$!
# Under valgrind the start (journal space written ahead) takes tens of seconds.
for _ in $(seq 180); do grep -q "sipfork running" "$W/proxy.log" && break; sleep 1; done
ip netns exec $ns "$LT" run --preset fork3 --rate "${RATE:-40}" --extensions 100 --duration "${DUR:-15}" \
  --io "$IO" --label cg --out "$W" --quiet >"$W/run.out" 2>&1 || true
grep '^RESULT' "$W/run.out" || tail -5 "$W/run.out"
kill -TERM $vg
# Bounded: a process that does not stop (io_uring under valgrind, above) is killed after 60 s.
for _ in $(seq 60); do kill -0 $vg 2>/dev/null || break; sleep 1; done
kill -KILL $vg 2>/dev/null || true; wait $vg || true
