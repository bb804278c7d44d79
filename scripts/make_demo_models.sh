#!/usr/bin/env bash
# Pretrains the two demo models from fixed seeds: scenes-filip and scenes-clip (in assets/models, or in
# OUT to try a recipe without touching what ships), the same architecture, data, negatives, steps and
# seed; only the loss differs (FILIP's token-wise loss, or CLIP's pooled one: the control).
#
# The recipe is the one that made the models see shape, not only colour (issue 26, README "Demo models
# that see shape"): 8 px patches at 64 px (scripts/shape_capacity.py chose them), generated scenes streamed
# afresh every epoch with the levers that make colour insufficient (METHODS §7a: same-colour scenes, grey
# scenes with colour-free captions, shape-first wording, minimal-pair twins in every batch, shape-swapped
# captions as extra negatives), and the dense shape loss (`--shape-labels`: every patch token names the
# shape the generator drew there; scripts/shape_dense.py), on the CPU kernels. The same command on the
# same kind of machine reproduces the weights byte for byte. Then `shape-check` and `pointing` measure
# what each learned, on scenes neither saw; the claims' tests run on the result:
#   PROMPTSCOPE_DEMO_MODELS=OUT cargo test --test integration demo_claims
#
# Usage: scripts/make_demo_models.sh [OUT] [EPOCHS] [SCENES_PER_EPOCH]
#   (LOSSES="filip clip", SHAPE_LABELS=4, SHAPE_HEAD=projected, BATCH=32, IMAGE_SIZE=64, PATCH_SIZE=8 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-assets/models}
epochs=${2:-140}
scenes=${3:-4096}
image_size=${IMAGE_SIZE:-64}
patch_size=${PATCH_SIZE:-8}
shape_labels=${SHAPE_LABELS:-4}
batch=${BATCH:-32}
shape_head=${SHAPE_HEAD:-projected}
# PROMPTSCOPE_BIN: a binary built before, so a long run is not rebuilt under by later edits.
if [ -z "${PROMPTSCOPE_BIN:-}" ]; then
    cargo build --release --locked --bin promptscope
fi
bin=${PROMPTSCOPE_BIN:-target/release/promptscope}
mkdir -p "$root"
# The command that reproduces the folder, every setting spelled out.
made_by="IMAGE_SIZE=$image_size PATCH_SIZE=$patch_size SHAPE_LABELS=$shape_labels SHAPE_HEAD=$shape_head BATCH=$batch scripts/make_demo_models.sh OUT $epochs $scenes"
for loss in ${LOSSES:-filip clip}; do
    out=$root/scenes-$loss
    rm -rf "$out" "$out.ckpt"
    start=$SECONDS
    # The last JSON line says what the run was: model, sizes, the stream's recipe, epochs.
    result=$("$bin" pretrain --scenes "$scenes" --scene-seed 1 --out "$out" --preset scenes \
        --image-size "$image_size" --patch-size "$patch_size" --loss "$loss" --epochs "$epochs" \
        --batch-size "$batch" --lr 1e-3 --weight-decay 0.05 --seed 0 --shape-labels "$shape_labels" \
        --shape-head "$shape_head" \
        --fp16 --format json | tail -n 1)
    echo "scenes-$loss: pretrained in $((SECONDS - start)) s"
    # Without the time it took and the output path, so the file is reproduced byte for byte too.
    result=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); [r.pop(k) for k in ("seconds", "out")]; print(json.dumps(r, sort_keys=True))' "$result")
    note=$(case $loss in filip) echo "small demo model: pretrained on generated scenes with FILIP's token-wise loss (its word maps localise, shape words included)";;
        clip) echo "small demo model: the same recipe with CLIP's pooled loss (the control for FILIP's token-wise loss)";; esac)
    printf '{"name": "scenes-%s", "loss": "%s", "note": "%s", "made_by": "%s", "pretraining": %s}\n' \
        "$loss" "$loss" "$note" "$made_by" "$result" > "$out/promptscope_demo.json"
    "$bin" shape-check --model "$out"
    "$bin" pointing --model "$out" --count 200 --seed 1000
done
