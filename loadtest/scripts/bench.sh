#!/bin/bash
# sipfork vs Kamailio vs the null reflector, one after the other, same preset, same rates.
#
# usage: loadtest/scripts/bench.sh "TARGETS" "RATES" [DURATION_S] [-- extra sipfork-load run args]
#   TARGETS: space-separated, any of  sipfork  kamailio  kamailio-tlsf  kamailio-digest
#            kamailio-tlsf-digest  reflector
#            (*-digest: the anchor configuration with REGISTERs challenged by digest,
#            qop=auth, MD5, nonce-count checked; password pw-<number>, as the harness's presets)
#   RATES:   space-separated calls/s (or REGISTERs/s for a register preset)
# Environment:
#   PRESET (fork3)      scenario preset
#   SHARDS (1)          sipfork's shards
#   REFLECTOR_SHARDS (1) the null reflector's shards (1: the one-thread floor the issues compare
#                       against; SHARDS's value: the floor of the same shape, threads and all)
#   IO (uring) COALESCE_US (0)   sipfork and reflector engine settings
#   PROXY_ARGS (none)   extra `sipfork-load proxy-config` arguments for sipfork (e.g. --single-answer)
#   JOURNAL (0)         1: sipfork with `data_dir` set (the journal on: the shipped shape), in
#                       OUT/LABEL.data
#   PROXY_CPUS (none)   pin the proxy (sipfork pin_cores / taskset for Kamailio / reflector --pin)
#   HARNESS_CPUS (none) pin the harness threads (sipfork-load --pin)
#   THREADS (1)         harness threads
#   SPIN (0)            1: the harness busy-polls (its own wake-ups leave the latencies; a core)
#   KAM_CHILDREN (4) KAM_SHM (2048)
#   QUIET_BUSY (20)     wait (up to QUIET_WAIT=600 s) until the machine is < QUIET_BUSY % busy
#                       (of one core) over 2 s before each run; 0 = do not wait
#   MAX_OTHER (15) RETRIES (2)  a run during which other processes used more than MAX_OTHER % of
#                       a core (the result's cpu.other_pct) is run again, up to RETRIES times; the
#                       contaminated attempts are kept as LABEL.tryN.*
#   OUT (loadtest/runs/<stamp>)  SUFFIX (none): appended to every run label
#   PROFILE (release)   cargo profile of sipfork and the harness (ci: release without LTO)
#   TRANSPORT (udp)     tcp: devices and caller on TCP connections of their own (sipfork-load
#                       --transport tcp); sipfork listens on tcp: beside udp:, Kamailio runs
#                       benches/anchors/kamailio-tcp/kamailio.cfg (the anchor over TCP); labels
#                       get -tcp. At the end, Kamailio's proxy CPU per call ÷ sipfork's per rate.
#                       tls: the same over TLS (--transport tls, one self-signed certificate for
#                       127.0.0.1 in OUT/tls that both proxies serve and the harness trusts);
#                       Kamailio runs benches/anchors/kamailio-tls/kamailio.cfg (its tls module:
#                       Debian's kamailio-tls-modules); labels get -tls.
# Every run: a fresh loopback-only network namespace, the proxy on 127.0.0.1:5060, the harness
# bounded by the preset's duration and drain (it stops by itself), the proxy stopped by PID.
set -euo pipefail
TARGETS=${1:?targets}; RATES=${2:?rates}; DUR=${3:-20}
shift $(( $# >= 3 ? 3 : $# )); [[ ${1:-} == -- ]] && shift
EXTRA=("$@")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# The Kamailio anchor configuration, vendored in the repository (benches/anchors).
K=${ANCHORS:-$ROOT/benches/anchors}/kamailio
PRESET=${PRESET:-fork3}; SHARDS=${SHARDS:-1}; IO=${IO:-uring}; COALESCE_US=${COALESCE_US:-0}
PROFILE=${PROFILE:-release}
THREADS=${THREADS:-1}; KAM_CHILDREN=${KAM_CHILDREN:-4}; KAM_SHM=${KAM_SHM:-2048}
QUIET_BUSY=${QUIET_BUSY:-20}; QUIET_WAIT=${QUIET_WAIT:-600}
MAX_OTHER=${MAX_OTHER:-15}; RETRIES=${RETRIES:-2}
OUT=${OUT:-$ROOT/loadtest/runs/$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT"
# Absolute: the proxy configs name OUT/…data as data_dir, which sipfork reads relative to the config file.
OUT=$(cd "$OUT" && pwd)
(cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p sipfork -p sipfork-load)
SF=$ROOT/target/$PROFILE/sipfork
LT=$ROOT/target/$PROFILE/sipfork-load

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

TRANSPORT=${TRANSPORT:-udp}
[[ $TRANSPORT == udp || $TRANSPORT == tcp || $TRANSPORT == tls ]] || { echo "TRANSPORT: udp, tcp or tls" >&2; exit 2; }
TSUFFIX=""; [[ $TRANSPORT != udp ]] && TSUFFIX=-$TRANSPORT
TLS_ARGS=()
if [[ $TRANSPORT == tls ]]; then
  # The run's certificate (for 127.0.0.1), written once: every proxy serves it, the harness trusts it.
  "$LT" proxy-config --preset "$PRESET" --transport tls --tls-dir "$OUT/tls" > /dev/null
  TLS_ARGS=(--tls-ca "$OUT/tls/cert.pem")
fi

kamailio_dir() {  # the anchor Kamailio, a copy of it that challenges REGISTERs, or its TCP/TLS one
  if [[ $TRANSPORT != udp ]]; then
    [[ $1 == *-digest ]] && { echo "TRANSPORT=$TRANSPORT: no digest Kamailio" >&2; return 1; }
    local d=$OUT/kamailio-$TRANSPORT
    mkdir -p "$d"
    cp "$K/start_kamailio.sh" "$K/stop_kamailio.sh" "$K-$TRANSPORT/kamailio.cfg" "$d/"
    if [[ $TRANSPORT == tls ]]; then
      printf '[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = %s\ncertificate = %s\n\n[client:default]\nverify_certificate = no\nrequire_certificate = no\n' \
        "$OUT/tls/key.pem" "$OUT/tls/cert.pem" > "$d/tls.cfg"
    fi
    echo "$d"; return
  fi
  [[ $1 == *-digest ]] || { echo "$K"; return; }
  local d=$OUT/kamailio-digest
  mkdir -p "$d"
  cp "$K/start_kamailio.sh" "$K/stop_kamailio.sh" "$d/"
  sed -e '/^loadmodule "sanity.so"/a loadmodule "auth.so"\nmodparam("auth", "nonce_expire", 600)\nmodparam("auth", "nonce_count", 1)' \
      -e 's/^\t\tif (!save("location")) {/\t\tif (!pv_www_authenticate("$td", "pw-$tU", "0")) {\n\t\t\twww_challenge("$td", "1");\n\t\t\texit;\n\t\t}\n&/' \
      "$K/kamailio.cfg" > "$d/kamailio.cfg"
  grep -q pv_www_authenticate "$d/kamailio.cfg" || { echo "kamailio-digest: the anchor's REGISTER block changed" >&2; return 1; }
  echo "$d"
}

run_one() {
  local target=$1 rate=$2 kd="" ns=lt$$ label="$target-$PRESET$TSUFFIX-r$rate${SUFFIX:-}" pid="" name="" reflect=()
  wait_quiet "$QUIET_BUSY" "$QUIET_WAIT"
  ip netns add $ns; ip netns exec $ns ip link set lo up
  case $target in
    sipfork)
      local pcfg=(--shards "$SHARDS" --io "$IO" --coalesce-us "$COALESCE_US")
      [[ -n ${PROXY_CPUS:-} ]] && pcfg+=(--pin "$PROXY_CPUS")
      [[ $PRESET == serial ]] && pcfg+=(--q-groups)
      [[ $PRESET == *digest* ]] && pcfg+=(--digest)
      [[ -n ${PROXY_ARGS:-} ]] && pcfg+=($PROXY_ARGS)
      pcfg+=(--transport "$TRANSPORT")
      [[ $TRANSPORT == tls ]] && pcfg+=(--tls-dir "$OUT/tls")
      "$LT" proxy-config --preset "$PRESET" "${pcfg[@]}" > "$OUT/$label.sipfork.toml"
      if [[ ${JOURNAL:-0} == 1 ]]; then
        rm -rf "$OUT/$label.data"
        sed -i "/^\[server\]/a data_dir = \"$OUT/$label.data\"" "$OUT/$label.sipfork.toml"
      fi
      ip netns exec $ns "$SF" --config "$OUT/$label.sipfork.toml" > "$OUT/$label.proxy.log" 2>&1 &
      pid=$!; name="sipfork${TSUFFIX:+ $TRANSPORT} shards=$SHARDS io=$IO coalesce_us=$COALESCE_US${PROXY_CPUS:+ cpus=$PROXY_CPUS}$( [[ ${JOURNAL:-0} == 1 ]] && echo ' journal' || true)"
      sleep 0.5 ;;
    kamailio|kamailio-tlsf|kamailio-digest|kamailio-tlsf-digest)
      local mgr="" tag=""; [[ $target == *tlsf* ]] && mgr=tlsf
      [[ $target == *-digest ]] && tag=" digest"
      kd=$(kamailio_dir "$target")
      ip netns exec $ns env KAM_CPUS="${PROXY_CPUS:-}" "$kd/start_kamailio.sh" "$KAM_CHILDREN" "$KAM_SHM" $mgr > "$OUT/$label.proxy.log" 2>&1
      pid=$(cat "$kd/run/kamailio.pid")
      [[ $TRANSPORT != udp ]] && tag+=" $TRANSPORT"
      name="kamailio ${mgr:-qm}$tag children=$KAM_CHILDREN shm=${KAM_SHM}MB${PROXY_CPUS:+ cpus=$PROXY_CPUS}" ;;
    reflector)
      local rargs=(--io "$IO" --coalesce-us "$COALESCE_US" --shards "${REFLECTOR_SHARDS:-1}" --secs 900)
      [[ -n ${PROXY_CPUS:-} ]] && rargs+=(--pin "$PROXY_CPUS")
      ip netns exec $ns "$LT" reflect "${rargs[@]}" > "$OUT/$label.proxy.log" 2>&1 &
      pid=$!; reflect=(--reflector); name="null reflector shards=${REFLECTOR_SHARDS:-1} io=$IO coalesce_us=$COALESCE_US${PROXY_CPUS:+ cpus=$PROXY_CPUS}"
      sleep 0.5 ;;
    *) echo "unknown target $target" >&2; ip netns del $ns; return 1 ;;
  esac
  local hargs=(--threads "$THREADS" --transport "$TRANSPORT" "${TLS_ARGS[@]}"); [[ -n ${HARNESS_CPUS:-} ]] && hargs+=(--pin "$HARNESS_CPUS")
  [[ ${SPIN:-0} == 1 ]] && hargs+=(--spin)
  set +e
  ip netns exec $ns "$LT" run --preset "$PRESET" --rate "$rate" --duration "$DUR" "${reflect[@]}" \
    --io "$IO" "${hargs[@]}" --label "$label" --target-name "$name" --out "$OUT" --quiet "${EXTRA[@]}" \
    | tee "$OUT/$label.summary.txt"
  set -e
  case $target in
    kamailio*) ip netns exec $ns "$kd/stop_kamailio.sh" >> "$OUT/$label.proxy.log" 2>&1 || true ;;
    *) kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true ;;
  esac
  ip netns del $ns
}

other_pct() {  # cpu.other_pct of a result file (0 when absent)
  python3 -c "import json,sys; print(int(json.load(open(sys.argv[1])).get('cpu',{}).get('other_pct',0)))" "$1" 2>/dev/null || echo 0
}

echo "runs in $OUT"
for rate in $RATES; do
  for target in $TARGETS; do
    label="$target-$PRESET$TSUFFIX-r$rate${SUFFIX:-}"
    for try in $(seq 0 "$RETRIES"); do
      echo "== $target $PRESET $rate/s ${DUR}s (attempt $((try + 1)))"
      run_one "$target" "$rate"
      other=$(other_pct "$OUT/$label.json")
      (( other <= MAX_OTHER )) && break
      echo "  (other processes used ${other}% of a core during the run)"
      if (( try < RETRIES )); then
        for f in "$OUT/$label".*; do
          [[ $f == *.try[0-9]* ]] || mv "$f" "${f/$label./$label.try$try.}"
        done
      fi
    done
  done
done
# Kamailio's proxy CPU per call ÷ sipfork's, per rate (each Kamailio allocator run).
python3 - "$OUT" "$PRESET$TSUFFIX" "${SUFFIX:-}" $RATES <<'PY'
import json, os, sys
out, mid, suffix, rates = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def load(target, rate):
    try:
        return json.load(open(os.path.join(out, f"{target}-{mid}-r{rate}{suffix}.json")))
    except OSError:
        return None
for rate in rates:
    sf = load("sipfork", rate)
    for k in ("kamailio", "kamailio-tlsf"):
        ka = load(k, rate)
        if sf and ka and sf.get("cpu") and ka.get("cpu"):
            s, q = sf["cpu"]["proxy_us_per_call"], ka["cpu"]["proxy_us_per_call"]
            fails = lambda r: (r.get("verdicts") or {}).get("failed", "?")
            print(f"RATIO rate={rate} sipfork_us_per_call={s:.1f} {k}_us_per_call={q:.1f} "
                  f"{k}/sipfork={q / s:.2f} sipfork_failed={fails(sf)} {k}_failed={fails(ka)} "
                  f"sipfork_passed={sf['passed']} {k}_passed={ka['passed']}")
PY
"$LT" compare $(ls "$OUT"/*.json | grep -v '\.try[0-9]*\.json$') -o "$OUT/compare.html" > /dev/null
echo "comparison: $OUT/compare.html"
