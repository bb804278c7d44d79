#!/usr/bin/env python3
"""Generate reference fixtures for `promptscope::clip::resample`.

CLIP preprocessing (Hugging Face `CLIPImageProcessor`) resizes with
`PIL.Image.resize(size, resample=BICUBIC)`, and our Rust port must reproduce
it byte for byte. This script builds a few small deterministic RGB images,
resizes each with Pillow to several sizes (non-integer down-scales, up-scales,
one axis only, the typical CLIP 320x213 -> 336x224 case) and writes inputs,
outputs and an index `cases.json` to `tests/fixtures/resample/`. The
integration test `tests/integration/resample_pil.rs` replays every case.

Usage: python3 scripts/make_resample_fixtures.py   (needs numpy and Pillow)
Re-running is deterministic for a given Pillow version. Use Pillow >= 13:
since 13.0 Pillow runs the vertical pass first when the height loses more
than twice as many pixels as the width, which changes the output of those
cases (marked "vertical first" below) compared with older releases.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "resample"
MAX_TOTAL_BYTES = 300 * 1024


def noise(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Uniform noise: every tap of every window matters."""
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def edges(w: int, h: int) -> np.ndarray:
    """Gradients plus hard 0/255 edges, which make bicubic overshoot and
    exercise the clamp to 0..255."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(h - 1, 1)).astype(np.uint8)
    img[..., 2] = np.where(((x // 5) + (y // 7)) % 2 == 0, 255, 0).astype(np.uint8)
    # A black box with a white border in the middle.
    img[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 255
    img[h // 4 + 2 : 3 * h // 4 - 2, w // 3 + 2 : 2 * w // 3 - 2] = 0
    # Single-pixel lines.
    img[:, w - 3] = (255, 0, 255)
    img[h - 2, :] = (0, 255, 0)
    return img


def photo_like(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A CLIP-sized input that still compresses well: smooth shading, shapes
    with sharp outlines, and one patch of noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 23.0) * np.cos(y / 31.0)
    g = 255 * (x + y) / (w + h)
    b = 60 + 40 * np.cos((x - y) / 17.0)
    img = np.stack([r, g, b], axis=-1)
    disc = (x - w * 0.3) ** 2 + (y - h * 0.55) ** 2 < (h * 0.2) ** 2
    img[disc] = (250, 240, 10)
    img[(np.abs(x - w * 0.7) < 25) & (np.abs(y - h * 0.4) < 40)] = (0, 0, 0)
    img[h // 2, :] = 255
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    img[10:40, 200:260] = rng.integers(0, 256, size=(30, 60, 3), dtype=np.uint8)
    return img


def main() -> int:
    if int(PIL.__version__.split(".")[0]) < 13:
        print(
            f"Pillow {PIL.__version__} predates the pass-order change of 13.0; "
            "the fixtures must come from Pillow >= 13",
            file=sys.stderr,
        )
        return 1
    rng = np.random.default_rng(20240607)
    inputs: dict[str, np.ndarray] = {
        "noise_37x23.png": noise(rng, 37, 23),
        "edges_64x48.png": edges(64, 48),
        "tiny_5x3.png": noise(rng, 5, 3),
        "column_1x9.png": noise(rng, 1, 9),
        "photo_320x213.png": photo_like(rng, 320, 213),
    }
    targets: dict[str, list[tuple[int, int]]] = {
        "noise_37x23.png": [
            (16, 10),  # ~2.3x down, non-integer
            (25, 17),  # mild down
            (12, 23),  # horizontal only, down
            (37, 9),  # vertical only, down
            (80, 51),  # up
            (37, 40),  # vertical only, up
            (20, 40),  # down in x, up in y
            (80, 11),  # up in x, down in y: vertical first
            (33, 9),  # both down, height loses > 2x the pixels: vertical first
            (3, 2),  # strong down (wide windows)
            (1, 1),
        ],
        "edges_64x48.png": [
            (27, 19),
            (100, 75),
            (64, 30),
            (33, 48),
            (224, 224),  # up, aspect ratio change
            (21, 16),  # exact 3x down
            (96, 20),  # up in x, down in y: vertical first
            (60, 20),  # both down: vertical first
        ],
        "tiny_5x3.png": [
            (11, 7),
            (2, 2),
            (1, 1),
            (5, 9),
            (40, 1),
        ],
        "column_1x9.png": [
            (4, 5),
            (1, 20),
        ],
        "photo_320x213.png": [
            (336, 224),  # the CLIP ViT-L/14-336 shortest-edge resize
            (224, 149),  # the CLIP 224 shortest-edge resize
            (45, 30),  # ~7x down: 31-tap windows
            (300, 100),  # both down: vertical first
        ],
    }

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for stale in OUT_DIR.glob("*.png"):
        stale.unlink()

    cases = []
    for name, arr in inputs.items():
        src = Image.fromarray(arr)
        assert src.mode == "RGB", (name, src.mode)
        src.save(OUT_DIR / name, optimize=True)
        stem = name.removesuffix(".png")
        for w, h in targets[name]:
            out = src.resize((w, h), resample=Image.Resampling.BICUBIC, reducing_gap=None)
            out_name = f"{stem}_to_{w}x{h}.png"
            out.save(OUT_DIR / out_name, optimize=True)
            cases.append({"input": name, "output": out_name, "width": w, "height": h})

    (OUT_DIR / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")

    total = sum(p.stat().st_size for p in OUT_DIR.iterdir() if p.is_file())
    print(f"wrote {len(cases)} cases, {total} bytes, Pillow {PIL.__version__}")
    if total > MAX_TOTAL_BYTES:
        print(f"fixtures exceed {MAX_TOTAL_BYTES} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
