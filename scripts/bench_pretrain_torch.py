#!/usr/bin/env python3
"""Pretraining-step time in PyTorch for the model and batch `promptscope bench-pretrain --save-batch DIR`
wrote: the same architecture (transformers' CLIPModel from DIR/model), the same loss (FILIP's token-wise
late interaction or CLIP's pooled one, as src/train/contrastive.rs), AdamW with the same groups and
settings, the temperature clamped after each step, on the same pixels and token ids. Prints one JSON line.

    python3 scripts/bench_pretrain_torch.py --dir DIR [--loss filip|clip] [--warmup 3] [--steps 10] [--threads 2]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import CLIPModel


def filip_scores(img, txt, mask):
    x = F.normalize(img, dim=-1)
    y = F.normalize(txt, dim=-1)
    sim = torch.einsum("ikp,jrp->ikjr", x, y)
    pad = ((1.0 - mask) * -1e4)[None, None]
    image_side = (sim + pad).amax(-1).mean(1)  # [bi, bt]
    text_side = sim.amax(1)  # [bi, bt, n2]
    s_t = (text_side * mask[None]).sum(-1) / mask.sum(-1)[None]
    return image_side, s_t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--loss", default="filip")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first, as bench-pretrain's --warmup")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = CLIPModel.from_pretrained(f"{a.dir}/model", torch_dtype=torch.float32).train()
    batch = load_file(f"{a.dir}/batch.safetensors")
    pixels = batch["pixels"]
    ids = batch["ids"].long()
    lengths = batch["lengths"].long()
    b, n2 = ids.shape
    mask = (torch.arange(n2)[None] < lengths[:, None]).float()
    eot = lengths - 1
    decay, plain = [], []
    for n, p in model.named_parameters():
        (decay if n.endswith(".weight") and "norm" not in n and "embedding" not in n else plain).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    target = torch.arange(b)

    def step():
        scale = model.logit_scale.exp()
        vis = model.vision_model(pixel_values=pixels).last_hidden_state
        txt = model.text_model(input_ids=ids).last_hidden_state  # final_layer_norm applied
        if a.loss == "filip":
            img_tok = model.visual_projection(model.vision_model.post_layernorm(vis))[:, 1:]
            txt_tok = model.text_projection(txt)
            s_i, s_t = filip_scores(img_tok, txt_tok, mask)
            loss = 0.5 * (F.cross_entropy(s_i * scale, target) + F.cross_entropy(s_t.t() * scale, target))
        else:
            img = model.visual_projection(model.vision_model.post_layernorm(vis[:, 0]))
            t = model.text_projection(txt[torch.arange(b), eot])
            logits = F.normalize(img, dim=-1) @ F.normalize(t, dim=-1).t() * scale
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.605170185988092)
        return loss.item()

    for _ in range(max(a.warmup, 1)):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    s = (time.perf_counter() - t0) / a.steps
    print(json.dumps({"loss": a.loss, "batch": b, "steps": a.steps, "threads": a.threads, "ms_per_step": s * 1000,
                      "images_per_s": b / s, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
