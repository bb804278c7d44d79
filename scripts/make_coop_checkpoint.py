#!/usr/bin/env python3
"""Writes tests/fixtures/coop_checkpoint/model.pth.tar-3: a checkpoint in the format CoOp's trainer saves
(`torch.save({"state_dict": prompt_learner.state_dict(), "epoch": 3, ...})`), for the tiny random-weight CLIP
(token width 32), 3 classes, class-specific context of 4 vectors, plus the class names file; and
evil.pth.tar: the same checkpoint with one more entry whose unpickling would call os.system (what a
hostile "checkpoint" does), which promptscope must refuse without reading.

    python3 scripts/make_coop_checkpoint.py     # needs torch, numpy
"""
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "coop_checkpoint")
CLASSES = ["red circle", "green square", "blue stripes"]

os.makedirs(OUT, exist_ok=True)
i = np.arange(len(CLASSES) * 4 * 32)
ctx = torch.from_numpy((((11 * i + 7) % 89).astype(np.float32) / np.float32(44.5) - np.float32(1.0)).reshape(3, 4, 32) * np.float32(0.05))
state = {
    "ctx": ctx,
    "token_prefix": torch.zeros(3, 1, 32),
    "token_suffix": torch.zeros(3, 72, 32),
}
torch.save({"state_dict": state, "epoch": 3, "optimizer": None, "scheduler": None}, os.path.join(OUT, "model.pth.tar-3"))


class Evil:
    """torch.load(weights_only=False) would run `touch promptscope-was-here` while unpickling this."""

    def __reduce__(self):
        return (os.system, ("touch promptscope-was-here",))


torch.save({"state_dict": state, "epoch": 3, "payload": Evil()}, os.path.join(OUT, "evil.pth.tar"))
with open(os.path.join(OUT, "classnames.txt"), "w") as f:
    f.write("\n".join(CLASSES) + "\n")
print("wrote", OUT)
