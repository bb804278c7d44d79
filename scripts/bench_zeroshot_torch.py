#!/usr/bin/env python3
"""CLIP's prompt ensemble in PyTorch (transformers) on a CLIP folder: C class names × the first T of CLIP's
80 ImageNet templates (read from src/eval/templates.rs, the list promptscope uses), encoded with
`get_text_features` in batches, normalised and averaged per class. `--pad 77` pads every prompt to 77
positions as CLIP's own `clip.tokenize` does; `--pad longest` pads each batch to its longest prompt.
Class names are promptscope's bench names ("golden retriever 3"). Prints one JSON line.

    python3 scripts/bench_zeroshot_torch.py --model DIR [--classes 1000] [--templates 80] [--pad longest|77]
                                            [--batch 256] [--threads 2] [--device cpu|cuda]
"""
import argparse
import json
import pathlib
import re
import resource
import time

import torch
from transformers import AutoTokenizer, CLIPModel

WORDS = ["golden retriever", "tabby cat", "red fox", "sports car", "sunflower", "airliner", "espresso", "lighthouse"]
ROOT = pathlib.Path(__file__).resolve().parent.parent


def imagenet_templates():
    src = (ROOT / "src/eval/templates.rs").read_text()
    body = src[src.index("pub const IMAGENET: "):]
    body = body[body.index("= [") : body.index("];")]
    return re.findall(r'"((?:[^"\\]|\\.)*)"', body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--templates", type=int, default=80)
    ap.add_argument("--pad", default="longest", choices=["longest", "77"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (GPU 0); the timing waits for the GPU at the end")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    model = CLIPModel.from_pretrained(a.model, torch_dtype=torch.float32).eval().to(dev)
    tok = AutoTokenizer.from_pretrained(a.model)
    names = [f"{WORDS[i % len(WORDS)]} {i // len(WORDS)}" for i in range(a.classes)]
    templates = (imagenet_templates() * 80)[: a.templates]
    assert len(imagenet_templates()) == 80
    padding = dict(padding="max_length", max_length=77) if a.pad == "77" else dict(padding="longest")
    t = time.perf_counter()
    with torch.no_grad():
        total = torch.zeros(a.classes, model.config.projection_dim, device=dev)
        for tpl in templates:
            texts = [tpl.replace("{}", n) for n in names]
            for i in range(0, len(texts), a.batch):
                enc = tok(texts[i : i + a.batch], return_tensors="pt", **padding).to(dev)
                f = model.get_text_features(**enc)
                f = getattr(f, "pooler_output", f)
                total[i : i + a.batch] += f / f.norm(dim=-1, keepdim=True)
        weights = total / total.norm(dim=-1, keepdim=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t
    print(json.dumps({"classes": a.classes, "templates": len(templates), "pad": a.pad, "seconds": seconds,
                      "prompts_per_s": a.classes * len(templates) / seconds, "threads": a.threads,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__, "check": float(weights[0, 0])}), flush=True)


if __name__ == "__main__":
    main()
