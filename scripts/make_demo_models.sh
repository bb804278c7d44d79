#!/usr/bin/env bash
# Pretrains the two demo models from fixed seeds: assets/models/scenes-filip and assets/models/scenes-clip,
# the same architecture, data, negatives, steps and seed; only the loss differs (FILIP's token-wise loss,
# or CLIP's pooled one: the control). Both stream generated scenes drawn afresh every epoch with the levers
# that make colour insufficient (METHODS §7a: same-colour scenes, grey scenes with colour-free captions,
# shape-first wording, minimal-pair twins in every batch, shape-swapped captions as extra negatives), on a
# grid of 8 px patches, on the CPU kernels. Then `promptscope shape-check` and `promptscope pointing`
# measure what each learned, on scenes neither saw.
#
# Usage: scripts/make_demo_models.sh [EPOCHS] [SCENES_PER_EPOCH]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-20}
scenes=${2:-4096}
image_size=${IMAGE_SIZE:-80}
patch_size=${PATCH_SIZE:-8}
cargo build --release --locked --bin promptscope
bin=target/release/promptscope
mkdir -p assets/models
for loss in filip clip; do
    out=assets/models/scenes-$loss
    rm -rf "$out" "$out.ckpt"
    start=$SECONDS
    # The last JSON line says what the run was: model, sizes, the stream's recipe, epochs, time.
    result=$("$bin" pretrain --scenes "$scenes" --scene-seed 1 --out "$out" --preset scenes \
        --image-size "$image_size" --patch-size "$patch_size" --loss "$loss" --epochs "$epochs" \
        --batch-size 64 --lr 1e-3 --weight-decay 0.05 --seed 0 --fp16 --format json | tail -n 1)
    echo "scenes-$loss: pretrained in $((SECONDS - start)) s"
    # Without the time it took and the output path, so the file is reproduced byte for byte too.
    result=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); [r.pop(k) for k in ("seconds", "out")]; print(json.dumps(r, sort_keys=True))' "$result")
    note=$(case $loss in filip) echo "small demo model: pretrained on generated scenes with FILIP's token-wise loss (its word maps localise)";;
        clip) echo "small demo model: the same, with CLIP's pooled loss (the control: its word maps do not localise)";; esac)
    printf '{"name": "scenes-%s", "loss": "%s", "note": "%s", "made_by": "scripts/make_demo_models.sh %s %s", "pretraining": %s}\n' \
        "$loss" "$loss" "$note" "$epochs" "$scenes" "$result" > "$out/promptscope_demo.json"
    "$bin" shape-check --model "$out"
    "$bin" pointing --model "$out" --count 200 --seed 1000
done
