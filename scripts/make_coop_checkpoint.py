#!/usr/bin/env python3
"""Writes tests/fixtures/coop_checkpoint/model.pth.tar-3: a checkpoint as CoOp's trainer saves it (Dassl's
`save_checkpoint({"state_dict", "epoch", "optimizer", "scheduler", "val_result"})`, after 3 epochs of SGD
under CoOp's default schedule: a constant warm-up around cosine annealing, whose state pickles the
CosineAnnealingLR object with its SGD optimizer and the context Parameter), for the tiny random-weight CLIP
(token width 32), 3 classes, class-specific context of 4 vectors, plus the class names file; and
evil.pth.tar: the same checkpoint with one more entry whose unpickling would call os.system (what a
hostile "checkpoint" does), which promptscope must refuse without reading.

    python3 scripts/make_coop_checkpoint.py     # needs torch, numpy
"""
import os

import numpy as np
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, _LRScheduler

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


class ConstantWarmupScheduler(_LRScheduler):
    """Dassl's (dassl/optim/lr_scheduler.py): a constant lr for the warm-up epochs, then `successor`."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        self.cons_lr = cons_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)


# CoOp's optimiser and schedule (configs/trainers/CoOp: SGD 0.002, momentum 0.9, weight decay 5e-4, cosine
# over 50 epochs after one constant warm-up epoch at 1e-5), stepped 3 epochs; the context then holds the
# formula's values, so the test knows them.
param = torch.nn.Parameter(ctx.clone())
optim = torch.optim.SGD([param], lr=0.002, momentum=0.9, weight_decay=5e-4)
sched = ConstantWarmupScheduler(optim, CosineAnnealingLR(optim, 50.0), 1, 1e-5)
for _ in range(3):
    param.grad = torch.full_like(param, 0.01)
    optim.step()
    sched.step()
with torch.no_grad():
    param.copy_(ctx)
state = {"ctx": param.data, **{k: v for k, v in state.items() if k != "ctx"}}
torch.save(
    {"state_dict": state, "epoch": 3, "optimizer": optim.state_dict(), "scheduler": sched.state_dict(), "val_result": None},
    os.path.join(OUT, "model.pth.tar-3"),
)


class Evil:
    """torch.load(weights_only=False) would run `touch promptscope-was-here` while unpickling this."""

    def __reduce__(self):
        return (os.system, ("touch promptscope-was-here",))


torch.save({"state_dict": {"ctx": ctx, **{k: v for k, v in state.items() if k != "ctx"}}, "epoch": 3, "payload": Evil()}, os.path.join(OUT, "evil.pth.tar"))
with open(os.path.join(OUT, "classnames.txt"), "w") as f:
    f.write("\n".join(CLASSES) + "\n")
print("wrote", OUT)
