#!/usr/bin/env bash
# Runs every test and reports every failure: each suite runs to its end (--no-fail-fast) and the script
# exits non-zero if any test failed. Where the CPU has AVX-512 the suite runs a second time on the AVX2+FMA
# matrix kernels (the build without the `avx512` feature), which most CPUs run: the two sum in different
# orders, so a bound must hold on both. GUI tests render through wgpu on Mesa's software Vulkan, under Xvfb
# when there is no display. Arguments go to both `cargo test` runs (a filter: `scripts/test.sh -- coop`).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

headless=()
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  headless=(xvfb-run -a -s "-screen 0 1280x800x24")
fi

failed=()
echo "== promptscope tests: matrix kernels this CPU picks"
"${headless[@]}" cargo test --locked --no-fail-fast "$@" || failed+=("default build")
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  echo "== promptscope tests: again on the AVX2+FMA kernels most CPUs run (this CPU has AVX-512)"
  "${headless[@]}" cargo test --locked --no-fail-fast --no-default-features --features gui "$@" || failed+=("AVX2+FMA build")
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf 'promptscope tests FAILED in: %s\n' "${failed[*]}" >&2
  exit 1
fi
echo "promptscope tests: all passed"
