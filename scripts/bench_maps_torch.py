#!/usr/bin/env python3
"""Times each explanation map's PyTorch port (scripts/make_maps_fixtures.py, each the reference code's
computation on transformers' CLIPModel) from pixels to map, one image and one text, as
`promptscope bench-maps` times ours on the same weights: the vision pass, the method, the text feature.

    promptscope synth-model --preset vit-b-16 --out /tmp/b16
    python3 scripts/bench_maps_torch.py --model /tmp/b16 --threads 2
    promptscope bench-maps --model /tmp/b16 --format json

Prints one JSON list: {method, ms_per_map}.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_maps_fixtures as ref  # noqa: E402

TEXT = "a photo of a golden retriever."


def one_map(model, tok, px, method):
    ids = tok.encode(TEXT).ids
    vm = model.vision_model
    g = model.config.vision_config.image_size // model.config.vision_config.patch_size
    if method in ("chefer", "gradcam", "legrad"):
        t = F.normalize(ref.text_feature(model, ids), dim=-1).detach()
        if method == "chefer":
            return ref.chefer(model, px, ids, -1)
        if method == "gradcam":
            return ref.gradcam(model, px, t)
        return ref.legrad(model, px, t, -2)
    with torch.no_grad():
        v = vm(pixel_values=px, output_hidden_states=True, output_attentions=(method == "rollout"))
        hs = v.hidden_states
        if method == "rollout":
            return ref.rollout(v.attentions)
        if method == "token":
            img = F.normalize(ref.project(model, hs[-1])[0, 1:], dim=-1)
            txt = model.text_projection(model.text_model(input_ids=torch.tensor([ids])).last_hidden_state)[0]
            return img @ F.normalize(txt[1:], dim=-1).T
        t = F.normalize(ref.text_feature(model, ids), dim=-1)
        if method in ("gem", "surgery"):
            f = ref.parallel(model, hs, method)[0]
            if method == "surgery":
                t = t - F.normalize(ref.text_feature(model, tok.encode("").ids), dim=-1)
        else:
            f = ref.last_block(model, hs, method, g)[0]
        return F.normalize(f[1:], dim=-1) @ t


def main():
    from tokenizers import Tokenizer
    from transformers import CLIPModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = CLIPModel.from_pretrained(args.model, torch_dtype=torch.float32, attn_implementation="eager").eval()
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    s = model.config.vision_config.image_size
    px = torch.randn(1, 3, s, s)
    rows = []
    for m in ["token", "maskclip", "maskclip-clearclip", "clearclip", "sclip", "naclip", "gem", "surgery",
              "rollout", "chefer", "gradcam", "legrad"]:
        one_map(model, tok, px, m)
        t = time.perf_counter()
        for _ in range(args.repeats):
            one_map(model, tok, px, m)
        ms = (time.perf_counter() - t) / args.repeats * 1e3
        rows.append({"method": m, "ms_per_map": ms})
        print(f"{m:20} {ms:9.2f} ms per map", file=sys.stderr)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
