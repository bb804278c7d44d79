#!/usr/bin/env python3
"""Regenerates tests/fixtures/adapter_reference.json: CLIP-Adapter and Tip-Adapter-F trained in PyTorch as
their own code trains them (CLIP-Adapter's Adapter module and residual mix, with CoOp's SGD recipe;
Tip-Adapter-F's keys as a bias-free Linear initialised with the cache, AdamW with eps 1e-4 and cosine
decay), full batch on exactly representable pattern features the Rust test rebuilds bit for bit.

    python3 scripts/make_adapter_fixtures.py     # needs torch and numpy

The Rust test (tests/integration/adapter_parity.rs) compares the parameters after every epoch.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from fixture_pattern import pattern

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
C, P, N, EPOCHS, SCALE = 3, 16, 9, 5, 14.0
CLIP_OPTIM = dict(lr=0.5, momentum=0.9, weight_decay=5e-4, warmup_epochs=1, warmup_lr=0.05, epochs=EPOCHS)
TIP_OPTIM = dict(lr=0.01, weight_decay=0.01, eps=1e-4, epochs=EPOCHS)
ALPHA, BETA, RATIO = 1.17, 1.0, 0.2


def norm(x):
    return x / x.norm(dim=-1, keepdim=True)


def lr_at(o, e):
    if e < o.get("warmup_epochs", 0):
        return o["warmup_lr"]
    return o["lr"] * (1 + math.cos(math.pi * (e - o.get("warmup_epochs", 0)) / o["epochs"])) / 2


class Adapter(nn.Module):
    """CLIP-Adapter's clip_adapter.py Adapter."""

    def __init__(self, c_in, reduction=4):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(c_in, c_in // reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(c_in // reduction, c_in, bias=False), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.fc(x)


def main():
    feats = torch.from_numpy(pattern(N * P, 5, 3, 53).reshape(N, P))
    labels = torch.tensor([i % C for i in range(N)])
    weights = norm(torch.from_numpy(pattern(C * P, 3, 2, 29).reshape(C, P)))
    ref = {"dims": dict(C=C, P=P, N=N), "scale": SCALE, "weights": weights.flatten().tolist(), "labels": labels.tolist()}

    # CLIP-Adapter.
    ad = Adapter(P)
    with torch.no_grad():
        ad.fc[0].weight.copy_(torch.from_numpy(pattern(P // 4 * P, 7, 1, 41, 0.3).reshape(P // 4, P)))
        ad.fc[2].weight.copy_(torch.from_numpy(pattern(P * (P // 4), 11, 2, 43, 0.3).reshape(P, P // 4)))
    o = CLIP_OPTIM
    opt = torch.optim.SGD(ad.parameters(), lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
    out = {"optim": o, "ratio": RATIO, "init": [p.detach().flatten().tolist() for p in ad.parameters()], "params": [], "loss": []}
    for e in range(EPOCHS):
        for g in opt.param_groups:
            g["lr"] = lr_at(o, e)
        x = ad(feats)
        f = norm(RATIO * x + (1 - RATIO) * feats)
        loss = F.cross_entropy(SCALE * f @ weights.t(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out["params"].append([p.detach().flatten().tolist() for p in ad.parameters()])
        out["loss"].append(float(loss))
    print(f"CLIP-Adapter: loss {out['loss'][0]:.4f} -> {out['loss'][-1]:.4f}")
    ref["clip_adapter"] = out

    # Tip-Adapter-F: the cache keys (normalised training features) as a trainable Linear.
    keys = norm(feats)
    values = F.one_hot(labels, C).float()
    adapter = nn.Linear(P, N, bias=False)
    with torch.no_grad():
        adapter.weight.copy_(keys)
    o = TIP_OPTIM
    opt = torch.optim.AdamW(adapter.parameters(), lr=o["lr"], eps=o["eps"], weight_decay=o["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    out = {"optim": o, "alpha": ALPHA, "beta": BETA, "init": keys.flatten().tolist(), "params": [], "loss": [], "lr": []}
    for e in range(EPOCHS):
        f = norm(feats)
        affinity = adapter(f)
        cache_logits = ((-1) * (BETA - BETA * affinity)).exp() @ values
        logits = SCALE * f @ weights.t() + cache_logits * ALPHA
        loss = F.cross_entropy(logits, labels)
        out["lr"].append(sched.get_last_lr()[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        out["params"].append(adapter.weight.detach().flatten().tolist())
        out["loss"].append(float(loss))
    print(f"Tip-Adapter-F: loss {out['loss'][0]:.4f} -> {out['loss'][-1]:.4f}")
    ref["tip_f"] = out
    with open(os.path.join(FIX, "adapter_reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
