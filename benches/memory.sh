#!/usr/bin/env bash
# Resident memory per binding (DECISIONS.md "Measuring"): sipfork with COUNT extensions x 3
# devices registered by examples/register_load (realistic contents: 60-byte Contact, 40-byte
# Call-ID, +sip.instance URN, 30-byte User-Agent), RSS growth / bindings.
#
# usage: benches/memory.sh [COUNT=333334]      (COUNT x 3 bindings; the default gives 1,000,002)
# env:   SHARDS (default: one per CPU), JOURNAL=0|1 (default 0: memory only), WINDOW=256,
#        PROFILE=release (the cargo profile built and run)
# Runs in a fresh loopback-only network namespace; every process is bounded and stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-333334}
PROFILE=${PROFILE:-release}
[[ $COUNT =~ ^[0-9]+$ && $COUNT -ge 1 && $COUNT -le 3000000 ]] || { echo "COUNT must be 1..3000000" >&2; exit 2; }
if [[ -z ${SIPFORK_BENCH_NETNS:-} ]]; then
  cargo build --profile "$PROFILE" --bin sipfork --example register_load >&2
  NS=sipfork-mem-$$
  ip netns add "$NS"
  trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
  ip netns exec "$NS" ip link set lo up
  ip netns exec "$NS" env SIPFORK_BENCH_NETNS=1 "$0" "$@"
  exit $?
fi
OUT=$(mktemp -d /tmp/sipfork-mem.XXXXXX)
shards_line=""; [[ -n ${SHARDS:-} ]] && shards_line="shards = $SHARDS"
journal_line=""; [[ ${JOURNAL:-0} == 1 ]] && journal_line="data_dir = \"$OUT/data\""
last=$((1000000 + COUNT - 1))
cat > "$OUT/sipfork.toml" <<CFG
[server]
listen = "127.0.0.1:5060"
admin = "127.0.0.1:8080"
$shards_line
$journal_line

[auth]
mode = "none"

[[extensions]]
numbers = "1000000-$last"
CFG
SIPFORK_LOG=warn timeout 900 target/$PROFILE/sipfork --config "$OUT/sipfork.toml" 2> "$OUT/sipfork.log" &
W=$!
trap 'kill -TERM $W 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8080/health >/dev/null 2>&1 && break; sleep 0.1; done
P=$(pgrep -P "$W" -x sipfork)
rss() { awk '/^VmRSS/ { print $2 * 1024 }' /proc/"$P"/status; }
sleep 0.5
before=$(rss)
timeout 600 target/$PROFILE/examples/register_load 127.0.0.1:5060 1000000 "$COUNT" 3 "${WINDOW:-256}" 500
sleep 2
after=$(rss)
bindings=$(curl -sf http://127.0.0.1:8080/metrics | awk '/^sipfork_bindings\{/ { s += $2 } END { print s + 0 }')
kill -TERM "$P"; wait "$W" || true
python3 - "$before" "$after" "$bindings" <<'PY'
import sys
before, after, bindings = map(int, sys.argv[1:])
print(f"RESULT bindings={bindings} rss_before_mb={before / 2**20:.1f} rss_after_mb={after / 2**20:.1f} "
      f"bytes_per_binding={(after - before) / max(bindings, 1):.0f}")
PY
rm -rf "$OUT"
