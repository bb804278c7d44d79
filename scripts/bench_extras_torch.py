#!/usr/bin/env python3
"""The PyTorch side of `promptscope bench suite`'s FILIP, SsVP and loading rows, on the same weights:

- FILIP: one image's 49 patch tokens against the word tokens of 100 prompts ("a photo of a <name>."),
  tokens computed beforehand, s_I and s_T over the top 25 %, their mean per prompt (ms per image);
- SsVP: from a pass already run on 16 images, the class token's penultimate attention summed over heads,
  the top N/4 patches, the last block re-run on [CLS] + them, post-layernorm and projection (images/s);
- loading: the JPEGs `promptscope bench suite` wrote (PHOTOS) opened with PIL and turned into
  pixel_values by transformers' CLIPImageProcessor, in one process (images/s).

    python3 scripts/bench_extras_torch.py --model DIR --photos DIR [--threads 2]
"""
import argparse
import json
import pathlib
import time

import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

WORDS = ["golden retriever", "tabby cat", "red fox", "sports car", "sunflower", "airliner", "espresso", "lighthouse"]


def per_call(f, repeats):
    f()
    t = time.perf_counter()
    for _ in range(repeats):
        f()
    return (time.perf_counter() - t) / repeats


def top_mean(v, fraction):
    k = max(1, int(-(-v.numel() * fraction // 1)))
    return v.topk(k).values.mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = CLIPModel.from_pretrained(a.model, torch_dtype=torch.float32, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(a.model)
    vm, tm = model.vision_model, model.text_model
    s = model.config.vision_config.image_size
    out = {"torch": torch.__version__, "threads": a.threads}
    with torch.inference_mode():
        # FILIP
        vo = vm(pixel_values=torch.randn(1, 3, s, s))
        img = model.visual_projection(vm.post_layernorm(vo.last_hidden_state[0, 1:]))
        img = img / img.norm(dim=-1, keepdim=True)
        names = [f"{WORDS[i % len(WORDS)]} {i // len(WORDS)}" for i in range(100)]
        enc = tok([f"a photo of a {n}." for n in names], padding=True, return_tensors="pt")
        th = model.text_projection(tm(**enc).last_hidden_state)
        eot = (enc["input_ids"] == model.config.text_config.eos_token_id).int().argmax(-1)
        words = [th[i, 1 : int(e) + 1] for i, e in enumerate(eot)]
        words = torch.cat([w / w.norm(dim=-1, keepdim=True) for w in words])
        widths = [int(e) for e in eot]

        def filip():
            sim = img @ words.T
            scores, start = [], 0
            for w in widths:
                block = sim[:, start : start + w]
                scores.append((top_mean(block.max(1).values, 0.25) + top_mean(block.max(0).values, 0.25)) / 2)
                start += w
            return torch.stack(scores)

        out["filip_1x100_ms"] = per_call(filip, 20) * 1e3

        # SsVP
        b = 16
        vo = vm(pixel_values=torch.randn(b, 3, s, s), output_attentions=True, output_hidden_states=True)
        att, into_last = vo.attentions[-2], vo.hidden_states[-2]
        n = att.shape[-1] - 1
        k = max(1, n // 4)
        last = vm.encoder.layers[-1]

        def ssvp():
            cls = att[:, :, 0, 1:].sum(1)
            idx = cls.topk(k, dim=-1).indices.sort(-1).values + 1
            rows = torch.cat([torch.zeros(b, 1, dtype=torch.long), idx], 1)
            x = into_last.gather(1, rows.unsqueeze(-1).expand(-1, -1, into_last.shape[-1]))
            x = last(x, None)
            x = x[0] if isinstance(x, tuple) else x
            return model.visual_projection(vm.post_layernorm(x[:, 0]))

        out["ssvp_images_per_s"] = b / per_call(ssvp, 5)

    # Loading + preprocessing
    files = sorted(pathlib.Path(a.photos).glob("*.jpg"))
    proc = CLIPImageProcessor.from_pretrained(a.model) if (pathlib.Path(a.model) / "preprocessor_config.json").exists() else CLIPImageProcessor()
    out["loading_images_per_s"] = len(files) / per_call(lambda: proc([Image.open(f).convert("RGB") for f in files], return_tensors="pt"), 3)
    out["loading_files"] = len(files)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
