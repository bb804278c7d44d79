#!/usr/bin/env python3
"""Regenerates tests/fixtures/tip_reference.json: Tip-Adapter (training-free) as its own code computes it
(build_cache_model's keys = features averaged over the augmented views then normalised, one-hot values;
search_hp's grid over beta then alpha; tip_logits = 100·f·W + alpha·exp(-(beta - beta·f·keys))·values),
on exactly representable pattern features the Rust test rebuilds bit for bit.

    python3 scripts/make_tip_fixtures.py     # needs torch and numpy

The Rust test (tests/integration/tip_parity.rs) compares the searched alpha, beta and the logits.
"""
import json
import os

import torch

from fixture_pattern import pattern

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
C, P, K, V, N_VAL, N_TEST = 3, 8, 2, 3, 6, 9
SCALE = 100.0
SEARCH = dict(search_scale=[7, 3], search_step=[200, 20])


def norm(x):
    return x / x.norm(dim=-1, keepdim=True)


def main():
    n_train = C * K
    train = torch.from_numpy(pattern(n_train * V * P, 5, 3, 53).reshape(n_train, V, P))
    train_labels = torch.tensor([i // K for i in range(n_train)])
    # Class weights: a noisy copy of each class's mean feature, so zero-shot is decent but not perfect;
    # validation and test images: noisy copies of training views, so the cache has something to add.
    # Real CLIP's class weights differ by a few hundredths of cosine: a shared direction, a little class signal.
    w = torch.from_numpy(pattern(C * P, 3, 2, 29, 0.02).reshape(C, P)) + torch.from_numpy(pattern(P, 13, 1, 31))
    for c in range(C):
        w[c] += 0.03 * train[c * K : (c + 1) * K].mean(dim=(0, 1))
    w = norm(w)
    val_labels = torch.tensor([(i // K) % C for i in range(N_VAL)])
    val = train[[i % n_train for i in range(N_VAL)], 1] + torch.from_numpy(pattern(N_VAL * P, 7, 5, 61, 0.9).reshape(N_VAL, P))
    test = train[[i % n_train for i in range(N_TEST)], 2] + torch.from_numpy(pattern(N_TEST * P, 11, 4, 67, 0.9).reshape(N_TEST, P))

    # build_cache_model: mean over augment epochs, normalise, keys as [P, N]; one-hot values.
    cache_keys = norm(train.mean(dim=1)).permute(1, 0)
    cache_values = torch.nn.functional.one_hot(train_labels, C).float()
    clip_weights = w.t()

    def tip_logits(feats, alpha, beta):
        f = norm(feats)
        affinity = f @ cache_keys
        cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
        return SCALE * f @ clip_weights + cache_logits * alpha

    # search_hp, as Tip-Adapter writes it.
    s = SEARCH
    beta_list = [i * (s["search_scale"][0] - 0.1) / s["search_step"][0] + 0.1 for i in range(s["search_step"][0])]
    alpha_list = [i * (s["search_scale"][1] - 0.1) / s["search_step"][1] + 0.1 for i in range(s["search_step"][1])]
    best = (0.0, 0.0, 0.0)
    for beta in beta_list:
        for alpha in alpha_list:
            acc = (tip_logits(val, alpha, beta).argmax(dim=-1) == val_labels).float().mean().item()
            if acc > best[0]:
                best = (acc, alpha, beta)
    acc, alpha, beta = best
    zero_shot = (norm(val) @ clip_weights * SCALE).argmax(dim=-1).eq(val_labels).float().mean().item()
    print(f"val: zero-shot {zero_shot:.3f}, Tip-Adapter {acc:.3f} at alpha {alpha:.4f} beta {beta:.4f}")
    ref = {
        "dims": dict(C=C, P=P, K=K, V=V, n_val=N_VAL, n_test=N_TEST),
        "scale": SCALE,
        "search": SEARCH,
        "weights": w.flatten().tolist(),
        "val_labels": val_labels.tolist(),
        "best": dict(alpha=alpha, beta=beta, val_acc=acc),
        "zero_shot_val_acc": zero_shot,
        "test_logits": tip_logits(test, alpha, beta).flatten().tolist(),
        "test_logits_fixed": tip_logits(test, 1.17, 1.0).flatten().tolist(),
    }
    with open(os.path.join(FIX, "tip_reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
