#!/bin/bash
# Medians of three, shipped shape (2 shards + journal), beside the null reflector and Kamailio
# tlsf, with the session's starting build (BASE tree, at 16aa55b) interleaved.
# usage: run.sh OUT BASE_TREE
set -euo pipefail
OUT=${1:?out}; BASE=${2:?base tree}
cd /work/main
for r in 1 2 3; do
  OUT=$OUT PROFILE=ci SHARDS=2 JOURNAL=1 SUFFIX=-s2j-$r loadtest/scripts/bench.sh "sipfork reflector kamailio-tlsf" "1000 3000" 20
  OUT=$OUT PROFILE=ci SHARDS=2 JOURNAL=1 SUFFIX=-base-s2j-$r "$BASE/loadtest/scripts/bench.sh" "sipfork" "1000 3000" 20
done
