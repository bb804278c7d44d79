#!/usr/bin/env bash
# Takes assets/screenshots/{compare,train,align,export}.png: the real app on the sample model and a
# generated dataset, on a virtual X screen, drawn by wgpu on Mesa's software Vulkan (lavapipe), so no
# display or GPU is needed. The Train shot is taken while training; the frame times of that run are
# written to assets/screenshots/frame-times.json (median and p99 ms between frames, and of the app's
# own layout work).
#
# Needs: xvfb-run (xvfb, xauth), ImageMagick's `import`, mesa-vulkan-drivers. On Debian/Ubuntu:
#   apt-get install -y xvfb xauth imagemagick mesa-vulkan-drivers
# Environment: PROFILE=release builds optimised (default: dev); WAIT=seconds to load (default 8).
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

# `sample` refuses to overwrite, so an existing sample is reused.
if [ ! -d samples/tiny-clip ] || [ ! -d samples/shapes ]; then
    "$bin" sample --out samples
fi
mkdir -p "$outdir"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# A dataset with train/val/test splits, so the Train tab can run 4-shot CoOp.
"$bin" synth-dataset --out "$scratch/shapes" --classes 6 --splits 16,4,6 --seed 3 2>/dev/null
# Learned prompts for the Align and Export shots.
"$bin" train --model samples/tiny-clip --data "$scratch/shapes" --shots 4 --epochs 30 --no-cache \
    --out "$scratch/prompts.safetensors" >/dev/null 2>&1

# Runs inside the virtual X server: start the app on a tab, wait, shoot the screen, stop it.
inner='
set -euo pipefail
bin=$1 out=$2 wait_s=$3 log=$4 data=$5 tab=$6; shift 6
"$bin" app --model samples/tiny-clip --data "$data" --tab "$tab" "$@" >"$log" 2>&1 &
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

shoot() { # tab, extra app arguments...
    local tab=$1; shift
    XDG_DATA_HOME="$scratch/data-$tab" PROMPTSCOPE_CACHE="$scratch/cache" PROMPTSCOPE_RUNS="$scratch/runs" \
    PROMPTSCOPE_FRAME_LOG="$scratch/frames-$tab.json" WGPU_BACKEND=${WGPU_BACKEND:-vulkan} \
        xvfb-run -a -s "-screen 0 1280x800x24" bash -c "$inner" screenshot "$bin" "$outdir/$tab.png" "$wait_s" "$scratch/app-$tab.log" "$scratch/shapes" "$tab" "$@"
    echo "wrote $outdir/$tab.png"
}

shoot compare --autorun --prompts "$scratch/prompts.safetensors"
shoot train --autorun --epochs 100000
cp "$scratch/frames-train.json" "$outdir/frame-times.json"
shoot align --prompts "$scratch/prompts.safetensors"
shoot export --prompts "$scratch/prompts.safetensors"
cp "$outdir/compare.png" "$outdir/main.png"
echo "frame times while training: $(cat "$outdir/frame-times.json")"
