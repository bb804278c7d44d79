#!/usr/bin/env python3
"""README figure: every explanation method on one scene and one word, on both shipped demo models.
A fixed scene of `synth-scenes --same-colour --seed 3000` (two or three objects of one colour, never seen
in pretraining; not chosen by result) and the prompt "a {colour} {shape}." naming its first object;
`promptscope align --method all` draws each method's map (token-wise: the shape word's; the others: the
whole prompt's), each min-max normalised on its own.

    cargo build --release && python3 scripts/make_methods_figure.py      # needs pillow

Writes assets/figures/map-methods.png. PROMPTSCOPE_BIN overrides the binary.
"""
import json
import os
import subprocess
import tempfile

from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PROMPTSCOPE_BIN", os.path.join(ROOT, "target", "release", "promptscope"))
SCENE = 1  # of `synth-scenes --same-colour --seed 3000`
SIZE, SCALE = 64, 3
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon"]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        pairs = os.path.join(tmp, "pairs")
        subprocess.run([BIN, "synth-scenes", "--out", pairs, "--count", str(SCENE + 1), "--size", str(SIZE),
                        "--seed", "3000", "--same-colour"], check=True, capture_output=True)
        stem = os.path.join(pairs, f"{SCENE:06d}")
        obj = json.load(open(stem + ".json"))["objects"][0]
        text = f"a {COLOURS[obj['colour']]} {SHAPES[obj['shape']]}."
        rows, methods = [], None
        for model in ["scenes-filip", "scenes-clip"]:
            out = subprocess.run([BIN, "align", "--model", model, "--image", stem + ".png", "--text", text,
                                  "--method", "all", "--format", "json"], check=True, capture_output=True,
                                 text=True).stdout
            objs = [json.loads(l) for l in out.strip().splitlines()]
            methods = [o["method"] for o in objs]
            tokens = objs[0]["targets"]
            word = max(i for i, t in enumerate(tokens) if t.strip() == ".") - 1
            png = os.path.join(tmp, f"{model}.png")
            subprocess.run([BIN, "align", "--model", model, "--image", stem + ".png", "--text", text,
                            "--method", "all", "--word", str(word), "--png", png, "--opacity", "0.6"],
                           check=True, capture_output=True)
            pics = [Image.open(stem + ".png").convert("RGB")]
            pics += [Image.open(os.path.join(tmp, f"{model}-{m}.png")).convert("RGB") for m in methods]
            rows.append((model, [p.resize((SIZE * SCALE, SIZE * SCALE), Image.NEAREST) for p in pics]))
    side, pad, head = SIZE * SCALE, 4, 18
    cols = len(rows[0][1])
    fig = Image.new("RGB", (cols * (side + pad) + pad, head + len(rows) * (side + head) + pad), "white")
    d = ImageDraw.Draw(fig)
    for c, title in enumerate(["scene"] + methods):
        d.text((pad + c * (side + pad), 4), title, fill="black")
    for r, (model, pics) in enumerate(rows):
        y = head + r * (side + head)
        d.text((pad, y + 2), f'{model}: "{text}" (token-wise: the shape word; the rest: the whole prompt)', fill="black")
        for c, p in enumerate(pics):
            fig.paste(p, (pad + c * (side + pad), y + head - 2))
    out = os.path.join(ROOT, "assets", "figures", "map-methods.png")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.save(out)
    print(f"wrote {out} ({text})")


if __name__ == "__main__":
    main()
