"""How time and peak memory grow with the length of a model (issue 17).

Builds chains of 1k, 10k and 100k nodes: repeated blocks of
MatMul(x, W 8x8) -> Add(bias) -> Relu, so `fuse` has fusions to make on every
block and `quant` a layer to quantize on every third node, then runs
`fuse`, `fuse,quant` and `fuse --verify` on each and prints the wall time and
the peak RSS of the onnx-opt process (from wait4, so only that process).

Linear growth shows as a roughly constant time per node from row to row;
target: the 100k chain through `fuse,quant` and `fuse --verify` in under 10 s
each. Speed on a loaded machine is distorted: the load (`uptime`) is printed
with the figures. A gate as well as a bench: exits 1 when a run fails or a
target is missed.

    .venv/bin/python -m benches.chain [--onnx-opt target/release/onnx-opt] [--sizes 1000,10000,100000]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 8
COMMANDS = [
    ("fuse", ["--passes", "fuse"]),
    ("fuse,quant", ["--passes", "fuse,quant{min-k=0}"]),
    ("fuse --verify", ["--passes", "fuse", "--verify"]),
]
TARGET_S = {"fuse,quant": 10.0, "fuse --verify": 10.0}


def chain(nodes):
    """A chain of `nodes` operators: MatMul, Add, Relu repeated."""
    rng = np.random.default_rng(0)
    ns, inits = [], []
    x = "x"
    for i in range(nodes):
        kind = i % 3
        out = f"v{i}"
        if kind == 0:
            w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{i}"))
            ns.append(helper.make_node("MatMul", [x, f"w{i}"], [out], name=f"n{i}"))
        elif kind == 1:
            b = (rng.standard_normal(WIDTH) * 0.1).astype(np.float32)
            inits.append(numpy_helper.from_array(b, f"b{i}"))
            ns.append(helper.make_node("Add", [x, f"b{i}"], [out], name=f"n{i}"))
        else:
            ns.append(helper.make_node("Relu", [x], [out], name=f"n{i}"))
        x = out
    return model_of(ns, inits, "chain", x, WIDTH)


def model_of(nodes, inits, name, out, width):
    """An opset-13 model of `nodes` from input x [1, width] to `out` [1, width]."""
    g = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, width])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def run(exe, args):
    """Wall seconds, peak RSS in bytes and exit code of one onnx-opt run."""
    start = time.perf_counter()
    proc = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss * 1024, proc.returncode, err


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-opt", default=os.path.join(ROOT, "target", "release", "onnx-opt"))
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--only", help="run only this command (e.g. 'fuse,quant')")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'nodes':>8} {'command':<16} {'time s':>8} {'us/node':>8} {'peak RSS MB':>12}")
        for n in sizes:
            path = os.path.join(tmp, f"chain{n}.onnx")
            onnx.save(chain(n), path)
            out = os.path.join(tmp, "out.onnx")
            for name, extra in COMMANDS:
                if args.only and name != args.only:
                    continue
                wall, rss, code, err = run(args.onnx_opt, [path, "-o", out, *extra])
                mark = ""
                if code != 0:
                    mark = f"  FAILED (exit {code}): {err.strip().splitlines()[-1] if err.strip() else ''}"
                    failed = True
                elif n >= 100_000 and name in TARGET_S and wall > TARGET_S[name]:
                    mark = f"  over the {TARGET_S[name]:.0f} s target"
                    failed = True
                print(f"{n:>8} {name:<16} {wall:>8.2f} {wall / n * 1e6:>8.1f} {rss / 1e6:>12.1f}{mark}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
