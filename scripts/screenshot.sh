#!/usr/bin/env bash
# Takes assets/screenshots/{compare,compare-base-to-novel,train,train-pretrain-scenes,align,align-side-by-side,align-compare,align-evaluate,export}.png: the real app on the shipped FILIP demo model
# (assets/models/scenes-filip) and generated scene datasets, on a virtual X screen, drawn by wgpu on Mesa's software Vulkan (lavapipe), so no
# display or GPU is needed. The Train shot is taken while training; the frame times of that run are
# written to assets/screenshots/frame-times.json (median and p99 ms between frames, and of the app's
# own layout work).
#
# Needs: xvfb-run (xvfb, xauth), ImageMagick's `import`, mesa-vulkan-drivers. On Debian/Ubuntu:
#   apt-get install -y xvfb xauth imagemagick mesa-vulkan-drivers
# Environment: PROFILE=release builds optimised (default: dev); WAIT=seconds to load (default 8);
# ONLY=align-compare,align-evaluate retakes only the named pictures.
set -euo pipefail

cd "$(dirname "$0")/.."
profile=${PROFILE:-dev}
wait_s=${WAIT:-8}
outdir=assets/screenshots

for tool in xvfb-run import; do
    command -v "$tool" >/dev/null || { echo "screenshot.sh: '$tool' not found; see the comment at the top" >&2; exit 1; }
done

cargo build --profile "$profile" --bin promptscope
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")/promptscope"

model=scenes-filip
mkdir -p "$outdir"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The sample set (a class per colour under a warm colour cast, where learned prompts beat the template)
# for Compare, Train and Export; single objects by colour and shape for Align's word maps.
"$bin" synth-dataset --out "$scratch/warm-light" --kind warm-light --splits 16,4,25 --seed 3 2>/dev/null
"$bin" synth-dataset --out "$scratch/objects" --kind objects --splits 0,0,2 --seed 5 2>/dev/null
# Learned prompts for the Compare and Export shots, and a file trained on other classes (shapes) that
# Compare rejects in its own column.
"$bin" train --model "$model" --data "$scratch/warm-light" --shots 16 --no-cache \
    --out "$scratch/prompts.safetensors" >/dev/null 2>&1
"$bin" synth-dataset --out "$scratch/shapes" --kind scene-shapes --splits 1,1,1 --seed 4 2>/dev/null
"$bin" train --model "$model" --data "$scratch/shapes" --shots 1 --epochs 2 --no-cache \
    --out "$scratch/shapes-prompts.safetensors" >/dev/null 2>&1

# Runs inside the virtual X server: start the app on a tab, wait, shoot the screen, stop it.
inner='
set -euo pipefail
bin=$1 out=$2 wait_s=$3 log=$4 data=$5 tab=$6 model=$7; shift 7
"$bin" app --model "$model" --data "$data" --tab "$tab" "$@" >"$log" 2>&1 &
app=$!
sleep "$wait_s"
if ! kill -0 "$app" 2>/dev/null; then
    echo "screenshot.sh: the app exited early:" >&2
    cat "$log" >&2
    exit 1
fi
command -v xdotool >/dev/null && xdotool mousemove 1279 799
import -window root "$out"
kill "$app"
wait "$app" 2>/dev/null || true
'

shoot() { # picture name, tab, dataset, extra app arguments...
    local name=$1 tab=$2 data=$3; shift 3
    # ONLY=name,name retakes just those pictures.
    if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then return 0; fi
    XDG_DATA_HOME="$scratch/data-$name" PROMPTSCOPE_CACHE="$scratch/cache" PROMPTSCOPE_RUNS="$scratch/runs" \
    PROMPTSCOPE_FRAME_LOG="$scratch/frames-$name.json" WGPU_BACKEND=${WGPU_BACKEND:-vulkan} \
        xvfb-run -a -s "-screen 0 1280x800x24" bash -c "$inner" screenshot "$bin" "$outdir/$name.png" "$wait_s" "$scratch/app-$name.log" "$data" "$tab" "$model" "$@"
    echo "wrote $outdir/$name.png"
}

shoot compare compare "$scratch/warm-light" --autorun --prompts "$scratch/prompts.safetensors" --prompts "$scratch/shapes-prompts.safetensors"
# Base-to-novel trains its methods (CoOp, KgCoOp, Tip-Adapter by default) for three seeds: a longer wait.
wait_plain=$wait_s
wait_s=$((wait_s + ${B2N_EXTRA_WAIT:-30}))
shoot compare-base-to-novel compare "$scratch/warm-light" --base-to-novel --autorun
wait_s=$wait_plain
shoot train train "$scratch/warm-light" --autorun --epochs 100000
if [ -f "$scratch/frames-train.json" ]; then cp "$scratch/frames-train.json" "$outdir/frame-times.json"; fi
# Pretraining on scenes streamed each epoch (the shape-aware recipe), live.
wait_s=$((wait_plain + 12))
shoot train-pretrain-scenes train "$scratch/warm-light" --method pretrain-scenes --autorun
wait_s=$wait_plain
shoot align align "$scratch/objects"
shoot align-side-by-side align "$scratch/warm-light" --prompts "$scratch/prompts.safetensors" --side-by-side
# Six explanation methods' maps of one image and prompt, and the pointing game of all twelve.
shoot align-compare align "$scratch/objects" --compare-methods token,maskclip-clearclip,naclip,surgery,chefer,legrad
wait_s=$((wait_plain + 20))
shoot align-evaluate align "$scratch/objects" --autorun --evaluate-maps
wait_s=$wait_plain
# The train shot's stopped run left its checkpoint in the runs folder: Export lists it.
shoot export export "$scratch/warm-light" --prompts "$scratch/prompts.safetensors"
if [ -z "${ONLY:-}" ]; then
    cp "$outdir/compare.png" "$outdir/main.png"
    echo "frame times while training: $(cat "$outdir/frame-times.json")"
fi
