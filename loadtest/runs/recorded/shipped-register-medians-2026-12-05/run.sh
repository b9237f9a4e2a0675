#!/bin/bash
# Three alternating rounds of the REGISTER storm in the shipped shape (2 shards + journal), 1 shard
# + journal, the null reflector and Kamailio tlsf (issue 15 point 4).
cd /work/main
OUT=loadtest/runs/recorded/shipped-register-medians-2026-12-05
for r in 1 2 3; do
  OUT=$OUT PROFILE=ci PRESET=register-storm SHARDS=2 JOURNAL=1 SUFFIX=-s2j-$r loadtest/scripts/bench.sh "sipfork reflector kamailio-tlsf" 2000 15
  OUT=$OUT PROFILE=ci PRESET=register-storm SHARDS=1 JOURNAL=1 SUFFIX=-s1j-$r loadtest/scripts/bench.sh "sipfork" 2000 15
done
