#!/usr/bin/env bash
# Set up and launch: installs system packages, builds, writes the sample dataset (scene objects under a
# warm colour cast, a rendering shift from what the shipped demo model saw) and opens the app on it with the shipped FILIP demo
# model (assets/models/scenes-filip). Without a display it runs the main job (zero-shot on the
# sample) headless instead. Extra arguments go to `promptscope app` (e.g. --model DIR --data DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
bin=target/release/promptscope
$bin sample --out samples >/dev/null
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  if [ $# -gt 0 ]; then exec $bin app "$@"; else exec $bin app --model scenes-filip --data samples/warm-light; fi
else
  echo "no display: running zero-shot on the bundled sample instead of opening the app" >&2
  exec $bin zero-shot --model scenes-filip --data samples/warm-light
fi
