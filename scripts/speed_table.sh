#!/usr/bin/env bash
# The speed table of README "Speed", from one run on this machine: promptscope against PyTorch on the same
# models, data and thread count, with the CPU's ISA level and measured sgemm peak.
#   - pretraining images/s (FILIP and CLIP loss, the `scenes` preset, batch 64): bench-pretrain vs
#     scripts/bench_pretrain_torch.py on the batch and initial weights bench-pretrain writes;
#   - CoOp step ms (random ViT-B/32, M = 16, C = 100 and 1000) and its matrix-product rate over the sgemm
#     peak, vs scripts/bench_coop_torch.py (end-of-text truncation, PyTorch's fastest);
#   - image tower images/s at batch 1/16/64 vs scripts/bench_torch.py.
#   scripts/speed_table.sh            (THREADS=2 by default; needs python3 with torch + transformers)
#   COOP_1000=0 scripts/speed_table.sh  skips C = 1000 (PyTorch takes ~50 s a step there)
#   REPEATS=N: runs of each pretraining and image-tower row (median reported; default 3)
#   FEATURES="--no-default-features --features gui" CARGO_TARGET_DIR=target/avx2 scripts/speed_table.sh
#     measures the AVX2+FMA kernels on a CPU that has AVX-512 (the table's machine line names the ISA),
#     and holds PyTorch's kernels (ATen, MKL, oneDNN) to AVX2 too, as an AVX2 CPU would run them
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
export RAYON_NUM_THREADS=$threads
read -r -a features <<< "${FEATURES:-}"
cargo build --release --quiet --bin promptscope "${features[@]}"
bin=${CARGO_TARGET_DIR:-target}/release/promptscope
if [[ "${FEATURES:-}" == *--no-default-features* && "${FEATURES:-}" != *avx512* ]]; then
  export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 DNNL_MAX_CPU_ISA=AVX2
fi
model=${MODEL:-target/bench-models/vit-b-32}
[ -d "$model" ] || $bin synth-model --preset vit-b-32 --out "$model" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$work/rows.jsonl

# The short rows run REPEATS times, ours and PyTorch's interleaved, and report each side's median: on a
# shared machine one run of a few seconds moves by ±15 %.
repeats=${REPEATS:-3}
median() {  # JSON lines on stdin → the one whose $1 is the median
  python3 -c "import json,sys; r=sorted((json.loads(l) for l in sys.stdin if l.strip()), key=lambda x: x['$1']); print(json.dumps(r[len(r)//2]))"
}
for loss in filip clip; do
  : > "$work/ours" ; : > "$work/theirs"
  for i in $(seq "$repeats"); do
    save=(); [ "$i" = 1 ] && save=(--save-batch "$work/$loss")
    $bin bench-pretrain --loss "$loss" "${save[@]}" --format json 2>/dev/null >> "$work/ours"
    python3 scripts/bench_pretrain_torch.py --dir "$work/$loss" --loss "$loss" --threads "$threads" 2>/dev/null | tail -1 >> "$work/theirs"
  done
  echo "{\"kind\": \"pretrain\", \"ours\": $(median images_per_s < "$work/ours"), \"torch\": $(median images_per_s < "$work/theirs")}" >> "$out"
done
classes=(100)
[ "${COOP_1000:-1}" = 1 ] && classes+=(1000)
for c in "${classes[@]}"; do
  ours=$($bin bench coop --model "$model" --device cpu --classes "$c" --batch 32 --steps 5 --format json 2>/dev/null)
  steps=$([ "$c" -ge 1000 ] && echo 1 || echo 3)
  theirs=$(python3 scripts/bench_coop_torch.py --model "$model" --classes "$c" --batch 32 --steps "$steps" \
    --threads "$threads" --modes truncated 2>/dev/null | tail -1)
  echo "{\"kind\": \"coop\", \"ours\": $ours, \"torch\": $theirs}" >> "$out"
done
for b in 1 16 64; do
  n=$(( b < 16 ? 16 : b * 2 ))
  : > "$work/ours" ; : > "$work/theirs"
  for i in $(seq "$repeats"); do
    $bin bench towers --model "$model" --device cpu --batch "$b" --images "$n" --format json 2>/dev/null >> "$work/ours"
    python3 scripts/bench_torch.py --model "$model" --batch "$b" --images "$n" --threads "$threads" 2>/dev/null | tail -1 >> "$work/theirs"
  done
  echo "{\"kind\": \"image\", \"ours\": $(median images_per_s < "$work/ours"), \"torch\": $(median images_per_s < "$work/theirs")}" >> "$out"
done

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
m = next(r["ours"]["machine"] for r in rows if r["kind"] == "pretrain")
import subprocess
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
torch = next(r["torch"].get("torch", "") for r in rows if r["kind"] == "pretrain")
import os
held = " held to AVX2 (`ATEN_CPU_CAPABILITY=avx2`, `MKL_ENABLE_INSTRUCTIONS=AVX2`)" if os.environ.get("ATEN_CPU_CAPABILITY") else ""
print(f"Machine: {cpu}, {m['threads']} threads, **{m['isa']}** matrix kernels, measured sgemm peak "
      f"**{m['sgemm_gflops']:.0f} GFLOP/s**; PyTorch {torch}{held}, same threads.\n")
print("| what | promptscope | PyTorch | ratio |")
print("|---|---:|---:|---:|")
for r in rows:
    o, t = r["ours"], r["torch"]
    if r["kind"] == "pretrain":
        print(f"| pretraining, {o['loss'].upper()} loss, `scenes` preset, batch 64 (images/s) | {o['images_per_s']:.1f} | "
              f"{t['images_per_s']:.1f} | **{o['images_per_s'] / t['images_per_s']:.2f}×** |")
    elif r["kind"] == "coop":
        print(f"| CoOp step, C = {o['classes']}, M = 16 (ms) | {o['ms_per_step']:.0f} | {t['ms_per_step']:.0f} | "
              f"**{t['ms_per_step'] / o['ms_per_step']:.2f}×** |")
        print(f"| ↳ its matrix products: {o['gemm_gflop_per_step']:.1f} GFLOP a step, rate over the sgemm peak | "
              f"{100 * o['fraction_of_sgemm_peak']:.0f} % | | |")
        b = o.get("breakdown")
        if b:
            print(f"| ↳ where it goes (ms): matrix products {b['matrix_products_ms']:.0f}, attention {b['attention_ms']:.0f}, "
                  f"element-wise {b['elementwise_ms']:.0f}, copies {b['copies_ms']:.0f}, other {b['other_ms']:.0f}; "
                  f"CPU busy {100 * b['cpu_utilisation']:.0f} % | | | |")
    else:
        print(f"| image tower, batch {o['batch']} (images/s) | {o['images_per_s']:.2f} | {t['images_per_s']:.2f} | "
              f"**{o['images_per_s'] / t['images_per_s']:.2f}×** |")
PY
