"""The `quant` pass, measured beside onnxruntime's own static quantizer.

For every model: onnxruntime's `quant_pre_process` + `quantize_static` (QDQ,
per channel, s8 weights, u8 activations, MinMax; models below opset 13 go
through onnx's version converter first) and onnx-opt's `fuse,quant{act=u8}`
(the onnxruntime form) and `fuse,quant` (TensorRT's form, s8 symmetric), all
calibrated on the same realistic samples
(models/make_inputs.py seeds 1..8) and judged on held-out ones (seeds
100..103): relative L2 error and cosine of the outputs against the float
model, and the onnxruntime time (1 thread, runs interleaved, median). For
models below opset 13, `fused-14` is the exact part of what quant does there
(opset 14, HardSwish fused), so the gain of int8 itself shows.

Then `format=qop` in tract on the MatMul-heavy generated model (mlp-lowrank,
batch 64): at least 1.5x faster than float.

Every onnx-opt output must pass onnx.checker (full check) and run in
onnxruntime; the s8 outputs must pass tests/judges/qdq_rules.py (TensorRT's
rules). Exit 1 if one fails.

    .venv/bin/python benches/quant.py [--onnx-opt target/release/onnx-opt] [--runs 50] [--only NAME]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
sys.path.insert(0, os.path.join(ROOT, "tests", "judges"))
from make_inputs import make_inputs, save_sample  # noqa: E402
from qdq_rules import violations  # noqa: E402

CACHE = os.path.join(ROOT, "models", "cache")
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
]
CALIB_SEEDS = list(range(1, 9))
HELD_OUT_SEEDS = [100, 101, 102, 103]


def path_of(name):
    cached = os.path.join(CACHE, name + ".onnx")
    return cached if os.path.exists(cached) else os.path.join(ROOT, "models", name + ".onnx")


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def outputs(sess, feeds_list):
    return [sess.run(None, f) for f in feeds_list]


def errors(ref, got):
    """Mean over samples and outputs of the relative L2 error and cosine."""
    rel, cos = [], []
    for r_outs, g_outs in zip(ref, got):
        for r, g in zip(r_outs, g_outs):
            r, g = np.asarray(r, np.float64).ravel(), np.asarray(g, np.float64).ravel()
            nr = np.linalg.norm(r)
            rel.append(np.linalg.norm(g - r) / nr if nr > 0 else float(np.linalg.norm(g) > 0))
            ng = np.linalg.norm(g)
            cos.append(float(r @ g / (nr * ng)) if nr > 0 and ng > 0 else float(nr == ng))
    return float(np.mean(rel)), float(np.mean(cos))


def time_interleaved(sessions, feeds, runs):
    """Median ms of each session, runs interleaved so drift hits all alike."""
    for s in sessions:
        for _ in range(5):
            s.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(runs):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, feeds)
            times[i].append((time.perf_counter() - t) * 1e3)
    return [float(np.median(t)) for t in times]


def ort_quantize(src, dst, calib, tmp):
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
        try:
            quant_pre_process(src, pre)
        except Exception:  # symbolic shape inference fails on some models (magika)
            quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        os.chdir(ROOT)


def onnx_opt(exe, src, dst, passes, calib_dir, *extra):
    """Runs onnx-opt calibrating on `calib_dir` (plus `extra` arguments); its report."""
    report = dst + ".json"
    cmd = [exe, src, "-o", dst, "--passes", passes, "--inputs", calib_dir, "--report", report, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{p.stderr}")
    with open(report) as f:
        return json.load(f)


def qop_in_tract(args, tmp):
    """quant{format=qop} on mlp-lowrank (4x1024^2 + head), batch 64, in tract."""
    import generate

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
        r = onnx_opt(args.onnx_opt, src, dst, "quant{format=qop}", os.path.join(d, "calib"),
                     "--verify-inputs", held, "--verify", "--bench", "--runs", str(args.runs))
    except RuntimeError as e:
        return [f"mlp-lowrank qop: {str(e)[-300:]}"]
    b, v = r["bench"], r["verify"]["outputs"][0]
    print(f"\nquant{{format=qop}} in tract, mlp-lowrank batch 64: {b['before_ms']['median']:.2f} -> "
          f"{b['after_ms']['median']:.2f} ms, {b['speedup']:.2f}x; held-out cosine {v['cosine']:.5f}, "
          f"top-1 {v['top1_agreement']}")
    try:
        onnx.checker.check_model(dst, full_check=True)
        session(dst)
    except Exception as e:
        return [f"mlp-lowrank qop: not valid: {e}"]
    return [] if b["speedup"] >= 1.5 else [f"mlp-lowrank qop: {b['speedup']:.2f}x < 1.5x in tract"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-opt", default=os.path.join(ROOT, "target", "release", "onnx-opt"))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--ours", default="fuse,quant{act=u8}", help="onnx-opt passes for the onnxruntime form")
    args = ap.parse_args()
    failures = []
    print(f"{'model':<20} {'form':<10} {'MiB':>6} {'rel_l2':>9} {'cosine':>9} {'ms (ORT)':>9} {'vs float':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, shapes in MODELS:
            if args.only and name not in args.only:
                continue
            src = path_of(name)
            if not os.path.exists(src):
                failures.append(f"{name}: {src} missing (run models/fetch.py)")
                continue
            d = os.path.join(tmp, name)
            os.makedirs(os.path.join(d, "calib"))
            calib = [make_inputs(name, s, shapes) for s in CALIB_SEEDS]
            for s, feeds in zip(CALIB_SEEDS, calib):
                save_sample(os.path.join(d, "calib", str(s)), feeds)
            held = [make_inputs(name, s, shapes) for s in HELD_OUT_SEEDS]
            forms = {"float": src}
            try:
                forms["ort"] = os.path.join(d, "ort.onnx")
                ort_quantize(src, forms["ort"], calib, d)
            except Exception as e:  # report and go on: the comparison is the point
                print(f"{name:<20} ort        quantize_static failed: {type(e).__name__}: {str(e)[:120]}")
                del forms["ort"]
            # The exact part of what quant does to a model below opset 13
            # (HardSwish as one operator), for an honest baseline.
            opset = next(o.version for o in onnx.load(src).opset_import if o.domain in ("", "ai.onnx"))
            for form, passes in [("fused-14", "raise-opset{to=14},fuse"), ("ours-u8", args.ours),
                                 ("ours-s8", "fuse,quant")]:
                if form == "fused-14" and opset >= 13:
                    continue
                dst = os.path.join(d, form + ".onnx")
                try:
                    onnx_opt(args.onnx_opt, src, dst, passes, os.path.join(d, "calib"))
                except RuntimeError as e:
                    failures.append(f"{name} {form}: onnx-opt failed: {str(e)[-300:]}")
                    continue
                try:
                    onnx.checker.check_model(dst, full_check=True)
                except Exception as e:
                    failures.append(f"{name} {form}: onnx.checker: {str(e)[:200]}")
                if form == "ours-s8":
                    bad = violations(onnx.load(dst))
                    if bad:
                        failures.append(f"{name} {form}: TensorRT rules: {bad[:3]}")
                forms[form] = dst
            sessions = {}
            for form, p in forms.items():
                try:
                    sessions[form] = session(p)
                except Exception as e:
                    print(f"{name:<20} {form:<10} does not load in onnxruntime: {str(e)[:150]}")
                    if form.startswith("ours"):
                        failures.append(f"{name} {form}: does not load in onnxruntime")
            ref = outputs(sessions["float"], held)
            ms = dict(zip(sessions, time_interleaved(list(sessions.values()), held[0], args.runs)))
            acc = {}
            for form, sess in sessions.items():
                rel, cos = errors(ref, outputs(sess, held)) if form != "float" else (0.0, 1.0)
                acc[form] = rel
                mib = os.path.getsize(forms[form]) / 2**20
                print(f"{name:<20} {form:<10} {mib:>6.2f} {rel:>9.4f} {cos:>9.5f} {ms[form]:>9.3f}"
                      f" {ms['float'] / ms[form]:>7.2f}x", flush=True)
            if "ort" in acc and "ours-u8" in acc:
                if acc["ours-u8"] > acc["ort"] * 1.05:
                    failures.append(f"{name}: less accurate than onnxruntime's ({acc['ours-u8']:.4f} vs {acc['ort']:.4f})")
                if ms["ours-u8"] > ms["ort"] * 1.05:
                    failures.append(f"{name}: slower than onnxruntime's in onnxruntime ({ms['ours-u8']:.3f} vs {ms['ort']:.3f} ms)")
        if not args.only or "mlp-lowrank" in args.only:
            failures += qop_in_tract(args, tmp)
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
