#!/usr/bin/env python3
"""The bad-input matrix of README's "Reliability" section: each bad input a user can hand promptscope, run
through the built binary, with the first line of what it says, its exit code, and whether anything the
user had was lost (the output file that was there before is checked byte for byte).

    cargo build && python3 scripts/bad_inputs.py [--bin target/debug/promptscope]    # prints the table
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "promptscope"))
    a = ap.parse_args()
    t = tempfile.mkdtemp()
    p = lambda *xs: os.path.join(t, *xs)

    def run(*args, env=None):
        e = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=p("hf"), PROMPTSCOPE_CACHE=p("cache"), **(env or {}))
        r = subprocess.run([a.bin, *args], capture_output=True, text=True, env=e)
        err = [l for l in r.stderr.splitlines() if l.startswith(("error:", "warning:", "note:"))]
        return r.returncode, (err[0] if err else (r.stdout.strip().splitlines() or [""])[-1])

    run("synth-model", "--preset", "tiny", "--out", p("m"))
    run("synth-dataset", "--out", p("d"), "--classes", "3", "--splits", "4,2,3", "--seed", "1")
    run("train", "--model", p("m"), "--data", p("d"), "--shots", "2", "--n-ctx", "4", "--epochs", "2", "--out", p("good.safetensors"))
    weights = open(p("m", "model.safetensors"), "rb").read()
    config = json.load(open(p("m", "config.json")))

    def model_with(name, **files):
        """The tiny model with files replaced (None: removed); keyword names spell dots as `__`."""
        d = p(name)
        shutil.copytree(p("m"), d)
        for f, data in files.items():
            f = f.replace("__", ".")
            if data is None:
                os.remove(os.path.join(d, f))
            else:
                open(os.path.join(d, f), "wb").write(data if isinstance(data, bytes) else data.encode())
        return d

    def dataset_with(name, build):
        d = p(name)
        shutil.copytree(p("d"), d)
        build(d)
        return d

    def cfg(**text):
        c = json.loads(json.dumps(config))
        c["text_config"].update(text)
        return json.dumps(c)

    os.makedirs(p("empty"))
    open(p("notes.txt"), "w").write("hello")
    evil = os.path.join(ROOT, "tests", "fixtures", "coop_checkpoint", "evil.pth.tar")
    classnames = os.path.join(ROOT, "tests", "fixtures", "coop_checkpoint", "classnames.txt")
    bomb = p("bomb.png")
    png = bytearray(b"\x89PNG\r\n\x1a\n")
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png += chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    open(bomb, "wb").write(png)
    open(p("cut.png"), "wb").write(open(os.path.join(ROOT, "tests", "fixtures", "nonsquare_320x213.png"), "rb").read()[:300])
    open(p("cut.safetensors"), "wb").write(open(p("good.safetensors"), "rb").read()[:200])
    M, D = p("m"), p("d")
    cases = [
        ("model: no such folder or hub id", ["zero-shot", "--model", p("nope"), "--data", D]),
        ("model: a file, not a folder", ["zero-shot", "--model", p("notes.txt"), "--data", D]),
        ("model: folder without config.json", ["zero-shot", "--model", model_with("m-nocfg", config__json=None), "--data", D]),
        ("model: config.json not JSON", ["zero-shot", "--model", model_with("m-badjson", config__json="{ not json"), "--data", D]),
        ("model: config.json with a wrong type", ["zero-shot", "--model", model_with("m-type", config__json='{"text_config": 3}'), "--data", D]),
        ("model: config.json of another architecture (model_type blip)", ["zero-shot", "--model", model_with("m-blip", config__json=json.dumps(dict(config, model_type="blip"))), "--data", D]),
        ("model: hub config with legacy ids (bos 0, eos 2)", ["zero-shot", "--model", model_with("m-legacy", config__json=cfg(bos_token_id=0, eos_token_id=2)), "--data", D]),
        ("model: zero attention heads", ["zero-shot", "--model", model_with("m-heads", config__json=cfg(num_attention_heads=0)), "--data", D]),
        ("model: no model.safetensors", ["zero-shot", "--model", model_with("m-now", model__safetensors=None), "--data", D]),
        ("model: truncated model.safetensors", ["zero-shot", "--model", model_with("m-cut", **{"model__safetensors": weights[: len(weights) // 2]}), "--data", D]),
        ("model: weights of another size than config.json", ["zero-shot", "--model", model_with("m-dim", config__json=cfg(hidden_size=64)), "--data", D]),
        ("model: tokenizer.json not a tokenizer", ["zero-shot", "--model", model_with("m-tok", tokenizer__json="[]"), "--data", D]),
        ("model: preprocessor_config.json for another size", ["zero-shot", "--model", model_with("m-pre", preprocessor_config__json='{"crop_size": 96}'), "--data", D]),
        ("model: SigLIP folder without its tokenizer.json", ["zero-shot", "--model", model_with("m-sig", config__json=open(os.path.join(ROOT, "tests/fixtures/families/siglip/config.json")).read(), tokenizer__json=None, **{"model__safetensors": open(os.path.join(ROOT, "tests/fixtures/families/siglip/model.safetensors"), "rb").read()}), "--data", D]),
        ("model: CoOp asked of a SigLIP model", ["train", "--model", os.path.join(ROOT, "tests/fixtures/families/siglip"), "--data", D, "--shots", "1", "--out", p("sig.safetensors")]),
        ("dataset: no such folder", ["zero-shot", "--model", M, "--data", p("nope")]),
        ("dataset: empty folder", ["zero-shot", "--model", M, "--data", p("empty")]),
        ("dataset: an empty class folder", ["zero-shot", "--model", M, "--data", dataset_with("d-emptyclass", lambda d: os.makedirs(os.path.join(d, "test", "zebra")))]),
        ("dataset: a corrupt image", ["zero-shot", "--model", M, "--data", dataset_with("d-corrupt", lambda d: shutil.copy(p("cut.png"), os.path.join(d, "test", os.listdir(os.path.join(d, "test"))[0], "cut.png")))]),
        ("dataset: an image claiming 30000×30000 px", ["zero-shot", "--model", M, "--data", dataset_with("d-bomb", lambda d: shutil.copy(bomb, os.path.join(d, "test", os.listdir(os.path.join(d, "test"))[0], "bomb.png")))]),
        ("dataset: non-image files beside the images", ["zero-shot", "--model", M, "--data", dataset_with("d-notes", lambda d: shutil.copy(p("notes.txt"), os.path.join(d, "test", os.listdir(os.path.join(d, "test"))[0], "notes.txt")))]),
        ("dataset: a symlink loop", ["zero-shot", "--model", M, "--data", dataset_with("d-loop", lambda d: os.symlink(d, os.path.join(d, "test", "loop")))]),
        ("dataset: more shots than a class has", ["train", "--model", M, "--data", D, "--shots", "16", "--out", p("x.safetensors")]),
        ("dataset: test/ but no train/, for training", ["train", "--model", M, "--data", dataset_with("d-notrain", lambda d: shutil.rmtree(os.path.join(d, "train"))), "--shots", "1", "--out", p("x.safetensors")]),
        ("--classnames missing a class", ["zero-shot", "--model", M, "--data", D, "--classnames", classnames]),
        ("prompts file: truncated", ["eval", "--model", M, "--data", D, "--prompts", p("cut.safetensors")]),
        ("prompts file: made on another model", ["eval", "--model", model_with("m-other", **{"model__safetensors": weights[:-8] + b"\x00" * 8}), "--data", D, "--prompts", p("good.safetensors")]),
        ("prompts file: other classes", ["eval", "--model", M, "--data", dataset_with("d-other", lambda d: [os.rename(os.path.join(d, s, c), os.path.join(d, s, c + "x")) for s in ("train", "val", "test") for c in os.listdir(os.path.join(d, s))]), "--prompts", p("good.safetensors")]),
        ("CoOp checkpoint whose pickle calls os.system", ["import-coop", evil, "--model", M, "--classnames", classnames, "--out", p("evil.safetensors")]),
        ("CoOp checkpoint: not a zip / pickle", ["import-coop", p("notes.txt"), "--model", M, "--classnames", classnames, "--out", p("x.safetensors")]),
        ("a prompt past the 77-token context", ["zero-shot", "--model", M, "--data", D, "--template", "{} " + "very " * 80]),
        ("--n-ctx leaving no room for the class name", ["train", "--model", M, "--data", D, "--shots", "1", "--n-ctx", "76", "--out", p("x.safetensors")]),
        ("a class name too long for the context (--n-ctx 40)", ["train", "--model", M, "--data", dataset_with("d-long", lambda d: [os.rename(os.path.join(d, s, "red_circle"), os.path.join(d, s, "red_" + "very_" * 40 + "circle")) for s in ("train", "val", "test")]), "--shots", "1", "--n-ctx", "40", "--out", p("x.safetensors")]),
        ("--out into a missing folder", ["train", "--model", M, "--data", D, "--shots", "1", "--out", p("no", "such", "x.safetensors")]),
        ("--resume finds a foreign file where its checkpoint should be", None),
        ("--out in a folder that cannot be written (/proc)", ["train", "--model", M, "--data", D, "--shots", "1", "--out", "/proc/x.safetensors"]),
        ("classify: an image that is not one", ["classify", "--prompts", p("good.safetensors"), "--model", M, "--image", p("notes.txt")]),
        ("pretrain: a folder with no pairs", ["pretrain", "--data", p("empty"), "--out", p("pm"), "--preset", "tiny"]),
    ]
    # An earlier export the failing runs must leave as it was.
    shutil.copy(p("good.safetensors"), p("keep.safetensors"))

    print("| bad input | what promptscope says (first line) | exit | nothing lost |")
    print("|---|---|---|---|")
    before = open(p("good.safetensors"), "rb").read()
    for name, args in cases:
        if args is None:
            # Where --resume looks for the run's checkpoint lies another file (a prompts file).
            shutil.copy(p("good.safetensors"), p("keep.safetensors.ckpt"))
            args = ["train", "--model", M, "--data", D, "--shots", "2", "--n-ctx", "4", "--epochs", "2", "--out", p("keep.safetensors"), "--resume"]
        code, line = run(*args)
        line = line.replace(t, "…").replace("|", "\\|")
        intact = open(p("good.safetensors"), "rb").read() == before and (not os.path.exists(p("keep.safetensors")) or open(p("keep.safetensors"), "rb").read() == before)
        print(f"| {name} | {line[:160]}{'…' if len(line) > 160 else ''} | {code} | {'yes' if intact else 'NO'} |")
    shutil.rmtree(t)


if __name__ == "__main__":
    main()
