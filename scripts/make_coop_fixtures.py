#!/usr/bin/env python3
"""Regenerates tests/fixtures/coop_reference.json: CoOp trained in PyTorch, the way CoOp's own code does it
(PromptLearner over the full 77-token prompts, torch.optim.SGD, constant warm-up then cosine lr per epoch),
on promptscope's tiny random-weight CLIP, full batch, no augmentation, from fixed image features.

    cargo build && python3 scripts/make_coop_fixtures.py     # needs torch, transformers, numpy

The Rust test (tests/integration/coop_parity.rs) runs the same maths and compares the context after every epoch.
"""
import gzip
import json
import math
import os
import subprocess
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fixture_pattern import pattern

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
# Names of different token counts, so prompts end at different positions.
CLASSES = ["red circle", "dog", "st. bernard with stripes!"]
N_IMAGES = 9
OPTIM = dict(lr=0.5, momentum=0.9, weight_decay=5e-4, warmup_epochs=1, warmup_lr=0.05, epochs=5)


class PromptLearner(nn.Module):
    """CoOp's trainers/coop.py PromptLearner, on a transformers CLIPModel."""

    def __init__(self, classnames, model, tok, n_ctx, ctx_init, csc, position, init_ctx):
        super().__init__()
        emb = model.text_model.embeddings.token_embedding
        with torch.no_grad():
            if ctx_init:
                ids = tok(ctx_init)["input_ids"]
                n_ctx = len(ids) - 2
                ctx_vectors = emb(torch.tensor([ids]))[0, 1 : 1 + n_ctx, :]
                if csc:
                    ctx_vectors = ctx_vectors.unsqueeze(0).repeat(len(classnames), 1, 1)
                prompt_prefix = ctx_init
            else:
                ctx_vectors = init_ctx
                prompt_prefix = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(ctx_vectors.clone())
        self.name_lens = [len(tok(n)["input_ids"]) - 2 for n in classnames]
        prompts = [prompt_prefix + " " + n + "." for n in classnames]
        self.tokenized = torch.tensor(tok(prompts, padding="max_length", max_length=77)["input_ids"])
        with torch.no_grad():
            embedding = emb(self.tokenized)
        self.register_buffer("token_prefix", embedding[:, :1, :])
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :, :])
        self.n_cls, self.n_ctx, self.position, self.csc = len(classnames), n_ctx, position, csc

    def forward(self):
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        half = self.n_ctx // 2
        prompts = []
        for i in range(self.n_cls):
            l = self.name_lens[i]
            p, cls, rest = prefix[i : i + 1], suffix[i : i + 1, :l], suffix[i : i + 1, l:]
            c = ctx[i : i + 1]
            if self.position == "middle":
                prompts.append(torch.cat([p, c[:, :half], cls, c[:, half:], rest], dim=1))
            else:
                prompts.append(torch.cat([p, cls, c, rest], dim=1))
        return torch.cat(prompts, dim=0)


def text_encoder(model, prompts, tokenized):
    """CoOp's TextEncoder: all 77 positions, pooled at the end-of-text token (first 49407)."""
    from transformers.masking_utils import create_causal_mask

    tm = model.text_model
    h = tm.embeddings(inputs_embeds=prompts)
    mask = create_causal_mask(config=tm.config, inputs_embeds=h, attention_mask=None, past_key_values=None)
    h = tm.final_layer_norm(tm.encoder(inputs_embeds=h, attention_mask=mask, is_causal=True).last_hidden_state)
    eot = (tokenized == 49407).int().argmax(dim=-1)
    return model.text_projection(h[torch.arange(h.shape[0]), eot])


def lr_at(e, o=None):
    o = o or OPTIM
    if e < o["warmup_epochs"]:
        return o["warmup_lr"]
    return o["lr"] * (1 + math.cos(math.pi * (e - o["warmup_epochs"]) / o["epochs"])) / 2


def run_case(model, tok, feats, labels, kg_lambda=0.0, anchor=None, **kw):
    learner = PromptLearner(CLASSES, model, tok, **kw)
    opt = torch.optim.SGD([learner.ctx], lr=OPTIM["lr"], momentum=OPTIM["momentum"], weight_decay=OPTIM["weight_decay"])
    scale = model.logit_scale.exp().detach()
    img = feats / feats.norm(dim=-1, keepdim=True)
    out = {"init": learner.ctx.detach().flatten().tolist(), "shape": list(learner.ctx.shape), "ctx": [], "loss": [], "lr": []}
    for e in range(OPTIM["epochs"]):
        lr = lr_at(e)
        for g in opt.param_groups:
            g["lr"] = lr
        txt = text_encoder(model, learner(), learner.tokenized)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        loss = F.cross_entropy(scale * img @ txt.t(), labels)
        if kg_lambda > 0:
            # KgCoOp (trainers/kgcoop.py): 1 - mean cosine to the hand-crafted prompt's class features.
            score = F.cosine_similarity(txt, anchor, dim=1, eps=1e-07)
            loss = loss + kg_lambda * (1.0 - torch.mean(score))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out["ctx"].append(learner.ctx.detach().flatten().tolist())
        out["loss"].append(float(loss))
        out["lr"].append(lr)
    d = np.array(out["ctx"][-1]) - np.array(out["init"])
    print(f"{kw['position']} csc={kw['csc']}: loss {out['loss'][0]:.4f} -> {out['loss'][-1]:.4f}, |ctx change| {np.linalg.norm(d):.4f}")
    return out


COCOOP_OPTIM = dict(OPTIM, lr=0.05, warmup_lr=0.005)


def run_cocoop(model, tok, feats, labels):
    """CoCoOp (trainers/cocoop.py): per image, ctx + meta_net(normalised image feature) in every prompt."""
    learner = PromptLearner(CLASSES, model, tok, n_ctx=0, ctx_init="a photo of a", csc=False, position="end", init_ctx=None)
    p_dim, d = model.config.projection_dim, model.config.text_config.hidden_size
    hidden = max(p_dim // 16, 1)
    meta = nn.Sequential(nn.Linear(p_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d))
    with torch.no_grad():
        meta[0].weight.copy_(torch.from_numpy(pattern(hidden * p_dim, 7, 1, 41, 0.2).reshape(hidden, p_dim)))
        meta[0].bias.copy_(torch.from_numpy(pattern(hidden, 3, 1, 11, 0.1)))
        meta[2].weight.copy_(torch.from_numpy(pattern(d * hidden, 11, 2, 43, 0.2).reshape(d, hidden)))
        meta[2].bias.copy_(torch.from_numpy(pattern(d, 5, 4, 13, 0.01)))
    params = [learner.ctx] + list(meta.parameters())
    o = COCOOP_OPTIM
    opt = torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
    scale = model.logit_scale.exp().detach()
    out = {"optim": o, "init": [p.detach().flatten().tolist() for p in params], "params": [], "loss": []}
    for e in range(o["epochs"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(e, o)
        f = feats / feats.norm(dim=-1, keepdim=True)
        shift = meta(f)
        logits = []
        for i in range(f.shape[0]):
            ctx = (learner.ctx + shift[i]).unsqueeze(0).expand(len(CLASSES), -1, -1)
            prompts = torch.cat([learner.token_prefix, ctx, learner.token_suffix], dim=1)
            txt = text_encoder(model, prompts, learner.tokenized)
            txt = txt / txt.norm(dim=-1, keepdim=True)
            logits.append(scale * f[i] @ txt.t())
        loss = F.cross_entropy(torch.stack(logits), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out["params"].append([p.detach().flatten().tolist() for p in params])
        out["loss"].append(float(loss))
    print(f"CoCoOp: loss {out['loss'][0]:.4f} -> {out['loss'][-1]:.4f}")
    return out


def main():
    from transformers import AutoTokenizer, CLIPModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        mdir = os.path.join(work, "tiny")
        subprocess.run([os.path.join(ROOT, "target", "debug", "promptscope"), "synth-model", "--preset", "tiny", "--out", mdir], check=True)
        with gzip.open(os.path.join(FIX, "hf_clip_tokenizer.json.gz"), "rb") as f, open(os.path.join(mdir, "tokenizer.json"), "wb") as g:
            g.write(f.read())
        model = CLIPModel.from_pretrained(mdir, torch_dtype=torch.float32, attn_implementation="eager").eval()
        for p in model.parameters():
            p.requires_grad_(False)
        tok = AutoTokenizer.from_pretrained(mdir)
        p_dim = model.config.projection_dim
        d = model.config.text_config.hidden_size
        feats = torch.from_numpy(pattern(N_IMAGES * p_dim, 5, 3, 53).reshape(N_IMAGES, p_dim))
        labels = torch.tensor([i % len(CLASSES) for i in range(N_IMAGES)])
        ref = {"classes": CLASSES, "optim": OPTIM, "n_images": N_IMAGES, "labels": labels.tolist()}
        ref["unified_end_phrase"] = run_case(model, tok, feats, labels, n_ctx=0, ctx_init="a photo of a", csc=False, position="end", init_ctx=None)
        init = torch.from_numpy(pattern(len(CLASSES) * 4 * d, 7, 1, 41, 0.02).reshape(len(CLASSES), 4, d))
        ref["csc_middle_random"] = run_case(model, tok, feats, labels, n_ctx=4, ctx_init=None, csc=True, position="middle", init_ctx=init)
        init = torch.from_numpy(pattern(4 * d, 7, 1, 41, 0.02).reshape(4, d))
        ref["unified_front_random"] = run_case(model, tok, feats, labels, n_ctx=4, ctx_init=None, csc=False, position="front", init_ctx=init)
        # KgCoOp: CoOp's loss plus λ = 8 times the distance to "a photo of a {}."'s class features.
        hand = tok([f"a photo of a {c}." for c in CLASSES], padding=True, return_tensors="pt")
        with torch.no_grad():
            anchor = model.get_text_features(**hand)
            anchor = getattr(anchor, "pooler_output", anchor)  # transformers 5 wraps the projected features
            anchor = anchor / anchor.norm(dim=-1, keepdim=True)
        ref["cocoop_end_phrase"] = run_cocoop(model, tok, feats, labels)
        ref["kg_template"] = "a photo of a {}."
        ref["kgcoop_unified_end_random"] = run_case(
            model, tok, feats, labels, kg_lambda=8.0, anchor=anchor, n_ctx=4, ctx_init=None, csc=False, position="end", init_ctx=init
        )
    with open(os.path.join(FIX, "coop_reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
