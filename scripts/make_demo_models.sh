#!/usr/bin/env bash
# Pretrains the two demo models from fixed seeds: assets/models/scenes-filip and assets/models/scenes-clip,
# the same architecture (--preset scenes), data, steps and seed, only the loss differs. Each takes 9–12
# minutes on a 2-core machine on candle's graph (release build); about 4 on the CPU kernels. Then
# `promptscope pointing --model DIR` measures FILIP's visual claim on scenes neither model saw.
#
# Usage: scripts/make_demo_models.sh [EPOCHS]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
# The shipped models were trained on candle's graph, before pretraining moved onto the CPU kernels
# (which compute the same gradients to float rounding, summed in another order, twice as fast). That
# path reproduces the shipped files byte for byte; unset it to train on the kernels (the same quality:
# see issue 19's note).
export PROMPTSCOPE_CANDLE_OPS=1
epochs=${1:-10}
cargo build --release --locked --bin promptscope
bin=target/release/promptscope
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" synth-scenes --out "$work/pairs" --count 4000 --size 112 --seed 1
mkdir -p assets/models
for loss in filip clip; do
    out=assets/models/scenes-$loss
    rm -rf "$out" "$out.ckpt"
    start=$SECONDS
    "$bin" pretrain --data "$work/pairs" --out "$out" --preset scenes --loss "$loss" --epochs "$epochs" \
        --batch-size 64 --lr 1e-3 --seed 0 --fp16
    echo "scenes-$loss: pretrained in $((SECONDS - start)) s"
    note=$(case $loss in filip) echo "small demo model: pretrained on generated scenes with FILIP's token-wise loss (its word maps localise)";;
        clip) echo "small demo model: the same, with CLIP's pooled loss (the control: its word maps do not localise)";; esac)
    printf '{"name": "scenes-%s", "loss": "%s", "note": "%s", "made_by": "scripts/make_demo_models.sh %s"}\n' \
        "$loss" "$loss" "$note" "$epochs" > "$out/promptscope_demo.json"
    "$bin" pointing --model "$out" --count 200 --seed 1000
done
