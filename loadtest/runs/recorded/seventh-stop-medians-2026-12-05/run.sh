#!/bin/bash
# Seventh stop, issue 15 point 4: the shipped shape (2 shards + journal) beside the null
# reflector on 1 shard and on 2 shards (the same shape's floor) and Kamailio tlsf, three
# alternating rounds: fork3 at 1,000 and 3,000 calls/s, register-storm at 2,000 REGISTERs/s.
# usage: run.sh OUT
set -euo pipefail
OUT=${1:?out}
cd "$(dirname "$0")/../../../.."
for r in 1 2 3; do
  OUT=$OUT PROFILE=ci SHARDS=2 JOURNAL=1 SUFFIX=-s2j-$r loadtest/scripts/bench.sh "sipfork reflector kamailio-tlsf" "1000 3000" 20
  OUT=$OUT PROFILE=ci REFLECTOR_SHARDS=2 SUFFIX=-rs2-$r loadtest/scripts/bench.sh "reflector" "1000 3000" 20
  OUT=$OUT PROFILE=ci PRESET=register-storm SHARDS=2 JOURNAL=1 SUFFIX=-s2j-$r loadtest/scripts/bench.sh "sipfork reflector kamailio-tlsf" 2000 15
  OUT=$OUT PROFILE=ci PRESET=register-storm REFLECTOR_SHARDS=2 SUFFIX=-rs2-$r loadtest/scripts/bench.sh "reflector" 2000 15
done
