#!/usr/bin/env bash
# Runs every test. GUI tests render through wgpu on Mesa's software Vulkan, under Xvfb when there is no display.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  exec xvfb-run -a -s "-screen 0 1280x800x24" cargo test --locked "$@"
fi
exec cargo test --locked "$@"
