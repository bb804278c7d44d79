#!/usr/bin/env python3
"""ms per map of every explanation method, promptscope beside its PyTorch port, in one run.

The two are run alternately, `--rounds` times each (`promptscope bench-maps` and
scripts/bench_maps_torch.py, both on the same weights and thread count), and each method's median over
the rounds is compared, so a machine that slows down for a while slows both. Prints README's table
(markdown) and, with --json, the rows.

    promptscope synth-model --preset vit-b-16 --out /tmp/b16
    python3 scripts/maps_speed_table.py --bin target/release/promptscope --model /tmp/b16 \\
        --python /path/to/python-with-torch --threads 2 --rounds 3 --repeats 5
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    # bench_maps_torch.py prints a text table first, then its JSON list on the last line.
    return {r["method"]: r["ms_per_map"] for r in json.loads(out.strip().splitlines()[-1])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/promptscope")
    ap.add_argument("--model", required=True)
    ap.add_argument("--python", default=sys.executable, help="a Python with torch and transformers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    here = os.path.dirname(os.path.abspath(__file__))
    ours_cmd = [a.bin, "bench-maps", "--model", a.model, "--repeats", str(a.repeats), "--format", "json"]
    torch_cmd = [a.python, os.path.join(here, "bench_maps_torch.py"), "--model", a.model,
                 "--threads", str(a.threads), "--repeats", str(a.repeats)]
    ours, theirs = {}, {}
    for r in range(a.rounds):
        for name, cmd, into in (("promptscope", ours_cmd, ours), ("pytorch", torch_cmd, theirs)):
            print(f"round {r + 1}/{a.rounds}: {name}", file=sys.stderr, flush=True)
            for m, ms in run_json(cmd, env).items():
                into.setdefault(m, []).append(ms)
    rows = []
    for m, times in ours.items():
        o, t = statistics.median(times), statistics.median(theirs.get(m, [float("nan")]))
        rows.append({"method": m, "promptscope_ms": o, "pytorch_ms": t, "ratio": t / o,
                     "promptscope_runs": times, "pytorch_runs": theirs.get(m, [])})
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    print("| method | promptscope | PyTorch port | ratio |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['method']}` | {r['promptscope_ms']:.0f} ms | {r['pytorch_ms']:.0f} ms | "
              f"{r['ratio']:.2f}× |")


if __name__ == "__main__":
    main()
