#!/usr/bin/env bash
# Takes assets/screenshots/main.png: the app with the sample model and dataset loaded, on a virtual X
# screen, drawn by wgpu on Mesa's software Vulkan (lavapipe), so no display or GPU is needed.
#
# Needs: xvfb-run (xvfb, xauth), ImageMagick's `import`, mesa-vulkan-drivers. On Debian/Ubuntu:
#   apt-get install -y xvfb xauth imagemagick mesa-vulkan-drivers
# With xdotool installed it also presses "Run zero-shot", so the shot shows the results table.
# Environment: PROFILE=release builds optimised (default: dev); WAIT=seconds to load (default 8);
# RUN=0 skips pressing Run; OUT=path of the PNG.
set -euo pipefail

cd "$(dirname "$0")/.."
profile=${PROFILE:-dev}
wait_s=${WAIT:-8}
run=${RUN:-1}
out=${OUT:-assets/screenshots/main.png}

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

mkdir -p "$(dirname "$out")"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Runs inside the virtual X server: start the app, give it time to load, shoot the whole screen.
inner='
set -euo pipefail
bin=$1 out=$2 wait_s=$3 log=$4 run=$5
"$bin" app --model samples/tiny-clip --data samples/shapes >"$log" 2>&1 &
app=$!
sleep "$wait_s"
if ! kill -0 "$app" 2>/dev/null; then
    echo "screenshot.sh: the app exited early:" >&2
    cat "$log" >&2
    exit 1
fi
if [ "$run" = 1 ] && command -v xdotool >/dev/null; then
    # Where "Run zero-shot" sits in the 1280x800 window with one template and no error above it.
    xdotool mousemove 396 151 click 1
    # Park the pointer where it highlights nothing.
    xdotool mousemove 1279 799
    sleep "$wait_s"
fi
import -window root "$out"
kill "$app"
wait "$app" 2>/dev/null || true
'

# A fresh data folder keeps the last session's templates (eframe storage) out of the picture; software
# Vulkan stands in for a GPU.
XDG_DATA_HOME="$scratch/data" WGPU_BACKEND=${WGPU_BACKEND:-vulkan} \
    xvfb-run -a -s "-screen 0 1280x800x24" bash -c "$inner" screenshot "$bin" "$out" "$wait_s" "$scratch/app.log" "$run"

echo "wrote $out"
