"""How long `quant` takes, and in how much memory, beside onnxruntime's own
quantizer on the same samples (issue 14: a 640x640 detector on 32
calibration samples no slower than `quantize_static`, in less memory).

PP-OCRv4 det at 1x3x640x640, 32 realistic samples (models/make_inputs.py,
seeds 0..31) in one batched .npy. Timed, each in its own process (wall time
and peak RSS from wait4), alternated over --rounds rounds, medians printed:
- `onnx-opt fuse,quant` with its defaults (calibration, the accuracy guard
  and the timing of its forms in ONNX Runtime);
- `onnx-opt fuse,quant{measure=false}` (no timing);
- `onnx-opt fuse,quant{bias-correction=false}` (what bias correction costs);
- onnxruntime `quantize_static` (QDQ, per channel, s8 weights, u8
  activations, MinMax), without and with `quant_pre_process`.

    .venv/bin/python -m benches.calibration [--onnx-opt target/release/onnx-opt] [--rounds 2]

A gate as well as a bench: exits 1 when a run fails.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from benches.chain import run
from models.make_inputs import make_inputs
from tests.pyhelpers import ROOT, model_path

SHAPE = [1, 3, 640, 640]
SAMPLES = 32

# onnxruntime's quantizer in a child process, so that its peak memory is its own.
ORT_QUANTIZE = """
import os, sys, numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
src, cal, out, pre = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "pre"
# quant_pre_process writes sym_shape_infer_temp.onnx into the working folder
os.chdir(os.path.dirname(out))
x = np.load(cal, mmap_mode="r")
class Reader(CalibrationDataReader):
    def __init__(self):
        self.i = 0
    def get_next(self):
        if self.i >= len(x):
            return None
        self.i += 1
        return {"x": np.ascontiguousarray(x[self.i - 1:self.i])}
if pre:
    # its symbolic shape inference fails on this model ("Incomplete symbolic shape inference")
    quant_pre_process(src, out + ".pre.onnx", skip_symbolic_shape=True)
    src = out + ".pre.onnx"
quantize_static(src, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-opt", default=os.path.join(ROOT, "target", "release", "onnx-opt"))
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    src = model_path("ppocr-det")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        cal = os.path.join(tmp, "det640.npy")
        xs = [next(iter(make_inputs("ppocr-det", seed=s, shapes={"x": SHAPE}).values())) for s in range(SAMPLES)]
        np.save(cal, np.concatenate(xs).astype(np.float32))
        script = os.path.join(tmp, "ort_quantize.py")
        with open(script, "w") as f:
            f.write(ORT_QUANTIZE)
        out = os.path.join(tmp, "out.onnx")
        commands = [
            ("onnx-opt fuse,quant", args.onnx_opt,
             [src, "-o", out, "--passes", "fuse,quant", "--inputs", cal]),
            ("onnx-opt fuse,quant{measure=false}", args.onnx_opt,
             [src, "-o", out, "--passes", "fuse,quant{measure=false}", "--inputs", cal]),
            # What bias correction costs: its means' sweep, and its two folds judged.
            ("onnx-opt fuse,quant{bias-correction=false}", args.onnx_opt,
             [src, "-o", out, "--passes", "fuse,quant{bias-correction=false}", "--inputs", cal]),
            ("quantize_static", sys.executable, [script, src, cal, out, "plain"]),
            ("quant_pre_process + quantize_static", sys.executable, [script, src, cal, out, "pre"]),
        ]
        results = {name: [] for name, _, _ in commands}
        failed = False
        for _ in range(args.rounds):
            for name, exe, argv in commands:
                wall, rss, code, err = run(exe, argv)
                if code != 0:
                    print(f"FAIL: {name} exited {code}: {err[-400:]}")
                    failed = True
                results[name].append((wall, rss))
        print(f"ppocr-det {'x'.join(map(str, SHAPE))}, {SAMPLES} samples, {args.rounds} alternated rounds (medians)")
        print(f"{'command':<44} {'time s':>8} {'peak RSS MB':>12}   runs (s)")
        for name, runs in results.items():
            walls = [w for w, _ in runs]
            rss = statistics.median(r for _, r in runs) / 2**20
            print(f"{name:<44} {statistics.median(walls):>8.1f} {rss:>12.0f}   {', '.join(f'{w:.1f}' for w in walls)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
