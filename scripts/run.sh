#!/usr/bin/env bash
# Set up and launch: installs system packages, builds, writes the bundled sample (a tiny random-weight CLIP
# and a generated dataset) and opens the app on it. Without a display it runs the main job (zero-shot on the
# sample) headless instead. Extra arguments go to `promptscope app` (e.g. --model DIR --data DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
bin=target/release/promptscope
$bin sample --out samples >/dev/null
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  if [ $# -gt 0 ]; then exec $bin app "$@"; else exec $bin app --model samples/tiny-clip --data samples/shapes; fi
else
  echo "no display: running zero-shot on the bundled sample instead of opening the app" >&2
  exec $bin zero-shot --model samples/tiny-clip --data samples/shapes
fi
