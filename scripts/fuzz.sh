#!/usr/bin/env bash
# The long fuzz run: every loader's structured mutation target (tests/integration/fuzz_loaders.rs) with
# many cases each (default 5000; the test command runs 120), then each target's counts. A panic fails
# its target and keeps the input under target/fuzz-crashes/.
#
#   bash scripts/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-5000}
start=$(date +%s)
PROMPTSCOPE_FUZZ_CASES=$cases cargo test --test integration fuzz_ -- --nocapture --test-threads 2 2>&1 |
    grep -E '^fuzz |^test |panicked|test result'
echo "fuzz.sh: $cases cases per target in $(( $(date +%s) - start )) s on $(nproc) cores"
