#!/bin/bash
# REGISTER medians of three (register-storm, 2,000/s, 15 s), same scheme.
set -euo pipefail
OUT=${1:?out}; BASE=${2:?base tree}
cd /work/main
for r in 1 2 3; do
  OUT=$OUT PROFILE=ci PRESET=register-storm SHARDS=2 JOURNAL=1 SUFFIX=-s2j-$r loadtest/scripts/bench.sh "sipfork reflector kamailio-tlsf" 2000 15
  OUT=$OUT PROFILE=ci PRESET=register-storm SHARDS=2 JOURNAL=1 SUFFIX=-base-s2j-$r "$BASE/loadtest/scripts/bench.sh" "sipfork" 2000 15
  OUT=$OUT PROFILE=ci PRESET=register-storm SHARDS=2 SUFFIX=-s2m-$r loadtest/scripts/bench.sh "sipfork" 2000 15
done
