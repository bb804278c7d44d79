#!/usr/bin/env python3
"""Regenerates tests/fixtures/maps_reference.json: every explanation-map method of promptscope's
`align::maps` computed with PyTorch on Hugging Face transformers' `CLIPModel`, ported from each
method's reference code in its order of operations, on two random-weight models promptscope writes
(`synth-model --preset tiny`, and `--preset vit-b-16` for a B/16-shaped one). tests/integration/maps_parity.rs
checks the Rust maps against these within 1e-4 of each map's range.

    cargo build && python3 scripts/make_maps_fixtures.py      # needs torch, transformers, numpy, safetensors

The ports (each method's reference, the file and the commit it follows):
- token: FILIP token-wise (this project, METHODS §4): normalised projected patch tokens · normalised
  projected word tokens (positions 1..=eot).
- maskclip: chongzhou96/MaskCLIP @ 245d31f809be9c1938f8f30561b6bf9ed033d746,
  mmseg/models/backbones/vit.py (the last block with `return_qkv`: v = out_proj(v_proj(ln_1 x)),
  v += x, v = v + FFN(ln_2 v)), maskclip_head.py (ln_post, proj, normalise, dot the text).
- maskclip-clearclip: mc-lan/ClearCLIP @ ad68a404d55d48d27330b93554eb64a234ff717f,
  open_clip/transformer.py, MaskCLIP as ClearCLIP runs it (identity attention, ignore_residual).
- clearclip: the same file, `custom_attn` with model_type='ClearCLIP': softmax(q qT * hd^-0.5) v, no residual, no FFN.
- sclip: wangf3014/SCLIP @ b56bd3014b9e8a3ee3450bcfc53700a67d627b7a, clip/model.py: softmax(q qT s) +
  softmax(k kT s) (summed), residual and FFN kept.
- naclip: sinahmr/NACLIP @ 0cac3a651f753b11315ea799cfbfabf79da1bd76, clip/model.py (arch='reduced',
  attn_strategy='naclip', gaussian_std=5): softmax(k kT s + Omega) v, no residual, no FFN.
- gem: WalBouss/GEM @ 5fa677ca1dcf10d39ceceadacf3e3cff414d7c27, gem/gem_utils.py (gem_depth=7: the last
  six blocks, ss_attn_iter=1, the temperature from the mean token norm), the raw similarity before its
  upsampling and min-max.
- surgery: xmed-lab/CLIP_Surgery @ d4696d47f49cfe70f49140afe5eb94f94c5f59bc, clip/clip_surgery_model.py
  (v-v attention over the last six blocks, no FFN) and demo.py's single-text use: features normalised
  per token (the 2025 fix of the demo's cross-token normalisation), sim = f . (t - t_empty). The
  reference ensembles its 85 templates for t and t_empty; one prompt is explained here, so t is the
  prompt's feature and t_empty the empty text's.
- rollout: hila-chefer/Transformer-Explainability @ c3e578f76b954e8528afeaaee26de3f07e3fe559,
  baselines/ViT/ViT_explanation_generator.py `compute_rollout_attention`: mean over heads, + I, rows
  normalised, later blocks on the left; the class token's row over the patches.
- chefer: hila-chefer/Transformer-MM-Explainability @ f89ee2a948e29039213fd60443fe91c15ab9f1a2,
  CLIP_explainability.ipynb `interpret`: one-hot on the diagonal of logits_per_image, cam =
  clamp(grad * attn, 0).mean(heads), R = R + cam @ R from start_layer (-1: the last block); R[0, 1:].
  Also "chefer@all": every block (start_layer 0), and the text side (start_layer_text -1): the
  end-of-text row of the text tower's relevance over the words, divided by its sum.
- gradcam: Cyang-Zhao/Grad-Eclip @ 5c1b5cc10ce68c9caaabd9711012e892257f9d49, `grad_cam`: the input of the
  last block, the raw cosine, weights the gradient's mean over all tokens, ReLU(sum), patches. The
  reference recomputes the last block with one head; this follows the model's own heads (the fix).
- legrad: WalBouss/LeGrad @ a9edb031422d5f5829d9e6238a1e21feb1972c92, legrad/wrapper.py
  `compute_legrad_clip` (layer_index=-2: the last two blocks), the sum of the layers' maps before
  upsampling and min-max. Also "legrad@1": the last block only.
Position embeddings are never resized (each model runs at its own input size).
"""
import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
TEXT = "a photo of a golden retriever."
# GEM's gem_depth=7 and CLIP Surgery's loop: the last six blocks (all of a shorter tower).
PATH_BLOCKS = 6
NACLIP_SIGMA = 5.0


def f32_list(t):
    return np.asarray(t.detach().cpu().numpy(), dtype=np.float32).tolist()


def heads(a, t):
    b, n, c = t.shape
    return t.reshape(b, n, a.num_heads, c // a.num_heads).transpose(1, 2)


def merge_out(a, o):
    b, h, n, hd = o.shape
    return a.out_proj(o.transpose(1, 2).reshape(b, n, h * hd))


def scale_of(a):
    return a.head_dim ** -0.5


def project(model, h):
    return model.visual_projection(model.vision_model.post_layernorm(h))


def naclip_omega(g):
    ii, jj = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    pos = torch.stack([ii.flatten(), jj.flatten()], -1).float()
    om = torch.exp(-torch.cdist(pos, pos).pow(2) / (2 * NACLIP_SIGMA ** 2))
    return F.pad(om, (1, 0, 1, 0))


def last_block(model, hs, method, g):
    vm = model.vision_model
    x = hs[-2]
    blk = vm.encoder.layers[-1]
    a = blk.self_attn
    y = blk.layer_norm1(x)
    q, k, v = heads(a, a.q_proj(y)), heads(a, a.k_proj(y)), heads(a, a.v_proj(y))
    s = scale_of(a)
    if method == "maskclip":
        o = a.out_proj(a.v_proj(y))
        o = o + x
        o = o + blk.mlp(blk.layer_norm2(o))
    elif method == "maskclip-clearclip":
        o = a.out_proj(a.v_proj(y))
    elif method == "clearclip":
        o = merge_out(a, torch.softmax((q @ q.transpose(-1, -2)) * s, -1) @ v)
    elif method == "sclip":
        att = torch.softmax((q @ q.transpose(-1, -2)) * s, -1) + torch.softmax((k @ k.transpose(-1, -2)) * s, -1)
        o = x + merge_out(a, att @ v)
        o = o + blk.mlp(blk.layer_norm2(o))
    elif method == "naclip":
        att = torch.softmax((k @ k.transpose(-1, -2)) * s + naclip_omega(g), -1)
        o = merge_out(a, att @ v)
    return project(model, o)


def parallel(model, hs, method):
    layers = model.vision_model.encoder.layers
    n = len(layers)
    first = max(0, n - PATH_BLOCKS)
    xp = hs[first]
    for i in range(first, n):
        layer = layers[i]
        a = layer.self_attn
        hn = layer.layer_norm1(hs[i])
        q, k, v = heads(a, a.q_proj(hn)), heads(a, a.k_proj(hn)), heads(a, a.v_proj(hn))
        if method == "gem":
            inv_temp = hn.norm(dim=-1).mean(-1).view(-1, 1, 1, 1) * scale_of(a)
            outs = []
            for z in (v, k, q):
                z = F.normalize(z, dim=-1)
                z = ((z @ z.transpose(-2, -1)) * inv_temp).softmax(-1) @ z
                z = F.normalize(z, dim=-1)
                outs.append(((z @ z.transpose(-2, -1)) * inv_temp).softmax(-1) @ v)
            xp = xp + merge_out(a, (outs[0] + outs[1] + outs[2]) / 3)
        else:
            xp = xp + merge_out(a, ((v @ v.transpose(-2, -1)) * scale_of(a)).softmax(-1) @ v)
    return project(model, xp)


def rollout(attentions):
    joint = None
    for a in attentions:
        m = a[0].mean(0)
        m = m + torch.eye(m.shape[-1])
        m = m / m.sum(-1, keepdim=True)
        joint = m if joint is None else m @ joint
    return joint[0, 1:]


def chefer(model, px, ids, start, text_side=False):
    out = model(input_ids=torch.tensor([ids]), pixel_values=px, output_attentions=True)
    score = out.logits_per_image[0, 0]

    def relevance(attns, start):
        n = attns[0].shape[-1]
        R = torch.eye(n)
        start = len(attns) - 1 if start == -1 else start
        for i, a in enumerate(attns):
            if i < start:
                continue
            grad = torch.autograd.grad(score, [a], retain_graph=True)[0].detach()
            cam = (grad * a.detach()).clamp(min=0).mean(dim=1)[0]
            R = R + cam @ R
        return R

    image = relevance(out.vision_model_output.attentions, start)[0, 1:]
    if not text_side:
        return image
    # show_heatmap_on_text: the end-of-text row over the words, normalised by its sum.
    R_text = relevance(out.text_model_output.attentions, start)
    eot = int(torch.tensor(ids).argmax())
    words = R_text[eot, 1:eot]
    return image, words / words.sum()


def gradcam(model, px, t):
    vm = model.vision_model
    with torch.no_grad():
        hs = vm(pixel_values=px, output_hidden_states=True).hidden_states
    x_in = hs[-2].detach().requires_grad_(True)
    blk, a = vm.encoder.layers[-1], vm.encoder.layers[-1].self_attn
    y = blk.layer_norm1(x_in)
    q, k, v = heads(a, a.q_proj(y)), heads(a, a.k_proj(y)), heads(a, a.v_proj(y))
    A = torch.softmax((q * scale_of(a)) @ k.transpose(-1, -2), dim=-1)
    h = x_in + merge_out(a, A @ v)
    h = h + blk.mlp(blk.layer_norm2(h))
    img = model.visual_projection(vm.post_layernorm(h)[:, 0])
    c = (F.normalize(img, dim=-1) @ t)[0]
    grad = torch.autograd.grad(c, x_in)[0]
    w = grad.mean(dim=1, keepdim=True)
    return F.relu((w * x_in).sum(-1))[0, 1:].detach()


def legrad(model, px, t, layer_index):
    vm = model.vision_model
    layers = vm.encoder.layers
    start = len(layers) + layer_index
    feats = {}
    hooks = [layers[l].register_forward_hook(lambda m, i, o, l=l: feats.__setitem__(l, o[0] if isinstance(o, tuple) else o)) for l in range(start, len(layers))]
    try:
        out = vm(pixel_values=px, output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    accum = 0
    for l in range(start, len(layers)):
        z = F.normalize(model.visual_projection(vm.post_layernorm(feats[l].mean(dim=1))), dim=-1)
        s = (t[None] * z).sum()
        grad = torch.autograd.grad(s, [out.attentions[l]], retain_graph=True)[0]
        accum = accum + grad.clamp(min=0).mean(dim=1).mean(dim=1)[0, 1:]
    return accum.detach()


def text_feature(model, ids):
    out = model.get_text_features(input_ids=torch.tensor([ids]))
    out = out if torch.is_tensor(out) else out.pooler_output
    return out[0]


def maps_of(model, tok, px):
    vm = model.vision_model
    g = model.config.vision_config.image_size // model.config.vision_config.patch_size
    ids = tok.encode(TEXT).ids
    empty_ids = tok.encode("").ids
    out = {"text": TEXT, "text_ids": ids, "empty_ids": empty_ids, "grid": [g, g], "methods": {}}
    with torch.no_grad():
        v = vm(pixel_values=px, output_attentions=True, output_hidden_states=True)
        hs = v.hidden_states
        t = F.normalize(text_feature(model, ids), dim=-1)
        # token: the word maps.
        img = F.normalize(project(model, hs[-1])[0, 1:], dim=-1)
        txt = model.text_projection(model.text_model(input_ids=torch.tensor([ids])).last_hidden_state)[0]
        txt = F.normalize(txt[1:], dim=-1)
        out["methods"]["token"] = f32_list((img @ txt.T).T)
        for m in ["maskclip", "maskclip-clearclip", "clearclip", "sclip", "naclip"]:
            f = F.normalize(last_block(model, hs, m, g)[0, 1:], dim=-1)
            out["methods"][m] = [f32_list(f @ t)]
        f = F.normalize(parallel(model, hs, "gem")[0, 1:], dim=-1)
        out["methods"]["gem"] = [f32_list(f @ t)]
        f = parallel(model, hs, "surgery")[0]
        f = f / f.norm(dim=-1, keepdim=True)
        t_empty = F.normalize(text_feature(model, empty_ids), dim=-1)
        out["methods"]["surgery"] = [f32_list(f[1:] @ (t - t_empty))]
        out["methods"]["rollout"] = [f32_list(rollout(v.attentions))]
    image, words = chefer(model, px, ids, -1, text_side=True)
    out["methods"]["chefer"] = [f32_list(image)]
    out["chefer_word_relevance"] = f32_list(words)
    out["methods"]["chefer@all"] = [f32_list(chefer(model, px, ids, 0))]
    out["methods"]["gradcam"] = [f32_list(gradcam(model, px, t))]
    out["methods"]["legrad"] = [f32_list(legrad(model, px, t, -2))]
    out["methods"]["legrad@1"] = [f32_list(legrad(model, px, t, -1))]
    return out


def main():
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import CLIPModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "promptscope"))
    args = ap.parse_args()
    px = load_file(os.path.join(FIX, "nonsquare_320x213_pixels.safetensors"))["pixel_values"]
    out = {}
    for preset in ["tiny", "vit-b-16"]:
        with tempfile.TemporaryDirectory() as work:
            mdir = os.path.join(work, preset)
            subprocess.run([args.bin, "synth-model", "--preset", preset, "--out", mdir], check=True)
            with gzip.open(os.path.join(FIX, "hf_clip_tokenizer.json.gz"), "rb") as g, open(os.path.join(mdir, "tokenizer.json"), "wb") as f:
                shutil.copyfileobj(g, f)
            sha = hashlib.sha256(open(os.path.join(mdir, "model.safetensors"), "rb").read()).hexdigest()
            model = CLIPModel.from_pretrained(mdir, torch_dtype=torch.float32, attn_implementation="eager").eval()
            tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))
            assert model.config.vision_config.image_size == px.shape[-1], preset
            out[preset] = {"weights_sha256": sha, **maps_of(model, tok, px)}
            print(preset, {m: float(np.ptp(np.array(v))) for m, v in out[preset]["methods"].items()})
    path = os.path.join(FIX, "maps_reference.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    sys.exit(main())
