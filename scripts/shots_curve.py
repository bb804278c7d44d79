#!/usr/bin/env python3
"""CoOp's Fig. 3 in miniature: test accuracy against shots (1/2/4/8/16) on a rendering shift from what the
demo model was pretrained on: the warm-light set (scene objects under a warm colour cast, a class per
colour) or the outlines set (shapes drawn as outlines, a class per shape), for CoOp (one unified context), CoOp with class-specific contexts (CSC), KgCoOp (λ = 8),
CoCoOp (its recipe: "a photo of a", 10 epochs, batch 1), a linear probe on the image features, Tip-Adapter, Tip-Adapter-F, CLIP-Adapter, and zero-shot with each
hand-crafted template (the best one drawn as the line). Three seeds per point, mean ± std; each run's
wall time and peak memory (max RSS of its process) are recorded too.

    cargo build --release && python3 scripts/shots_curve.py [--kind outlines] [--model scenes-filip] [--seeds 1,2,3]
    python3 scripts/shots_curve.py --only CoCoOp      # rerun some methods, keep the other runs of OUT.json

Writes assets/figures/KIND-shots.json (every run) and, when matplotlib is installed,
assets/figures/KIND-shots.png.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "promptscope")
# The hand-crafted prompts a user would try first on each set (the claims' tests use the same ones).
KINDS = {
    "warm-light": ("Colours under warm light", ["a {}.", "a {} shape.", "a photo of a {} shape.", "a photo of a {} object.", "a {} object in warm light."]),
    "outlines": ("Shapes drawn as outlines", ["a {}.", "a {} shape.", "a photo of a {}.", "an outline of a {}.", "a drawing of a {} shape."]),
}
SHOTS = [1, 2, 4, 8, 16]


def run(*args):
    """The verb's JSON, plus its process's wall seconds and peak RSS in MiB."""
    import time

    t = time.time()
    p = subprocess.Popen([BIN, *args, "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"{args[0]} failed ({status})")
    r = json.loads(out.strip().splitlines()[-1])
    r["_seconds"], r["_peak_mib"] = time.time() - t, usage.ru_maxrss / 1024
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="warm-light", choices=sorted(KINDS))
    ap.add_argument("--model", default="scenes-filip")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--out", help="default: assets/figures/KIND-shots")
    ap.add_argument("--replot", action="store_true", help="redraw the table and plot from OUT.json, running nothing")
    ap.add_argument("--only", help="comma-separated method names to (re)run; the other runs of OUT.json are kept")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    title, templates = KINDS[a.kind]
    a.out = a.out or os.path.join(ROOT, "assets", "figures", f"{a.kind}-shots")
    results = {"model": a.model, "zero_shot": {}, "runs": []}
    only = set(a.only.split(",")) if a.only else None
    if a.replot or only:
        with open(a.out + ".json") as f:
            results = json.load(f)
        if only:
            results["runs"] = [r for r in results["runs"] if r["method"] not in only]
    wanted = lambda method: only is None or method in only
    if not a.replot:
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, a.kind)
            subprocess.run([BIN, "synth-dataset", "--kind", a.kind, "--splits", "16,4,25", "--seed", "0", "--out", data], check=True)
            for t in templates if only is None else []:
                r = run("zero-shot", "--model", a.model, "--data", data, "--template", t)
                results["zero_shot"][t] = r["accuracy"]
                print(f"zero-shot {t!r}: {100 * r['accuracy']:.1f}%", file=sys.stderr)
            for shots in SHOTS:
                for seed in seeds:
                    common = ["--model", a.model, "--data", data, "--shots", str(shots), "--seed", str(seed), "--no-cache"]
                    first = len(results["runs"])

                    def add(method, r, acc, ms_per_step=None):
                        results["runs"].append({"method": method, "shots": shots, "seed": seed, "test_acc": acc, "seconds": r["_seconds"], "peak_mib": r["_peak_mib"], "ms_per_step": ms_per_step})

                    for method, extra in [("CoOp", []), ("CoOp CSC", ["--csc"]), ("KgCoOp (λ = 8)", ["--kg-lambda", "8"]), ("CoCoOp", ["--cocoop"])]:
                        if not wanted(method):
                            continue
                        out = os.path.join(tmp, f"p-{len(results['runs'])}.safetensors")
                        r = run("train", *common, *extra, "--out", out)
                        add(method, r, r["summary"]["test_acc"], r["summary"].get("ms_per_step"))
                    if wanted("linear probe"):
                        r = run("linear-probe", *common)
                        add("linear probe", r, r["test_acc"])
                    for method, name in [("tip-adapter", "Tip-Adapter"), ("tip-adapter-f", "Tip-Adapter-F"), ("clip-adapter", "CLIP-Adapter")]:
                        if wanted(name):
                            r = run("adapter", "--method", method, *common)
                            add(name, r, r["accuracy"], r.get("ms_per_step"))
                    print(f"{shots} shots, seed {seed}: " + ", ".join(f"{x['method']} {100 * x['test_acc']:.1f}%" for x in results["runs"][first:]), file=sys.stderr)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".json.tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(a.out + ".json.tmp", a.out + ".json")
    table = {}
    for r in results["runs"]:
        table.setdefault(r["method"], {}).setdefault(r["shots"], []).append(100 * r["test_acc"])
    best_t = max(results["zero_shot"], key=results["zero_shot"].get)
    print(f"| method | " + " | ".join(f"{s} shot{'s' if s > 1 else ''}" for s in SHOTS) + " |")
    print("|---" * (len(SHOTS) + 1) + "|")
    for m, by in table.items():
        cells = [f"{statistics.mean(by[s]):.1f} ± {statistics.pstdev(by[s]):.1f}" for s in SHOTS]
        print(f"| {m} | " + " | ".join(cells) + " |")
    print(f"| zero-shot, best template `{best_t}` | " + " | ".join(f"{100 * results['zero_shot'][best_t]:.1f}" for _ in SHOTS) + " |")
    # Cost of a 16-shot run per method: wall time and peak memory of its whole process (model load,
    # feature extraction without cache, training, evaluation), mean over seeds.
    # The step time: one optimiser step (forward, backward, update), validation left out; none for the
    # methods that train nothing step-wise.
    print("\n| method (16 shots) | step time (ms) | wall time (s) | peak memory (MiB) |\n|---|---|---|---|")
    for m in table:
        rs = [r for r in results["runs"] if r["method"] == m and r["shots"] == 16]
        steps = [r["ms_per_step"] for r in rs if r.get("ms_per_step")]
        step = f"{statistics.mean(steps):.2f}" if steps else "–"
        print(f"| {m} | {step} | {statistics.mean(r['seconds'] for r in rs):.1f} | {statistics.mean(r['peak_mib'] for r in rs):.0f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=130)
    for m, by in table.items():
        ys = [statistics.mean(by[s]) for s in SHOTS]
        es = [statistics.pstdev(by[s]) for s in SHOTS]
        ax.errorbar(SHOTS, ys, yerr=es, marker="o", capsize=3, label=m)
    ax.axhline(100 * results["zero_shot"][best_t], color="gray", linestyle="--", label=f"zero-shot ('{best_t}')")
    ax.set_xscale("log", base=2)
    ax.set_xticks(SHOTS, [str(s) for s in SHOTS])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title}, {results['model']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(a.out + ".png")
    print(f"wrote {a.out}.png", file=sys.stderr)


if __name__ == "__main__":
    main()
