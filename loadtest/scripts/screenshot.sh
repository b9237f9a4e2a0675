#!/bin/bash
# Renders a dashboard page in headless Chromium and writes a PNG (the check that a page renders
# offline, with nothing fetched): loadtest/scripts/screenshot.sh PAGE.html OUT.png [HEIGHT=2400]
# Chromium comes with `scripts/install-deps.sh --bench`.
set -euo pipefail
PAGE=${1:?page}; PNG=${2:?output png}; HEIGHT=${3:-2400}
command -v chromium >/dev/null || { echo "chromium missing: scripts/install-deps.sh --bench" >&2; exit 1; }
# --no-sandbox: root in a container; no network is needed, the page is self-contained.
timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size="1400,$HEIGHT" --screenshot="$(realpath -m "$PNG")" "file://$(realpath "$PAGE")" 2>/dev/null
test -s "$PNG" && echo "wrote $PNG"
