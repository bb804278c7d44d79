#!/usr/bin/env bash
# promptscope vs PyTorch (transformers) on the same random-weight ViT-B/32, same machine, same run:
# the towers at each batch size, then FILIP, SsVP and JPEG loading (bench suite vs bench_extras_torch.py).
#   scripts/bench_vs_torch.sh [batch ...]        (default: 1 16 64; needs python3 with torch + transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
cargo build --release --quiet
bin=target/release/promptscope
model=${MODEL:-target/bench-models/vit-b-32}
[ -d "$model" ] || $bin synth-model --preset vit-b-32 --out "$model"
batches=("$@"); [ ${#batches[@]} -gt 0 ] || batches=(1 16 64)
printf '%-8s %14s %14s %7s %16s %16s %7s\n' batch "ours img/s" "torch img/s" ratio "ours prompts/s" "torch prompts/s" ratio
for b in "${batches[@]}"; do
  n=$(( b < 16 ? 16 : b * 2 ))
  ours=$(RAYON_NUM_THREADS=$threads $bin bench towers --model "$model" --device cpu --batch "$b" --images "$n" --format json 2>/dev/null)
  theirs=$(python3 scripts/bench_torch.py --model "$model" --batch "$b" --images "$n" --threads "$threads" 2>/dev/null | tail -1)
  python3 - "$b" "$ours" "$theirs" <<'PY'
import json, sys
b, o, t = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"{b:<8} {o['images_per_s']:14.2f} {t['images_per_s']:14.2f} {o['images_per_s']/t['images_per_s']:6.2f}x "
      f"{o['prompts_per_s']:16.1f} {t['prompts_per_s']:16.1f} {o['prompts_per_s']/t['prompts_per_s']:6.2f}x")
PY
done

# FILIP, SsVP and JPEG loading (the suite writes the JPEGs both sides read).
photos=${TMPDIR:-/tmp}/promptscope-bench-photos
ours=$(RAYON_NUM_THREADS=$threads $bin bench suite --model "$model" --device cpu --format json 2>/dev/null)
theirs=$(python3 scripts/bench_extras_torch.py --model "$model" --photos "$photos" --threads "$threads" 2>/dev/null | tail -1)
python3 - "$ours" "$theirs" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'':26} {'ours':>10} {'torch':>10} {'ratio':>7}")
print(f"{'FILIP 1×100 (ms)':26} {o['filip_1x100_ms']:10.2f} {t['filip_1x100_ms']:10.2f} {t['filip_1x100_ms']/o['filip_1x100_ms']:6.2f}x")
print(f"{'SsVP, batch 16 (img/s)':26} {o['ssvp_images_per_s']:10.0f} {t['ssvp_images_per_s']:10.0f} {o['ssvp_images_per_s']/t['ssvp_images_per_s']:6.2f}x")
print(f"{'JPEG load+prep (img/s)':26} {o['loading_images_per_s']:10.0f} {t['loading_images_per_s']:10.0f} {o['loading_images_per_s']/t['loading_images_per_s']:6.2f}x")
for c, ms in o['coop_ms']:
    print(f"{'CoOp step, %d classes (ms)' % c:26} {ms:10.0f}")
PY
