#!/bin/bash
# The journal's share of a REGISTER: the same rounds without data_dir (memory only) beside the reflector.
cd /work/main
OUT=loadtest/runs/recorded/shipped-register-medians-2026-12-05
for r in 1 2 3; do
  OUT=$OUT PROFILE=ci PRESET=register-storm SHARDS=2 SUFFIX=-s2m-$r loadtest/scripts/bench.sh "sipfork reflector" 2000 15
  OUT=$OUT PROFILE=ci PRESET=register-storm SHARDS=1 SUFFIX=-s1m-$r loadtest/scripts/bench.sh "sipfork" 2000 15
done
