#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ through cargo-afl: builds fuzz/afl's harnesses (one per file format)
# with coverage instrumentation and runs each for SECONDS from its seeds (fuzz/afl/seeds/<target>), then
# prints AFL's own counts per target: executions, corpus, edges found, crashes and hangs saved.
#
#   apt-get install afl++ && cargo install cargo-afl && bash scripts/afl.sh [SECONDS]
#
# A crash lands in fuzz/afl/out/<target>/default/crashes/; replay it with target/release/<target> < FILE.
set -euo pipefail
cd "$(dirname "$0")/../fuzz/afl"
secs=${1:-120}
cargo afl build --release
for t in pickle pth_tar prompts_file preprocessor_config captions image; do
    out=out/$t
    rm -rf "$out"
    mkdir -p out
    AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_TMPDIR=/tmp \
        timeout $((secs + 60)) cargo afl fuzz -V "$secs" -i "seeds/$t" -o "$out" "target/release/$t" >"out-$t.log" 2>&1 || true
    stats=$out/default/fuzzer_stats
    if [ -f "$stats" ]; then
        echo "$t: $(grep -E '^(execs_done|corpus_count|edges_found|saved_crashes|saved_hangs) ' "$stats" | tr -s ' ' | tr '\n' ' ')"
    else
        echo "$t: afl-fuzz did not start; see fuzz/afl/out-$t.log"
    fi
done
