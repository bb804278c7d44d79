#!/usr/bin/env python3
"""README figure: FILIP's visual claim, side by side, where colour cannot carry it. The same generated
scenes of two or three objects of one colour (`synth-scenes --same-colour`, never seen in pretraining) and
the same word, the shape word of "a {colour} {shape}." naming one of them, mapped by `promptscope align`
(token mode) with the shipped FILIP model and its CLIP twin: a map that knows only colour lights every
object alike.

    cargo build --release && python3 scripts/make_figures.py      # needs pillow

Writes assets/figures/filip-vs-clip.png.
"""
import json
import os
import subprocess
import tempfile

from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "promptscope")
SCENES = [(0, 0), (1, 1), (2, 0), (3, 1)]  # (scene of `synth-scenes --same-colour --seed 3000`, object named)
SIZE = 64  # the demo models' input size
SCALE = 4


def align_png(model, image, text, out):
    """The map of the word before the closing period (the shape word), as a PNG over the image."""
    info = subprocess.run([BIN, "align", "--model", model, "--image", image, "--text", text, "--format", "json"],
                          check=True, capture_output=True, text=True).stdout
    tokens = json.loads(info.strip().splitlines()[-1])["text_tokens"]
    word = max(i for i, t in enumerate(tokens) if t.strip() == ".") - 1
    subprocess.run([BIN, "align", "--model", model, "--image", image, "--text", text, "--word", str(word),
                    "--png", out, "--opacity", "0.6"], check=True, capture_output=True)
    return Image.open(out).convert("RGB")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        pairs = os.path.join(tmp, "pairs")
        subprocess.run([BIN, "synth-scenes", "--out", pairs, "--count", str(max(i for i, _ in SCENES) + 1),
                        "--size", str(SIZE), "--seed", "3000", "--same-colour"], check=True, capture_output=True)
        rows = []
        for i, k in SCENES:
            stem = os.path.join(pairs, f"{i:06d}")
            obj = json.load(open(stem + ".json"))["objects"][k]
            colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
            shapes = ["circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon"]
            text = f"a {colours[obj['colour']]} {shapes[obj['shape']]}."
            pics = [Image.open(stem + ".png").convert("RGB")]
            for m in ["scenes-filip", "scenes-clip"]:
                pics.append(align_png(m, stem + ".png", text, os.path.join(tmp, f"{m}-{i}.png")))
            rows.append((text, [p.resize((SIZE * SCALE, SIZE * SCALE), Image.NEAREST) for p in pics]))
    side, pad, head = SIZE * SCALE, 6, 22
    fig = Image.new("RGB", (3 * side + 4 * pad, head + len(rows) * (side + head) + pad), "white")
    d = ImageDraw.Draw(fig)
    for c, title in enumerate(["scene", "scenes-filip (FILIP loss)", "scenes-clip (CLIP loss)"]):
        d.text((pad + c * (side + pad), 5), title, fill="black")
    for r, (text, pics) in enumerate(rows):
        y = head + r * (side + head)
        d.text((pad, y + 3), f'"{text}": map of the shape word', fill="black")
        for c, p in enumerate(pics):
            fig.paste(p, (pad + c * (side + pad), y + head - 4))
    out = os.path.join(ROOT, "assets", "figures", "filip-vs-clip.png")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
