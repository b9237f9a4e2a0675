#!/bin/bash
# DECISIONS.md's baseline beside the medians: Kamailio with its default allocator (qm), three rounds,
# each beside the null reflector, fork3 at 1,000 and 3,000 calls/s and register-storm at 2,000/s.
cd /work/main
for r in 1 2 3; do
  OUT=loadtest/runs/recorded/shipped-medians-2026-12-05 PROFILE=ci SUFFIX=-qm-$r loadtest/scripts/bench.sh "kamailio reflector" "1000 3000" 20
  OUT=loadtest/runs/recorded/shipped-register-medians-2026-12-05 PROFILE=ci PRESET=register-storm SUFFIX=-qm-$r loadtest/scripts/bench.sh "kamailio reflector" 2000 15
done
