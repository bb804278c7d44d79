#!/usr/bin/env bash
# The generated Ray driver against a local head: plans a 4-task base-to-novel sweep, starts
# `ray start --head`, runs `promptscope sweep ray`'s driver with PYTHON (one that has ray), collects, and
# checks the JSON equals `base-to-novel`'s for the same settings. Prints "identical" or the two JSONs.
#
#   scripts/ray_sweep.sh BIN WORKDIR [PYTHON]
set -euo pipefail
bin=$(readlink -f "$1"); work=$(readlink -f "$2"); py=${3:-python3}
ray_bin=$(dirname "$(command -v "$py")")/ray
mkdir -p "$work"
"$bin" synth-model --out "$work/m" >/dev/null
"$bin" synth-dataset --out "$work/d" --splits 4,2,3 --seed 5 >/dev/null 2>&1
flags=(--shots 2 --seeds 1,2 --methods coop,tip-adapter --epochs 3 --n-ctx 4 --no-cache)
"$bin" sweep plan --model "$work/m" --data "$work/d" "${flags[@]}" --out "$work/t.jsonl" 2>/dev/null
"$bin" sweep ray --manifest "$work/t.jsonl" --cpus 1 --parallel 2 --bin "$bin" --out "$work/driver.py" 2>/dev/null
"$ray_bin" start --head --num-cpus 2 --include-dashboard=false >/dev/null 2>&1
trap '"$ray_bin" stop >/dev/null 2>&1' EXIT
t0=$(date +%s)
"$py" "$work/driver.py" >&2
echo "ray: $(( $(date +%s) - t0 )) s" >&2
a=$("$bin" sweep collect --manifest "$work/t.jsonl" --format json 2>/dev/null | tail -1)
b=$("$bin" base-to-novel --model "$work/m" --data "$work/d" "${flags[@]}" --format json 2>/dev/null | tail -1)
if [ "$a" = "$b" ]; then echo identical; else printf 'sweep:  %s\nreport: %s\n' "$a" "$b"; exit 1; fi
