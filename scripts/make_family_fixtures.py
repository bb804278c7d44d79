#!/usr/bin/env python3
"""Regenerates tests/fixtures/families/: tiny random-weight SigLIP and Chinese-CLIP checkpoints in the
Hugging Face layout, and what transformers computes on them, so the Rust tests can prove that the other
model families (loaded through candle-transformers) give transformers' global features.

    python3 scripts/make_family_fixtures.py          # needs torch, transformers, tokenizers, pillow, numpy

Each folder holds config.json, model.safetensors, tokenizer.json and preprocessor_config.json, as
`save_pretrained` writes them; `reference.json` beside them holds, for a few captions and two images, the
token ids the model's processor gives, the pixels, and transformers' `get_text_features` /
`get_image_features` (projected, not normalised) and logit scale (and SigLIP's bias).
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "families")

CAPTIONS = ["a photo of a cat.", "a photo of a dog", "red circle", "一张猫的照片", "unknownword here"]
WORDS = ["a", "photo", "of", "cat", "dog", "red", "circle", "blue", "square", "here", ".", "一", "张", "猫", "的", "照", "片"]


def images():
    """Two small non-square RGB images with structure (so resizing and cropping matter)."""
    out = []
    for k, (w, h) in enumerate([(53, 40), (36, 61)]):
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([(x * (7 + k) + y * 3) % 256, (y * 11 + 40 * k) % 256, ((x - y) * 5) % 256], -1)
        out.append(Image.fromarray(rgb.astype(np.uint8), "RGB"))
    return out


def randomize(model, seed):
    """Every parameter N(0, 0.5²) (LayerNorm weights around 1): larger than the init so that every layer
    moves the features and a wrong one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.5
            p.copy_(1.0 + 0.1 * noise if "norm" in name and name.endswith("weight") else noise)


def save(model, tok, processor_json, name, reference):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
        json.dump(processor_json, f, indent=2)
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(reference, f)
    print(name, {k: os.path.getsize(os.path.join(d, k)) for k in os.listdir(d)})


def pixels_of(processor, imgs):
    return processor(images=imgs, return_tensors="pt")["pixel_values"]


def siglip():
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    # SigLIP's tokenizer is SentencePiece; any tokenizer.json serves the same code path: ids, then padded
    # to the context length with the pad id (SigLIP was trained on max-length padding, no mask).
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    context = 12
    cfg = SiglipConfig(
        text_config=dict(vocab_size=len(vocab) + 5, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=context, pad_token_id=1, eos_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
    )
    torch.manual_seed(0)
    model = SiglipModel(cfg).eval()
    randomize(model, 1)
    proc = SiglipImageProcessor(size={"height": 32, "width": 32})
    # As a fast tokenizer runs it: truncated to leave room for </s>, then padded with the pad id.
    tok.enable_truncation(context)
    ids = [e + [1] * (context - len(e)) for e in (tok.encode(c).ids for c in CAPTIONS + [" ".join(WORDS)])]
    tok.no_truncation()
    pix = pixels_of(proc, images())
    with torch.no_grad():
        text = model.get_text_features(input_ids=torch.tensor(ids)).pooler_output
        image = model.get_image_features(pixel_values=pix).pooler_output
    ref = dict(captions=CAPTIONS + [" ".join(WORDS)], ids=ids, pixels=pix.flatten().tolist(), text=text.tolist(), image=image.tolist(),
               logit_scale=model.logit_scale.exp().item(), logit_bias=model.logit_bias.item())
    save(model, tok, proc.to_dict(), "siglip", ref)


def chinese_clip():
    from transformers import ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel

    # A BERT WordPiece tokenizer as BertTokenizerFast builds it (CJK characters split one a token).
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "照片"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    cfg = ChineseCLIPConfig(
        text_config=dict(vocab_size=len(vocab) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=40),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=24),
        projection_dim=24,
    )
    torch.manual_seed(0)
    model = ChineseCLIPModel(cfg).eval()
    randomize(model, 2)
    proc = ChineseCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    # Padded to the longest caption with [PAD], and masked: as the processor's padding=True does.
    ids = [tok.encode(c).ids for c in CAPTIONS]
    longest = max(map(len, ids))
    mask = [[1] * len(e) + [0] * (longest - len(e)) for e in ids]
    ids = [e + [0] * (longest - len(e)) for e in ids]
    enc = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.zeros(len(ids), longest, dtype=torch.long))
    pix = pixels_of(proc, images())
    with torch.no_grad():
        text = model.get_text_features(**enc).pooler_output
        image = model.get_image_features(pixel_values=pix).pooler_output
    ref = dict(captions=CAPTIONS, ids=enc["input_ids"].tolist(), mask=enc["attention_mask"].tolist(),
               pixels=pix.flatten().tolist(), text=text.tolist(), image=image.tolist(),
               logit_scale=model.logit_scale.exp().item())
    save(model, tok, proc.to_dict(), "chinese_clip", ref)


def main():
    for i, img in enumerate(images()):
        os.makedirs(OUT, exist_ok=True)
        img.save(os.path.join(OUT, f"image{i}.png"))
    siglip()
    chinese_clip()


if __name__ == "__main__":
    main()
