#!/usr/bin/env bash
# Hand-offs per datagram with kernel steering on and off: 2 shards, SIPp registers EXT
# extensions (one contact each) at RATE REGISTER/s for a few seconds, then the shards' counters
# are read from /metrics: sum(sipfork_handoffs_total) / sum(sipfork_io_rx_datagrams_total).
# Short and bounded (seconds, loopback only). Usage: benches/handoffs.sh [BIN]
set -euo pipefail
BIN=${1:-target/ci/sipfork}
EXT=${EXT:-500}
RATE=${RATE:-500}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
rows="SEQUENTIAL"$'\n'
for ((e = 1000; e < 1000 + EXT; e++)); do rows+="$e;<sip:$e@127.0.0.1:5999>"$'\n'; done
printf '%s' "$rows" >"$work/reg.csv"
for steering in off auto; do
  port=$((20000 + RANDOM % 20000)); admin=$((port + 1))
  cat >"$work/sipfork.toml" <<CONF
[server]
listen = "127.0.0.1:$port"
shards = 2
steering = "$steering"
admin = "127.0.0.1:$admin"
[auth]
mode = "none"
CONF
  "$BIN" --config "$work/sipfork.toml" >"$work/log-$steering" 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$admin/health" >/dev/null && break; sleep 0.1; done
  timeout 60 sipp "127.0.0.1:$port" -sf "$root/tests/sipp/register.xml" -inf "$work/reg.csv" \
    -m "$EXT" -r "$RATE" -i 127.0.0.1 -p $((port + 2)) -nostdin -timeout 30s >/dev/null 2>&1 || true
  page=$(curl -sf "http://127.0.0.1:$admin/metrics")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  sum() { grep "^$1{" <<<"$page" | awk '{s += $NF} END {print s + 0}'; }
  h=$(sum sipfork_handoffs_total); rx=$(sum sipfork_io_rx_datagrams_total)
  state=$(grep '^sipfork_steering{' <<<"$page" | sed 's/.*state="\([a-z]*\)".*/\1/')
  echo "steering=$steering state=$state datagrams=$rx handoffs=$h per_datagram=$(awk -v h="$h" -v r="$rx" 'BEGIN {printf "%.3f", r ? h / r : 0}')"
done
