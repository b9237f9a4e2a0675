# Shell helpers shared by benches/forking.sh, benches/register.sh and loadtest/scripts/bench.sh
# (sourced, not run). They expect `set -euo pipefail` in the caller.

log() { echo "[$(date +%T)] $*" >&2; }

# Processes to stop on exit: append PIDs to PIDS; the caller installs `trap cleanup EXIT`.
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }

# The whole machine's busy time over 2 s, in % of one CPU (idle and iowait count as idle).
busy_pct() {
  local u n s i w q sq st b1 t1 b2 t2
  read -r _ u n s i w q sq st _ < /proc/stat; b1=$((u+n+s+q+sq+st)); t1=$((b1+i+w))
  sleep 2
  read -r _ u n s i w q sq st _ < /proc/stat; b2=$((u+n+s+q+sq+st)); t2=$((b2+i+w))
  echo $(( 100 * (b2 - b1) * $(nproc) / (t2 - t1 > 0 ? t2 - t1 : 1) ))
}

# wait_quiet LIMIT_PCT MAX_WAIT_S: waits until the machine is below LIMIT % of one CPU (other
# jobs decide a saturation rate on a shared box), at most MAX_WAIT_S; 0 for either: no wait.
wait_quiet() {
  local limit=$1 max=$2 deadline b
  (( limit > 0 && max > 0 )) || return 0
  deadline=$((SECONDS + max))
  while b=$(busy_pct); (( b >= limit )); do
    if (( SECONDS >= deadline )); then log "machine still $b % busy after $max s: running anyway"; return 0; fi
  done
  log "machine $b % busy before the run"
}

# start_sipfork BIN DIR SHARDS IO COALESCE_US DATA_DIR LIFETIME_S: writes DIR/sipfork.toml (UDP
# 127.0.0.1:5060, admin 127.0.0.1:8080, no auth, extensions 1000-1999, the journal in DATA_DIR
# unless it is empty), starts sipfork under `timeout LIFETIME_S` (so it ends by itself), waits for
# /health and sets SIPFORK_WRAPPER (the timeout's PID, in PIDS) and SIPFORK_PID. Exits on failure.
start_sipfork() {
  local bin=$1 dir=$2 shards=$3 io=$4 co=$5 data_dir=$6 lifetime=$7
  cat > "$dir/sipfork.toml" <<TOML
[server]
listen = "127.0.0.1:5060"
shards = $shards
io = "$io"
coalesce_us = $co
admin = "127.0.0.1:8080"
${data_dir:+data_dir = \"$data_dir\"}

[auth]
mode = "none"

[[extensions]]
numbers = "1000-1999"
TOML
  SIPFORK_LOG=warn timeout "$lifetime" "$bin" --config "$dir/sipfork.toml" 2> "$dir/sipfork.log" &
  SIPFORK_WRAPPER=$!
  PIDS+=("$SIPFORK_WRAPPER")
  for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:8080/health >/dev/null 2>&1 && break
    sleep 0.1
  done
  SIPFORK_PID=$(pgrep -P "$SIPFORK_WRAPPER" -x sipfork || true)
  [[ -n $SIPFORK_PID ]] || { log "sipfork did not start; see $dir/sipfork.log"; cat "$dir/sipfork.log" >&2; exit 1; }
}
