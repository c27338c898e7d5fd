#!/usr/bin/env python3
"""Write the image folder the README's main-job `tune` command calibrates and judges on.

Why: a newcomer should see tune's speedup and the accuracy it keeps in one
command, on data the project makes itself and keeps as users keep theirs (a
folder of images read with --preprocess). The images are smooth seeded RGB
scenes (models/make_inputs.py's `smooth_image`), 32×32, written as PNG with
the standard library only.

    .venv/bin/python models/make_images.py models/data/cnn-images [--count 300]   # for models/cnn.onnx and convnet.onnx
"""
import argparse
import os
import struct
import zlib

import numpy as np

# Run as a script: Python puts this folder first on the path.
from make_inputs import smooth_image


def write_png(path, rgb):
    """An 8-bit RGB PNG of `rgb` [H, W, 3] uint8."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--count", type=int, default=300)
    args = ap.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    for k in range(args.count):
        rng = np.random.default_rng(k)
        img = smooth_image(rng, (1, 3, 32, 32), [0.0] * 3, [1.0] * 3)[0]  # in [0, 1]
        rgb = (np.clip(img, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        write_png(os.path.join(args.folder, f"{k:03d}.png"), rgb)


if __name__ == "__main__":
    main()
