#!/usr/bin/env python3
"""Regenerates tests/fixtures/align_reference.json: FILIP token-wise similarity (token and value modes) and
SsVP computed with Hugging Face transformers' modules on promptscope's tiny random-weight CLIP, for
tests/integration/align_parity.rs.

    cargo build && python3 scripts/make_align_fixtures.py      # needs torch, transformers, numpy, safetensors

Everything is written out from the HF modules by hand, following METHODS §4/§5 literally:
- image tokens: visual_projection(post_layernorm(h)) of the final hidden states (token mode), or of
  out_proj(v_proj(layer_norm1(x))) of the last block for x = the hidden states entering it (value mode);
- text tokens: text_projection(last_hidden_state) (which is after final_layer_norm), positions 1..=eot;
- S = normalised image tokens @ normalised text tokens^T; s_I / s_T = mean over the top ceil(f*n) of the
  row / column maxima;
- SsVP: attentions[n-2][:, :, 0, 1:] summed over heads, top-K, the last encoder layer on [CLS] + the kept
  hidden states (in ascending patch order), post_layernorm + visual_projection of its class token.
The image is the committed tests/fixtures/nonsquare_320x213_pixels.safetensors (CLIPImageProcessor's output).
"""
import argparse
import gzip
import hashlib
import json
import math
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
CLASS_NAME = "golden retriever"
N_CTX = 4


def f32_list(t):
    return np.asarray(t.detach().cpu().numpy(), dtype=np.float32).tolist()


def ctx_pattern(n, dim):
    """A learned context stand-in, exactly representable: ((5i + 3) % 41) / 20.5 - 1, scaled by 0.05."""
    i = np.arange(n * dim)
    v = (((5 * i + 3) % 41).astype(np.float32) / np.float32(20.5) - np.float32(1.0)) * np.float32(0.05)
    return torch.from_numpy(v.reshape(n, dim))


def scores(S, frac):
    def top_mean(v):
        k = max(1, math.ceil(frac * v.numel()))
        return float(torch.topk(v, k).values.mean())

    return top_mean(S.max(dim=1).values), top_mean(S.max(dim=0).values)


def text_tokens_from_embeds(model, embeds):
    from transformers.masking_utils import create_causal_mask

    tm = model.text_model
    h = tm.embeddings(inputs_embeds=embeds)
    mask = create_causal_mask(config=tm.config, inputs_embeds=h, attention_mask=None, past_key_values=None)
    h = tm.encoder(inputs_embeds=h, attention_mask=mask, is_causal=True).last_hidden_state
    return model.text_projection(tm.final_layer_norm(h))


def case(img_tokens, txt_tokens, with_cls, with_sos, fracs):
    img = img_tokens if with_cls else img_tokens[1:]
    txt = txt_tokens if with_sos else txt_tokens[1:]
    S = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    out = {"with_cls": with_cls, "with_sos": with_sos, "sim": f32_list(S), "scores": []}
    for f in fracs:
        s_i, s_t = scores(S, f)
        out["scores"].append({"top_fraction": f, "s_i": s_i, "s_t": s_t})
    return out


def main():
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import CLIPModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "promptscope"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        mdir = os.path.join(work, "tiny")
        subprocess.run([args.bin, "synth-model", "--preset", "tiny", "--out", mdir], check=True)
        with gzip.open(os.path.join(FIX, "hf_clip_tokenizer.json.gz"), "rb") as g, open(os.path.join(mdir, "tokenizer.json"), "wb") as f:
            shutil.copyfileobj(g, f)
        sha = hashlib.sha256(open(os.path.join(mdir, "model.safetensors"), "rb").read()).hexdigest()
        model = CLIPModel.from_pretrained(mdir, torch_dtype=torch.float32, attn_implementation="eager").eval()
        tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))
        ids = tok.encode(TEXT).ids
        px = load_file(os.path.join(FIX, "nonsquare_320x213_pixels.safetensors"))["pixel_values"]
        vm = model.vision_model
        n = len(vm.encoder.layers)
        out = {"weights_sha256": sha, "text": TEXT, "text_ids": ids}
        with torch.no_grad():
            v = vm(pixel_values=px, output_attentions=True, output_hidden_states=True)
            token_img = model.visual_projection(vm.post_layernorm(v.last_hidden_state))[0]
            last = vm.encoder.layers[n - 1]
            into_last = v.hidden_states[n - 1]
            value = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(into_last)))
            value_img = model.visual_projection(vm.post_layernorm(value))[0]
            t = model.text_model(input_ids=torch.tensor([ids]))
            txt = model.text_projection(t.last_hidden_state)[0]
            out["token"] = case(token_img, txt, False, False, [1.0, 0.25])
            out["token_cls_sos"] = case(token_img, txt, True, True, [1.0, 0.5])
            out["value"] = case(value_img, txt, False, False, [1.0, 0.25])

            # A learned prompt: [SOS] ctx(N_CTX) "golden retriever." [EOS], ctx a fixed pattern; the suffix
            # is tokenised inside the placeholder prompt as CoOp (and PromptLearner) do.
            dim = model.config.text_config.hidden_size
            ctx = ctx_pattern(N_CTX, dim)
            words = tok.encode(" ".join(["X"] * N_CTX) + f" {CLASS_NAME}.", add_special_tokens=False).ids
            suffix = words[N_CTX:] + [49407]
            emb = model.text_model.embeddings.token_embedding
            embeds = torch.cat([emb(torch.tensor([49406])), ctx, emb(torch.tensor(suffix))])[None]
            learned_txt = text_tokens_from_embeds(model, embeds)[0]
            out["learned"] = {"class_name": CLASS_NAME, "n_ctx": N_CTX, "ctx": f32_list(ctx), "suffix_ids": suffix}
            out["learned"].update(case(token_img, learned_txt, False, False, [1.0]))

            att = v.attentions[n - 2][0, :, 0, 1:].sum(0)
            out["ssvp_attention"] = f32_list(att)
            out["ssvp"] = []
            for k in [12, 5]:
                idx = torch.sort(torch.topk(att, k).indices).values
                sub = torch.cat([into_last[:, :1], into_last[:, 1 + idx]], dim=1)
                h = last(sub, None)
                h = h[0] if isinstance(h, tuple) else h
                feat = model.visual_projection(vm.post_layernorm(h[:, 0]))[0]
                out["ssvp"].append({"k": k, "indices": idx.tolist(), "scores": f32_list(att[idx]), "image_embeds": f32_list(feat)})
    path = os.path.join(FIX, "align_reference.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    sys.exit(main())
