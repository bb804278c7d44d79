#!/usr/bin/env python3
"""CoOp training-step time in PyTorch on a CLIP folder (e.g. `promptscope synth-model --preset vit-b-32`):
CoOp's way (every prompt padded to 77 positions) and with end-of-text truncation, unified context of M
vectors at the end, C classes, a batch of cached image features. Prints JSON lines.

    python3 scripts/bench_coop_torch.py --model DIR [--classes 100] [--n-ctx 16] [--batch 32] [--steps 3] [--threads 2]
                                        [--device cpu|cuda]
"""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel
from transformers.masking_utils import create_causal_mask

WORDS = ["golden retriever", "tabby cat", "red fox", "sports car", "sunflower", "airliner", "espresso", "lighthouse"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--n-ctx", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default="coop,truncated")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (GPU 0); timings wait for the GPU at both ends")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = CLIPModel.from_pretrained(a.model, torch_dtype=torch.float32).eval().to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(a.model)
    tm = model.text_model
    names = [f"{WORDS[i % len(WORDS)]} {i // len(WORDS)}" for i in range(a.classes)]
    prefix = " ".join(["X"] * a.n_ctx)
    ids = torch.tensor(tok([f"{prefix} {n}." for n in names], padding="max_length", max_length=77)["input_ids"]).to(dev)
    eot = (ids == 49407).int().argmax(-1)
    with torch.no_grad():
        emb = tm.embeddings.token_embedding(ids)
    d = emb.shape[-1]
    ctx = torch.nn.Parameter((torch.randn(a.n_ctx, d) * 0.02).to(dev))
    opt = torch.optim.SGD([ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
    feats = torch.randn(a.batch, model.config.projection_dim).to(dev)
    labels = (torch.arange(a.batch) % a.classes).to(dev)
    scale = model.logit_scale.exp()
    for mode in a.modes.split(","):
        length = 77 if mode == "coop" else int(eot.max()) + 1
        pre, suf = emb[:, :1], emb[:, 1 + a.n_ctx : length]

        def step():
            prompts = torch.cat([pre, ctx.unsqueeze(0).expand(a.classes, -1, -1), suf], 1)
            h = tm.embeddings(inputs_embeds=prompts)
            mask = create_causal_mask(config=tm.config, inputs_embeds=h, attention_mask=None, past_key_values=None)
            h = tm.final_layer_norm(tm.encoder(inputs_embeds=h, attention_mask=mask, is_causal=True).last_hidden_state)
            txt = model.text_projection(h[torch.arange(a.classes, device=dev), eot])
            txt = txt / txt.norm(dim=-1, keepdim=True)
            img = feats / feats.norm(dim=-1, keepdim=True)
            loss = F.cross_entropy(scale * img @ txt.t(), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        step()
        sync()
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        sync()
        ms = (time.perf_counter() - t) * 1000 / a.steps
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row = {"mode": mode, "classes": a.classes, "n_ctx": a.n_ctx, "batch": a.batch, "text_positions": length,
               "ms_per_step": ms, "peak_rss_mb": rss, "threads": a.threads, "torch": torch.__version__}
        if cuda:
            row["device"] = torch.cuda.get_device_name(dev)
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
