#!/usr/bin/env python3
"""Regenerates tests/fixtures/: what Hugging Face transformers computes on promptscope's random-weight
CLIP checkpoints, so the Rust tests can prove parity without network or pretrained weights.

    cargo build && python3 scripts/make_fixtures.py            # needs torch, transformers, pillow, numpy

1. Builds transformers' CLIPTokenizer from OpenAI's BPE table (assets/bpe_simple_vocab_16e6.txt.gz), converts
   it to the fast tokenizer (from_slow=True) and stores that tokenizer.json (gzipped) with the ids it gives
   for a list of tricky strings.
2. Has `promptscope synth-model` write the tiny random-weight checkpoints (weights are a pure function of
   tensor names), loads each with transformers' CLIPModel, and records text features (from ids and from
   embeddings), per-token outputs, image features, attention probabilities and hidden states.
3. Makes a non-square test image and records CLIPImageProcessor's pixels (PIL backend) for it.
"""
import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")

TRICKY = [
    "a photo of a golden retriever.",
    "A PHOTO OF A Golden   Retriever!!",
    "It's a dog's life, isn't it? They're we've I'm you'll he'd",
    "3.14159 and 1,000,000 and 2024-11-24 and 007",
    "café naïve résumé Ångström crème brûlée",
    "emoji: 🐶🐱 👍🏽 🏳️‍🌈 and ❤️",
    "日本語のテキスト と 한국어 텍스트 and русский текст",
    "tabs\tand\nnewlines\r\n  and   spaces",
    "punctuation!?.,;:'\"()[]{}<>@#$%^&*-_=+/\\|~`",
    "<|startoftext|> inside <|endoftext|> text",
    "",
    "   ",
    "x" * 300,
    " ".join(["word"] * 120),
    "a photo of a " + " ".join(f"thing{i}" for i in range(100)) + ".",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_tokenizer(workdir):
    """transformers' CLIPTokenizer (the tokenizers-backed one since transformers 5; built from the slow
    tokenizer with from_slow=True before) from OpenAI's vocabulary, saved and reloaded as users load it."""
    from transformers import AutoTokenizer, CLIPTokenizer

    with gzip.open(os.path.join(ROOT, "assets", "bpe_simple_vocab_16e6.txt.gz"), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=77)
    fast_dir = os.path.join(workdir, "fast")
    tok.save_pretrained(fast_dir)
    fast = AutoTokenizer.from_pretrained(fast_dir)
    ids = fast("a photo of a golden retriever.")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 3878, 28394, 269, 49407], ids
    return fast, os.path.join(fast_dir, "tokenizer.json")


def f32_list(t):
    return np.asarray(t.detach().cpu().numpy() if torch.is_tensor(t) else t, dtype=np.float32).tolist()


def pattern_pixels(batch, size):
    """Exactly representable in f32 on both sides: ((7x + 13y + 31c + 17b) % 255) / 127.5 - 1."""
    b, c, y, x = np.meshgrid(np.arange(batch), np.arange(3), np.arange(size), np.arange(size), indexing="ij")
    v = ((7 * x + 13 * y + 31 * c + 17 * b) % 255).astype(np.float32)
    return torch.from_numpy(v / np.float32(127.5) - np.float32(1.0))


def pattern_embeds(batch, length, dim):
    """((3i + 5) % 97) / 48.5 - 1 over the flattened index, exactly representable."""
    i = np.arange(batch * length * dim)
    v = ((3 * i + 5) % 97).astype(np.float32) / np.float32(48.5) - np.float32(1.0)
    return torch.from_numpy(v.reshape(batch, length, dim))


def text_from_embeds(model, embeds, eot):
    from transformers.masking_utils import create_causal_mask

    tm = model.text_model
    h = tm.embeddings(inputs_embeds=embeds)
    mask = create_causal_mask(config=tm.config, inputs_embeds=h, attention_mask=None, past_key_values=None)
    h = tm.encoder(inputs_embeds=h, attention_mask=mask, is_causal=True).last_hidden_state
    h = tm.final_layer_norm(h)
    pooled = h[torch.arange(h.shape[0]), torch.tensor(eot)]
    return model.text_projection(pooled)


def model_reference(binary, preset, tokenizer, workdir):
    from transformers import CLIPModel

    mdir = os.path.join(workdir, preset)
    subprocess.run([binary, "synth-model", "--preset", preset, "--out", mdir], check=True)
    sha = hashlib.sha256(open(os.path.join(mdir, "model.safetensors"), "rb").read()).hexdigest()
    model = CLIPModel.from_pretrained(mdir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    texts = ["a photo of a golden retriever.", "a dog", "an extremely detailed oil painting of a lighthouse at dusk, with waves"]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    length = max(len(i) for i in ids)
    padded = torch.tensor([i + [49407] * (length - len(i)) for i in ids])
    eot_ids = [len(i) - 1 for i in ids]
    out = {"weights_sha256": sha}
    with torch.no_grad():
        t = model.get_text_features(input_ids=padded)
        out["text_ids"] = ids
        out["text_embeds"] = f32_list(t.pooler_output)
        out["text_tokens"] = f32_list(model.text_projection(t.last_hidden_state))
        dim = model.config.text_config.hidden_size
        emb = pattern_embeds(3, 16, dim)
        eot = [5, 15, 9]
        out["embeds_eot"] = eot
        out["embeds_shape"] = [3, 16, dim]
        out["text_embeds_from_embeds"] = f32_list(text_from_embeds(model, emb, eot))
        size = model.config.vision_config.image_size
        px = pattern_pixels(2, size)
        v = model.vision_model(pixel_values=px, output_attentions=True, output_hidden_states=True)
        out["image_embeds"] = f32_list(model.visual_projection(v.pooler_output))
        tokens = model.visual_projection(model.vision_model.post_layernorm(v.last_hidden_state))
        out["image_tokens"] = f32_list(tokens)
        out["attention_block"] = 1
        out["attention"] = f32_list(v.attentions[1])
        out["hidden_into_block"] = 2
        out["hidden"] = f32_list(v.hidden_states[2])
        out["logit_scale"] = float(model.logit_scale.exp())
    return out, model, mdir


def test_image():
    rng = np.random.default_rng(0)
    w, h = 320, 213
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // w).astype(np.uint8)
    g = (y * 255 // h).astype(np.uint8)
    b = (((x // 20 + y // 20) % 2) * 200 + 20).astype(np.uint8)
    img = np.stack([r, g, b], -1)
    img[60:120, 100:180] = [250, 30, 30]
    img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "promptscope"))
    args = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(FIX, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        tok, tok_path = build_tokenizer(work)
        with open(tok_path, "rb") as f, gzip.GzipFile(os.path.join(FIX, "hf_clip_tokenizer.json.gz"), "wb", mtime=0) as g:
            g.write(f.read())
        cases = [{"text": s, "ids": tok(s, truncation=True, max_length=77)["input_ids"]} for s in TRICKY]
        with open(os.path.join(FIX, "tokenizer_cases.json"), "w", encoding="utf-8") as f:
            json.dump(cases, f, ensure_ascii=False, indent=0)

        ref = {}
        for preset in ["tiny", "tiny-gelu"]:
            out, model, mdir = model_reference(args.bin, preset, tok, work)
            ref[preset] = out
            if preset == "tiny":
                from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

                img = test_image()
                img.save(os.path.join(FIX, "nonsquare_320x213.png"))
                proc = CLIPImageProcessorPil.from_pretrained(mdir)
                px = proc(images=Image.open(os.path.join(FIX, "nonsquare_320x213.png")), return_tensors="pt")["pixel_values"]
                from safetensors.torch import save_file

                save_file({"pixel_values": px.contiguous()}, os.path.join(FIX, "nonsquare_320x213_pixels.safetensors"))
                with torch.no_grad():
                    ref[preset]["nonsquare_image_embeds"] = f32_list(model.get_image_features(pixel_values=px).pooler_output)
        with open(os.path.join(FIX, "clip_reference.json"), "w") as f:
            json.dump(ref, f)
    print("wrote", sorted(os.listdir(FIX)))


if __name__ == "__main__":
    sys.exit(main())
