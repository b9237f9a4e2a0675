#!/bin/bash
# The shipped shape (2 shards + journal) beside the null reflector on 1 shard (the floor the
# issue names) and on 2 shards (the floor of the same shape: two threads and the harness on
# two vCPUs), three alternating rounds at 1,000 and 3,000 calls/s.
# usage: run.sh OUT
set -euo pipefail
OUT=${1:?out}
cd "$(dirname "$0")/../../../.."
for r in 1 2 3; do
  OUT=$OUT PROFILE=ci SHARDS=2 JOURNAL=1 SUFFIX=-s2j-$r loadtest/scripts/bench.sh "sipfork reflector" "1000 3000" 20
  OUT=$OUT PROFILE=ci REFLECTOR_SHARDS=2 SUFFIX=-rs2-$r loadtest/scripts/bench.sh "reflector" "1000 3000" 20
done
