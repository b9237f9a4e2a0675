#!/bin/bash
# Three alternating rounds of the shipped shape (2 shards + journal), 1 shard + journal, the null
# reflector and Kamailio tlsf at 1,000 and 3,000 fork3 calls/s (issue 15 point 4).
cd /work/main
OUT=loadtest/runs/recorded/shipped-medians-2026-12-05
for r in 1 2 3; do
  OUT=$OUT PROFILE=ci SHARDS=2 JOURNAL=1 SUFFIX=-s2j-$r loadtest/scripts/bench.sh "sipfork reflector kamailio-tlsf" "1000 3000" 20
  OUT=$OUT PROFILE=ci SHARDS=1 JOURNAL=1 SUFFIX=-s1j-$r loadtest/scripts/bench.sh "sipfork" "1000 3000" 20
done
