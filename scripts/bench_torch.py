#!/usr/bin/env python3
"""The PyTorch side of `promptscope bench`: the same operations on the same weights (any CLIP folder in the
Hugging Face layout, e.g. one written by `promptscope synth-model --preset vit-b-32`), same batch sizes and
thread count, printed as JSON with the same keys.

    python3 scripts/bench_torch.py --model DIR [--batch 16] [--images 64] [--text-batch 64] [--texts 256] [--threads 2]
                                   [--device cpu|cuda]
"""
import argparse
import json
import time

import torch
from transformers import AutoTokenizer, CLIPModel

WORDS = ["golden retriever", "tabby cat", "red fox", "sports car", "sunflower", "airliner", "espresso", "lighthouse"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--text-batch", type=int, default=64)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", help="transformers attn_implementation: sdpa or eager")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (GPU 0); timings wait for the GPU at both ends")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = CLIPModel.from_pretrained(a.model, torch_dtype=torch.float32, attn_implementation=a.attn).eval().to(dev)
    tok = AutoTokenizer.from_pretrained(a.model)
    s = model.config.vision_config.image_size
    px = torch.randn(a.batch, 3, s, s).to(dev)
    rounds = max(1, -(-a.images // a.batch))
    with torch.inference_mode():
        model.get_image_features(pixel_values=px)
        sync()
        t = time.perf_counter()
        for _ in range(rounds):
            model.get_image_features(pixel_values=px)
        sync()
        images_per_s = rounds * a.batch / (time.perf_counter() - t)

        prompts = [f"a photo of a {WORDS[i % len(WORDS)]}." for i in range(a.texts)]
        # Padded per batch to its longest prompt, as our side runs up to the longest end-of-text.
        batches = [tok(prompts[i : i + a.text_batch], padding=True, return_tensors="pt") for i in range(0, len(prompts), a.text_batch)]
        batches = [b["input_ids"].to(dev) for b in batches]
        model.get_text_features(input_ids=batches[0])
        sync()
        t = time.perf_counter()
        for ids in batches:
            model.get_text_features(input_ids=ids)
        sync()
        prompts_per_s = len(prompts) / (time.perf_counter() - t)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({a.threads} threads)"
    print(json.dumps({
        "model": a.model, "device": f"{where}, torch {torch.__version__}", "threads": a.threads,
        "batch": a.batch, "images": rounds * a.batch, "images_per_s": images_per_s,
        "text_batch": a.text_batch, "texts": len(prompts), "prompts_per_s": prompts_per_s,
    }))


if __name__ == "__main__":
    main()
