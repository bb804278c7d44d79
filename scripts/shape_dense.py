#!/usr/bin/env python3
"""Does the demo image tower learn shape faster from *dense* labels? (issue 26, step 1; METHODS §7a)

`shape_capacity.py` trains the tower on one label an image (the pooled class token names the shape) and
needs thousands of steps to leave chance. Here every patch token is labelled with the shape that patch
shows (the object covering it, from the scene's `.json`; background patches weigh 0.2), the signal that
`pretrain --shape-labels` adds beside the contrastive loss. transformers' CLIPVisionModel of the demo
tower (64 px, 8 px patches), from random weights, PyTorch on two threads:

    promptscope synth-scenes --out TRAIN --count 16000 --size 64 --seed 3
    promptscope synth-scenes --out VAL --count 500 --size 64 --seed 99 --held-out
    python3 scripts/shape_dense.py --train TRAIN --val VAL --steps 2000

Reports, every 250 steps, the weighted loss and the accuracy of the token at each object's centre patch
on the validation scenes (8 shapes, chance 12.5 %), one JSON line each.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
BACKGROUND = 8


def load(root, n, size, patch):
    """Images, per-patch labels (the nearest object whose radius reaches the patch centre) and each
    object's (centre patch, shape)."""
    grid = size // patch
    xs, labels, objects = [], [], []
    for i in range(n):
        xs.append(np.asarray(Image.open(f"{root}/{i:06d}.png").convert("RGB")))
        objs = json.load(open(f"{root}/{i:06d}.json"))["objects"]
        lab = np.full((grid, grid), BACKGROUND, np.int64)
        for gy in range(grid):
            for gx in range(grid):
                px, py = (gx + 0.5) * patch, (gy + 0.5) * patch
                near = [(math.hypot(px - o["cx"], py - o["cy"]), o["shape"]) for o in objs]
                near = [(d, s) for (d, s), o in zip(near, objs) if d < o["radius"]]
                if near:
                    lab[gy, gx] = min(near)[1]
        labels.append(lab.reshape(-1))
        objects.append([(min(grid - 1, int(o["cy"] // patch)) * grid + min(grid - 1, int(o["cx"] // patch)),
                         o["shape"]) for o in objs])
    return np.stack(xs), torch.tensor(np.stack(labels)), objects


def pixels(x):
    return torch.from_numpy(((x.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--count", type=int, default=16000, help="training scenes to read")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--patch", type=int, default=8)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    xtr, ltr, _ = load(a.train, a.count, a.size, a.patch)
    xva, _, ova = load(a.val, 500, a.size, a.patch)
    cfg = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4,
                           image_size=a.size, patch_size=a.patch, hidden_act="quick_gelu")
    tower = CLIPVisionModel(cfg)
    body = getattr(tower, "vision_model", tower)
    head = torch.nn.Linear(128, BACKGROUND + 1)
    opt = torch.optim.AdamW(list(tower.parameters()) + list(head.parameters()), lr=a.lr, weight_decay=0.05)
    warm = max(1, a.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, a.steps - warm))))
    gen = torch.Generator().manual_seed(0)
    tokens = lambda x: body.post_layernorm(tower(pixel_values=x).last_hidden_state[:, 1:])
    start = time.time()
    for step in range(1, a.steps + 1):
        tower.train()
        idx = torch.randint(0, len(ltr), (a.batch,), generator=gen)
        lab = ltr[idx].reshape(-1)
        w = torch.where(lab == BACKGROUND, 0.2, 1.0)
        ce = F.cross_entropy(head(tokens(pixels(xtr[idx.numpy()]))).reshape(-1, BACKGROUND + 1), lab, reduction="none")
        loss = (ce * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 and step != a.steps:
            continue
        tower.eval()
        right = total = 0
        with torch.no_grad():
            for i in range(0, len(xva), 100):
                pred = head(tokens(pixels(xva[i:i + 100]))).argmax(-1)
                for j, objs in enumerate(ova[i:i + 100]):
                    for k, shape in objs:
                        right += int(pred[j, k] == shape)
                        total += 1
        print(json.dumps({"step": step, "loss": round(loss.item(), 3), "centre_token_acc": round(right / total, 3),
                          "seconds": round(time.time() - start)}), flush=True)


if __name__ == "__main__":
    main()
