#!/usr/bin/env bash
# The whole test suite: installs what the tests need (SIPp, Kamailio, tshark, baresip from
# Debian's packages), then runs every test of the workspace, harness included.
# Fails when any test fails. Takes a few minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The tools are installed above, so the end-to-end tests must not skip for want of them.
export SIPFORK_REQUIRE_SIPP=1
export SIPFORK_REQUIRE_BARESIP=1
export SIPFORK_REQUIRE_SIPVICIOUS=1
export SIPFORK_REQUIRE_PJSUA=1
# Profile `ci` (Cargo.toml): release optimisations without LTO, so the test binaries build in
# minutes on two cores; the benchmarks and the packaged binary keep the release profile.
exec cargo test --workspace --profile ci "$@"
