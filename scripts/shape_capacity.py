#!/usr/bin/env python3
"""Can the demo image tower see shape at all? (issue 26, step 1; METHODS §7a)

Trains transformers' CLIPVisionModel of the demo preset, from random weights, *supervised* on shape
labels: single objects of the `scene-shapes` set (any colour, texture and background; 8 shapes), a
linear head on the pooled class token, cross-entropy. Reports validation accuracy after every epoch for
each (image size, patch size) asked for, so the architecture of the shipped models is chosen from a
measured curve. The images come from promptscope itself:

    promptscope synth-dataset --kind scene-shapes --out DIR --splits 2000,100,0 --size 112 --seed 5
    python3 scripts/shape_capacity.py --data DIR --grids 112/16,112/8,64/8 --steps 1000 --batch 32

A ViT from scratch needs steps, not epochs over a small set (250 steps of batch 64 left both grids at
chance, training loss included): the set is large (16,000 images) and the budget is counted in steps.
Prints one JSON line per evaluation and a summary table.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def load_split(root, split, size):
    """Images as uint8 [N, H, W, 3] (normalised per batch: 16,000 float images would not fit), labels."""
    classes = sorted(os.listdir(os.path.join(root, split)))
    xs, ys = [], []
    for k, c in enumerate(classes):
        d = os.path.join(root, split, c)
        for f in sorted(os.listdir(d)):
            img = Image.open(os.path.join(d, f)).convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BICUBIC)
            xs.append(np.asarray(img, dtype=np.uint8))
            ys.append(k)
    return np.stack(xs), torch.tensor(ys), classes


def pixels(x):
    return torch.from_numpy(((x.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def sincos_positions(grid, width):
    """2-D sine-cosine position embeddings (MAE's), class token at zero: a start that already knows
    where each patch is, inside the HF layout (the table is an ordinary parameter)."""
    quarter = width // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    parts = []
    for coord in (xs.reshape(-1), ys.reshape(-1)):
        angles = coord[:, None] * omega[None]
        parts += [np.sin(angles), np.cos(angles)]
    table = np.concatenate(parts, axis=1)
    return torch.tensor(np.concatenate([np.zeros((1, width)), table]), dtype=torch.float32)


def mimetic(tower, heads, qk=(0.7, 0.7), vo=(0.4, 0.4)):
    """Mimetic initialisation (Trockman & Kolter 2023, "Mimetic initialization of self-attention layers"):
    each layer's W_q^T W_k starts near a*Z + b*I and W_v^T W_o^T near a*Z - b*I (Z Gaussian), the structure
    trained ViTs' attention has; it sits inside the HF layout (only the q/k/v/out weights' values)."""
    with torch.no_grad():
        for layer in getattr(tower, "vision_model", tower).encoder.layers:
            at = layer.self_attn
            d = at.q_proj.weight.shape[0]
            k = d // heads
            for h in range(heads):
                rows = slice(h * k, (h + 1) * k)
                for (w1, w2, (a, b), sign) in ((at.q_proj, at.k_proj, qk, 1.0), (at.v_proj, at.out_proj, vo, -1.0)):
                    m = a * torch.randn(d, d) / math.sqrt(d) + sign * b * torch.eye(d)
                    u, sv, vt = torch.linalg.svd(m)
                    root = sv[:k].sqrt()
                    w1.weight[rows] = (u[:, :k] * root).T
                    if w2 is at.k_proj:
                        w2.weight[rows] = (vt[:k].T * root).T
                    else:
                        w2.weight[:, rows] = vt[:k].T * root


def run(root, size, patch, steps, every, batch, lr, seed, threads, positions="random", init="default",
        width=128, layers=6):
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    xtr, ytr, classes = load_split(root, "train", size)
    xva, yva, _ = load_split(root, "val", size)
    # The `scenes` preset's vision tower (src/clip/config.rs), only the grid varies.
    cfg = CLIPVisionConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=4,
                           image_size=size, patch_size=patch, hidden_act="quick_gelu", projection_dim=256)
    tower = CLIPVisionModel(cfg)
    if positions == "sincos":
        with torch.no_grad():
            getattr(tower, "vision_model", tower).embeddings.position_embedding.weight.copy_(sincos_positions(size // patch, width))
    if init == "mimetic":
        mimetic(tower, 4)
    head = torch.nn.Linear(width, len(classes))
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    curve = []
    start = time.time()
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        tower.train()
        idx = torch.randint(0, len(ytr), (batch,), generator=gen)
        logits = head(tower(pixel_values=pixels(xtr[idx.numpy()])).pooler_output)
        loss = F.cross_entropy(logits, ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % every and step != steps:
            continue
        tower.eval()
        with torch.no_grad():
            right = sum((head(tower(pixel_values=pixels(xva[i:i + 200])).pooler_output).argmax(-1)
                         == yva[i:i + 200]).sum().item() for i in range(0, len(yva), 200))
        acc = right / len(yva)
        curve.append(acc)
        print(json.dumps({"grid": f"{size}/{patch}", "positions": positions, "init": init, "lr": lr, "tokens": (size // patch) ** 2, "step": step,
                          "train_loss": round(loss.item(), 4), "val_acc": round(acc, 4),
                          "seconds": round(time.time() - start, 1)}), flush=True)
    return curve, time.time() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--grids", default="112/16,112/8", help="image/patch pairs, comma-separated")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=100, help="evaluate every this many steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--positions", default="random", choices=["random", "sincos"],
                    help="position embeddings: transformers' random init, or 2-D sine-cosine")
    ap.add_argument("--init", default="default", choices=["default", "mimetic"])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=6)
    a = ap.parse_args()
    rows = []
    for g in a.grids.split(","):
        size, patch = (int(v) for v in g.split("/"))
        curve, secs = run(a.data, size, patch, a.steps, a.every, a.batch, a.lr, a.seed, a.threads, a.positions, a.init, a.width, a.layers)
        rows.append((f"{g} ({a.positions} positions, {a.init} init, lr {a.lr:g})", (size // patch) ** 2, curve, secs))
    print(f"\n| image/patch | grid | val accuracy every {a.every} steps (batch {a.batch}) | best | time |")
    print("|---|---:|---|---:|---:|")
    for g, n, curve, secs in rows:
        side = int(math.isqrt(n))
        print(f"| {g} | {side}×{side} | {' '.join(f'{100 * c:.0f}' for c in curve)} | {100 * max(curve):.1f} % | {secs:.0f} s |")


if __name__ == "__main__":
    main()
