#!/usr/bin/env python3
"""Regenerates tests/fixtures/vlfm_reference.json: MP-FGVC's VLFM forward pass in PyTorch on fixed weights
and inputs, for tests/integration/vlfm_parity.rs.

    python3 scripts/make_vlfm_fixtures.py     # needs torch and numpy

The reference is written the way the paper describes the module, independently of promptscope's code:
the multimodal sequence [E_V, E_T^1..E_T^C] goes through 1x1 convolutions (nn.Conv1d(kernel_size=1)),
shared by every position, to give the keys and values; the query comes from E_V alone; S = softmax over
the C+1 positions of Q0·K_i/√D; E'_V = Σ S_i V_i; a translation block of two 1x1 convolutions (×4, GELU,
back to D); a linear classifier. Weights and inputs are `pattern()` values, exactly representable in
float32 and rebuilt bit for bit by the Rust test from the specs stored in the JSON.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn

from fixture_pattern import pattern

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
D, C, B, EXPANSION = 8, 3, 4, 4
H = EXPANSION * D


# name -> (shape as promptscope stores it: [out, in] or [out]), pattern (a, b, m, scale).
WEIGHTS = {
    "q.weight": ([D, D], (7, 3, 23, 1.0)),
    "q.bias": ([D], (5, 1, 13, 0.1)),
    "k.weight": ([D, D], (11, 2, 29, 1.0)),
    "k.bias": ([D], (3, 4, 11, 0.1)),
    "v.weight": ([D, D], (13, 5, 31, 0.35)),
    "v.bias": ([D], (7, 2, 17, 0.1)),
    "trans.0.weight": ([H, D], (17, 3, 37, 0.7)),
    "trans.0.bias": ([H], (5, 6, 19, 0.1)),
    "trans.2.weight": ([D, H], (19, 7, 41, 0.18)),
    "trans.2.bias": ([D], (3, 5, 7, 0.1)),
    "classifier.weight": ([C, D], (23, 1, 43, 1.0)),
    "classifier.bias": ([C], (2, 1, 5, 0.1)),
}
INPUTS = {"e_v": ([B, D], (5, 3, 53, 2.0)), "e_t": ([C, D], (9, 4, 47, 2.0))}


def values(shape, spec):
    a, b, m, scale = spec
    return torch.from_numpy(pattern(int(np.prod(shape)), a, b, m, scale).reshape(shape))


class Vlfm(nn.Module):
    def __init__(self):
        super().__init__()
        conv = lambda i, o: nn.Conv1d(i, o, kernel_size=1)
        self.q, self.k, self.v = conv(D, D), conv(D, D), conv(D, D)
        self.trans = nn.Sequential(conv(D, H), nn.GELU(), conv(H, D))
        self.classifier = nn.Linear(D, C)

    def forward(self, e_v, e_t):
        b = e_v.shape[0]
        # [B, D, 1 + C]: the image's embedding then the C text embeddings, as channels × positions.
        seq = torch.cat([e_v[:, None, :], e_t[None].expand(b, -1, -1)], dim=1).transpose(1, 2)
        q0 = self.q(e_v[:, :, None])[:, :, 0]  # [B, D]
        keys, vals = self.k(seq), self.v(seq)  # [B, D, 1 + C], shared 1x1 maps
        s = torch.softmax(torch.einsum("bd,bdi->bi", q0, keys) / math.sqrt(D), dim=-1)
        fused = torch.einsum("bi,bdi->bd", s, vals)
        refined = self.trans(fused[:, :, None])[:, :, 0]
        return s, fused, refined, self.classifier(refined)


def main():
    model = Vlfm().eval()
    state = {}
    for name, (shape, spec) in WEIGHTS.items():
        t = values(shape, spec)
        if name.endswith(".weight") and not name.startswith("classifier"):
            t = t[:, :, None]  # Conv1d weights are [out, in, 1]
        state[name] = t
    model.load_state_dict(state)
    e_v = values(*INPUTS["e_v"])
    e_t = values(*INPUTS["e_t"])
    with torch.no_grad():
        s, fused, refined, logits = model(e_v, e_t)
    ref = {
        "dim": D,
        "classes": C,
        "batch": B,
        "expansion": EXPANSION,
        "weights": {k: {"shape": shape, "pattern": list(spec)} for k, (shape, spec) in WEIGHTS.items()},
        "inputs": {k: {"shape": shape, "pattern": list(spec)} for k, (shape, spec) in INPUTS.items()},
        "attention": s.tolist(),
        "fused": fused.tolist(),
        "refined": refined.tolist(),
        "logits": logits.tolist(),
        "torch": torch.__version__,
    }
    with open(os.path.join(FIX, "vlfm_reference.json"), "w") as f:
        json.dump(ref, f)
    print("attention", s)
    print("logits", logits)


if __name__ == "__main__":
    main()
