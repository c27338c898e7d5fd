"""Speed of `fuse` and `fuse,quant` in tract and in ONNX Runtime, side by side.

For every suite model: onnx-opt runs the pipeline with `--bench --runtime
tract,ort` (both runtimes on 1 thread, original and result alternated in one
process after warm-up; ONNX Runtime with optimisation level all, sequential).
quant calibrates on realistic samples (models/make_inputs.py seeds 1..4) and
is timed on a held-out one (seed 100). Prints one markdown table (median ms
before -> after, speedup) with the machine's load and CPU flags, since int8
speed depends on VNNI. `-` marks a runtime that cannot run the model.
Exits 1 when a run fails (there is no speed target).

    .venv/bin/python -m benches.runtimes [--onnx-opt target/release/onnx-opt] [--runs 20] [--only NAME]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from models.make_inputs import make_inputs
from tests.pyhelpers import ROOT

PIPELINES = ["fuse", "fuse,quant"]


def cpu_flags():
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags) or "none of avx2/avx512/vnni"


def cell(bench):
    if not bench:
        return "-"
    return f"{bench['before_ms']['median']:.2f} -> {bench['after_ms']['median']:.2f} ({bench['speedup']:.2f}x)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx-opt", default=os.path.join(ROOT, "target", "release", "onnx-opt"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only")
    args = ap.parse_args()
    suite = json.load(open(os.path.join(ROOT, "models", "suite.json")))["models"]
    names = [m["name"] for m in suite if not args.only or m["name"] == args.only]
    print(f"load before: {os.getloadavg()[0]:.2f}; CPU flags: {cpu_flags()}; runs {args.runs}, warm-up {args.warmup}\n")
    print("| model | passes | tract ms before -> after (speedup) | ONNX Runtime ms before -> after (speedup) |")
    print("|---|---|---|---|")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            calib = os.path.join(tmp, name + "-calib")
            os.makedirs(calib)
            for seed in (1, 2, 3, 4):
                np.savez(os.path.join(calib, f"{seed}.npz"), **make_inputs(name, seed=seed))
            held_out = os.path.join(tmp, name + "-100.npz")
            np.savez(held_out, **make_inputs(name, seed=100))
            for passes in PIPELINES:
                report = os.path.join(tmp, "r.json")
                cmd = [args.onnx_opt, os.path.join(ROOT, "models", "cache", name + ".onnx"),
                       "-o", os.path.join(tmp, "out.onnx"), "--passes", passes, "--bench",
                       "--runtime", "tract,ort", "--runs", str(args.runs), "--warmup", str(args.warmup),
                       "--inputs", calib, "--verify-inputs", held_out, "--report", report]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    failures += 1
                    print(f"| {name} | `{passes}` | failed: {' '.join(r.stderr.split())[:120]} | |")
                    continue
                by_rt = {x["runtime"]: x.get("bench") for x in json.load(open(report))["runtimes"]}
                print(f"| {name} | `{passes}` | {cell(by_rt.get('tract'))} | {cell(by_rt.get('ort'))} |", flush=True)
    print(f"\nload after: {os.getloadavg()[0]:.2f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
