"""Bias correction in `quant` (issue 14, "accuracy without training"): the
held-out error of each model's int8 form with its biases as they are,
corrected, and as `bias-correction=auto` decides (the accuracy guard keeps
the correction where it lowers the error on the calibration samples).

Every form is `fuse,quant{measure=false,...}` (no timing, so the three
differ only in their biases), calibrated on realistic samples
(models/make_inputs.py seeds 1..8) and judged on held-out ones (seeds
100..103) by the relative L2 error of the outputs against the fused float
model in ONNX Runtime (1 thread, every optimisation on). `auto`'s column
says what it kept and its two errors on the calibration samples.

    .venv/bin/python -m benches.bias_correction [--onnx-opt target/release/onnx-opt] [--only NAME] [--quant OPTS]

Not a gate: it prints the table, and exits 1 only when onnx-opt fails or an
output does not pass onnx.checker.
"""
import argparse
import os
import sys
import tempfile
import time

import onnx

from benches.quant import cpu_flags, outputs_on, samples_of, selected
from benches.quant import MODELS as QUANT_MODELS
from tests.pyhelpers import ROOT, errors, onnx_opt, session

# (model, input shape overrides): benches/quant.py's models that have layers
# to quantize (not the IR-3 `light-*` ones, ddddocr-old, basic-pitch, which
# keep float there), then six models it does not hold.
KEEP_FLOAT = ("light-", "ddddocr-old", "basic-pitch")
MODELS = [m for m in QUANT_MODELS if not m[0].startswith(KEEP_FLOAT)] + [
    ("dnsmos-p808", {}),
    ("slider-yolo", {}),
    ("ppocrv5-rec", {}),
    ("ppocrv6-tiny-rec", {}),
    ("oww-embed", {}),
    ("aecmos", {}),
]


def quant_details(report):
    return next((p["details"] for p in report.get("passes", []) if p.get("name") == "quant"), {})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-opt", default=os.path.join(ROOT, "target", "release", "onnx-opt"))
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--quant", default="measure=false", help="quant's other options")
    args = ap.parse_args()
    failures = []
    print(f"CPU: {cpu_flags()}; load average {os.getloadavg()[0]:.1f}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; quant{{{args.quant},bias-correction=...}}")
    print("| model | corrected layers | false | true | auto: kept (calibration: as given → corrected) | auto |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, shapes, src in selected(MODELS, args.only, failures):
            d, _, held = samples_of(tmp, name, shapes)
            fused = os.path.join(d, "fused.onnx")
            onnx_opt(args.onnx_opt, src, fused, "--passes", "fuse")
            ref = outputs_on(session(fused), held)
            row, auto, layers = {}, "", 0
            for setting in ("false", "true", "auto"):
                dst = os.path.join(d, f"{setting}.onnx")
                passes = f"fuse,quant{{{args.quant},bias-correction={setting}}}"
                try:
                    report = onnx_opt(args.onnx_opt, src, dst, "--passes", passes, "--inputs", os.path.join(d, "calib"))
                    onnx.checker.check_model(dst, full_check=True)
                except Exception as e:
                    failures.append(f"{name} {setting}: {str(e)[-300:]}")
                    continue
                q = quant_details(report)
                row[setting] = errors(ref, outputs_on(session(dst), held))[0]
                if setting == "true":
                    layers = q.get("bias_correction_layers", 0)
                if setting == "auto":
                    b = q.get("bias_correction")
                    if isinstance(b, dict) and "outputs_rel_err" in b:
                        e = b["outputs_rel_err"]
                        auto = f"{'yes' if b['kept'] else 'no'} ({e['as_given']:.4f} → {e['corrected']:.4f})"
                    else:
                        auto = str(b)
            cells = [f"{row[s]:.4f}" if s in row else "-" for s in ("false", "true")]
            print(f"| {name} | {layers} | {cells[0]} | {cells[1]} | {auto} | "
                  f"{row['auto']:.4f} |" if "auto" in row else f"| {name} | {layers} | {cells[0]} | {cells[1]} | {auto} | - |",
                  flush=True)
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
