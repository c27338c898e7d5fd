"""Peak memory of onnx-opt on a 200 MB model, against the file's size (issue 17).

Builds an MLP of 12 MatMul+Add(+Relu) layers with 2048x2048 f32 weights
(~201 MB, input x [1, 2048]), then runs `fuse,quant`, `fuse --verify` and a
round trip through the release binary and prints each one's wall time and peak
RSS (from wait4: that process and its children only) as a multiple of the
file. Targets: `fuse,quant` <= 2.5x, `--verify` <= 3.5x. A gate: exits 1 when
a run fails or a target is missed. ONNX Runtime, when found, is used as in
any run (`quant` times its forms there), so its sessions count.

    .venv/bin/python -m benches.memory [--onnx-opt target/release/onnx-opt]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

from benches.chain import model_of, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 2048
LAYERS = 12
COMMANDS = [
    ("round trip", [], None),
    ("fuse,quant", ["--passes", "fuse,quant"], 2.5),
    ("fuse --verify", ["--passes", "fuse", "--verify"], 3.5),
]


def mlp():
    """LAYERS x (MatMul, Add, Relu) of WIDTH x WIDTH weights."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    for i in range(LAYERS):
        w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
        b = (rng.standard_normal(WIDTH) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]))
        x = f"a{i}"
        if i + 1 < LAYERS:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    return model_of(nodes, inits, "mlp", x, WIDTH)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-opt", default=os.path.join(ROOT, "target", "release", "onnx-opt"))
    ap.add_argument("--write", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:
        onnx.save(mlp(), args.write)
        return
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mlp.onnx")
        # Written by a child: a process's peak RSS can include its parent's
        # at spawn time, and this one must stay small.
        subprocess.run([sys.executable, "-m", "benches.memory", "--write", path], check=True, cwd=ROOT)
        size = os.path.getsize(path)
        print(f"model: {LAYERS} x MatMul+Add(+Relu) {WIDTH}x{WIDTH} f32, {size / 1e6:.1f} MB")
        print(f"{'command':<16} {'time s':>8} {'peak RSS MB':>12} {'x file':>7}  target")
        out = os.path.join(tmp, "out.onnx")
        for name, extra, target in COMMANDS:
            wall, rss, code, err = run(args.onnx_opt, [path, "-o", out, *extra])
            ratio = rss / size
            mark = "" if target is None else f"<= {target}x"
            if code != 0:
                last = err.strip().splitlines()[-1] if err.strip() else ""
                mark += f"  FAILED (exit {code}): {last}"
                failed = True
            elif target is not None and ratio > target:
                mark += "  MISSED"
                failed = True
            print(f"{name:<16} {wall:>8.2f} {rss / 1e6:>12.1f} {ratio:>7.2f}  {mark}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
