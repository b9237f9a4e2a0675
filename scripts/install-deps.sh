#!/usr/bin/env bash
# Installs what the test suite and the benchmarks need from Debian's packages: SIPp (sip-tester),
# Kamailio (the benchmark anchor), tshark (captures), baresip-core (a real user agent for the
# forking e2e test), iproute2 (network namespaces), prometheus (its promtool checks /metrics in an
# e2e test; the package also installs Debian's prometheus service, left as the package sets it);
# and SIPVicious from PyPI (the attack tools of the security e2e test), pjsua2-python from PyPI
# (PJSIP agents of the feature-code e2e test). Idempotent: skips what is
# already there.
# Usage: scripts/install-deps.sh [--bench]   (--bench adds chromium for dashboard screenshots)
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have sipp     || need+=(sip-tester)
have tshark   || need+=(tshark)
have baresip  || need+=(baresip-core)
have ip       || need+=(iproute2)
have ss       || need+=(iproute2)
have kamailio || need+=(kamailio)
have promtool || need+=(prometheus)
# redis-server (with redis-cli): the cluster e2e test starts its own Redis Cluster in a namespace.
have redis-server || need+=(redis-server)
have redis-cli || need+=(redis-tools)
if [[ ${1:-} == --bench ]]; then
  have chromium || need+=(chromium)
  have perf || need+=(linux-perf)
  # Kamailio's tls module: the anchor over TLS (TRANSPORT=tls loadtest/scripts/bench.sh).
  [[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ]] || need+=(kamailio-tls-modules)
fi
SUDO=()
[[ $(id -u) == 0 ]] || SUDO=(sudo)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  echo "install-deps: installing ${need[*]}" >&2
  "${SUDO[@]}" apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | "${SUDO[@]}" debconf-set-selections
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# kamailio's package may start its system service on 5060; the benchmarks start their own
# instance (by PID, in a namespace). The packaged service is stopped only when this script has
# just installed kamailio (it started it), and it says so first; a kamailio that was already
# here is left running (the tests do not need 5060; the benchmarks run in namespaces). Nothing
# is ever disabled.
if [[ " ${need[*]:-} " == *" kamailio "* ]] && have systemctl \
   && systemctl is-active --quiet kamailio 2>/dev/null; then
  echo "install-deps: stopping the kamailio service that installing the package just started (systemctl stop kamailio; not disabled: 'systemctl start kamailio' brings it back)" >&2
  "${SUDO[@]}" systemctl stop kamailio || true
fi
# redis-server's package may start its system service on 6379; the cluster test uses its own
# instances (ports 7000-7005 inside a namespace of its own), so the service is left as it is.
# SIPVicious (svwar, svcrack) from PyPI; where pip cannot install (no pip, or a distribution that
# refuses to let pip touch its Python), Debian's own sipvicious package has the same commands.
if ! have sipvicious_svwar; then
  echo "install-deps: installing sipvicious from PyPI" >&2
  if ! { python3 -m pip install -q sipvicious 2>/dev/null \
         || python3 -m pip install -q --break-system-packages sipvicious 2>/dev/null; }; then
    SUDO=()
    [[ $(id -u) == 0 ]] || SUDO=(sudo)
    echo "install-deps: pip could not install sipvicious; using Debian's package" >&2
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends sipvicious >/dev/null
  fi
  hash -r
fi
# PJSIP's Python binding (pjsua2-python, a binary wheel of PJSIP 2.15) for the feature-code e2e
# test (tests/e2e/features.rs: a caller moved between two devices with Replaces).
if ! python3 -c 'import pjsua2' 2>/dev/null; then
  echo "install-deps: installing pjsua2-python from PyPI" >&2
  python3 -m pip install -q pjsua2-python 2>/dev/null \
    || python3 -m pip install -q --break-system-packages pjsua2-python
fi
echo "install-deps: sipp $(sipp -v 2>&1 | grep -o 'v[0-9.]*' | head -1), kamailio $(kamailio -v 2>/dev/null | head -1 | awk '{print $3}'), tshark, baresip, promtool, sipvicious and pjsua2 present" >&2
