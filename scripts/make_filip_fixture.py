#!/usr/bin/env python3
"""Regenerates tests/fixtures/filip_reference.json: FILIP's loss and its weight gradients computed by
PyTorch on transformers' CLIPModel, and transformers' features of a folder `promptscope pretrain` wrote.

    cargo build --release && python3 scripts/make_filip_fixture.py     # needs torch, transformers, numpy

1. The tiny random-weight CLIP (`promptscope synth-model --preset tiny`, weights a pure function of the
   tensor names), patterned pixels and fixed token ids with padding: FILIP's loss as the seed defines it
   (METHODS §7: s^I = mean_k max_r, s^T = mean_r max_k over patch tokens and non-padding text tokens,
   symmetric in-batch cross-entropy / 2), with all tokens and with the top-25 % selection, the CLIP loss
   for reference, and the gradients of named weights. The Rust test recomputes them with candle autograd.
2. A model `promptscope pretrain` trains for two epochs on generated scenes (tiny preset, f16 storage),
   loaded with CLIPModel.from_pretrained: its image and text features on the same inputs. The Rust test
   repeats that run and compares its own features with these.
"""
import hashlib
import json
import os
import subprocess
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
BIN = os.environ.get("PROMPTSCOPE_BIN", os.path.join(ROOT, "target", "release", "promptscope"))

# Token ids of four captions (start, words, end, then padding with the end id as CLIP pads), fixed here so
# the fixture does not depend on a tokenizer.
IDS = [
    [49406, 320, 1125, 539, 320, 736, 2760, 269, 49407, 49407, 49407],
    [49406, 320, 1746, 7212, 269, 49407, 49407, 49407, 49407, 49407, 49407],
    [49406, 320, 3477, 2404, 2187, 539, 320, 1901, 5751, 269, 49407],
    [49406, 736, 49407, 49407, 49407, 49407, 49407, 49407, 49407, 49407, 49407],
]
EOT = [8, 5, 10, 2]
GRADS = [
    "visual_projection.weight",
    "text_projection.weight",
    "vision_model.encoder.layers.0.self_attn.q_proj.weight",
    "text_model.encoder.layers.1.mlp.fc2.weight",
    "vision_model.embeddings.class_embedding",
    "text_model.embeddings.position_embedding.weight",
    "logit_scale",
]


def pattern_pixels(batch, size):
    b, c, y, x = np.meshgrid(np.arange(batch), np.arange(3), np.arange(size), np.arange(size), indexing="ij")
    v = ((7 * x + 13 * y + 31 * c + 17 * b) % 255).astype(np.float32)
    return torch.from_numpy(v / np.float32(127.5) - np.float32(1.0))


def top_mean(values, valid, fraction):
    """Mean over the last axis of the valid entries, only the top ceil(fraction * count) of them."""
    if fraction >= 1.0:
        keep = valid
    else:
        keep = torch.zeros_like(values)
        flat_v, flat_ok, flat_k = values.detach().reshape(-1, values.shape[-1]), valid.reshape(-1, values.shape[-1]), keep.view(-1, values.shape[-1])
        for row in range(flat_v.shape[0]):
            idx = [t for t in range(flat_v.shape[1]) if flat_ok[row, t] > 0.5]
            k = max(1, min(len(idx), int(np.ceil(fraction * len(idx) - 1e-9))))
            idx.sort(key=lambda t: -float(flat_v[row, t]))
            for t in idx[:k]:
                flat_k[row, t] = 1.0
    return (values * keep).sum(-1) / keep.sum(-1).clamp(min=1.0)


def filip_loss(img, txt, mask, scale, fraction):
    x, y = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    sim = torch.einsum("ikp,jrp->ijkr", x, y)  # [images, captions, patches, words]
    m = mask[None, :, None, :]
    img_side = sim.masked_fill(m == 0, float("-inf")).max(dim=3).values  # best word for each patch
    s_i = top_mean(img_side, torch.ones_like(img_side), fraction)
    txt_side = sim.max(dim=2).values  # best patch for each word
    s_t = top_mean(txt_side, mask[None].expand_as(txt_side), fraction)
    target = torch.arange(img.shape[0])
    return 0.5 * (F.cross_entropy(scale * s_i, target) + F.cross_entropy(scale * s_t.t(), target))


def features(model, pixels, ids, eot):
    vis = model.vision_model(pixel_values=pixels)
    img_tokens = model.visual_projection(model.vision_model.post_layernorm(vis.last_hidden_state))[:, 1:]
    ids_t = torch.tensor(ids)
    h = model.text_model(input_ids=ids_t).last_hidden_state  # final layer norm applied
    txt_tokens = model.text_projection(h)
    pooled_t = txt_tokens[torch.arange(len(ids)), torch.tensor(eot)]
    pooled_i = model.visual_projection(vis.pooler_output)
    return img_tokens, txt_tokens, pooled_i, pooled_t


def lst(t):
    return np.asarray(t.detach().cpu().numpy(), dtype=np.float32).tolist()


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    from transformers import CLIPModel

    out = {"ids": IDS, "eot": EOT}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = os.path.join(tmp, "tiny")
        subprocess.run([BIN, "synth-model", "--preset", "tiny", "--out", tiny], check=True)
        model = CLIPModel.from_pretrained(tiny, torch_dtype=torch.float32, attn_implementation="eager")
        model.train()  # CLIP has no dropout: train mode only makes the autograd graph
        size = model.config.vision_config.image_size
        pixels = pattern_pixels(len(IDS), size)
        mask = torch.tensor([[1.0 if t <= e else 0.0 for t in range(len(IDS[0]))] for e in EOT])
        out["tiny"] = {"weights_sha256": sha(os.path.join(tiny, "model.safetensors")), "cases": []}
        for loss_name, fraction in [("filip", 1.0), ("filip", 0.25), ("clip", 1.0)]:
            model.zero_grad()
            img_t, txt_t, pooled_i, pooled_t = features(model, pixels, IDS, EOT)
            scale = model.logit_scale.exp()
            if loss_name == "filip":
                loss = filip_loss(img_t, txt_t, mask, scale, fraction)
            else:
                logits = scale * F.normalize(pooled_i, dim=-1) @ F.normalize(pooled_t, dim=-1).t()
                target = torch.arange(len(IDS))
                loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
            loss.backward()
            params = dict(model.named_parameters())
            out["tiny"]["cases"].append({
                "loss": loss_name,
                "top_fraction": fraction,
                "value": float(loss.detach()),
                "grads": {n: lst(params[n].grad.reshape(-1)) for n in GRADS},
            })
            print(f"{loss_name} (top {fraction}): {float(loss.detach()):.6f}")

        # 2. A folder written by `promptscope pretrain`, read by transformers.
        pairs = os.path.join(tmp, "pairs")
        subprocess.run([BIN, "synth-scenes", "--out", pairs, "--count", "16", "--size", str(size), "--seed", "9"], check=True)
        trained = os.path.join(tmp, "trained")
        cmd = [BIN, "pretrain", "--data", pairs, "--out", trained, "--preset", "tiny", "--loss", "filip", "--epochs", "2",
               "--batch-size", "8", "--lr", "1e-3", "--seed", "3", "--fp16"]
        subprocess.run(cmd, check=True)
        m2, info = CLIPModel.from_pretrained(trained, torch_dtype=torch.float32, output_loading_info=True)
        m2.eval()
        # Every weight found, none left over: transformers reads the folder as a complete CLIPModel.
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        with torch.no_grad():
            img_t, txt_t, pooled_i, pooled_t = features(m2, pixels, IDS, EOT)
        out["pretrained"] = {
            "command": cmd[1:],
            "image_embeds": lst(pooled_i),
            "text_embeds": lst(pooled_t),
            "image_tokens_first_patch": lst(img_t[:, 0]),
            "logit_scale": float(m2.logit_scale),
        }
    path = os.path.join(FIX, "filip_reference.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
